"""`edge-fpn check`: each construct TensorRT (or edge-fpn's policy) refuses is flagged, clean graphs pass.

The graphs are built with onnx.helper, small enough that the whole file runs in a few seconds.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_fpn.errors import EdgeFpnError
from edge_fpn.export import check
from edge_fpn.export.check import TARGETS, check_model, check_path

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def make_model(nodes: Sequence[Any], inputs: Sequence[Any], outputs: Sequence[Any],
               initializers: Sequence[Any] = (), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def tensor(name: str, elem_type: int, shape: Optional[Sequence[Any]]) -> Any:
    return helper.make_tensor_value_info(name, elem_type, shape)


def const(name: str, value: Any, dtype: Any = np.float32) -> Any:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def with_kind(findings: List[str], kind: str) -> List[str]:
    return [f for f in findings if f.startswith(kind + ":") or f": {kind}:" in f]


def clean_conv_relu() -> onnx.ModelProto:
    weight = const("w", np.zeros((8, 3, 3, 3)))
    return make_model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                       helper.make_node("Relu", ["c"], ["y"], name="relu")],
                      [tensor("x", FLOAT, [1, 3, 16, 16])], [tensor("y", FLOAT, [1, 8, 16, 16])], [weight])


# ------------------------------------------------------------------------------ forbidden operators

def graph_nonzero() -> onnx.ModelProto:
    return make_model([helper.make_node("NonZero", ["x"], ["y"], name="nz")],
                      [tensor("x", FLOAT, [2, 3])], [tensor("y", INT64, [2, "n"])])


def _branch(name: str, op: str) -> Any:
    return helper.make_graph([helper.make_node(op, ["x"], [name + "_out"])], name, [],
                             [tensor(name + "_out", FLOAT, [2, 3])])


def graph_if() -> onnx.ModelProto:
    node = helper.make_node("If", ["cond"], ["y"], name="if0",
                            then_branch=_branch("then", "Relu"), else_branch=_branch("else", "Neg"))
    return make_model([node], [tensor("cond", TensorProto.BOOL, []), tensor("x", FLOAT, [2, 3])],
                      [tensor("y", FLOAT, [2, 3])])


def graph_loop() -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Relu", ["s_in"], ["s_out"])],
        "body", [tensor("i", INT64, []), tensor("cond_in", TensorProto.BOOL, []), tensor("s_in", FLOAT, [2, 3])],
        [tensor("cond_out", TensorProto.BOOL, []), tensor("s_out", FLOAT, [2, 3])])
    node = helper.make_node("Loop", ["trips", "cond", "x"], ["y"], name="loop0", body=body)
    return make_model([node], [tensor("x", FLOAT, [2, 3])], [tensor("y", FLOAT, [2, 3])],
                      [const("trips", 3, np.int64), const("cond", True, np.bool_)])


def graph_scan() -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "row"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["scan_out"])],
        "body", [tensor("s_in", FLOAT, [3]), tensor("row", FLOAT, [3])],
        [tensor("s_out", FLOAT, [3]), tensor("scan_out", FLOAT, [3])])
    node = helper.make_node("Scan", ["init", "x"], ["final", "y"], name="scan0", body=body, num_scan_inputs=1)
    return make_model([node], [tensor("init", FLOAT, [3]), tensor("x", FLOAT, [4, 3])],
                      [tensor("final", FLOAT, [3]), tensor("y", FLOAT, [4, 3])])


def graph_scatter_nd() -> onnx.ModelProto:
    node = helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="snd")
    return make_model([node], [tensor("x", FLOAT, [4]), tensor("upd", FLOAT, [1])], [tensor("y", FLOAT, [4])],
                      [const("idx", [[1]], np.int64)])


def graph_scatter_elements() -> onnx.ModelProto:
    node = helper.make_node("ScatterElements", ["x", "idx", "upd"], ["y"], name="se", axis=0)
    return make_model([node], [tensor("x", FLOAT, [3, 3]), tensor("upd", FLOAT, [1, 3])], [tensor("y", FLOAT, [3, 3])],
                      [const("idx", [[0, 1, 2]], np.int64)])


def graph_nms() -> onnx.ModelProto:
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["keep"], name="nms")
    return make_model([node], [tensor("boxes", FLOAT, [1, 4, 4]), tensor("scores", FLOAT, [1, 1, 4])],
                      [tensor("keep", INT64, ["k", 3])],
                      [const("max_out", [2], np.int64), const("iou", [0.5])])


def graph_topk() -> onnx.ModelProto:
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk")
    return make_model([node], [tensor("x", FLOAT, [1, 10])],
                      [tensor("values", FLOAT, [1, 3]), tensor("indices", INT64, [1, 3])], [const("k", [3], np.int64)])


FORBIDDEN = {
    "NonZero": graph_nonzero, "If": graph_if, "Loop": graph_loop, "Scan": graph_scan,
    "ScatterND": graph_scatter_nd, "ScatterElements": graph_scatter_elements,
}


@pytest.mark.parametrize("op_type", sorted(FORBIDDEN))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_forbidden_op_is_flagged_as_policy(op_type, target):
    findings = with_kind(check_model(FORBIDDEN[op_type](), target), "forbidden-op")
    assert len(findings) == 1, findings
    assert f"({op_type})" in findings[0] and "forbidden by edge-fpn policy" in findings[0]


def test_forbidden_op_inside_a_subgraph_is_flagged():
    model = graph_if()
    then_branch = model.graph.node[0].attribute[0].g
    then_branch.node.append(helper.make_node("NonZero", ["x"], ["nz_inner"], name="hidden_nz"))
    findings = with_kind(check_model(model, "jetpack6.1"), "forbidden-op")
    assert any("'hidden_nz' (NonZero)" in f and "subgraph of node 'if0'" in f for f in findings), findings


# --------------------------------------------- the engine layout: TopK, NonMaxSuppression, RoiAlign

UINT8, INT32 = TensorProto.UINT8, TensorProto.INT32


def detector_graph(k: int = 10, k_from: str = "initializer", topk_name: str = "/proposals/TopK") -> onnx.ModelProto:
    """A small graph shaped like the engine layout's "detector" stage (graph_names): uint8 image and
    float image_size in; TopK, NonMaxSuppression reduced to a static mask, RoiAlign; float boxes and
    scores, int32 labels and num_detections out. Postprocessing nodes carry the /proposals/,
    /roi_pool/ and /detections/ scopes. Shared by the builder and FP16 tests."""
    count = 48  # 1 x 8 x 8 x 3 pixels, 4 per "box"
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], name="/backbone/Cast", to=FLOAT),
        helper.make_node("Mul", ["x", "scale"], ["xs"], name="/backbone/Mul"),
        helper.make_node("Transpose", ["xs"], ["features"], name="/backbone/Transpose", perm=[0, 3, 1, 2]),
        helper.make_node("Reshape", ["xs", "box_shape"], ["candidates"], name="/proposals/Reshape"),
        helper.make_node("ReduceMean", ["candidates"], ["objectness"], name="/proposals/ReduceMean", axes=[1], keepdims=0),
    ]
    inits = [const("scale", 1.0 / 255.0), const("box_shape", [-1, 4], np.int64), const("zero_batch", np.zeros(k), np.int64),
             const("max_out", [k], np.int64), const("iou", [0.5]), const("score_min", [-0.5]),
             const("arange", np.arange(k)[None, :], np.int64), const("two", [2], np.int64), const("three", [3], np.int64),
             const("axis1", [1], np.int64), const("one_shape", [1], np.int64)]
    inputs = [tensor("image", UINT8, [1, 8, 8, 3]), tensor("image_size", FLOAT, [2])]
    if k_from == "initializer":
        inits.append(const("k", [k], np.int64))
    elif k_from == "constant-node":
        nodes.append(helper.make_node("Constant", [], ["k"], name="/proposals/K", value=const("k_value", [k], np.int64)))
    else:  # torchvision's min(k, number of boxes), from Shape arithmetic
        inits.append(const("k_wanted", [k], np.int64))
        nodes += [helper.make_node("Shape", ["objectness"], ["n"], name="/proposals/Shape"),
                  helper.make_node("Min", ["n", "k_wanted"], ["k"], name="/proposals/Min")]
    nodes += [
        helper.make_node("TopK", ["objectness", "k"], ["top_scores", "top_index"], name=topk_name),
        helper.make_node("Gather", ["candidates", "top_index"], ["top_boxes"], name="/proposals/Gather", axis=0),
        helper.make_node("Unsqueeze", ["top_boxes", "zero_axis"], ["nms_boxes"], name="/proposals/Unsqueeze"),
        helper.make_node("Reshape", ["top_scores", "nms_score_shape"], ["nms_scores"], name="/proposals/Reshape_1"),
        helper.make_node("NonMaxSuppression", ["nms_boxes", "nms_scores", "max_out", "iou", "score_min"], ["selected"],
                         name="/proposals/NonMaxSuppression"),
        helper.make_node("Slice", ["selected", "two", "three", "axis1"], ["kept_index"], name="/proposals/Slice"),
        helper.make_node("Equal", ["kept_index", "arange"], ["hits"], name="/proposals/Equal"),
        helper.make_node("Cast", ["hits"], ["hits_f"], name="/proposals/Cast", to=FLOAT),
        helper.make_node("ReduceMax", ["hits_f"], ["kept"], name="/proposals/ReduceMax", axes=[0], keepdims=0),
        helper.make_node("RoiAlign", ["features", "top_boxes", "zero_batch"], ["pooled"], name="/roi_pool/RoiAlign",
                         output_height=2, output_width=2, sampling_ratio=2, spatial_scale=1.0),
        helper.make_node("ReduceMean", ["pooled"], ["pooled_mean"], name="/box_head/ReduceMean", axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["pooled_mean", "kept"], ["masked"], name="/detections/Mul"),
        helper.make_node("Add", ["masked", "top_scores"], ["scores"], name="/detections/Add"),
        helper.make_node("ReduceMax", ["image_size"], ["image_size_max"], name="/detections/ReduceMax", keepdims=1),
        helper.make_node("Min", ["top_boxes", "image_size_max"], ["boxes"], name="/detections/Min"),
        helper.make_node("Cast", ["kept"], ["labels"], name="/detections/Cast", to=INT32),
        helper.make_node("ReduceSum", ["labels", "one_axis"], ["total"], name="/detections/ReduceSum", keepdims=1),
        helper.make_node("Reshape", ["total", "one_shape"], ["num_detections"], name="/detections/Reshape"),
    ]
    inits += [const("zero_axis", [0], np.int64), const("nms_score_shape", [1, 1, k], np.int64), const("one_axis", [0], np.int64)]
    outputs = [tensor("boxes", FLOAT, [k, 4]), tensor("scores", FLOAT, [k]), tensor("labels", INT32, [k]),
               tensor("num_detections", INT32, [1])]
    return make_model(nodes, inputs, outputs, inits)


DETECTOR_STAGE = {"file": "detector.onnx", "backend": "onnxruntime", "precision": "fp32",
                  "inputs": [{"name": "image", "shape": [1, 8, 8, 3], "dtype": "uint8"},
                             {"name": "image_size", "shape": [2], "dtype": "float32"}],
                  "outputs": [{"name": "boxes", "shape": [10, 4], "dtype": "float32"},
                              {"name": "scores", "shape": [10], "dtype": "float32"},
                              {"name": "labels", "shape": [10], "dtype": "int32"},
                              {"name": "num_detections", "shape": [1], "dtype": "int32"}]}


def write_engine_bundle(directory: Any, model: onnx.ModelProto) -> str:
    """An engine-layout bundle (manifest layout "engine", one stage "detector") around `model`."""
    bundle = str(directory)
    onnx.save(model, os.path.join(bundle, "detector.onnx"))
    manifest = _manifest_dict("stage1.onnx", "stage2.onnx")
    manifest.update(format_version=2, layout="engine", stages={"detector": DETECTOR_STAGE},
                    preprocess={"input_size": [8, 8]})  # the graph's image is 8x8
    with open(os.path.join(bundle, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return bundle


def test_detector_graph_runs_in_onnxruntime():
    import onnxruntime as ort
    onnx.checker.check_model(detector_graph(), full_check=True)
    session = ort.InferenceSession(detector_graph().SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 255, (1, 8, 8, 3), dtype=np.uint8)
    boxes, scores, labels, count = session.run(None, {"image": image, "image_size": np.array([8, 8], np.float32)})
    assert boxes.shape == (10, 4) and labels.dtype == np.int32 and count.shape == (1,) and 0 < count[0] <= 10


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("k_from", ["initializer", "constant-node"])
def test_engine_graph_with_static_topk_nms_and_roi_align_is_clean(target, k_from):
    # TopK with a constant K and NonMaxSuppression import natively from TensorRT 8.5 (JetPack 5.1) on;
    # NMS's data-dependent row count is no finding while the graph reduces it to static outputs
    report = check.check_model_report(detector_graph(k_from=k_from), target)
    assert report.findings == []
    assert [note.split(":")[0] for note in report.notes] == ["plugin", "nms"]
    assert "'/roi_pool/RoiAlign' (RoiAlign)" in report.notes[0]
    assert "gets 10 boxes an image" in report.notes[1] and "at most 5000" in report.notes[1]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_topk_k_above_the_tensorrt_limit_is_refused(target):
    # ITopKLayer: 'Currently only values up to 3840 are supported' (TensorRT 8.x and 10.x)
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="/proposals/TopK")
    model = make_model([node], [tensor("x", FLOAT, [1, 5000])],
                       [tensor("values", FLOAT, [1, 4000]), tensor("indices", INT64, [1, 4000])],
                       [const("k", [4000], np.int64)])
    findings = with_kind(check_model(model, target), "topk")
    assert len(findings) == 1, findings
    assert "'/proposals/TopK' (TopK) has K = 4000, more than the 3840" in findings[0]
    assert f"TensorRT {TARGETS[target]} ({target})" in findings[0]
    at_limit = make_model([node], [tensor("x", FLOAT, [1, 5000])],
                          [tensor("values", FLOAT, [1, 3840]), tensor("indices", INT64, [1, 3840])],
                          [const("k", [3840], np.int64)])
    assert with_kind(check_model(at_limit, target), "topk") == []


def test_topk_k_computed_at_run_time_is_refused():
    findings = with_kind(check_model(detector_graph(k_from="shape"), "jetpack5"), "topk")
    assert len(findings) == 1 and "'/proposals/TopK' (TopK) takes K from 'k'" in findings[0], findings
    assert "computed at run time" in findings[0] and "imports TopK only with K as an initializer" in findings[0]
    # TensorRT 8.6 imports a dynamic K, but edge-fpn's engines stay static
    findings = with_kind(check_model(detector_graph(k_from="shape"), "jetpack6.1"), "topk")
    assert len(findings) == 1 and "initializer" not in findings[0] and "constant" in findings[0]


def test_topk_k_from_a_graph_input_is_refused():
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk")
    model = make_model([node], [tensor("x", FLOAT, [1, 10]), tensor("k", INT64, [1])],
                       [tensor("values", FLOAT, [1, "n"]), tensor("indices", INT64, [1, "n"])])
    assert with_kind(check_model(model, "jetpack6.1"), "topk")


def test_nms_whose_rows_reach_an_output_is_still_flagged():
    # NMS is allowed, its data-dependent row count is not an allowed output
    findings = check_model(graph_nms(), "jetpack6.1")
    assert findings and not with_kind(findings, "forbidden-op"), findings
    assert any("'keep'" in f for f in findings)


def test_roi_align_is_a_plugin_on_the_gpu_a_finding_only_for_the_dla():
    report = check.check_model_report(detector_graph(), "jetpack6.1")
    assert not report.findings
    note = report.notes[0]
    assert note.startswith("plugin: ") and "ROIAlign_TRT" in note and "init_libnvinfer_plugins" in note
    assert "runs on the GPU, not the DLA" in note
    dla = check.check_model_report(detector_graph(), "jetpack6.1", dla=True)
    assert len(dla.findings) == 1 and dla.findings[0].startswith("dla: ") and "GPU fallback" in dla.findings[0]


def test_dla_help_promises_only_what_check_reports():
    """--dla reports plugin layers only (they never run on the DLA); the other layers' DLA support is
    TensorRT's decision at build time, which the help and the docstrings must say, not promise more."""
    import argparse
    from edge_fpn.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices["check"]._actions if "--dla" in a.option_strings)
    for text in (action.help, check.check_path_report.__doc__, check._check_plugins.__doc__):
        words = " ".join(text.split())
        assert "plugin layers" in words and "build time" in words, words
        assert "only the GPU runs" not in words, words
    # as the help says: a graph of ordinary layers has no dla finding (TensorRT places them at build
    # time), and the detector's one plugin layer (RoiAlign) is its one dla finding
    assert check.check_model_report(clean_conv_relu(), "jetpack6.1", dla=True).findings == []
    findings = check.check_model_report(detector_graph(), "jetpack6.1", dla=True).findings
    assert len(findings) == 1 and findings[0].startswith("dla: ") and "ROIAlign_TRT" in findings[0]


