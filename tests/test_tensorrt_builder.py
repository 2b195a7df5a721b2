"""The TensorRT builder's pure logic on the CPU, with a stand-in `tensorrt` module that records
every call (version dispatch, flags from options, profiles, timing and calibration caches); and,
where TensorRT and a GPU exist, real engine builds (marked gpu)."""
from __future__ import annotations

import json
import logging
import os
import sys

import pytest

from edge_fpn.builder.cache import parse_cache
from edge_fpn.builder.device import jetpack_of_l4t
from edge_fpn.builder.tensorrt_builder import (TrtOptions, capabilities, network_flags_value,
                                             parse_version, plan_build, profile_shapes)
from edge_fpn.builder.builder import BuildRequest, build_engine
from edge_fpn.cli import main
from edge_fpn.errors import EdgeFpnError
from fakes.tensorrt import fake_tensorrt


@pytest.fixture
def with_tensorrt(monkeypatch):
    def install(*args, **kwargs):
        trt = fake_tensorrt(*args, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt
    return install


# ------------------------------------------------------------------ version dispatch and flags

@pytest.mark.parametrize("version, precision, implicit, variant, network, flags", [
    ("8.5.2", "fp32", False, "fp32", ("EXPLICIT_BATCH",), ()),
    ("8.5.2", "fp16", False, "fp32", ("EXPLICIT_BATCH",), ("FP16",)),
    ("8.6.2", "int8", False, "qdq", ("EXPLICIT_BATCH",), ("INT8", "FP16")),
    ("8.6.2", "int8", True, "fp32", ("EXPLICIT_BATCH",), ("INT8", "FP16")),
    ("10.3.0", "fp16", False, "fp32", (), ("FP16",)),
    ("10.3.0", "int8", False, "qdq", (), ("INT8", "FP16")),
    ("10.3.0", "int8", True, "fp32", (), ("INT8", "FP16")),
    ("11.0.0", "fp32", False, "fp32", ("STRONGLY_TYPED",), ()),
    ("11.0.0", "fp16", False, "fp16", ("STRONGLY_TYPED",), ()),
    ("11.2.1", "int8", False, "qdq_fp16", ("STRONGLY_TYPED",), ()),
])
def test_plan_by_version(version, precision, implicit, variant, network, flags):
    plan = plan_build(capabilities(parse_version(version)), TrtOptions(precision=precision, implicit_int8=implicit))
    assert (plan.onnx_variant, plan.network_flags, plan.builder_flags) == (variant, network, flags)
    assert plan.use_calibrator == implicit
    if implicit and version.startswith("10"):
        assert plan.notes and "deprecated" in plan.notes[0]


def test_plan_errors():
    caps11 = capabilities((11, 0, 0))
    with pytest.raises(EdgeFpnError, match="removed implicit INT8"):
        plan_build(caps11, TrtOptions(precision="int8", implicit_int8=True))
    with pytest.raises(EdgeFpnError, match="FP16 and INT8 only"):
        plan_build(capabilities((10, 3, 0)), TrtOptions(precision="fp32", dla_core=0))
    with pytest.raises(EdgeFpnError, match="--workspace"):
        plan_build(capabilities((10, 3, 0)), TrtOptions(precision="fp16", workspace_mib=0))
    dla = plan_build(capabilities((8, 5, 2)), TrtOptions(precision="int8", dla_core=1))
    assert dla.dla_core == 1 and dla.builder_flags[-1] == "GPU_FALLBACK"


def test_versions_and_flag_values():
    assert parse_version("10.3.0.26") == (10, 3, 0) and parse_version("8.6") == (8, 6, 0)
    assert capabilities((8, 6, 1)).explicit_batch_flag and not capabilities((10, 0, 1)).explicit_batch_flag
    assert not capabilities((8, 6, 1)).strongly_typed_flag and capabilities((10, 0, 0)).strongly_typed_flag
    assert capabilities((10, 1, 0)).calibrators_deprecated and not capabilities((10, 0, 1)).calibrators_deprecated
    assert not capabilities((11, 0, 0)).precision_flags
    trt = fake_tensorrt("8.6.1")
    assert network_flags_value(trt, ["EXPLICIT_BATCH", "STRONGLY_TYPED"]) == 1  # 8.6 has no STRONGLY_TYPED
    assert network_flags_value(fake_tensorrt("10.3.0"), ["STRONGLY_TYPED"]) == 2
    assert jetpack_of_l4t("36.4.3") == "6.2" and jetpack_of_l4t("36.4.0") == "6.1" and jetpack_of_l4t("35.5.0") == "5.1"


def test_device_info_on_a_jetson_without_cuda_bindings(monkeypatch):
    from edge_fpn.builder import device
    files = {"/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
             "/etc/nv_tegra_release": "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64"}
    monkeypatch.setattr(device, "_read_text", lambda path: files.get(path, ""))
    monkeypatch.setitem(sys.modules, "pycuda", None)  # import fails, as where pycuda is absent
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    info = device.device_info()
    assert info == {"gpu_name": "NVIDIA Jetson AGX Orin Developer Kit", "compute_capability": "8.7",
                    "l4t": "36.4.0", "jetpack": "6.1"}


def test_profile_shapes_follow_the_manifest(tiny_host_bundle):
    from edge_fpn.bundle import load_manifest
    manifest = load_manifest(tiny_host_bundle)
    assert profile_shapes(manifest.stages["stage1"]) == {}
    shapes = profile_shapes(manifest.stages["stage2"])
    top = manifest.rpn.post_nms_top_n
    assert shapes == {"proposals": ((1, 4), (top, 4), (top, 4))}


# ------------------------------------------------------------------ the whole build, against the stand-in

@pytest.fixture(scope="module")
def calibration(tiny_host_bundle, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trt-cal") / "cal")
    assert main(["calibrate", tiny_host_bundle, "--data", "synthetic:2", "--output", out, "--quiet"]) == 0
    return out


def _manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def test_tensorrt_10_int8_qdq_build(with_tensorrt, tiny_host_bundle, calibration, tmp_path):
    trt = with_tensorrt("10.3.0")
    out, cache = str(tmp_path / "engine"), str(tmp_path / "timing.cache")
    assert main(["build", tiny_host_bundle, "--precision", "int8", "--calibration", calibration, "--output", out,
                 "--workspace", "512", "--timing-cache", cache, "--eval-data", "none", "--quiet"]) == 0
    stage1, stage2 = trt.calls
    for call in trt.calls:
        assert call["flags"][:2] == ["INT8", "FP16"] and call["network_flags"] == 0
        assert call["pool"] == {"WORKSPACE": 512 << 20} and call["calibration"] is None
        assert "QuantizeLinear" in call["onnx"]["ops"] and call["onnx"]["opset"] == 17
    # stage 2's box arithmetic and RoIAlign (the /roi_pool/ scope) stay FP32; stage 1 has no postprocessing
    assert stage1["fp32_layers"] == [] and len(stage1["flags"]) == 2
    assert "/roi_pool/RoiAlign" in stage2["fp32_layers"] and stage2["flags"][2:] == ["OBEY_PRECISION_CONSTRAINTS"]
    # a new cache, shared by both stages, written with both stages' timings
    assert stage1["timing_cache"] == b"" and stage2["timing_cache"] == b"t"
    assert stage1["profiles"] == [] and stage2["profiles"][0]["proposals"][0] == (1, 4)
    with open(cache, "rb") as f:
        assert f.read() == b"TC|Orin|tt"
    manifest = _manifest(out)
    assert {k: (s["file"], s["backend"], s["precision"]) for k, s in manifest["stages"].items()} == {
        "stage1": ("stage1.engine", "tensorrt", "int8"), "stage2": ("stage2.engine", "tensorrt", "int8")}
    assert manifest["provenance"]["tensorrt_version"] == "10.3.0"
    assert manifest["provenance"]["build"]["int8_mode"] == "explicit"
    with open(os.path.join(out, "stage1.engine"), "rb") as f:
        assert f.read() == b"ENGINE"


def test_tensorrt_8_implicit_int8_reads_the_cache_with_the_local_header(with_tensorrt, tiny_host_bundle, calibration, tmp_path,
                                                                       capsys):
    trt = with_tensorrt("8.5.2")
    out = str(tmp_path / "engine")
    # implicit INT8 needs every layer's range: the default (Q/DQ inputs only) calibration is refused
    assert main(["build", tiny_host_bundle, "--precision", "int8", "--implicit-int8", "--calibration", calibration,
                 "--output", out, "--eval-data", "none", "--quiet"]) == 2
    assert "--tensors all" in capsys.readouterr().err and not os.path.exists(out)
    every = str(tmp_path / "cal-all")
    assert main(["calibrate", tiny_host_bundle, "--data", "synthetic:2", "--tensors", "all", "--output", every, "--quiet"]) == 0
    assert main(["build", tiny_host_bundle, "--precision", "int8", "--implicit-int8", "--calibration", every,
                 "--output", out, "--eval-data", "none", "--quiet"]) == 0
    stage1, stage2 = trt.calls
    assert stage1["network_flags"] == 1  # EXPLICIT_BATCH
    assert "QuantizeLinear" not in stage1["onnx"]["ops"]  # the FP32 graph, scales from the calibrator
    header, scales = parse_cache(stage1["calibration"])
    assert header == "TRT-8502-EntropyCalibration2" and "images" in scales
    header2, scales2 = parse_cache(stage2["calibration"])
    assert "features_0" in scales2 and not set(scales2) & {"proposals"}
    assert stage2["calibration_profile"]["proposals"][0] == stage2["calibration_profile"]["proposals"][2]
    assert _manifest(out)["provenance"]["build"]["int8_mode"] == "implicit"


def test_tensorrt_11_builds_fp16_from_a_strongly_typed_fp16_graph(with_tensorrt, tiny_host_bundle, tmp_path):
    trt = with_tensorrt("11.0.0")
    out = str(tmp_path / "engine")
    assert main(["build", tiny_host_bundle, "--precision", "fp16", "--output", out, "--quiet"]) == 0
    for call in trt.calls:
        assert call["flags"] == [] and call["network_flags"] == 2  # STRONGLY_TYPED, no precision flags
        assert call["onnx"]["float16_initializers"] > 0 and call["onnx"]["types"] == [1]  # float32 I/O kept
    assert "RoiAlign" in trt.calls[1]["onnx"]["ops"]
    assert _manifest(out)["stages"]["stage1"]["precision"] == "fp16"


def test_tensorrt_11_int8_uses_fp16_qdq_graphs(with_tensorrt, tiny_host_bundle, calibration, tmp_path):
    trt = with_tensorrt("11.0.0")
    out = str(tmp_path / "engine")
    assert main(["build", tiny_host_bundle, "--precision", "int8", "--calibration", calibration, "--output", out,
                 "--eval-data", "none", "--quiet"]) == 0
    for call in trt.calls:
        assert call["onnx"]["opset"] == 19 and "DequantizeLinear" in call["onnx"]["ops"]
        assert call["flags"] == []


def test_tensorrt_errors(with_tensorrt, tiny_host_bundle, calibration, tmp_path, capsys):
    out = str(tmp_path / "engine")
    with_tensorrt("10.3.0", dla_cores=0)
    assert main(["build", tiny_host_bundle, "--precision", "fp16", "--dla-core", "0", "--output", out, "--quiet"]) == 2
    assert "has no DLA" in capsys.readouterr().err
    with_tensorrt("10.3.0", dla_cores=2)
    assert main(["build", tiny_host_bundle, "--precision", "fp16", "--dla-core", "2", "--output", out, "--quiet"]) == 2
    assert "2 DLA core(s)" in capsys.readouterr().err
    with_tensorrt("11.0.0")
    assert main(["build", tiny_host_bundle, "--precision", "int8", "--implicit-int8", "--calibration", calibration,
                 "--eval-data", "none", "--output", out, "--quiet"]) == 2
    assert "removed implicit INT8" in capsys.readouterr().err
    with_tensorrt("10.3.0", fail_build=True)
    assert main(["build", tiny_host_bundle, "--precision", "fp16", "--output", out, "--quiet"]) == 2
    assert "could not build" in capsys.readouterr().err
    assert not os.path.exists(out)
    # TensorRT 11.0-11.3 have no DLA at all: say that, not "this device has no DLA"
    trt = with_tensorrt("11.2.1", dla_cores=2)
    assert main(["build", tiny_host_bundle, "--precision", "fp16", "--dla-core", "0", "--output", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT 11.2.1 has no DLA support" in err and "11.4.1" in err and "device has no DLA" not in err
    assert trt.events == []  # refused before TensorRT was touched


def test_dla_build_sets_the_core_and_gpu_fallback(with_tensorrt, tiny_host_bundle, tmp_path):
    trt = with_tensorrt("8.5.2", dla_cores=2)
    out = str(tmp_path / "engine")
    assert main(["build", tiny_host_bundle, "--precision", "fp16", "--dla-core", "1", "--output", out, "--quiet"]) == 0
    assert all(c["device"] == "DLA" and c["dla_core"] == 1 and c["flags"][:2] == ["FP16", "GPU_FALLBACK"] for c in trt.calls)
    manifest = _manifest(out)
    assert manifest["provenance"]["build"]["dla_core"] == 1
    assert manifest["provenance"]["dla_core"] == 1  # where the runtime reads it before deserializing


def test_dla_support_by_version():
    from edge_fpn.builder.tensorrt_builder import dla_unsupported
    assert dla_unsupported((10, 3, 0)) == "" and dla_unsupported((11, 4, 1)) == "" and dla_unsupported((8, 5, 2)) == ""
    for version in ((11, 0, 0), (11, 1, 0), (11, 3, 1)):
        assert "has no DLA support" in dla_unsupported(version)
    assert "Windows on ARM only" in dla_unsupported((11, 4, 0))
    with pytest.raises(EdgeFpnError, match="TensorRT 11.3.0 has no DLA support"):
        plan_build(capabilities((11, 3, 0)), TrtOptions(precision="fp16", dla_core=0))
    plan = plan_build(capabilities((11, 4, 1)), TrtOptions(precision="fp16", dla_core=0))
    assert plan.dla_core == 0 and plan.network_flags == ("STRONGLY_TYPED",)


# ------------------------------------------------------------------ plugins and the timing cache

def test_plugins_are_registered_before_parsing(with_tensorrt, tiny_host_bundle, tmp_path):
    trt = with_tensorrt("10.3.0")
    out = str(tmp_path / "engine")
    assert main(["build", tiny_host_bundle, "--precision", "fp16", "--output", out, "--quiet"]) == 0
    # the precheck parses every stage with this TensorRT's parser before any work, then the build
    # parses again; each parse comes after a registration of the plugins
    parses = [i for i, event in enumerate(trt.events) if event.startswith("parse:")]
    assert trt.events[0] == "plugins" and all("plugins" in trt.events[:i] for i in parses)
    first_build = next(i for i, event in enumerate(trt.events) if event.startswith("build:"))
    assert {trt.events[i] for i in parses if i < first_build} == {"parse:stage1.onnx", "parse:stage2.onnx"}
    assert "RoiAlign" in trt.calls[1]["onnx"]["ops"]


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_without_plugins_the_roi_align_stage_fails_to_parse(with_tensorrt, tiny_host_bundle, tmp_path, monkeypatch,
                                                           capsys, version):
    # the defect this guards against: TensorRT 10's parser does not register ROIAlign_TRT itself
    from edge_fpn.builder import tensorrt_builder
    from edge_fpn.export import nvidia_parser
    with_tensorrt(version)
    monkeypatch.setattr(tensorrt_builder, "init_plugins", lambda trt, logger: True)
    monkeypatch.setattr(nvidia_parser, "prepare_plugins", lambda parser, logger: None)
    out = str(tmp_path / "engine")
    assert main(["build", tiny_host_bundle, "--precision", "fp16", "--output", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    # the precheck asks the parser first, so the build stops there, with the parser's own words
    assert err.startswith(f"edge-fpn build: error: stage2.onnx: parser: NVIDIA's parser (TensorRT {version}) rejects ")
    assert "ROIAlign_TRT was not found in the plugin registry" in err and not os.path.exists(out)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("stale, why", [(b"TC|RTX 4090|tttttt", "made on another GPU"),
                                        (b"garbage", "not a TensorRT timing cache")])
def test_a_rejected_timing_cache_is_replaced_and_said_once(with_tensorrt, tiny_host_bundle, tmp_path, stale, why,
                                                           caplog):
    trt = with_tensorrt("10.3.0")
    cache = str(tmp_path / "timing.cache")
    _write(cache, stale)
    with caplog.at_level(logging.INFO, logger="edge_fpn.builder"):
        build_engine(BuildRequest(tiny_host_bundle, str(tmp_path / "engine"), precision="fp16", backend="tensorrt",
                                  timing_cache=cache, eval_data=None), progress=False)
    lines = [record.getMessage() for record in caplog.records]
    warnings = [line for line in lines if "timing cache" in line]
    assert len(warnings) == 1 and why in warnings[0] and "replaces" in warnings[0], lines
    assert [call["timing_cache"] for call in trt.calls] == [b"", b"t"]  # built from an empty cache
    with open(cache, "rb") as f:
        assert f.read() == b"TC|Orin|tt"  # this build's cache, not the stale one


def test_a_timing_cache_of_this_gpu_is_used_and_extended(with_tensorrt, tiny_host_bundle, tmp_path, caplog):
    trt = with_tensorrt("10.3.0")
    cache = str(tmp_path / "timing.cache")
    _write(cache, b"TC|Orin|tt")
    with caplog.at_level(logging.INFO, logger="edge_fpn.builder"):
        build_engine(BuildRequest(tiny_host_bundle, str(tmp_path / "engine"), precision="fp16", backend="tensorrt",
                                  timing_cache=cache, eval_data=None), progress=False)
    lines = [record.getMessage() for record in caplog.records]
    assert not [line for line in lines if "timing cache" in line]
    assert [call["timing_cache"] for call in trt.calls] == [b"tt", b"ttt"]
    with open(cache, "rb") as f:
        assert f.read() == b"TC|Orin|tttt"


# ------------------------------------------------------------------ the engine layout

def _detector(bundle):
    from edge_fpn.bundle import load_manifest
    manifest = load_manifest(bundle)
    assert manifest.layout == "engine" and list(manifest.stages) == ["detector"]
    return manifest.stages["detector"], os.path.join(bundle, manifest.stages["detector"].file)


@pytest.mark.parametrize("version, precision, flags", [
    ("8.5.2", "fp16", ["FP16", "OBEY_PRECISION_CONSTRAINTS"]),
    ("10.3.0", "fp16", ["FP16", "OBEY_PRECISION_CONSTRAINTS"]),
    ("10.3.0", "fp32", []),
])
def test_engine_layout_is_one_static_engine_with_fp32_postprocessing(with_tensorrt, tiny_bundle, tmp_path, version,
                                                                    precision, flags):
    import onnx
    from edge_fpn.builder.tensorrt_builder import build_engines
    from edge_fpn.graph_names import is_postprocess_node

    trt = with_tensorrt(version)
    stage, path = _detector(tiny_bundle)
    assert profile_shapes(stage) == {}  # every input static: no optimization profile
    facts = build_engines(trt, {"detector": stage}, {"detector": path}, TrtOptions(precision=precision),
                          str(tmp_path))
    (call,) = trt.calls
    assert facts["files"] == {"detector": "detector.engine"} and call["profiles"] == []
    assert call["flags"] == flags
    assert call["onnx"]["types"] == [onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8]  # image_size, image
    assert {"TopK", "NonMaxSuppression", "RoiAlign"} <= set(call["onnx"]["ops"])
    if precision == "fp32":
        assert call["fp32_layers"] == [] and "postprocess_fp32_layers" not in facts
        return
    kept = call["fp32_layers"]
    assert facts["postprocess_fp32_layers"] == {"detector": len(kept)}
    # the parser's helper layers (NMS's score transpose, TopK's unsqueeze/squeeze of 1-D data) stay FP32
    # too where they carry float data: from their metadata on 10.x, from their producers on 8.5
    helpers = call["helpers"]
    assert {h for h, (node, _) in helpers.items() if "NonMaxSuppression" in node} and all(
        is_postprocess_node(node) for node, _ in helpers.values())
    assert sorted(h for h in kept if h in helpers) == sorted(h for h, (_, floats) in helpers.items() if floats)
    assert all(is_postprocess_node(name) for name in kept if name not in helpers)
    graph = onnx.load(path).graph
    ops = {n.name: n.op_type for n in graph.node}
    assert {ops[name] for name in kept if name in ops} >= {"TopK", "NonMaxSuppression", "RoiAlign", "Softmax"}
    assert not [n for n in graph.node if n.op_type == "Conv" and n.name in kept]  # the network stays FP16
    # nodes outside the scopes that read postprocessing output (the box head after RoIAlign) stay free
    scoped = {t for n in graph.node if is_postprocess_node(n.name) for t in n.output}
    readers = {n.name for n in graph.node if not is_postprocess_node(n.name) and set(n.input) & scoped}
    assert any(name.startswith("/box_head/") for name in readers) and not readers & set(kept)
    # output types only on float outputs: never TopK's indices, NMS's rows or the int32 labels
    for name, outputs in call["output_types"].items():
        assert set(outputs.values()) == {trt.DataType.FLOAT}
        if ops.get(name) == "TopK":
            assert list(outputs) == [0]
        assert ops.get(name) != "NonMaxSuppression"


def test_engine_layout_on_tensorrt_11_takes_fp32_postprocessing_from_the_fp16_graph(with_tensorrt, tiny_bundle,
                                                                                     tmp_path):
    import onnx
    from edge_fpn.builder.fp16 import convert_to_fp16
    from edge_fpn.builder.tensorrt_builder import build_engines

    trt = with_tensorrt("11.0.0")  # strongly typed: the fake raises on any layer precision call
    stage, path = _detector(tiny_bundle)
    half = str(tmp_path / "detector.fp16.onnx")
    onnx.save(convert_to_fp16(onnx.load(path)), half)
    build_engines(trt, {"detector": stage}, {"detector": half}, TrtOptions(precision="fp16"), str(tmp_path))
    (call,) = trt.calls
    assert call["flags"] == [] and call["fp32_layers"] == [] and call["network_flags"] == 2
    assert call["onnx"]["float16_initializers"] > 0


@pytest.mark.parametrize("version, flags, network", [("10.3.0", ["FP16", "OBEY_PRECISION_CONSTRAINTS"], 0),
                                                      ("11.0.0", [], 2)])
def test_engine_layout_bundle_build(with_tensorrt, tiny_bundle, tmp_path, version, flags, network):
    trt = with_tensorrt(version)
    out = str(tmp_path / "engine")
    assert main(["build", tiny_bundle, "--precision", "fp16", "--output", out, "--quiet"]) == 0
    (call,) = trt.calls
    assert call["flags"] == flags and call["network_flags"] == network and call["profiles"] == []
    # the precheck parses the exported graph; the build parses the variant its plan names
    assert trt.events[:2] == ["plugins", "parse:detector.onnx"]
    built = trt.events.index("build:" + ("detector.fp16.onnx" if version.startswith("11") else "detector.onnx"))
    assert trt.events[built - 1] == trt.events[built].replace("build:", "parse:")
    manifest = _manifest(out)
    assert manifest["layout"] == "engine"
    assert {k: (s["file"], s["backend"], s["precision"]) for k, s in manifest["stages"].items()} == {
        "detector": ("detector.engine", "tensorrt", "fp16")}
    kept = manifest["provenance"]["build"].get("postprocess_fp32_layers")
    assert (kept == {"detector": len(call["fp32_layers"])} and kept["detector"] > 0) if not version.startswith("11") else kept is None


def test_postprocess_layers_are_found_by_onnx_metadata_too():
    from edge_fpn.builder.tensorrt_builder import keep_postprocess_fp32
    trt = fake_tensorrt("10.3.0")
    f32, i32, kinds = trt.DataType.FLOAT, trt.DataType.INT32, trt.LayerType
    network = trt.Builder(trt.ILogger()).create_network(0)
    x, y = network.add_input("x", f32, (4,)), network.add_input("y", f32, (4,))
    n = network.add_input("n", i32, (4,))
    helper_layer = network.add_layer("ONNXTRT_Broadcast_12", kinds.SHUFFLE, [x], [f32], "/detections/Mul")
    shape = network.add_layer("/proposals/Shape", kinds.SHAPE, [x], [i32], "/proposals/Shape")
    compare = network.add_layer("/proposals/Greater", kinds.OTHER, [x, y], [trt.DataType.BOOL])  # no metadata
    ints = network.add_layer("/detections/Cast_1", kinds.OTHER, [n], [i32])
    backbone = network.add_layer("/backbone/Conv", kinds.OTHER, [x], [f32], "/backbone/Conv")
    assert keep_postprocess_fp32(trt, network) == 2
    assert helper_layer._precision == f32 and helper_layer.output_types == {0: f32}
    assert compare._precision == f32 and compare.output_types == {}  # compared in FP32; a bool output keeps its type
    assert shape._precision is ints._precision is backbone._precision is None


def _postprocess_onnx(path):
    """A small graph with the engine layout's shapes of trouble: a 1-D TopK and a NonMaxSuppression
    inside the scopes (their parser helpers carry postprocessing data), a 1-D TopK outside them (its
    helpers do not), and the box head reading RoIAlign's output."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = {"w": np.ones((4, 3, 1, 1), np.float32),
              "flat": np.array([-1], np.int64), "k": np.array([3], np.int64), "axis0": np.array([0], np.int64),
              "scores_shape": np.array([1, 1, 6], np.int64), "half": np.array([0.5], np.float32),
              "max_out": np.array([10], np.int64), "iou": np.array([0.5], np.float32),
              "score_thr": np.array([0.05], np.float32)}
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["feat"], name="/backbone/Conv"),
        helper.make_node("Reshape", ["feat", "flat"], ["feat_flat"], name="/backbone/Reshape"),
        helper.make_node("TopK", ["feat_flat", "k"], ["top", "top_i"], name="/backbone/TopK"),
        helper.make_node("Mul", ["rois", "half"], ["boxes"], name="/roi_pool/Mul"),
        helper.make_node("RoiAlign", ["feat", "boxes", "batch"], ["pooled"], name="/roi_pool/RoiAlign",
                         output_height=2, output_width=2),
        helper.make_node("Flatten", ["pooled"], ["pooled_flat"], name="/box_head/Flatten"),
        helper.make_node("Relu", ["pooled_flat"], ["head"], name="/box_head/Relu"),
        helper.make_node("Reshape", ["logits", "flat"], ["flat_logits"], name="/detections/Reshape"),
        helper.make_node("Sigmoid", ["flat_logits"], ["probs"], name="/detections/Sigmoid"),
        helper.make_node("TopK", ["probs", "k"], ["top_scores", "order"], name="/detections/TopK"),
        helper.make_node("Unsqueeze", ["boxes", "axis0"], ["nms_boxes"], name="/detections/Unsqueeze"),
        helper.make_node("Reshape", ["probs", "scores_shape"], ["nms_scores"], name="/detections/Reshape_1"),
        helper.make_node("NonMaxSuppression", ["nms_boxes", "nms_scores", "max_out", "iou", "score_thr"],
                         ["selected"], name="/detections/NonMaxSuppression"),
    ]
    F, I = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("image", F, [1, 3, 8, 8]), helper.make_tensor_value_info("rois", F, [6, 4]),
              helper.make_tensor_value_info("batch", I, [6]), helper.make_tensor_value_info("logits", F, [1, 1, 6])]
    outputs = [helper.make_tensor_value_info(name, elem, None) for name, elem in (
        ("top", F), ("top_i", I), ("head", F), ("top_scores", F), ("order", I), ("selected", I))]
    graph = helper.make_graph(nodes, "postprocess", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_parser_helpers_of_postprocessing_are_kept_fp32_without_metadata(tmp_path, version):
    """TensorRT 8.5 records no ONNX node for the parser's helper layers and names them "(Unnamed
    Layer* N) [Shuffle]": they are constrained from their producers; 10.x finds them by metadata."""
    from edge_fpn.builder.tensorrt_builder import keep_postprocess_fp32
    trt = fake_tensorrt(version)
    f32 = trt.DataType.FLOAT
    path = str(tmp_path / "postprocess.onnx")
    _postprocess_onnx(path)
    trt.init_libnvinfer_plugins(trt.ILogger(), "")  # RoiAlign imports through ROIAlign_TRT
    flags = network_flags_value(trt, ["EXPLICIT_BATCH"] if version.startswith("8.") else [])
    network = trt.Builder(trt.ILogger()).create_network(flags)
    assert trt.OnnxParser(network, trt.ILogger()).parse_from_file(path)
    layers = {layer.name: layer for layer in network.layers}
    assert all(hasattr(layer, "metadata") == (version != "8.5.2") for layer in network.layers)
    by_node = {}
    for name, node in network.helpers.items():
        by_node.setdefault(node, []).append(layers[name])
    (transpose,) = by_node["/detections/NonMaxSuppression"]  # between /detections/Reshape_1 and the NMS layer
    nms = layers["/detections/NonMaxSuppression"]
    assert transpose.get_input(0).name == "nms_scores" and nms.get_input(1) is transpose.get_output(0)
    unsqueeze, values, indices = by_node["/detections/TopK"]
    free = by_node["/backbone/TopK"]  # fed by /backbone/Reshape, and by the TopK outside the scopes
    # layers no parser adds, in topological order: a helper fed by a helper (kept), one fed by both sides (free)
    chained = network.add_layer(None, trt.LayerType.SHUFFLE, [values.get_output(0)], [f32])
    mixed = network.add_layer(None, trt.LayerType.ELEMENTWISE, [values.get_output(0), free[1].get_output(0)], [f32])

    count = keep_postprocess_fp32(trt, network)
    kept = [layer for layer in network.layers if layer._precision is not None]
    assert count == len(kept) and all(layer._precision == f32 for layer in kept)
    for helper_layer in (transpose, unsqueeze, values, chained):
        assert helper_layer in kept and helper_layer.output_types == {0: f32}, helper_layer.name
    assert indices not in kept and indices.output_types == {}  # int32 indices: nothing to keep, no output type
    assert layers["/detections/TopK"].output_types == {0: f32}  # never its indices (TensorRT refuses)
    assert nms in kept and nms.output_types == {}
    box_head = [layers["/box_head/Flatten"], layers["/box_head/Relu"]]  # read RoIAlign's output, and only that
    assert box_head[0].get_input(0) is layers["/roi_pool/RoiAlign"].get_output(0) and box_head[0].num_inputs == 1
    for free_layer in free + box_head + [mixed, layers["/backbone/Conv"], layers["/backbone/TopK"]]:
        assert free_layer not in kept and free_layer.output_types == {}, free_layer.name
    assert layers["/roi_pool/RoiAlign"] in kept  # while the box head it feeds stays free for INT8/FP16


def test_postprocess_fp32_is_refused_on_a_strongly_typed_network(tmp_path):
    # the stand-in is as strict as TensorRT: no precision on a strongly typed network (build_serialized
    # calls keep_postprocess_fp32 only with the FP16/INT8 flags, which strong typing has not)
    from edge_fpn.builder.tensorrt_builder import keep_postprocess_fp32
    trt = fake_tensorrt("10.3.0")
    path = str(tmp_path / "postprocess.onnx")
    _postprocess_onnx(path)
    trt.init_libnvinfer_plugins(trt.ILogger(), "")
    network = trt.Builder(trt.ILogger()).create_network(network_flags_value(trt, ["STRONGLY_TYPED"]))
    assert trt.OnnxParser(network, trt.ILogger()).parse_from_file(path)
    with pytest.raises(RuntimeError, match="strongly typed"):
        keep_postprocess_fp32(trt, network)


def test_build_stops_before_tensorrt_with_the_sentence_check_prints(with_tensorrt, tmp_path, capsys):
    from test_check import helper, make_model, proposals_head, tensor, write_bundle
    from edge_fpn.export.check import check_path
    import numpy as np
    from onnx import TensorProto, numpy_helper

    node = helper.make_node("TopK", ["x", "k"], ["y", "i"], name="/proposals/TopK")
    stage1 = make_model([node], [tensor("x", TensorProto.FLOAT, [1, 5000])],
                        [tensor("y", TensorProto.FLOAT, [1, 4000]), tensor("i", TensorProto.INT64, [1, 4000])],
                        [numpy_helper.from_array(np.array([4000], np.int64), "k")])
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    bundle = write_bundle(bundle_dir, stage1, proposals_head())
    with open(os.path.join(bundle, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["stages"]["stage1"].update(inputs=[{"name": "x", "shape": [1, 5000]}],  # what the graph takes
                                        outputs=[{"name": "y", "shape": [1, 4000]},
                                                 {"name": "i", "shape": [1, 4000], "dtype": "int64"}])
    with open(os.path.join(bundle, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    (finding,) = [f for f in check_path(bundle, "jetpack5") if ": topk: " in f]
    trt = with_tensorrt("8.5.2")
    assert main(["build", bundle, "--precision", "fp16", "--backend", "tensorrt", "--output",
                 str(tmp_path / "engine"), "--quiet"]) == 2
    assert finding in capsys.readouterr().err
    assert trt.events == [] and not os.path.exists(str(tmp_path / "engine"))


# ------------------------------------------------------------------ on a real GPU

def _real_tensorrt():
    from edge_fpn.builder.tensorrt_builder import import_tensorrt
    return import_tensorrt()[0]


@pytest.mark.gpu
@pytest.mark.skipif(_real_tensorrt() is None, reason="needs TensorRT (and a GPU)")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_real_tensorrt_build(tiny_host_bundle, calibration, tmp_path, precision):
    out = str(tmp_path / precision)
    args = ["build", tiny_host_bundle, "--precision", precision, "--backend", "tensorrt", "--output", out,
            "--timing-cache", str(tmp_path / "timing.cache"), "--eval-data", "none", "--quiet"]
    if precision == "int8":
        args += ["--calibration", calibration]
    assert main(args) == 0
    manifest = _manifest(out)
    assert manifest["stages"]["stage1"]["backend"] == "tensorrt"
    assert os.path.getsize(os.path.join(out, "stage1.engine")) > 1000
    assert manifest["provenance"]["tensorrt_version"] == _real_tensorrt().__version__
    assert os.path.getsize(str(tmp_path / "timing.cache")) > 0


@pytest.mark.gpu
@pytest.mark.skipif(_real_tensorrt() is None, reason="needs TensorRT (and a GPU)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_tensorrt_engine_layout_build(tiny_bundle, tmp_path, precision):
    """The engine layout on a real TensorRT: plugins registered, one static engine, FP32 postprocessing."""
    out = str(tmp_path / precision)
    assert main(["build", tiny_bundle, "--precision", precision, "--backend", "tensorrt", "--output", out,
                 "--timing-cache", str(tmp_path / "timing.cache"), "--eval-data", "none", "--quiet"]) == 0
    manifest = _manifest(out)
    assert list(manifest["stages"]) == ["detector"] and manifest["stages"]["detector"]["backend"] == "tensorrt"
    assert os.path.getsize(os.path.join(out, "detector.engine")) > 1000
    if precision == "fp16" and not str(_real_tensorrt().__version__).startswith("11"):
        assert manifest["provenance"]["build"]["postprocess_fp32_layers"]["detector"] > 0


# ------------------------------------------------------------------ the fake is as strict as TensorRT

def _fake_parse(trt, model, tmp_path, name="graph.onnx"):
    """(ok, first error) of the fake parser on `model`, after the plugins are registered."""
    import onnx
    path = str(tmp_path / name)
    onnx.save(model, path)
    logger = trt.ILogger()
    trt.init_libnvinfer_plugins(logger, "")
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(path)
    return ok, (parser.get_error(0).desc() if parser.num_errors else "")


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2", "10.3.0", "11.0.0"])
def test_the_graphs_edge_fpn_writes_parse_on_every_supported_fake(version, tiny_bundle, tiny_host_bundle, tmp_path):
    import onnx
    trt = fake_tensorrt(version)
    for bundle, file in ((tiny_bundle, "detector.onnx"), (tiny_host_bundle, "stage1.onnx"),
                         (tiny_host_bundle, "stage2.onnx")):
        ok, error = _fake_parse(trt, onnx.load(os.path.join(bundle, file)), tmp_path, file)
        assert ok, f"{version} {file}: {error}"


@pytest.mark.parametrize("version, make, words", [
    ("8.4.1", "detector", "Unsupported ONNX opset 17"),  # JetPack 5.0.2's parser: opset 13, no RoiAlign or NMS
    ("8.5.2", "layer_norm", "No importer registered for op: LayerNormalization"),
    ("10.3.0", "opset_21", "Unsupported ONNX opset 21"),
    ("10.3.0", "topk_5000", "K must be <= 3840"),
    ("8.5.2", "topk_k_from_input", "needs K as an initializer"),
    ("10.3.0", "double_input", "unsupported data type DOUBLE"),
    ("10.3.0", "uint8_into_transpose", "first input has type UInt8"),
])
def test_the_fake_parser_refuses_what_that_tensorrt_refuses(version, make, words, tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from test_check import detector_graph, layer_norm, make_model, tensor, uint8_into

    def topk(k_source):
        inputs = [tensor("x", TensorProto.FLOAT, [1, 6000])]
        inits = []
        if k_source == "input":
            inputs.append(tensor("k", TensorProto.INT64, [1]))
        else:
            inits.append(numpy_helper.from_array(np.array([5000], np.int64), "k"))
        node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="/proposals/TopK")
        return make_model([node], inputs, [tensor("v", TensorProto.FLOAT, [1, 5000]),
                                           tensor("i", TensorProto.INT64, [1, 5000])], inits)

    graphs = {
        "detector": detector_graph, "layer_norm": layer_norm,
        "opset_21": lambda: make_model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                                       [tensor("x", TensorProto.FLOAT, [2])], [tensor("y", TensorProto.FLOAT, [2])],
                                       opset=21),
        "topk_5000": lambda: topk("initializer"), "topk_k_from_input": lambda: topk("input"),
        "double_input": lambda: make_model([helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.FLOAT)],
                                           [tensor("x", TensorProto.DOUBLE, [2])], [tensor("y", TensorProto.FLOAT, [2])]),
        "uint8_into_transpose": lambda: uint8_into("Transpose"),
    }
    model = graphs[make]()
    ok, error = _fake_parse(fake_tensorrt(version), model, tmp_path)
    assert not ok and words in error, error
    if make in ("layer_norm", "topk_k_from_input"):  # refused for that version only: a newer one takes it
        assert _fake_parse(fake_tensorrt("10.3.0"), model, tmp_path)[0]
    del onnx


def test_the_fake_builder_refuses_precision_flags_on_a_strongly_typed_network(with_tensorrt, tiny_host_bundle,
                                                                             tmp_path):
    from edge_fpn.builder.tensorrt_builder import BuildPlan, TrtOptions, build_serialized
    from edge_fpn.bundle import load_manifest
    trt = with_tensorrt("10.3.0")
    stage = load_manifest(tiny_host_bundle).stages["stage1"]
    path = os.path.join(tiny_host_bundle, "stage1.onnx")
    weak = BuildPlan("fp32", (), ("FP16",), False, None)
    assert build_serialized(trt, path, stage, weak, TrtOptions(precision="fp16")) == b"ENGINE"
    strong = BuildPlan("fp32", ("STRONGLY_TYPED",), ("FP16",), False, None)
    with pytest.raises(EdgeFpnError, match="strongly typed networks take no precision flags"):
        build_serialized(trt, path, stage, strong, TrtOptions(precision="fp16"))


def test_the_fake_builder_needs_a_profile_for_dynamic_inputs(with_tensorrt, tiny_host_bundle):
    from dataclasses import replace
    from edge_fpn.builder.tensorrt_builder import BuildPlan, TrtOptions, build_serialized
    from edge_fpn.bundle import load_manifest
    trt = with_tensorrt("10.3.0")
    stage = load_manifest(tiny_host_bundle).stages["stage2"]  # proposals: a dynamic first axis
    path = os.path.join(tiny_host_bundle, "stage2.onnx")
    plan = BuildPlan("fp32", (), (), False, None)
    assert build_serialized(trt, path, stage, plan, TrtOptions()) == b"ENGINE"  # the manifest's range: a profile
    static = replace(stage, inputs=[replace(t, shape=[1 if isinstance(d, str) else d for d in t.shape])
                                    for t in stage.inputs])  # a manifest that forgot the dynamic axis
    with pytest.raises(EdgeFpnError, match="no optimization profile"):
        build_serialized(trt, path, static, plan, TrtOptions())
