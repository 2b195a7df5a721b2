"""The TensorRT builder's pure logic on the CPU, with a stand-in `tensorrt` module that records
every call (version dispatch, flags from options, profiles, timing and calibration caches); and,
where TensorRT and a GPU exist, real engine builds (marked gpu)."""
from __future__ import annotations

import json
import os
import sys
import types

import pytest

from edge_fpn.builder.cache import parse_cache
from edge_fpn.builder.tensorrt_builder import (TrtOptions, capabilities, jetpack_of_l4t, network_flags_value,
                                             parse_version, plan_build, profile_shapes)
from edge_fpn.cli import main
from edge_fpn.errors import EdgeFpnError


# ------------------------------------------------------------------ a stand-in tensorrt module

def fake_tensorrt(version="10.3.0", dla_cores=0, fail_build=False):
    major = int(version.split(".")[0])
    calls = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls
    flags = {"EXPLICIT_BATCH": 0}
    if major >= 10:
        flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    builder_flags = {"GPU_FALLBACK": "GPU_FALLBACK"}
    if major < 11:
        builder_flags.update(FP16="FP16", INT8="INT8")
    trt.BuilderFlag = types.SimpleNamespace(**builder_flags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DeviceType = types.SimpleNamespace(GPU="GPU", DLA="DLA")

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"timing:" + self.data

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class Config:
        def __init__(self):
            self.flags, self.profiles = [], []
            self.default_device_type = "GPU"
            self.DLA_core = -1
            self.int8_calibrator = None
            self.calibration_profile = None
            self.timing_cache = None
            self.pool = {}

        def set_flag(self, flag):
            self.flags.append(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

        def create_timing_cache(self, data):
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache
            return True

    class Network:
        def __init__(self, flags):
            self.flags = flags

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calibration = None
            if config.int8_calibrator is not None:
                calibration = config.int8_calibrator.read_calibration_cache().decode()
            calls.append({"network_flags": network.flags, "flags": list(config.flags), "pool": dict(config.pool),
                          "profiles": [p.shapes for p in config.profiles], "device": config.default_device_type,
                          "dla_core": config.DLA_core, "calibration": calibration,
                          "calibration_profile": config.calibration_profile.shapes if config.calibration_profile else None,
                          "timing_cache": config.timing_cache.data if config.timing_cache else None,
                          "onnx": network.onnx})
            if fail_build:
                return None
            return b"ENGINE"

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path):
            import onnx
            model = onnx.load(path)
            self.network.onnx = {"path": path, "opset": model.opset_import[0].version,
                                 "types": sorted({i.type.tensor_type.elem_type for i in model.graph.input}),
                                 "ops": sorted({n.op_type for n in model.graph.node}),
                                 "float16_initializers": sum(t.data_type == 10 for t in model.graph.initializer)}
            return True

    class Calibrator:
        def __init__(self):
            pass

    trt.ILogger = ILogger
    trt.Builder = Builder
    trt.OnnxParser = OnnxParser
    if major < 11:
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (Calibrator,), {})
        trt.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (Calibrator,), {})
    return trt


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
    from edge_fpn.builder import tensorrt_builder
    files = {"/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
             "/etc/nv_tegra_release": "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64"}
    monkeypatch.setattr(tensorrt_builder, "_read_text", lambda path: files.get(path, ""))
    monkeypatch.setitem(sys.modules, "pycuda", None)  # import fails, as where pycuda is absent
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    info = tensorrt_builder.device_info()
    assert info == {"gpu_name": "NVIDIA Jetson AGX Orin Developer Kit", "compute_capability": "8.7",
                    "l4t": "36.4.0", "jetpack": "6.1"}


def test_profile_shapes_follow_the_manifest(tiny_bundle):
    from edge_fpn.bundle import load_manifest
    manifest = load_manifest(tiny_bundle)
    assert profile_shapes(manifest.stages["stage1"]) == {}
    shapes = profile_shapes(manifest.stages["stage2"])
    top = manifest.rpn.post_nms_top_n
    assert shapes == {"proposals": ((1, 4), (top, 4), (top, 4))}


# ------------------------------------------------------------------ the whole build, against the stand-in