def test_layouts_per_target(monkeypatch):
    for target in TARGETS:
        assert check.layouts_line(target) == "layouts: engine, host"
    table = json.loads(json.dumps(check.load_support_table()))
    old = dict(table["tensorrt"]["8.5"], not_importable=table["tensorrt"]["8.5"]["not_importable"] + ["NonMaxSuppression"])
    table["tensorrt"]["8.4"] = old
    table["jetpack"]["jetpack5.0"] = {"tensorrt": "8.4", "sources": ["test"]}
    monkeypatch.setattr(check, "load_support_table", lambda: table)
    monkeypatch.setitem(check.TARGETS, "jetpack5.0", "8.4")
    assert check.layouts_line("jetpack5.0") == "layouts: host only (TensorRT 8.4 (jetpack5.0) cannot import NonMaxSuppression)"


def test_engine_layout_bundle_is_checked_by_its_manifest(tmp_path):
    bundle = write_engine_bundle(tmp_path, detector_graph())
    report = check.check_path_report(bundle, "jetpack5")
    assert report.findings == [] and report.notes[0].startswith("detector.onnx: plugin: ")


def test_builder_check_raises_the_sentence_check_prints(tmp_path):
    bundle = write_engine_bundle(tmp_path, detector_graph(k_from="shape"))
    printed = check_path(bundle, "jetpack5")
    assert printed and printed[0].startswith("detector.onnx: topk: ")
    with pytest.raises(EdgeFpnError) as info:
        check.require_bundle_buildable(bundle, "8.5.2.2")
    more = len(printed) - 1  # the data-dependent sizes that follow from K
    assert str(info.value) == printed[0] + f" (and {more} more: `edge-fpn check {bundle}` lists them)"
    assert check.require_bundle_buildable(write_engine_bundle(tmp_path, detector_graph()), "10.3.0.30")[0].startswith(
        "detector.onnx: plugin: ")


