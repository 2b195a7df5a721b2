"""NVIDIA's own ONNX parser and builder on every graph edge-fpn writes (TensorRT-RTX, on the CPU).

What is parsed: 3 architectures (the shipped `shapes`, MobileNetV3-Large-320 FPN, ResNet-50 FPN at
320x320) x 2 layouts (engine, host) x the graph variants the builder hands to TensorRT: the FP32
export, the strongly typed FP16 graph of the TensorRT 11 path, the INT8 Q/DQ graph (TensorRT
8.5-10.x) and its FP16 form (TensorRT 11). Goal: zero parser errors on each.

What is built ahead of time for SM86 on the CPU: every graph without NonMaxSuppression, i.e. the
host layout's two stages, FP32, FP16 (typed) and INT8 (Q/DQ with FP16 around it), through
edge-fpn's own TensorRT 11 builder path with TensorRT-RTX in place of tensorrt.

TensorRT-RTX's gaps, and where each is worked around (not defects of edge-fpn):
- strongly typed only: every network here is STRONGLY_TYPED (nvidia_parser.network_flags), as on
  TensorRT 11; FP16 and INT8 come from the graphs, never from builder flags;
- its 1.7.1 parser does not find its own ROIAlign_TRT: edge_fpn/export/rtx_roialign.py registers
  a stand-in under that name and version, so the real RoiAlign importer runs (its fields are
  checked in test_tensorrt_rtx_plugin.py);
- it has no NMS kernels (TensorRT-RTX#5): the engine layout is parsed, never built here;
- its engine inspector needs a GPU (deserialize_cuda_engine returns None without a driver), so
  whether the INT8 convolutions fused cannot be asserted here.

The quantized graphs take a range of 1.0 for every activation instead of a calibration: the parser
and the builder see the same Q/DQ structure whatever the scales.
"""
from __future__ import annotations

import os

import onnx
import pytest

import tensorrt_rtx_support as rtx

if rtx.rtx() is None:
    pytest.skip("tensorrt-rtx is not installed (x86-64 Linux only: pip install -e '.[dev]')", allow_module_level=True)

from edge_fpn.builder.fp16 import convert_to_fp16  # noqa: E402
from edge_fpn.builder.qdq import plan_quantization, quantize_model  # noqa: E402
from edge_fpn.bundle import load_manifest  # noqa: E402

ARCHS = ["shapes", "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn"]
LAYOUTS = ["engine", "host"]
VARIANTS = ["fp32", "fp16", "qdq", "qdq_fp16"]  # as tensorrt_builder.BuildPlan.onnx_variant names them


@pytest.fixture(scope="module")
def shapes_bundles(shapes_bundle):
    return {layout: shapes_bundle(layout)[1] for layout in LAYOUTS}


@pytest.fixture(scope="module")
def variants(shapes_bundles, bundle_factory, tmp_path_factory):
    """(arch, layout) -> {variant: (ONNX path, StageSpec)} for every stage, written once."""
    cache = {}

    def get(arch, layout):
        if (arch, layout) not in cache:
            bundle = shapes_bundles[layout] if arch == "shapes" else bundle_factory(arch, layout=layout)[1]
            out = tmp_path_factory.mktemp(f"variants-{arch}-{layout}")
            cache[arch, layout] = _write_variants(bundle, str(out))
        return cache[arch, layout]
    return get


def _write_variants(bundle, out):
    manifest = load_manifest(bundle)
    result = {}
    for key, stage in manifest.stages.items():
        fp32 = os.path.join(bundle, stage.file)
        model = onnx.load(fp32)
        plan = plan_quantization(model, key)
        qdq, _ = quantize_model(model, plan, {tensor: 1.0 for tensor in plan.activation_tensors})
        paths = {"fp32": fp32}
        for variant, graph in (("fp16", convert_to_fp16(model)), ("qdq", qdq), ("qdq_fp16", convert_to_fp16(qdq))):
            paths[variant] = os.path.join(out, f"{key}.{variant}.onnx")
            onnx.save(graph, paths[variant])
        result[key] = {variant: (path, stage) for variant, path in paths.items()}
    return result


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_nvidia_parser_accepts_every_graph_edge_fpn_writes(variants, arch, layout):
    for key, by_variant in variants(arch, layout).items():
        for variant in VARIANTS:
            path, _ = by_variant[variant]
            ok, errors, summary = rtx.parse_onnx(path)
            assert ok and errors == [], f"{arch} {layout} {key} {variant}: {errors}"
            if layout == "engine":
                # one RPN NMS (levels as classes) and one final NMS, whatever the number of levels
                assert summary.layer_types.get("NMS") == 2, summary.layer_types
                assert [t for _, _, t in summary.inputs] == ["UINT8", "FLOAT"]  # image, image_size


