"""Q/DQ INT8 graphs: symmetric INT8 everywhere, placement by TensorRT's rules, clean for the
TensorRT lint, and run by the runtime with detections that mostly match FP32."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import TEST_SIZE, textured_image
from detection_matching import iou_matrix

from edge_fpn.cli import main


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("qdq")
    cal = str(root / "cal")
    out = str(root / "int8")
    assert main(["calibrate", tiny_bundle, "--data", "synthetic:3", "--output", cal, "--quiet"]) == 0
    assert main(["build", tiny_bundle, "--precision", "int8", "--calibration", cal, "--backend", "onnxruntime",
                 "--eval-data", "none", "--output", out, "--quiet"]) == 0
    return out


def _graph(path):
    import onnx
    return onnx.load(path)


def test_every_zero_point_is_int8_zero_and_scales_are_positive(int8_bundle):
    from onnx import TensorProto, numpy_helper
    for stage in ("stage1.onnx", "stage2.onnx"):
        model = _graph(os.path.join(int8_bundle, stage))
        inits = {t.name: t for t in model.graph.initializer}
        qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert qdq, stage
        for node in qdq:
            assert len(node.input) == 3, node.name
            zero_point = inits[node.input[2]]
            assert zero_point.data_type == TensorProto.INT8
            assert not numpy_helper.to_array(zero_point).any()
            scale = numpy_helper.to_array(inits[node.input[1]])
            assert scale.dtype == np.float32 and (scale > 0).all()


def test_placement_follows_tensorrt_rules(int8_bundle):
    from onnx import helper, numpy_helper
    model = _graph(os.path.join(int8_bundle, "stage1.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}

    def from_dq(tensor):
        return tensor in producer and producer[tensor].op_type == "DequantizeLinear"

    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) > 50
    for conv in convs:
        assert from_dq(conv.input[0]) and from_dq(conv.input[1]), conv.name
        dq = producer[conv.input[1]]
        axis = helper.get_attribute_value(next(a for a in dq.attribute if a.name == "axis"))
        q = producer[dq.input[0]]
        weight = numpy_helper.to_array(inits[q.input[0]])
        assert axis == 0 and numpy_helper.to_array(inits[dq.input[1]]).shape == (weight.shape[0],)
        assert weight.dtype == np.float32  # float weights behind Q->DQ, as TensorRT 8.x imports them
        if len(conv.input) > 2:
            assert conv.input[2] in inits and inits[conv.input[2]].data_type == 1  # biases stay float
    # a residual Add gets its non-conv input quantized, its conv input left for TensorRT to fuse
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    fused = 0
    for add in adds:
        kinds = [producer[i].op_type if i in producer else "input" for i in add.input]
        if "Conv" in kinds:
            other = add.input[1] if kinds[0] == "Conv" else add.input[0]
            assert from_dq(other), add.name
            fused += 1
    assert fused >= 10
    # nothing quantized at the outputs of the stage
    assert not any(from_dq(o.name) for o in model.graph.output)

    stage2 = _graph(os.path.join(int8_bundle, "stage2.onnx"))
    producer2 = {o: n for n in stage2.graph.node for o in n.output}
    for node in stage2.graph.node:
        if node.op_type == "RoiAlign":
            assert all(producer2.get(i) is None or producer2[i].op_type != "DequantizeLinear" for i in node.input)
        if node.op_type == "Gemm":
            assert producer2[node.input[0]].op_type == "DequantizeLinear"
            dq = producer2[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            assert helper.get_attribute_value(next(a for a in dq.attribute if a.name == "axis")) == 0  # transB=1
    quantize = [n for n in stage2.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) == 3 + 4  # 3 activations (fc6, fc7, predictor input) + 4 weights


def test_qdq_bundle_passes_the_tensorrt_lint(int8_bundle):
    from edge_fpn.bundle import load_manifest
    from edge_fpn.export.check import check_path
    assert check_path(int8_bundle, "jetpack6.1") == []
    manifest = load_manifest(int8_bundle)
    assert {k: (s.backend, s.precision) for k, s in manifest.stages.items()} == {
        "stage1": ("onnxruntime", "int8"), "stage2": ("onnxruntime", "int8")}
    build = manifest.provenance["build"]
    assert build["precision"] == "int8" and build["calibration"]["method"] == "entropy"
    assert len(build["source_bundle_hash"]) == 64 and len(build["calibration"]["ranges_sha256"]) == 64


def _loose_share(ref, ours, min_score, min_iou=0.5, max_score_diff=0.15):
    """Share of ref's detections (score >= min_score) with a detection in ours of the same label."""
    ref_boxes, ref_scores, ref_labels = ref
    our_boxes, our_scores, our_labels = ours
    wanted = np.nonzero(ref_scores >= min_score)[0]
    if wanted.size == 0 or len(our_boxes) == 0:
        return 1.0 if wanted.size == 0 else 0.0
    ious = iou_matrix(ref_boxes, our_boxes)
    hits = [((our_labels == ref_labels[i]) & (ious[i] >= min_iou) & (np.abs(our_scores - ref_scores[i]) <= max_score_diff)).any()
            for i in wanted]
    return float(np.mean(hits))


def test_int8_detections_mostly_match_fp32(bundle_factory, tmp_path):
    """On the small ResNet of the shapes architecture (random weights made meaningful).

    Not on the MobileNetV3 test bundle: with random weights it amplifies any input perturbation
    about 40x (quantizing only its input image to 8 bits moves every output by ~40%), so its INT8
    detections say nothing about the Q/DQ graphs; this network moves its outputs ~4% for the same.
    """
    from edge_fpn import Detector
    _, bundle = bundle_factory("shapes")
    cal, out = str(tmp_path / "cal"), str(tmp_path / "int8")
    assert main(["calibrate", bundle, "--data", "synthetic:6", "--output", cal, "--quiet"]) == 0
    assert main(["build", bundle, "--precision", "int8", "--calibration", cal, "--backend", "onnxruntime",
                 "--eval-data", "none", "--output", out, "--quiet"]) == 0
    fp32, int8 = Detector(bundle), Detector(out)
    shares = []
    for seed in (4, 5, 6):
        image = textured_image(seed, *TEST_SIZE)
        a, b = fp32(image), int8(image)
        assert len(a) >= 20 and len(b) >= 20
        shares.append(_loose_share((a.boxes, a.scores, a.labels), (b.boxes, b.scores, b.labels), 0.3))
    assert np.mean(shares) >= 0.6, shares