def test_tensorrt_rules_for_the_machine_version():
    assert check.tensorrt_rules("10.3.0.30") == ("10.3", "TensorRT 10.3 (jetpack6.1)")
    assert check.tensorrt_rules("8.6.2") == ("8.6", "TensorRT 8.6 (jetpack6.0)")
    assert check.tensorrt_rules("10.8.0") == ("10.3", "TensorRT 10.8.0 (checked with the rules of 10.3)")
    assert check.tensorrt_rules("11.2.1")[0] == "10.13"
    with pytest.raises(EdgeFpnError, match="older than edge-fpn supports"):
        check.tensorrt_rules("8.4.1")


def test_check_cli_prints_findings_notes_and_layouts(tmp_path, capsys):
    from edge_fpn.cli import main
    bundle = write_engine_bundle(tmp_path, detector_graph())
    assert main(["check", bundle, "--target", "jetpack5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{bundle}: clean for jetpack5"
    assert any(line.startswith("note: detector.onnx: plugin: ") for line in out)
    assert out[-1] == "layouts: engine, host"
    assert main(["check", bundle, "--target", "jetpack5", "--dla"]) == 1
    assert capsys.readouterr().out.startswith("detector.onnx: dla: ")


# ---------------------------------------------------------------------------------- clean graphs

@pytest.mark.parametrize("target", sorted(TARGETS))
def test_clean_static_graph_has_no_findings(target):
    assert check_model(clean_conv_relu(), target) == []


def proposals_head() -> onnx.ModelProto:
    """Stage-2-like: rows follow the declared proposal axis through MatMul (and Reshape with -1)."""
    nodes = [helper.make_node("MatMul", ["proposals", "w"], ["hidden"], name="fc"),
             helper.make_node("Reshape", ["hidden", "shape"], ["flat"], name="flatten"),
             helper.make_node("Relu", ["flat"], ["scores"], name="relu")]
    return make_model(nodes, [tensor("proposals", FLOAT, ["R", 4])], [tensor("scores", FLOAT, ["R", 8])],
                      [const("w", np.zeros((4, 8))), const("shape", [-1, 8], np.int64)])


def test_declared_dynamic_axis_followed_by_outputs_passes():
    assert check_model(proposals_head(), "jetpack6.1", {"proposals": {0: (1, 1000)}}) == []


def test_output_may_be_declared_explicitly_too():
    declared = {"proposals": {0: (1, 1000)}, "scores": {0: (1, 1000)}}
    assert check_model(proposals_head(), "jetpack5", declared) == []


def test_clean_symmetric_qdq_passes():
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dq")]
    model = make_model(nodes, [tensor("x", FLOAT, [1, 4])], [tensor("y", FLOAT, [1, 4])],
                       [const("scale", 0.1), const("zp", 0, np.int8)])
    assert check_model(model, "jetpack6.1") == []


# --------------------------------------------------------------------------------- dynamic shapes

def test_undeclared_dynamic_input_is_flagged():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", FLOAT, ["batch", 3])],
                       [tensor("y", FLOAT, ["batch", 3])])
    findings = with_kind(check_model(model, "jetpack6.1"), "dynamic-dim")
    assert len(findings) == 1, findings  # the output follows the input: one cause, one line
    assert "axis 0 of input 'x'" in findings[0] and "'batch'" in findings[0] and "not declared" in findings[0]


def test_undeclared_dynamic_output_is_flagged():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", FLOAT, [2, 3])],
                       [tensor("y", FLOAT, ["rows", 3])])
    findings = with_kind(check_model(model, "jetpack6.1"), "dynamic-dim")
    assert len(findings) == 1 and "axis 0 of output 'y' is dynamic ('rows')" in findings[0], findings