@pytest.fixture(scope="module")
def calibration(tiny_bundle, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trt-cal") / "cal")
    assert main(["calibrate", tiny_bundle, "--data", "synthetic:2", "--output", out, "--quiet"]) == 0
    return out


def _manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def test_tensorrt_10_int8_qdq_build(with_tensorrt, tiny_bundle, calibration, tmp_path):
    trt = with_tensorrt("10.3.0")
    out, cache = str(tmp_path / "engine"), str(tmp_path / "timing.cache")
    assert main(["build", tiny_bundle, "--precision", "int8", "--calibration", calibration, "--output", out,
                 "--workspace", "512", "--timing-cache", cache, "--eval-data", "none", "--quiet"]) == 0
    stage1, stage2 = trt.calls
    for call in trt.calls:
        assert call["flags"] == ["INT8", "FP16"] and call["network_flags"] == 0 and call["pool"] == {"WORKSPACE": 512 << 20}
        assert "QuantizeLinear" in call["onnx"]["ops"] and call["onnx"]["opset"] == 17
        assert call["timing_cache"] == b"" and call["calibration"] is None
    assert stage1["profiles"] == [] and stage2["profiles"][0]["proposals"][0] == (1, 4)
    with open(cache, "rb") as f:
        assert f.read() == b"timing:"
    manifest = _manifest(out)
    assert {k: (s["file"], s["backend"], s["precision"]) for k, s in manifest["stages"].items()} == {
        "stage1": ("stage1.engine", "tensorrt", "int8"), "stage2": ("stage2.engine", "tensorrt", "int8")}
    assert manifest["provenance"]["tensorrt_version"] == "10.3.0"
    assert manifest["provenance"]["build"]["int8_mode"] == "explicit"
    with open(os.path.join(out, "stage1.engine"), "rb") as f:
        assert f.read() == b"ENGINE"


def test_tensorrt_8_implicit_int8_reads_the_cache_with_the_local_header(with_tensorrt, tiny_bundle, calibration, tmp_path,
                                                                       capsys):
    trt = with_tensorrt("8.5.2")
    out = str(tmp_path / "engine")
    # implicit INT8 needs every layer's range: the default (Q/DQ inputs only) calibration is refused
    assert main(["build", tiny_bundle, "--precision", "int8", "--implicit-int8", "--calibration", calibration,
                 "--output", out, "--eval-data", "none", "--quiet"]) == 2
    assert "--tensors all" in capsys.readouterr().err and not os.path.exists(out)
    every = str(tmp_path / "cal-all")
    assert main(["calibrate", tiny_bundle, "--data", "synthetic:2", "--tensors", "all", "--output", every, "--quiet"]) == 0
    assert main(["build", tiny_bundle, "--precision", "int8", "--implicit-int8", "--calibration", every,
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


def test_tensorrt_11_builds_fp16_from_a_strongly_typed_fp16_graph(with_tensorrt, tiny_bundle, tmp_path):
    trt = with_tensorrt("11.0.0")
    out = str(tmp_path / "engine")
    assert main(["build", tiny_bundle, "--precision", "fp16", "--output", out, "--quiet"]) == 0
    for call in trt.calls:
        assert call["flags"] == [] and call["network_flags"] == 2  # STRONGLY_TYPED, no precision flags
        assert call["onnx"]["float16_initializers"] > 0 and call["onnx"]["types"] == [1]  # float32 I/O kept
    assert "RoiAlign" in trt.calls[1]["onnx"]["ops"]
    assert _manifest(out)["stages"]["stage1"]["precision"] == "fp16"


def test_tensorrt_11_int8_uses_fp16_qdq_graphs(with_tensorrt, tiny_bundle, calibration, tmp_path):
    trt = with_tensorrt("11.0.0")
    out = str(tmp_path / "engine")
    assert main(["build", tiny_bundle, "--precision", "int8", "--calibration", calibration, "--output", out,
                 "--eval-data", "none", "--quiet"]) == 0
    for call in trt.calls:
        assert call["onnx"]["opset"] == 19 and "DequantizeLinear" in call["onnx"]["ops"]
        assert call["flags"] == []


def test_tensorrt_errors(with_tensorrt, tiny_bundle, calibration, tmp_path, capsys):
    out = str(tmp_path / "engine")
    with_tensorrt("10.3.0", dla_cores=0)
    assert main(["build", tiny_bundle, "--precision", "fp16", "--dla-core", "0", "--output", out, "--quiet"]) == 2
    assert "has no DLA" in capsys.readouterr().err
    with_tensorrt("10.3.0", dla_cores=2)
    assert main(["build", tiny_bundle, "--precision", "fp16", "--dla-core", "2", "--output", out, "--quiet"]) == 2
    assert "2 DLA core(s)" in capsys.readouterr().err
    with_tensorrt("11.0.0")
    assert main(["build", tiny_bundle, "--precision", "int8", "--implicit-int8", "--calibration", calibration,
                 "--eval-data", "none", "--output", out, "--quiet"]) == 2
    assert "removed implicit INT8" in capsys.readouterr().err
    with_tensorrt("10.3.0", fail_build=True)
    assert main(["build", tiny_bundle, "--precision", "fp16", "--output", out, "--quiet"]) == 2
    assert "could not build" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_dla_build_sets_the_core_and_gpu_fallback(with_tensorrt, tiny_bundle, tmp_path):
    trt = with_tensorrt("8.5.2", dla_cores=2)
    out = str(tmp_path / "engine")
    assert main(["build", tiny_bundle, "--precision", "fp16", "--dla-core", "1", "--output", out, "--quiet"]) == 0
    assert all(c["device"] == "DLA" and c["dla_core"] == 1 and c["flags"] == ["FP16", "GPU_FALLBACK"] for c in trt.calls)
    assert _manifest(out)["provenance"]["build"]["dla_core"] == 1


# ------------------------------------------------------------------ on a real GPU

def _real_tensorrt():
    from edge_fpn.builder.tensorrt_builder import import_tensorrt
    return import_tensorrt()[0]


@pytest.mark.gpu
@pytest.mark.skipif(_real_tensorrt() is None, reason="needs TensorRT (and a GPU)")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_real_tensorrt_build(tiny_bundle, calibration, tmp_path, precision):
    out = str(tmp_path / precision)
    args = ["build", tiny_bundle, "--precision", precision, "--backend", "tensorrt", "--output", out,
            "--timing-cache", str(tmp_path / "timing.cache"), "--eval-data", "none", "--quiet"]
    if precision == "int8":
        args += ["--calibration", calibration]
    assert main(args) == 0
    manifest = _manifest(out)
    assert manifest["stages"]["stage1"]["backend"] == "tensorrt"
    assert os.path.getsize(os.path.join(out, "stage1.engine")) > 1000
    assert manifest["provenance"]["tensorrt_version"] == _real_tensorrt().__version__
    assert os.path.getsize(str(tmp_path / "timing.cache")) > 0
