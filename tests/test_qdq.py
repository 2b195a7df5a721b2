"""Q/DQ INT8 graphs: symmetric INT8 everywhere, placement by TensorRT's rules, clean for the
TensorRT lint, and run by the runtime with detections that mostly match FP32."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import TEST_SIZE, textured_image
from detection_matching import iou_matrix

from edge_fpn.cli import main


def _int8(bundle, root):
    cal = str(root / "cal")
    out = str(root / "int8")
    assert main(["calibrate", bundle, "--data", "synthetic:3", "--output", cal, "--quiet"]) == 0
    assert main(["build", bundle, "--precision", "int8", "--calibration", cal, "--backend", "onnxruntime",
                 "--eval-data", "none", "--output", out, "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory):
    """The engine layout (one "detector" graph), the default of `edge-fpn export`."""
    return _int8(tiny_bundle, tmp_path_factory.mktemp("qdq"))


@pytest.fixture(scope="module")
def int8_host_bundle(tiny_host_bundle, tmp_path_factory):
    return _int8(tiny_host_bundle, tmp_path_factory.mktemp("qdq-host"))


def _graph(path):
    import onnx
    return onnx.load(path)


@pytest.mark.parametrize("layout", ["engine", "host"])
def test_every_zero_point_is_int8_zero_and_scales_are_positive(layout, request):
    from onnx import TensorProto, numpy_helper
    from edge_fpn.bundle import load_manifest
    int8_bundle = request.getfixturevalue("int8_bundle" if layout == "engine" else "int8_host_bundle")
    for spec in load_manifest(int8_bundle).stages.values():
        stage = spec.file
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


def test_engine_layout_placement(int8_bundle, tiny_bundle):
    """One graph from pixels to detections: Q/DQ on every network Conv and Gemm (and residual Adds),
    nothing on the postprocessing part, nothing on the uint8 -> float preprocessing but the first
    convolution's input; otherwise the FP32 graph, node for node."""
    from onnx import helper, numpy_helper
    from edge_fpn.graph_names import is_postprocess_node
    model = _graph(os.path.join(int8_bundle, "detector.onnx"))
    source = _graph(os.path.join(tiny_bundle, "detector.onnx"))
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {t.name: t for t in model.graph.initializer}

    def from_dq(tensor):
        return tensor in producer and producer[tensor].op_type == "DequantizeLinear"

    qdq_ops = ("QuantizeLinear", "DequantizeLinear")
    assert sorted(n.name for n in nodes if n.op_type not in qdq_ops) == sorted(n.name for n in source.graph.node)
    weighted = [n for n in nodes if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) > 50 and not any(is_postprocess_node(n.name) for n in weighted)
    for node in weighted:
        assert from_dq(node.input[0]) and from_dq(node.input[1]), node.name
        dq = producer[node.input[1]]
        axis = helper.get_attribute_value(next(a for a in dq.attribute if a.name == "axis"))
        assert axis == 0 and numpy_helper.to_array(inits[dq.input[1]]).ndim == 1  # per output channel
    # no Q/DQ reads a postprocess node's output or feeds a postprocess node
    for node in nodes:
        if node.op_type == "QuantizeLinear" and node.input[0] in producer:
            assert not is_postprocess_node(producer[node.input[0]].name), node.name
        if node.op_type == "DequantizeLinear":
            assert all(not is_postprocess_node(c.name) and c.op_type in ("Conv", "Gemm", "Add")
                       for c in consumers[node.output[0]]), node.name
        if is_postprocess_node(node.name) or node.op_type in ("RoiAlign", "NonMaxSuppression", "TopK"):
            assert not any(from_dq(i) for i in node.input), node.name
    # the preprocessing (unscoped nodes before the backbone): only its last tensor, the first conv's input
    first_conv = next(n for n in nodes if n.op_type == "Conv")
    quantized_preprocessing = [n.input[0] for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] in producer
                               and producer[n.input[0]].name.count("/") == 1]
    assert quantized_preprocessing == [producer[producer[first_conv.input[0]].input[0]].input[0]]  # DQ <- Q <- it
    # the outputs (boxes, scores, labels, num_detections) are the FP32 graph's
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == \
        [(o.name, o.type.tensor_type.elem_type) for o in source.graph.output]


def test_engine_layout_int8_bundle_runs_through_detector(int8_bundle, tiny_bundle):
    from edge_fpn import Detector
    from edge_fpn.bundle import load_manifest
    manifest = load_manifest(int8_bundle)
    assert manifest.layout == "engine" and list(manifest.stages) == ["detector"]
    detector = Detector(int8_bundle)
    image = textured_image(7, 240, 400)  # another frame size: letterboxed into the engine input
    inputs, letterbox = detector.preprocess(image)
    assert set(inputs) == {"image", "image_size"}
    detections = detector.finish(detector.infer(inputs, letterbox)[0], letterbox)
    reference = Detector(tiny_bundle)(image)
    assert len(detections) > 0 and len(reference) > 0
    assert (detections.boxes[:, 2] <= 400 + 1e-3).all() and (detections.boxes[:, 3] <= 240 + 1e-3).all()


def test_placement_follows_tensorrt_rules(int8_host_bundle):
    """The host layout: stage 1 quantized throughout, stage 2 only on its box head."""
    from onnx import helper, numpy_helper
    int8_bundle = int8_host_bundle
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


@pytest.mark.parametrize("layout", ["engine", "host"])
def test_qdq_bundle_passes_the_tensorrt_lint(layout, request):
    from edge_fpn.bundle import load_manifest
    from edge_fpn.export.check import check_path
    int8_bundle = request.getfixturevalue("int8_bundle" if layout == "engine" else "int8_host_bundle")
    assert check_path(int8_bundle, "jetpack6.1") == []
    manifest = load_manifest(int8_bundle)
    expected = ({"detector": ("onnxruntime", "int8")} if layout == "engine"
                else {"stage1": ("onnxruntime", "int8"), "stage2": ("onnxruntime", "int8")})
    assert manifest.layout == layout
    assert {k: (s.backend, s.precision) for k, s in manifest.stages.items()} == expected
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
