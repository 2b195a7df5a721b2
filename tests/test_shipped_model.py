"""The shipped `shapes` model: exported through `--model shapes`, the FP32 bundle keeps PyTorch's AP."""
from __future__ import annotations

import json

import pytest

from edge_fpn.cli import main
from edge_fpn.evaluate import DEFAULT_EVAL_SEED, bundle_detect_fn, evaluate, synthetic_data, torch_detect_fn
from edge_fpn.model.shapes import load_shapes_model

EVAL_IMAGES = 100  # the README figures use 500; this keeps the suite short


@pytest.fixture(scope="module")
def shapes_bundle(shapes_bundle):
    """The session's `edge-fpn export --model shapes` bundle (conftest.py), by its folder."""
    return shapes_bundle("engine")[1]


def test_shapes_bundle_manifest(shapes_bundle):
    manifest = json.loads(open(f"{shapes_bundle}/manifest.json").read())
    assert manifest["architecture"] == "shapes"
    assert manifest["class_names"][1:] == ["circle", "square", "triangle", "star", "ring"]
    assert manifest["preprocess"]["input_size"] == [320, 320]
    assert [level["name"] for level in manifest["levels"] if level["pooled"]] == ["0", "1", "2", "3"]
    assert manifest["provenance"]["source_checkpoint_sha256"]


def test_fp32_bundle_ap_equals_pytorch_ap(shapes_bundle):
    detect, _, size = bundle_detect_fn(shapes_bundle)
    images, coco = synthetic_data(EVAL_IMAGES, DEFAULT_EVAL_SEED, size)
    bundle_ap = evaluate(detect, images, coco)
    images, coco = synthetic_data(EVAL_IMAGES, DEFAULT_EVAL_SEED, size)
    torch_ap = evaluate(torch_detect_fn(load_shapes_model(), size), images, coco)
    assert torch_ap["AP"] >= 0.70  # measured 0.794: the trained weights (an untrained model scores ~0)
    # measured equal (0.7936 both, 100 scenes): the same detections up to float rounding; 0.002 is room for a
    # rounding that moves one detection across a threshold, a real difference in the graph costs more
    assert abs(bundle_ap["AP"] - torch_ap["AP"]) <= 0.002, (bundle_ap, torch_ap)


def test_eval_cli_json_with_reference(shapes_bundle, capsys):
    assert main(["eval", shapes_bundle, "--synthetic", "8", "--json", "--reference", "shapes"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["bundle"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert abs(result["difference"]["AP"]) <= 0.01  # measured 0 on these 8 scenes (0.8202 both)


def test_a_retrained_checkpoint_exports_with_model_shapes(shapes_bundle, tmp_path):
    """`--model shapes --checkpoint FILE`: what `edge-fpn train` wrote, exported with the shipped
    model's classes and input size (here the shipped weights under another name: the same graph)."""
    import shutil

    from edge_fpn.model.shapes import SHAPES_WEIGHTS

    checkpoint = str(tmp_path / "retrained.pt")
    shutil.copy(SHAPES_WEIGHTS, checkpoint)
    out = tmp_path / "bundle"
    assert main(["export", "--model", "shapes", "--checkpoint", checkpoint, "--output", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    shipped = json.loads(open(f"{shapes_bundle}/manifest.json").read())
    assert manifest["provenance"]["source_checkpoint"] == checkpoint
    assert manifest["provenance"]["source_checkpoint_sha256"] == shipped["provenance"]["source_checkpoint_sha256"]
    assert manifest["class_names"] == shipped["class_names"]
    assert (out / "detector.onnx").read_bytes() == open(f"{shapes_bundle}/detector.onnx", "rb").read()


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a checkpoint", "is not a PyTorch checkpoint of weights"),
    ("foreign", "is not a checkpoint of the shapes model"),
])
def test_model_shapes_with_a_bad_checkpoint_is_one_line(tmp_path, capsys, content, message):
    checkpoint = tmp_path / "bad.pt"
    if content == "foreign":  # a real torch file of other weights
        import torch
        torch.save({"conv.weight": torch.zeros(2, 3)}, str(checkpoint))
    elif content is not None:
        checkpoint.write_bytes(content)
    assert main(["export", "--model", "shapes", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "b"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("output_is", ["the checkpoint", "its folder"])
def test_export_never_replaces_its_checkpoint_even_forced(tmp_path, capsys, output_is):
    import shutil

    from edge_fpn.model.shapes import SHAPES_WEIGHTS

    folder = tmp_path / "models"
    folder.mkdir()
    checkpoint = folder / "retrained.pt"
    shutil.copy(SHAPES_WEIGHTS, checkpoint)
    before = checkpoint.read_bytes()
    output = checkpoint if output_is == "the checkpoint" else folder
    assert main(["export", "--model", "shapes", "--checkpoint", str(checkpoint), "--output", str(output),
                 "--force", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "would replace the input" in err and len(err.splitlines()) == 1
    assert checkpoint.read_bytes() == before