def test_declared_axis_without_range_is_flagged():
    findings = check_model(proposals_head(), "jetpack6.1", {"proposals": {0: None}})
    assert any("axis 0 of input 'proposals'" in f and "without a valid [min, max] range" in f
               for f in with_kind(findings, "dynamic-dim")), findings


def test_declared_name_that_is_not_in_the_model_is_flagged():
    findings = check_model(proposals_head(), "jetpack6.1", {"proposals": {0: (1, 10)}, "rois": {0: (1, 10)}})
    assert any("'rois'" in f and "neither an input nor an output" in f for f in findings), findings


def test_data_dependent_output_is_flagged_with_its_origin():
    findings = with_kind(check_model(graph_nonzero(), "jetpack6.1"), "data-dependent-shape")
    assert any("tensor 'y' from node 'nz' (NonZero)" in f and "dimension 1" in f for f in findings), findings


def test_data_dependent_intermediate_is_reported_once_at_its_origin():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nz"),
             helper.make_node("Transpose", ["nz"], ["t"], name="t"),
             helper.make_node("Cast", ["t"], ["y"], name="cast", to=FLOAT)]
    model = make_model(nodes, [tensor("x", FLOAT, [2, 3])], [tensor("y", FLOAT, None)])
    findings = with_kind(check_model(model, "jetpack6.1"), "data-dependent-shape")
    assert len(findings) == 2, findings  # the origin (NonZero) and the output it reaches
    assert "tensor 'nz' from node 'nz' (NonZero)" in findings[0]
    assert "output 'y'" in findings[1]


