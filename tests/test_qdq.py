"""Q/DQ INT8 graphs: symmetric INT8 everywhere, placement by TensorRT's rules, clean for the
TensorRT lint, and run by the runtime with detections that mostly match FP32."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import textured_image
from detection_matching import found_objects

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
    # 79 Conv/Gemm in this MobileNetV3 FPN: over 50 says the loop below checks the network, not a few layers
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


def test_engine_layout_int8_bundle_runs_through_detector(int8_bundle):
    from edge_fpn import Detector
    from edge_fpn.bundle import load_manifest
    manifest = load_manifest(int8_bundle)
    assert manifest.layout == "engine" and list(manifest.stages) == ["detector"]
    detector = Detector(int8_bundle)
    image = textured_image(7, 240, 400)  # another frame size: letterboxed into the engine input
    inputs, letterbox = detector.preprocess(image)
    assert set(inputs) == {"image", "image_size"}
    # 240x400 scaled by 0.8 to 192x320, padded below: the size the graph is told its content has
    assert inputs["image"].dtype == np.uint8 and inputs["image"].shape == (1, 320, 320, 3)
    np.testing.assert_array_equal(inputs["image_size"], [192, 320])
    detections = detector.finish(detector.infer(inputs, letterbox)[0], letterbox)
    assert len(detections) > 0
    assert (detections.boxes[:, 2] <= 400 + 1e-3).all() and (detections.boxes[:, 3] <= 240 + 1e-3).all()
    # the steps one by one are what the Detector's call does. Not compared with the FP32 bundle
    # here: this random MobileNetV3 amplifies the Q/DQ rounding ~40x (see the accuracy test below)
    called = detector(image)
    np.testing.assert_array_equal(detections.scores, called.scores)
    np.testing.assert_array_equal(detections.boxes, called.boxes)
    np.testing.assert_array_equal(detections.labels, called.labels)


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
    assert len(convs) > 50  # 75 here: the loop below checks the backbone, FPN and RPN head, not a few layers
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
    assert fused >= 10  # 11 here (residual blocks and FPN top-down sums): the rule was met, not skipped
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


# The INT8 accuracy check, on the shipped (trained) shapes model: the random test networks answer
# nothing here (the MobileNetV3 test bundle amplifies any input perturbation about 40x; on the
# random shapes network INT8 and FP32 agree on only 50-90% of the detections whatever the Q/DQ
# graph does), a trained detector on held-out scenes is what the project's goal is stated on.
ACCURACY_CALIBRATION = 16  # synthetic scenes of the calibration seed (the demo uses 8, the README 128)
ACCURACY_SCENES = 100  # held-out scenes (DEFAULT_EVAL_SEED): the builder's default evaluation data
FOUND_FROM = 0.3  # the score from which a detection counts as finding an object


@pytest.mark.parametrize("layout", ["engine", "host"])
def test_int8_keeps_99_percent_of_fp32_ap_and_finds_what_fp32_finds(layout, shapes_bundle, tmp_path):
    """The shipped model, INT8 against FP32, both through the runtime on the same held-out scenes.

    Measured (ONNX Runtime CPU, 16 calibration scenes, 100 held-out scenes): AP 0.776 (engine)
    and 0.776 (host) against FP32's 0.779, i.e. 99.6%; of the 709 objects FP32 finds (IoU >= 0.5,
    same label, score >= 0.3), INT8 finds 707 (99.7%).
    """
    from edge_fpn import Detector
    from edge_fpn.evaluate import DEFAULT_EVAL_SEED, coco_metrics, detections_to_results, synthetic_data
    _, bundle = shapes_bundle(layout)  # the session's export: calibrate and build only read it
    cal, out = (str(tmp_path / name) for name in ("cal", "int8"))
    assert main(["calibrate", bundle, "--data", f"synthetic:{ACCURACY_CALIBRATION}", "--output", cal, "--quiet"]) == 0
    assert main(["build", bundle, "--precision", "int8", "--calibration", cal, "--backend", "onnxruntime",
                 "--eval-data", "none", "--output", out, "--quiet"]) == 0
    fp32, int8 = Detector(bundle), Detector(out)
    size = fp32.manifest.input_size
    images, coco = synthetic_data(ACCURACY_SCENES, DEFAULT_EVAL_SEED, size)
    results = {"fp32": [], "int8": []}
    found = {"fp32": [], "int8": []}
    for image_id, image in images:  # each scene's annotations are in `coco` once it is yielded
        truth = [a for a in coco["annotations"] if a["image_id"] == image_id]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in truth)], np.float32)
        labels = np.array([a["category_id"] for a in truth])
        for name, detector in (("fp32", fp32), ("int8", int8)):
            d = detector(image)
            results[name] += detections_to_results(image_id, d.boxes, d.scores, d.labels)
            found[name].append(found_objects(boxes, labels, (d.boxes, d.scores, d.labels), FOUND_FROM))
    ap = {name: coco_metrics(coco, results[name])["AP"] for name in results}
    # a sanity floor: the trained model scores 0.79 here; below 0.7 the comparison is of a broken model
    assert ap["fp32"] >= 0.7, ap
    # the project's goal: INT8 keeps at least 99% of FP32's AP on held-out scenes (measured 100.3%, INT8 0.796 against 0.794)
    assert ap["int8"] >= 0.99 * ap["fp32"], ap
    # and object by object: of what FP32 finds, INT8 finds at least 99% (measured 697-698 of 700);
    # an INT8 graph that lost 1% of FP32's objects (7 of ~700) fails this
    by_fp32, by_both = np.concatenate(found["fp32"]), np.concatenate(found["fp32"]) & np.concatenate(found["int8"])
    assert by_fp32.sum() >= 600, by_fp32.sum()  # enough objects for a 1% loss to be 7 of them
    assert by_both.sum() >= 0.99 * by_fp32.sum(), (int(by_both.sum()), int(by_fp32.sum()))
