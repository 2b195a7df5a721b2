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


@pytest.mark.parametrize("postprocess", [None, "host"])
def test_export_writes_a_clean_bundle(tmp_path, checkpoint, capsys, postprocess):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    out = tmp_path / "bundle"
    layout_args = ["--postprocess", postprocess] if postprocess else []
    code, stdout, _ = _run(capsys, "export", "--arch", ARCH, "--checkpoint", checkpoint, "--num-classes", "3",
                           "--classes", str(names), "--input-size", "320x320", "--output", str(out), "--quiet",
                           *layout_args)
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["__background__", "cat", "dog"]
    assert manifest["provenance"]["source_checkpoint_sha256"]
    import onnx
    forbidden = {"NonZero", "If", "Loop", "Scan", "ScatterND", "ScatterElements"}
    if postprocess == "host":
        assert manifest["layout"] == "host" and "host layout" in stdout
        assert manifest["stages"]["stage2"]["dynamic_axes"] == {"num_proposals": [1, 150]}
        files, forbidden = ["stage1.onnx", "stage2.onnx"], forbidden | {"NonMaxSuppression", "TopK"}
    else:  # the default: one graph, pixels to detections
        assert manifest["layout"] == "engine" and "engine layout (detector.onnx" in stdout
        assert manifest["stages"]["detector"]["outputs"][0] == {"name": "boxes", "shape": [100, 4], "dtype": "float32"}
        files = ["detector.onnx"]
    for name in files:
        model = onnx.load(str(out / name))
        assert model.opset_import[0].version == 17
        assert not forbidden & {n.op_type for n in model.graph.node}
    for target in ("jetpack5", "jetpack6.0", "jetpack6.1", "jetpack7"):
        code, stdout, _ = _run(capsys, "check", str(out), "--target", target)
        assert code == 0, stdout
    assert _leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # readable by others, as any directory here


def test_detection_candidates_beyond_tensorrts_top_k_are_refused(tmp_path, checkpoint, capsys):
    code, _, err = _run(capsys, "export", "--arch", ARCH, "--checkpoint", checkpoint, "--num-classes", "3",
                        "--input-size", "320", "--output", str(tmp_path / "b"), "--quiet",
                        "--detection-candidates", "5000")
    assert code == 2 and "between 1 and 3840" in _one_line_error(err)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("case", ["missing", "unreadable", "other_arch", "other_classes", "size", "huge", "exists"])
def test_export_bad_input(tmp_path, checkpoint, capsys, case):
    out = tmp_path / "bundle"
    args = ["export", "--arch", ARCH, "--checkpoint", checkpoint, "--num-classes", "3", "--input-size", "320x320",
            "--output", str(out), "--quiet"]
    expect = {"missing": "does not exist", "unreadable": "cannot be read", "other_arch": "does not fit",
              "other_classes": "shape mismatch", "size": "multiple of the largest stride",
              "huge": "larger than 4096 on a side", "exists": "already exists"}[case]
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
    elif case == "huge":  # (torch was asked for 120 GB: a traceback)
        args[8] = "100000x100000"
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

    def boom(path, *stamp):
        raise KeyboardInterrupt
    monkeypatch.setattr(onnx_export, "_slim", boom)
    model = load_checkpoint(build_architecture(ARCH, 3), checkpoint, ARCH)
    with pytest.raises(KeyboardInterrupt):
        onnx_export.export_bundle(model, ARCH, ["bg", "a", "b"], (320, 320), str(tmp_path / "b"),
                                  onnx_export.ExportOptions(progress=False))
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


@pytest.mark.parametrize("layout", ["engine", "host"])
@pytest.mark.parametrize("damage", ["no_manifest", "corrupt_manifest", "newer_manifest", "unknown_layout",
                                    "no_onnx", "corrupt_onnx"])