# ------------------------------------------------------------------------------ opset, ops, INT64

def test_opset_newer_than_the_target_is_flagged():
    model = clean_conv_relu()
    model.opset_import[0].version = 21
    findings = with_kind(check_model(model, "jetpack5"), "opset")
    assert len(findings) == 1 and "opset 21" in findings[0] and "TensorRT 8.5" in findings[0] and "17" in findings[0]
    assert with_kind(check_model(model, "jetpack7"), "opset") == []


def layer_norm() -> onnx.ModelProto:
    node = helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], name="ln", axis=-1)
    return make_model([node], [tensor("x", FLOAT, [2, 8])], [tensor("y", FLOAT, [2, 8])],
                      [const("gamma", np.ones(8)), const("beta", np.zeros(8))])


def test_operator_the_parser_lacks_is_flagged_apart_from_policy():
    # onnx-tensorrt's changelog: LayerNormalization arrived in TensorRT 8.6 EA, after JetPack 5's 8.5
    findings = with_kind(check_model(layer_norm(), "jetpack5"), "unsupported-op")
    assert len(findings) == 1 and "'ln' (LayerNormalization)" in findings[0]
    assert "not importable by the ONNX parser of TensorRT 8.5" in findings[0] and "policy" not in findings[0]
    assert check_model(layer_norm(), "jetpack6.0") == []


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_roi_align_imports_on_every_target(target):
    # onnx-tensorrt's 8.5 operators.md and changelog: RoiAlign imports from TensorRT 8.5 GA on, so
    # stage 2 (multi-scale RoIAlign) fits JetPack 5.1 too; only TensorRT 8.4 (JetPack 5.0.2) lacked it
    node = helper.make_node("RoiAlign", ["features", "rois", "batch"], ["pooled"], name="roi_align",
                            output_height=7, output_width=7, sampling_ratio=2, spatial_scale=0.25)
    # batch_indices has one row per RoI, so it shares the declared proposal axis
    inputs = [tensor("features", FLOAT, [1, 8, 20, 20]), tensor("rois", FLOAT, ["R", 4]),
              tensor("batch", TensorProto.INT32, ["R"])]
    model = make_model([node], inputs, [tensor("pooled", FLOAT, ["R", 8, 7, 7])])
    assert check_model(model, target, {"rois": {0: (1, 100)}, "batch": {0: (1, 100)}}) == []


