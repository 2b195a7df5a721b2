"""The FP16 ONNX converter for strongly typed TensorRT builds: valid graphs, float32 I/O, RoIAlign
and the box arithmetic kept in float32, and the same outputs as FP32 to float16 precision (run with
ONNX Runtime, which computes the float16 graph on the CPU)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import TEST_SIZE, textured_image


@pytest.fixture(scope="module")
def feeds(tiny_bundle):
    from edge_fpn import Detector
    detector = Detector(tiny_bundle)
    tensor, letterbox = detector.preprocess(textured_image(11, *TEST_SIZE))
    outputs = detector.run_stage1(tensor)
    proposals = detector.propose(outputs, letterbox)
    assert len(proposals) > 10
    stage2 = {name: outputs[name] for name in detector.stage2_inputs if name in outputs}
    stage2["proposals"] = proposals
    return {"stage1": {"images": tensor}, "stage2": stage2}


@pytest.mark.parametrize("stage, tolerance", [("stage1", 0.05), ("stage2", 0.005)])
def test_fp16_graph_matches_fp32(tiny_bundle, feeds, stage, tolerance):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from edge_fpn.builder.fp16 import convert_to_fp16

    model = onnx.load(os.path.join(tiny_bundle, f"{stage}.onnx"))
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