def test_damaged_bundle_is_refused_with_one_sentence(tmp_path, tiny_bundle, tiny_host_bundle, damage, layout):
    import shutil
    from edge_fpn import Detector

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle if layout == "engine" else tiny_host_bundle, bundle)
    onnx_files = sorted(p.name for p in bundle.glob("*.onnx"))
    manifest = bundle / "manifest.json"
    if damage == "no_manifest":
        manifest.unlink()
    elif damage == "corrupt_manifest":
        manifest.write_text(manifest.read_text()[:200])
    elif damage == "newer_manifest":
        data = json.loads(manifest.read_text())
        data["format_version"] = 99
        manifest.write_text(json.dumps(data))
    elif damage == "unknown_layout":
        data = json.loads(manifest.read_text())
        data["layout"] = "three-stage"
        manifest.write_text(json.dumps(data))
    elif damage == "no_onnx":
        (bundle / onnx_files[-1]).unlink()
    elif damage == "corrupt_onnx":
        (bundle / onnx_files[0]).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EdgeFpnError) as info:
        Detector(str(bundle))
    message = str(info.value)
    assert "\n" not in message and ("re-run" in message or "upgrade" in message)
    if damage == "unknown_layout":
        assert "three-stage" in message


def test_unknown_layout_is_one_line_and_exit_2(tmp_path, tiny_bundle, capsys):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    data["layout"] = "three-stage"
    (bundle / "manifest.json").write_text(json.dumps(data))
    code, _, err = _run(capsys, "detect", str(bundle), "test://?frames=2", str(tmp_path / "out.jsonl"))
    assert code == 2 and "layout 'three-stage'" in _one_line_error(err)
    assert not (tmp_path / "out.jsonl").exists()


def test_eval_cli_refuses_mismatched_classes(tmp_path, tiny_bundle, capsys):
    code, _, err = _run(capsys, "eval", tiny_bundle, "--synthetic", "2")
    assert code == 2
    assert "class names do not match" in _one_line_error(err)


@pytest.mark.parametrize("source", ["model", "arch"])
def test_export_writes_into_engines_by_default(tmp_path, checkpoint, tiny_bundle, monkeypatch, capsys, source):
    """Without --output: engines/<model> or engines/<arch> under the working directory, engines/ created.
    The export itself is stubbed (a copy of a ready bundle): the tests above export for real, and the
    shipped model takes ~20 s; here only where it goes matters."""
    import shutil

    from edge_fpn.bundle import load_manifest
    from edge_fpn.export import onnx_export

    written = []

    def export_bundle(model, arch, class_names, input_size, output, options=None):
        written.append(output)
        shutil.copytree(tiny_bundle, output)
        return load_manifest(output)
    monkeypatch.setattr(onnx_export, "export_bundle", export_bundle)
    monkeypatch.chdir(tmp_path)
    if source == "model":
        args, expected = ["--model", "shapes"], os.path.join("engines", "shapes")
    else:
        args, expected = ["--arch", ARCH, "--checkpoint", checkpoint, "--num-classes", "3", "--input-size", "320"], \
            os.path.join("engines", ARCH)
    code, stdout, err = _run(capsys, "export", *args, "--quiet")
    assert code == 0, err
    assert written == [expected] and (tmp_path / expected / "manifest.json").is_file()
    assert stdout.startswith(f"wrote {expected}: ")
    assert sorted(os.listdir(tmp_path)) == ["engines"]


def test_failed_default_export_leaves_no_engines_folder(tmp_path, monkeypatch, capsys):
    from edge_fpn.export import onnx_export

    def export_bundle(*args, **kwargs):
        raise EdgeFpnError("the graph cannot be exported")
    monkeypatch.setattr(onnx_export, "export_bundle", export_bundle)
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "export", "--model", "shapes", "--quiet")
    assert code == 2 and "cannot be exported" in _one_line_error(err)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command, words", [("export", "default engines/<model>"),
                                            ("calibrate", "default calibration/<bundle name>"),
                                            ("build", "default engines/<bundle name>-<precision>")])
def test_help_says_the_default_output(capsys, command, words):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert words in " ".join(capsys.readouterr().out.split())
