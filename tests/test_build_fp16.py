"""The FP16 ONNX converter for strongly typed TensorRT builds: valid graphs, float32 I/O, RoIAlign
and the box arithmetic kept in float32, and the same outputs as FP32 to float16 precision (run with
ONNX Runtime, which computes the float16 graph on the CPU)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import TEST_SIZE, textured_image


@pytest.fixture(scope="module")
def feeds(tiny_host_bundle):
    from edge_fpn import Detector
    detector = Detector(tiny_host_bundle)
    tensor, letterbox = detector.preprocess(textured_image(11, *TEST_SIZE))
    outputs = detector.run_stage1(tensor)
    proposals = detector.propose(outputs, letterbox)
    assert len(proposals) > 10
    stage2 = {name: outputs[name] for name in detector.stage2_inputs if name in outputs}
    stage2["proposals"] = proposals
    return {"stage1": {"images": tensor}, "stage2": stage2}


@pytest.mark.parametrize("stage, tolerance", [("stage1", 0.05), ("stage2", 0.005)])
def test_fp16_graph_matches_fp32(tiny_host_bundle, feeds, stage, tolerance):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from edge_fpn.builder.fp16 import convert_to_fp16

    model = onnx.load(os.path.join(tiny_host_bundle, f"{stage}.onnx"))
    half = convert_to_fp16(model)
    onnx.checker.check_model(half)
    onnx.shape_inference.infer_shapes(half, strict_mode=True)
    assert all(i.type.tensor_type.elem_type == TensorProto.FLOAT for i in half.graph.input)
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in half.graph.output)
    weights = [t for t in half.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    inferred = onnx.shape_inference.infer_shapes(half)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    for node in half.graph.node:
        if node.op_type == "RoiAlign":
            assert all(types.get(i, TensorProto.FLOAT) == TensorProto.FLOAT for i in node.input[:2])
        if node.op_type in ("Sqrt", "Log"):  # the FPN level of each box, from its area
            assert types[node.output[0]] == TensorProto.FLOAT
    options = ort.SessionOptions()
    options.log_severity_level = 3
    reference = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    converted = ort.InferenceSession(half.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = reference.run(None, feeds[stage])
    got = converted.run(None, feeds[stage])
    for a, b in zip(expected, got):
        assert b.dtype == np.float32
        assert np.abs(a - b).max() <= tolerance * np.abs(a).max()


def test_fp16_graph_keeps_the_engine_layout_postprocessing_float32():
    """TensorRT 11 takes each layer's precision from the graph (strong typing): the FP16 ONNX must
    keep the postprocessing scopes float32 itself, with Casts where the network meets them."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from edge_fpn.builder.fp16 import convert_to_fp16
    from edge_fpn.graph_names import is_postprocess_node
    from test_check import detector_graph

    model = detector_graph()
    half = convert_to_fp16(model)
    onnx.checker.check_model(half)
    inferred = onnx.shape_inference.infer_shapes(half, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in half.graph.initializer})
    post = [n for n in half.graph.node if is_postprocess_node(n.name)]
    assert len(post) == sum(is_postprocess_node(n.name) for n in model.graph.node)
    for node in post:
        for name in list(node.input) + list(node.output):
            assert not name or types.get(name) != TensorProto.FLOAT16, (node.name, name)
    assert types["xs"] == TensorProto.FLOAT16 and types["pooled_mean"] == TensorProto.FLOAT16  # the network is FP16
    producers = {o: n for n in half.graph.node for o in n.output}
    boundary = {i for n in post for i in n.input if i in producers and producers[i].op_type == "Cast"
                and not is_postprocess_node(producers[i].name)}
    assert boundary, "Casts to float32 where FP16 layers feed the postprocessing"
    assert [i.elem_type for i in (v.type.tensor_type for v in half.graph.input)] == [TensorProto.UINT8, TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [TensorProto.FLOAT, TensorProto.FLOAT,
                                                                          TensorProto.INT32, TensorProto.INT32]
    image = np.random.default_rng(3).integers(0, 255, (1, 8, 8, 3), dtype=np.uint8)
    feeds = {"image": image, "image_size": np.array([8, 8], np.float32)}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    expected = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(half.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(expected, got):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=5e-3, atol=5e-3)


def test_fp16_engine_layout_graph_runs_and_keeps_its_postprocessing_float32(tiny_bundle):
    """The exported engine-layout graph (TopK, NonMaxSuppression, RoiAlign, int32 outputs) converted
    for TensorRT 11: the network in float16, every postprocessing node float32, the same detections."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from edge_fpn import Detector
    from edge_fpn.builder.fp16 import convert_to_fp16
    from edge_fpn.graph_names import is_postprocess_node

    model = onnx.load(os.path.join(tiny_bundle, "detector.onnx"))
    half = convert_to_fp16(model)
    onnx.checker.check_model(half)
    inferred = onnx.shape_inference.infer_shapes(half)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    post = [n for n in half.graph.node if is_postprocess_node(n.name)]
    assert post and not [n.name for n in post if any(types.get(o) == TensorProto.FLOAT16 for o in n.output)]
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert convs and all(types.get(n.output[0]) == TensorProto.FLOAT16 for n in convs)
    from detection_matching import matched_share

    detector = Detector(tiny_bundle)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    full = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reduced = ort.InferenceSession(half.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def detections(outputs):
        count = int(outputs["num_detections"][0])
        return outputs["boxes"][:count], outputs["scores"][:count], outputs["labels"][:count]

    forward, backward = [], []
    for seed in (11, 12, 13):
        inputs, _ = detector.preprocess(textured_image(seed, *TEST_SIZE))
        inputs = {name: np.array(value) for name, value in inputs.items()}
        expected = dict(zip([o.name for o in model.graph.output], full.run(None, inputs)))
        got = dict(zip([o.name for o in half.graph.output], reduced.run(None, inputs)))
        assert {k: v.dtype for k, v in got.items()} == {k: v.dtype for k, v in expected.items()}
        assert int(expected["num_detections"][0]) > 0
        # the FP16 tolerance: float16's 11-bit significand moves the network's outputs by up to 5%
        # of their range (test_fp16_graph_matches_fp32), so a score moves by a few hundredths and a
        # box by a pixel or two; candidates near the top-100 cut can swap. IoU >= 0.9 and |score
        # difference| <= 0.05, one to one, both ways, on every detection the model keeps
        forward.append(matched_share(detections(expected), detections(got), 0.05, 0.9, 0.05))
        backward.append(matched_share(detections(got), detections(expected), 0.05, 0.9, 0.05))
    # measured 0.99-1.0 on these scenes; a postprocessing step left in float16 or an overflow loses far more
    assert min(forward) >= 0.95 and min(backward) >= 0.95, (forward, backward)