@pytest.mark.slow
def test_nvidia_parser_accepts_the_batch_n_engine_graph(tmp_path):
    # `export --batch 4` on the shipped model: NMS with the batch axis, RoIAlign with per-image
    # batch indices, a MatMul that turns the selected rows into per-image kept masks
    from edge_fpn.export.onnx_export import ExportOptions, export_bundle
    from edge_fpn.model.loading import load_shipped_model

    model, meta = load_shipped_model("shapes")
    bundle = str(tmp_path / "batch4")
    export_bundle(model, meta["architecture"], meta["class_names"], tuple(meta["input_size"]), bundle,
                  ExportOptions(progress=False, batch=4))
    height, width = meta["input_size"]
    for variant, (path, _) in _write_variants(bundle, str(tmp_path))["detector"].items():
        ok, errors, summary = rtx.parse_onnx(path)
        assert ok and errors == [], f"batch 4 {variant}: {errors}"
        assert summary.layer_types.get("NMS") == 2, summary.layer_types
        assert [(shape, t) for _, shape, t in summary.inputs] == [((4, height, width, 3), "UINT8"), ((4, 2), "FLOAT")]
        assert [shape[0] for _, shape, _ in summary.outputs] == [4, 4, 4, 4]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_nms_free_graph_builds_for_sm86_on_the_cpu(variants, arch):
    # TensorRT 11's plan for each precision (tensorrt_builder.plan_build): fp32 parses the FP32
    # graph, fp16 the typed FP16 graph, int8 the Q/DQ graph in FP16
    for key, by_variant in variants(arch, "host").items():
        for precision, variant in (("fp32", "fp32"), ("fp16", "fp16"), ("int8", "qdq_fp16")):
            path, stage = by_variant[variant]
            plan = rtx.build_sm86(path, stage=stage, precision=precision)
            assert len(plan) > 10_000, f"{arch} {key} {precision}: a plan of {len(plan)} bytes"


def test_the_builders_tensorrt_11_path_writes_stage1_with_tensorrt_rtx(variants, tmp_path):
    from edge_fpn.builder.tensorrt_builder import TrtOptions, build_engines

    trt = rtx.rtx().trt
    path, stage = variants("shapes", "host")["stage1"]["fp16"]
    facts = build_engines(trt, {"stage1": stage}, {"stage1": path},
                          TrtOptions(precision="fp16", compute_capability="8.6"), str(tmp_path))
    assert facts["files"] == {"stage1": "stage1.engine"} and facts["onnx_variant"] == "fp16"
    assert facts["builder_flags"] == [] and facts["network_flags"] == ["STRONGLY_TYPED"]  # TensorRT 11's plan
    assert facts["tensorrt_version"] == trt.__version__
    assert os.path.getsize(tmp_path / "stage1.engine") > 1_000_000  # the backbone's weights are in it


def test_an_unknown_compute_capability_is_one_sentence(variants, tmp_path):
    from edge_fpn.builder.tensorrt_builder import TrtOptions, build_engines
    from edge_fpn.errors import EdgeFpnError

    path, stage = variants("shapes", "host")["stage1"]["fp32"]
    with pytest.raises(EdgeFpnError, match=r"cannot build ahead of time for compute capability 5.3 \(it knows .*SM86"):
        build_engines(rtx.rtx().trt, {"stage1": stage}, {"stage1": path},
                      TrtOptions(compute_capability="5.3"), str(tmp_path))


# ------------------------------------------------------------------------------------- check

def _old_default_engine(bundle, out):
    """The December 2026 default engine: the UINT8 image read by a Transpose before its Cast."""
    from onnx import helper

    model = onnx.load(os.path.join(bundle, "detector.onnx"))
    (cast,) = [n for n in model.graph.node if "image" in n.input]
    cast.input[0] = "image_moved"
    position = list(model.graph.node).index(cast)
    # an identity permutation keeps every shape after it: only the UINT8 input of a Transpose differs
    model.graph.node.insert(position, helper.make_node("Transpose", ["image"], ["image_moved"], name="/Transpose",
                                                       perm=[0, 1, 2, 3]))
    path = os.path.join(out, "detector.onnx")
    onnx.save(model, path)
    return path