def test_custom_domain_op_is_flagged():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
    model = make_model([node], [tensor("x", FLOAT, [1, 3])], [tensor("y", FLOAT, [1, 3])])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    findings = with_kind(check_model(model, "jetpack6.1"), "unsupported-op")
    assert len(findings) == 1 and "'com.microsoft'" in findings[0] and "plugin" in findings[0]


def test_int64_graph_input_is_flagged():
    nodes = [helper.make_node("Cast", ["idx"], ["y"], name="cast", to=FLOAT)]
    model = make_model(nodes, [tensor("idx", INT64, [1, 4])], [tensor("y", FLOAT, [1, 4])])
    for target, effect in (("jetpack5", "casts it to INT32"), ("jetpack6.1", "keeps it INT64")):
        findings = with_kind(check_model(model, target), "int64")
        assert len(findings) == 1 and "input 'idx' is INT64" in findings[0] and effect in findings[0], findings


def test_large_int64_initializer_is_flagged_small_one_is_not():
    nodes = [helper.make_node("Gather", ["x", "big"], ["g"], name="gather_big"),
             helper.make_node("Gather", ["x", "small"], ["y"], name="gather_small")]
    model = make_model(nodes, [tensor("x", FLOAT, [5000])], [tensor("g", FLOAT, [5000]), tensor("y", FLOAT, [4])],
                       [const("big", np.arange(5000), np.int64), const("small", np.arange(4), np.int64)])
    findings = with_kind(check_model(model, "jetpack6.1"), "int64")
    assert len(findings) == 1 and "constant 'big' holds 5000 INT64 values" in findings[0], findings


# -------------------------------------------------------------------------------------------- Q/DQ

def qdq_pair(zero_point: Any, dtype: Any) -> onnx.ModelProto:
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dq")]
    return make_model(nodes, [tensor("x", FLOAT, [1, 4])], [tensor("y", FLOAT, [1, 4])],
                      [const("scale", 0.1), const("zp", zero_point, dtype)])


def test_qdq_nonzero_zero_point_is_flagged():
    findings = with_kind(check_model(qdq_pair(3, np.int8), "jetpack6.1"), "qdq")
    assert len(findings) == 2, findings  # once for Q, once for DQ
    assert all("zero point 'zp'" in f and "holds 3, not 0" in f for f in findings)
    assert "node 'q' (QuantizeLinear)" in findings[0] and "node 'dq' (DequantizeLinear)" in findings[1]


def test_qdq_zero_point_in_a_constant_node_is_read():
    model = qdq_pair(0, np.int8)
    model.graph.initializer.pop()  # zp moves from an initializer into a Constant node
    model.graph.node.insert(0, helper.make_node("Constant", [], ["zp"], value=const("v", [0, 5, 0, 0], np.int8)))
    findings = with_kind(check_model(model, "jetpack6.1"), "qdq")
    assert findings and all("holds 5, not 0" in f for f in findings), findings


def test_qdq_uint8_zero_point_is_flagged_even_when_zero():
    findings = with_kind(check_model(qdq_pair(0, np.uint8), "jetpack6.1"), "qdq")
    assert findings and all("is uint8" in f and "symmetric INT8" in f for f in findings), findings


