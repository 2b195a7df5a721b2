"""`edge-fpn export` and bundle loading: the happy path and every bad input (one line, exit 2, nothing written)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from edge_fpn.cli import main
from edge_fpn.errors import EdgeFpnError

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from edge_fpn.model.architectures import build_architecture
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mb320.pth"
    torch.save(build_architecture(ARCH, 3).state_dict(), path)
    return str(path)


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _leftovers(directory):
    return [n for n in os.listdir(directory) if n.startswith(".tmp-")]


def test_export_writes_a_clean_bundle(tmp_path, checkpoint, capsys):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    out = tmp_path / "bundle"
    code, stdout, _ = _run(capsys, "export", "--arch", ARCH, "--checkpoint", checkpoint, "--num-classes", "3",
                           "--classes", str(names), "--input-size", "320x320", "--output", str(out), "--quiet")
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["__background__", "cat", "dog"]
    assert manifest["stages"]["stage2"]["dynamic_axes"] == {"num_proposals": [1, 150]}
    assert manifest["provenance"]["source_checkpoint_sha256"]
    import onnx
    for stage in ("stage1.onnx", "stage2.onnx"):
        model = onnx.load(str(out / stage))
        assert model.opset_import[0].version == 17
        forbidden = {"NonZero", "If", "Loop", "Scan", "ScatterND", "ScatterElements", "NonMaxSuppression", "TopK"}
        assert not forbidden & {n.op_type for n in model.graph.node}
    code, stdout, _ = _run(capsys, "check", str(out), "--target", "jetpack5")
    assert code == 0, stdout
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["missing", "unreadable", "other_arch", "other_classes", "size", "exists"])
def test_export_bad_input(tmp_path, checkpoint, capsys, case):
    out = tmp_path / "bundle"
    args = ["export", "--arch", ARCH, "--checkpoint", checkpoint, "--num-classes", "3", "--input-size", "320x320",
            "--output", str(out), "--quiet"]
    expect = {"missing": "does not exist", "unreadable": "cannot be read", "other_arch": "does not fit",
              "other_classes": "shape mismatch", "size": "multiple of the largest stride", "exists": "already exists"}[case]
    if case == "missing":
        args[4] = str(tmp_path / "nope.pth")
    elif case == "unreadable":
        bad = tmp_path / "bad.pth"
        bad.write_bytes(b"not a checkpoint")
        args[4] = str(bad)
    elif case == "other_arch":
        args[2] = "fasterrcnn_resnet50_fpn"
    elif case == "other_classes":
        args[6] = "7"
    elif case == "size":
        args[8] = "300x300"
    elif case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    code, _, err = _run(capsys, *args)
    assert code == 2
    assert expect in _one_line_error(err)
    if case == "exists":
        assert (out / "keep.txt").read_text() == "mine"
    else:
        assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_interrupted_export_leaves_nothing(tmp_path, checkpoint, monkeypatch):
    from edge_fpn.export import onnx_export
    from edge_fpn.model.architectures import build_architecture, load_checkpoint

    def boom(path):
        raise KeyboardInterrupt
    monkeypatch.setattr(onnx_export, "_slim", boom)
    model = load_checkpoint(build_architecture(ARCH, 3), checkpoint, ARCH)
    with pytest.raises(KeyboardInterrupt):
        onnx_export.export_bundle(model, ARCH, ["bg", "a", "b"], (320, 320), str(tmp_path / "b"), progress=False)
    assert os.listdir(tmp_path) == []


def test_force_replaces_an_existing_bundle(tmp_path, checkpoint, capsys):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    code, _, err = _run(capsys, "export", "--arch", ARCH, "--checkpoint", checkpoint, "--num-classes", "3",
                        "--input-size", "320", "--output", str(out), "--force", "--quiet")
    assert code == 0, err
    assert not (out / "old.txt").exists() and (out / "manifest.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["bundle"]


@pytest.mark.parametrize("damage", ["no_manifest", "corrupt_manifest", "newer_manifest", "no_onnx", "corrupt_onnx"])
def test_damaged_bundle_is_refused_with_one_sentence(tmp_path, tiny_bundle, damage):
    import shutil
    from edge_fpn import Detector

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    manifest = bundle / "manifest.json"
    if damage == "no_manifest":
        manifest.unlink()
    elif damage == "corrupt_manifest":
        manifest.write_text(manifest.read_text()[:200])
    elif damage == "newer_manifest":
        data = json.loads(manifest.read_text())
        data["format_version"] = 99
        manifest.write_text(json.dumps(data))
    elif damage == "no_onnx":
        (bundle / "stage2.onnx").unlink()
    elif damage == "corrupt_onnx":
        (bundle / "stage1.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EdgeFpnError) as info:
        Detector(str(bundle))
    message = str(info.value)
    assert "\n" not in message and ("re-run" in message or "upgrade" in message)


def test_eval_cli_refuses_mismatched_classes(tmp_path, tiny_bundle, capsys):
    code, _, err = _run(capsys, "eval", tiny_bundle, "--synthetic", "2")
    assert code == 2
    assert "class names do not match" in _one_line_error(err)