def test_check_quotes_the_real_parser_on_a_rejected_graph(shapes_bundles, tmp_path, capsys):
    from edge_fpn.cli import main

    path = _old_default_engine(shapes_bundles["engine"], str(tmp_path))
    assert main(["check", path]) == 1
    out = capsys.readouterr().out.splitlines()
    # the table's rule first, then NVIDIA's parser in its own words, each one line naming the node
    assert out[0].startswith("uint8: node '/Transpose' (Transpose) reads the UINT8 tensor 'image'")
    parser_lines = [line for line in out if line.startswith("parser: ")]
    assert len(parser_lines) == 1, out
    assert parser_lines[0].startswith(f"parser: NVIDIA's parser ({rtx.rtx().label}) rejects node '/Transpose' "
                                      "(Transpose): ")
    assert "UInt8" in parser_lines[0] and "\n" not in parser_lines[0] and "cudaError" not in parser_lines[0]


def test_check_of_a_clean_bundle_says_which_parser_read_it(shapes_bundles, capsys):
    from edge_fpn.cli import main

    assert main(["check", shapes_bundles["engine"], "--target", "jetpack5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{shapes_bundles['engine']}: clean for jetpack5"
    assert f"parsed by NVIDIA's parser ({rtx.rtx().label}) after edge-fpn's rules for jetpack5" in out


# --------------------------------------------------------------- the fake learns from the real parser

def _agreement_graphs():
    """Small graphs, good and bad, that both parsers judge (names say which is which)."""
    from test_check import clean_conv_relu, detector_graph, make_model, tensor, uint8_into
    from onnx import TensorProto, helper

    cast_first = make_model([helper.make_node("Cast", ["image"], ["x"], name="/Cast", to=TensorProto.FLOAT),
                             helper.make_node("Transpose", ["x"], ["y"], name="/Transpose", perm=[0, 3, 1, 2])],
                            [tensor("image", TensorProto.UINT8, [1, 8, 8, 3])], [tensor("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    to_bytes = make_model([helper.make_node("Cast", ["x"], ["b"], name="/to_bytes", to=TensorProto.UINT8),
                           helper.make_node("Cast", ["b"], ["y"], name="/back", to=TensorProto.FLOAT)],
                          [tensor("x", TensorProto.FLOAT, [4])], [tensor("y", TensorProto.FLOAT, [4])])
    from test_check import graph_if, graph_loop, graph_nms, graph_scatter_nd, graph_topk, layer_norm

    # If, Loop and ScatterND are edge-fpn's policy (check refuses them), not the parser's
    more = {"good: If": graph_if(), "good: Loop": graph_loop(), "good: ScatterND": graph_scatter_nd(),
            "good: NonMaxSuppression": graph_nms(), "good: TopK with a constant K": graph_topk(),
            "good: LayerNormalization (TensorRT 10+)": layer_norm()}
    return {**more, "good: conv relu": clean_conv_relu(), "good: uint8 into a cast first": cast_first,
            "good: detector-shaped graph with TopK, NMS and RoiAlign": detector_graph(),
            "bad: uint8 into Transpose": uint8_into("Transpose"), "bad: uint8 into Identity": uint8_into("Identity"),
            "bad: uint8 intermediate tensor": to_bytes}


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_the_fake_parser_and_nvidias_agree(tmp_path, version):
    assert len(_agreement_graphs()) >= 10  # the bar: a shared set of at least 10 good and bad graphs
    from edge_fpn.export.nvidia_parser import parse
    from fakes.tensorrt import fake_tensorrt

    fake = fake_tensorrt(version)
    fake_parser = type(rtx.rtx())(fake, f"TensorRT {version}", False)
    for name, model in _agreement_graphs().items():
        path = str(tmp_path / (name.split(":")[1].strip().split(" (")[0].replace(" ", "_") + ".onnx"))
        onnx.save(model, path)
        real = parse(rtx.rtx(), path).errors
        ours = parse(fake_parser, path).errors
        assert (real == []) == name.startswith("good"), f"{name}: NVIDIA's parser said {real}"
        assert (ours == []) == (real == []), f"{name}: the fake said {ours}, NVIDIA's parser {real}"
        if real:  # both name the node the real parser stopped at
            assert ours[0][0] == real[0][0], (ours, real)