def test_quantize_without_zero_point_is_flagged():
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "scale"], ["y"], name="dq")]
    model = make_model(nodes, [tensor("x", FLOAT, [1, 4])], [tensor("y", FLOAT, [1, 4])], [const("scale", 0.1)])
    findings = with_kind(check_model(model, "jetpack6.1"), "qdq")
    assert len(findings) == 1 and "no zero point" in findings[0] and "uint8" in findings[0], findings


# ------------------------------------------------------------------------------ files and bundles

def _manifest_dict(stage1: str, stage2: str) -> Dict[str, Any]:
    stage2_spec = {"file": stage2, "backend": "onnxruntime", "precision": "fp32",
                   "inputs": [{"name": "proposals", "shape": ["num_proposals", 4]}],
                   "outputs": [{"name": "scores", "shape": ["num_proposals", 8]}],
                   "dynamic_axes": {"num_proposals": [1, 1000]}}
    return {
        "format_version": 1, "name": "t", "architecture": "test", "class_names": ["__background__", "a"],
        "preprocess": {"input_size": [16, 16]}, "levels": [],
        "rpn": {"pre_nms_top_n": 10, "post_nms_top_n": 1000, "nms_thresh": 0.7, "score_thresh": 0.0},
        "roi": {"score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 100},
        "stages": {"stage1": {"file": stage1, "backend": "onnxruntime", "precision": "fp32",
                              "inputs": [{"name": "x", "shape": [1, 3, 16, 16]}],
                              "outputs": [{"name": "y", "shape": [1, 8, 16, 16]}]},
                   "stage2": stage2_spec},
    }


def write_bundle(directory: Any, stage1: onnx.ModelProto, stage2: Optional[onnx.ModelProto]) -> str:
    bundle = str(directory)
    onnx.save(stage1, os.path.join(bundle, "stage1.onnx"))
    stage2_file = "stage2.onnx" if stage2 is not None else "stage2.engine"
    if stage2 is not None:
        onnx.save(stage2, os.path.join(bundle, stage2_file))
    else:
        with open(os.path.join(bundle, stage2_file), "wb") as f:
            f.write(b"not an onnx file: a serialized engine")
    with open(os.path.join(bundle, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(_manifest_dict("stage1.onnx", stage2_file), f)
    return bundle


def test_bundle_with_declared_dynamic_axis_is_clean(tmp_path):
    assert check_path(write_bundle(tmp_path, clean_conv_relu(), proposals_head()), "jetpack6.1") == []


def test_bundle_findings_carry_the_stage_file_and_engines_are_skipped(tmp_path):
    findings = check_path(write_bundle(tmp_path, graph_nonzero(), None), "jetpack6.1")
    assert findings and all(f.startswith("stage1.onnx: ") for f in findings), findings
    assert any("(NonZero)" in f for f in findings)


def test_bundle_dynamic_axis_without_range_is_flagged(tmp_path):
    bundle = write_bundle(tmp_path, clean_conv_relu(), proposals_head())
    manifest = _manifest_dict("stage1.onnx", "stage2.onnx")
    manifest["stages"]["stage2"]["dynamic_axes"] = {}
    with open(os.path.join(bundle, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    findings = check_path(bundle, "jetpack6.1")
    assert any(f.startswith("stage2.onnx: dynamic-dim: axis 0 of input 'proposals'") and "range" in f
               for f in findings), findings


def test_onnx_file_path_is_checked(tmp_path):
    path = str(tmp_path / "model.onnx")
    onnx.save(graph_nonzero(), path)
    assert with_kind(check_path(path, "jetpack6.1"), "forbidden-op")


@pytest.mark.parametrize("make_path, message", [
    (lambda d: str(d / "missing.onnx"), "does not exist"),
    (lambda d: _write(d / "corrupt.onnx", b"\x08\x07garbage\xff\xff"), "not a readable ONNX model"),
    (lambda d: _write(d / "empty.onnx", b""), "empty or not an ONNX model"),
    (lambda d: _write(d / "model.engine", b"engine"), "serialized TensorRT engine"),
    (lambda d: str(d), "manifest.json is missing"),
])
def test_bad_paths_raise_one_sentence(tmp_path, make_path, message):
    with pytest.raises(EdgeFpnError, match=message):
        check_path(make_path(tmp_path), "jetpack6.1")


def _write(path: Any, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(EdgeFpnError) as info:
        check_model(clean_conv_relu(), "jetpack4")
    assert all(name in str(info.value) for name in TARGETS)


# ---------------------------------------------------------------------------------------- the table

def test_targets_and_table_agree():
    assert TARGETS == {"jetpack5": "8.5", "jetpack6.0": "8.6", "jetpack6.1": "10.3", "jetpack7": "10.13"}
    table = check.load_support_table()
    assert set(table["policy"]["forbidden"]) >= set(FORBIDDEN)
    assert not set(table["policy"]["forbidden"]) & {"TopK", "NonMaxSuppression", "RoiAlign"}
    for version in TARGETS.values():
        entry = table["tensorrt"][version]
        assert entry["sources"] and entry["max_opset"] >= 17 and entry["int64"] in ("cast-to-int32", "native")
        assert not {"RoiAlign", "NonMaxSuppression", "TopK"} & set(entry["not_importable"])
        assert entry["topk_max_k"] == 3840 and entry["plugin_ops"] == {"RoiAlign": "ROIAlign_TRT"}
    assert table["tensorrt"]["8.5"]["topk_dynamic_k"] is False  # the 8.5 parser: 'K input must be an initializer'
    for target in table["jetpack"].values():
        assert target["sources"]


@pytest.mark.slow
def test_exported_bundle_is_clean_for_every_target(tiny_bundle):
    # export_bundle lints for jetpack6.1 itself; the other targets must accept the same graphs
    for target in sorted(TARGETS):
        assert check_path(tiny_bundle, target) == [], target


# ------------------------------------------------------------------------------------------ UINT8

def uint8_into(op: str) -> onnx.ModelProto:
    """The December 2026 default engine's first node: the UINT8 image read by a Transpose (or by `op`)."""
    attrs = {"perm": [0, 3, 1, 2]} if op == "Transpose" else {}
    nodes = [helper.make_node(op, ["image"], ["moved"], name="/Transpose" if op == "Transpose" else "/first", **attrs),
             helper.make_node("Cast", ["moved"], ["y"], name="/Cast", to=FLOAT)]
    shape = [1, 3, 8, 8] if op == "Transpose" else [1, 8, 8, 3]
    return make_model(nodes, [tensor("image", UINT8, [1, 8, 8, 3])], [tensor("y", FLOAT, shape)])


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("op", ["Transpose", "Identity"])
def test_uint8_into_anything_but_a_cast_is_refused_with_the_node(target, op):
    findings = with_kind(check_model(uint8_into(op), target), "uint8")
    name = "/Transpose" if op == "Transpose" else "/first"
    assert findings and findings[0].startswith(f"uint8: node '{name}' ({op}) reads the UINT8 tensor 'image'"), findings
    # the shipped layout's order: Cast first, then Transpose in float, passes
    assert with_kind(check_model(detector_graph(), target), "uint8") == []


def test_a_uint8_intermediate_tensor_is_refused():
    nodes = [helper.make_node("Cast", ["x"], ["bytes"], name="/to_bytes", to=UINT8),
             helper.make_node("Cast", ["bytes"], ["y"], name="/back", to=FLOAT)]
    model = make_model(nodes, [tensor("x", FLOAT, [4])], [tensor("y", FLOAT, [4])])
    assert with_kind(check_model(model), "uint8") == [
        "uint8: node '/to_bytes' (Cast) writes the UINT8 intermediate tensor 'bytes', which TensorRT 10.3 (jetpack6.1) "
        "refuses (UINT8 is for network inputs and outputs only); keep it float or INT32"]


def test_nms_over_more_boxes_than_tensorrt_considers_is_a_finding():
    boxes = 5001  # one more than INMSLayer considers an image (NVIDIA's NMS operator page)
    nodes = [helper.make_node("NonMaxSuppression", ["b", "s", "m"], ["sel"], name="/proposals/NonMaxSuppression")]
    model = make_model(nodes, [tensor("b", FLOAT, [1, boxes, 4]), tensor("s", FLOAT, [1, 5, boxes])],
                       [tensor("sel", INT64, ["n", 3])], [const("m", [10], np.int64)])
    findings = with_kind(check_model(model), "nms")
    assert len(findings) == 1 and "gets 5001 boxes an image" in findings[0] and "only the best 5000" in findings[0]


# ------------------------------------------------------------------------ NVIDIA's parser, absent

def test_a_broken_parser_install_is_one_warning_and_check_uses_the_table(tmp_path, capsys, monkeypatch):
    import importlib
    import sys
    from edge_fpn.cli import main

    real_import = importlib.import_module

    def broken(name, *args):
        if name == "tensorrt_rtx_bindings":
            raise OSError("libtensorrt_rtx.so.1: cannot open shared object file")
        return real_import(name, *args)

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT here either
    monkeypatch.setattr(importlib, "import_module", broken)
    bundle = write_engine_bundle(tmp_path, detector_graph())
    assert main(["check", bundle, "--target", "jetpack5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("warning: tensorrt_rtx_bindings is installed but cannot be used (OSError: "
                             "libtensorrt_rtx.so.1") and out[0].endswith("checking with edge-fpn's table only")
    assert out[1] == f"{bundle}: clean for jetpack5" and not any("NVIDIA's parser (" in line for line in out)


def test_without_any_parser_check_says_it_used_the_table_only(tmp_path, capsys, monkeypatch):
    import sys
    from edge_fpn.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", None)
    bundle = write_engine_bundle(tmp_path, detector_graph())
    assert main(["check", bundle]) == 0
    out = capsys.readouterr().out
    assert "note: no NVIDIA parser here" in out and "table of TensorRT rules only" in out
