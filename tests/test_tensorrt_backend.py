"""The TensorRT backend on the CPU: its pure logic, and its whole data flow against fake tensorrt/pycuda.

The fakes keep "device memory" in numpy arrays behind integer pointers and run each "engine" with
ONNX Runtime (the engine file names the ONNX graph it stands for), so a Detector whose manifest
says ``tensorrt`` must give exactly the detections of the ONNX Runtime bundle: that checks buffer
planning, dynamic proposal shapes, host<->device copies, zero-copy mapped memory, the v2/v3
dispatch and stage 1's feature maps staying on the device. The real GPU test is marked ``gpu``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import types

import numpy as np
import pytest

from edge_fpn.bundle import StageSpec, TensorSpec
from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.backends import tensorrt_logic as logic
from fakes.cuda import FakeMemory, cuda_python_modules, make_fake_cuda, make_fake_cudart
from fakes.tensorrt import FakeDataType, make_fake_trt

BINDINGS = ("cuda-python", "pycuda")

PROVENANCE = {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7"}


# ---------------------------------------------------------------- pure logic

def test_versions_and_api_dispatch():
    assert logic.parse_version("10.3.0.30") == (10, 3, 0, 30)
    assert logic.parse_version("8.6.1.post1") == (8, 6, 1)
    assert logic.execute_api((10, 3, 0)) == "v3"
    assert logic.execute_api((11, 0)) == "v3"
    assert logic.execute_api((8, 6, 2)) == "v2"
    assert logic.execute_api((8, 5, 2, 2)) == "v2"
    with pytest.raises(EdgeFpnError, match="8.5 or newer"):
        logic.execute_api((8, 4, 1))


def test_compute_capability_forms():
    for value in ("8.7", [8, 7], (8, 7), "sm_87", "87"):
        assert logic.parse_compute_capability(value) == (8, 7)
    assert logic.parse_compute_capability(None) is None


def test_compatibility_refuses_other_tensorrt_or_gpu():
    ok = logic.compatibility_problem(PROVENANCE, "e.engine", "10.3.0.30", "Orin", (8, 7))
    assert ok is None
    assert logic.compatibility_problem({"tensorrt_version": "8.6.2"}, "e", "8.6.2.3", "Orin", (8, 7)) is None
    problem = logic.compatibility_problem(PROVENANCE, "e.engine", "8.6.2.3", "Orin", (8, 7))
    assert "TensorRT 10.3.0.30" in problem and "8.6.2.3" in problem and "edge-fpn build" in problem
    assert "\n" not in problem
    problem = logic.compatibility_problem(PROVENANCE, "e.engine", "10.3.0.30", "NVIDIA GeForce RTX 4090", (8, 9))
    assert "compute capability 8.7" in problem and "(8.9)" in problem
    # same compute capability, other name (e.g. the builder read /proc/device-tree/model): allowed
    assert logic.compatibility_problem(PROVENANCE, "e.engine", "10.3.0.30", "Other", (8, 7)) is None
    problem = logic.compatibility_problem({"gpu_name": "Orin"}, "e.engine", "10.3.0.30", "Other", (8, 7))
    assert "built on Orin" in problem
    assert logic.missing_provenance({"gpu_name": "x"}) == ["tensorrt_version", "compute_capability"]


def _stage2_spec():
    return StageSpec(file="stage2.engine", backend="tensorrt", precision="fp16",
                     inputs=[TensorSpec("proposals", ["num_proposals", 4]), TensorSpec("features_0", [1, 256, 10, 10])],
                     outputs=[TensorSpec("class_logits", ["num_proposals", 5]),
                              TensorSpec("box_regression", ["num_proposals", 20])],
                     dynamic_axes={"num_proposals": [1, 150]})


def test_buffer_plan_from_tensor_specs():
    stage1 = StageSpec(file="stage1.engine", backend="tensorrt", precision="fp16",
                       inputs=[TensorSpec("images", [1, 3, 320, 320])],
                       outputs=[TensorSpec("features_0", [1, 256, 10, 10]), TensorSpec("objectness_0", [15, 10, 10])])
    stages = {"stage1": stage1, "stage2": _stage2_spec()}
    assert logic.device_resident_outputs("stage1", stages) == ["features_0"]
    assert logic.device_resident_outputs("stage2", stages) == []
    plans = {p.name: p for p in logic.plan_buffers(stage1, ["features_0"])}
    assert plans["images"].nbytes == 3 * 320 * 320 * 4 and plans["images"].needs_host
    assert plans["features_0"].device_resident and not plans["features_0"].needs_host
    assert plans["objectness_0"].needs_host
    plans = {p.name: p for p in logic.plan_buffers(_stage2_spec())}
    assert plans["proposals"].max_shape == (150, 4)  # sized once for the most proposals
    assert plans["box_regression"].max_shape == (150, 20)


def test_dynamic_proposal_shapes():
    spec = _stage2_spec()
    axes = logic.bind_axes(spec, {"proposals": (37, 4), "features_0": (1, 256, 10, 10)})
    assert axes == {"num_proposals": 37}
    assert logic.resolve_shape(spec.outputs[0], spec.dynamic_axes, axes) == (37, 5)
    with pytest.raises(ValueError, match="outside the engine's range 1..150"):
        logic.bind_axes(spec, {"proposals": (151, 4), "features_0": (1, 256, 10, 10)})
    with pytest.raises(ValueError, match="the engine takes"):
        logic.bind_axes(spec, {"proposals": (3, 4), "features_0": (1, 256, 5, 5)})


def test_memory_mode():
    assert logic.host_memory_mode(integrated=True, can_map_host_memory=True) == "mapped"
    assert logic.host_memory_mode(integrated=False, can_map_host_memory=True) == "pinned"


def test_engine_io_must_match_manifest():
    spec = _stage2_spec()
    io = {"proposals": (True, np.float32), "features_0": (True, np.float32),
          "class_logits": (False, np.float32), "box_regression": (False, np.float32)}
    logic.check_engine_io(spec, io, "e")
    with pytest.raises(EdgeFpnError, match="does not match its manifest"):
        logic.check_engine_io(spec, {k: v for k, v in io.items() if k != "box_regression"}, "e")
    with pytest.raises(EdgeFpnError, match="float16"):
        logic.check_engine_io(spec, dict(io, class_logits=(False, np.float16)), "e")


# ---------------------------------------------------------------- fake tensorrt + pycuda

def _make_trt_bundle(source, out, precision="fp32"):
    """`source` as a 'tensorrt' bundle whose engine files point at its ONNX stages; an "fp16" engine
    points at the strongly typed FP16 graph the builder writes for TensorRT 11 (so that the fake
    runs FP16 arithmetic, as the real engine would)."""
    import onnx
    from edge_fpn.builder.fp16 import convert_to_fp16
    out.mkdir()
    manifest = json.loads(open(os.path.join(source, "manifest.json")).read())
    for key, stage in manifest["stages"].items():
        onnx_path = os.path.join(source, stage["file"])
        model = onnx.load(onnx_path)
        if precision == "fp16":
            onnx_path = str(out / f"{key}.fp16.onnx")
            onnx.save(convert_to_fp16(model), onnx_path)
        plugins = ["ROIAlign_TRT"] if any(n.op_type == "RoiAlign" for n in model.graph.node) else []
        (out / f"{key}.engine").write_text(json.dumps({"onnx": onnx_path, "plugins": plugins}))
        stage.update(file=f"{key}.engine", backend="tensorrt", precision=precision)
    manifest["provenance"].update(PROVENANCE)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return str(out)


@pytest.fixture()
def trt_bundle(tiny_host_bundle, tmp_path):
    """The tiny host-layout bundle (stage 1 + stage 2) as a 'tensorrt' bundle."""
    return _make_trt_bundle(tiny_host_bundle, tmp_path / "trt")


@pytest.fixture()
def trt_engine_bundle(tiny_bundle, tmp_path):
    """The tiny engine-layout bundle (one "detector" stage) as a 'tensorrt' bundle."""
    return _make_trt_bundle(tiny_bundle, tmp_path / "trt-engine")


def install_fakes(monkeypatch, memory, version="10.3.0.30", integrated=False, name="Orin", cc=(8, 7), dla_cores=0,
                  binding="cuda-python", driver=12060, runtime=12060, can_map=True):
    """Fake tensorrt, and the fake of one CUDA binding ("cuda-python" or "pycuda"; the other is made
    unimportable, as where it is not installed; "both" installs both). Returns (trt, binding module)."""
    trt = make_fake_trt(memory, version, dla_cores=dla_cores)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cudart = make_fake_cudart(memory, integrated=integrated, name=name, cc=cc, driver=driver, runtime=runtime,
                              can_map=can_map)
    cuda = make_fake_cuda(memory, integrated=integrated, name=name, cc=cc)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    with_cuda_python = binding in ("cuda-python", "both")
    with_pycuda = binding in ("pycuda", "both")
    for key, module in cuda_python_modules(cudart).items():
        monkeypatch.setitem(sys.modules, key, module if with_cuda_python else None)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda if with_pycuda else None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda if with_pycuda else None)
    return trt, (cudart if binding != "pycuda" else cuda)


def assert_nothing_leaks(memory, binding_module):
    """After every backend closed: no device or host memory, stream or event left."""
    leaks = binding_module.leaks() if hasattr(binding_module, "leaks") else {}
    assert not leaks, f"left at teardown: {leaks}"
    assert not memory.blocks, f"{len(memory.blocks)} allocation(s) left at teardown"
    from edge_fpn.runtime.backends.cuda_memory import CudaSession
    assert not [s for s in CudaSession._sessions.values() if s.module is binding_module], "a CUDA session is still open"


def _record_tensorrt_version(bundle, version):
    """Make a bundle claim it was built by this TensorRT version (the fake installed with it)."""
    manifest_path = os.path.join(bundle, "manifest.json")
    manifest = json.loads(open(manifest_path).read())
    manifest["provenance"]["tensorrt_version"] = version
    open(manifest_path, "w").write(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize("binding", BINDINGS)
@pytest.mark.parametrize("version, integrated, api", [("10.3.0.30", False, "v3"), ("8.6.2.3", True, "v2")])
def test_detector_on_fake_tensorrt_equals_onnxruntime(monkeypatch, tiny_host_bundle, trt_bundle, version, integrated,
                                                      api, binding):
    from conftest import textured_image
    from edge_fpn.runtime import Detector
    from edge_fpn.runtime.backends.tensorrt_backend import DeviceTensor

    _record_tensorrt_version(trt_bundle, version)
    memory = FakeMemory()
    trt, cuda = install_fakes(monkeypatch, memory, version=version, integrated=integrated, binding=binding)
    image = textured_image(5, 240, 320)
    reference = Detector(tiny_host_bundle)(image)
    with Detector(trt_bundle) as detector:
        assert detector.layout.stage1.mode == ("mapped" if integrated else "pinned")
        assert detector.layout.stage1.cuda == detector.layout.stage2.cuda == binding
        assert detector.layout.stage1.session is detector.layout.stage2.session  # one context, one stream
        from edge_fpn.runtime.app import engine_providers
        assert engine_providers(detector) == ["TensorRT"]  # what bench and the demo report say it ran on
        result = detector(image)
        # stage 1's feature maps came back as device handles, and stage 2 took them as they were
        outputs1 = detector.run_stage1(detector.preprocess(image)[0])
        features = [n for n in outputs1 if n.startswith("features_")]
        assert features and all(isinstance(outputs1[n], DeviceTensor) for n in features)
        assert all(isinstance(outputs1[n], np.ndarray) for n in outputs1 if n not in features)
        feature_ptrs = {outputs1[n].ptr for n in features}
        assert not [c for c in memory.copies if c[1] in feature_ptrs], "feature maps must not be copied"
        if integrated:
            assert not memory.copies, "mapped memory needs no copies"
        # a handle is usable until its stage runs again, then refused
        host = np.asarray(outputs1[features[0]])
        assert host.shape == tuple(outputs1[features[0]].shape)
        detector.run_stage1(detector.preprocess(image)[0])
        with pytest.raises(EdgeFpnError, match="stale"):  # and a RuntimeError
            detector.layout.stage2({"proposals": np.zeros((2, 4), np.float32), **{n: outputs1[n] for n in features}})
    assert_nothing_leaks(memory, cuda)
    assert not getattr(cuda, "violations", None)
    assert set(trt.calls) == {api}
    assert trt.events.index("plugins") < trt.events.index("deserialize")  # stage 2 holds ROIAlign_TRT
    assert len(result) == len(reference) > 0
    np.testing.assert_allclose(result.boxes, reference.boxes, atol=1e-3)
    np.testing.assert_allclose(result.scores, reference.scores, atol=1e-5)
    np.testing.assert_array_equal(result.labels, reference.labels)


def test_refuses_engine_from_other_tensorrt_or_gpu(monkeypatch, trt_bundle):
    from edge_fpn.runtime import Detector
    install_fakes(monkeypatch, FakeMemory(), version="10.4.0.26")
    with pytest.raises(EdgeFpnError, match=r"built with TensorRT 10\.3\.0\.30 but this machine has TensorRT 10\.4\.0\.26"):
        Detector(trt_bundle)
    install_fakes(monkeypatch, FakeMemory(), name="NVIDIA A100", cc=(8, 0))
    with pytest.raises(EdgeFpnError, match="compute capability 8.7"):
        Detector(trt_bundle)


@pytest.mark.parametrize("damage", ["not json", "no provenance", "provenance of another TensorRT"])
def test_a_manifest_that_cannot_be_read_refuses_the_engine_never_warns(monkeypatch, trt_bundle, tmp_path, caplog,
                                                                        damage):
    # the refusal of an engine built elsewhere rests on the manifest: the backend gets the manifest
    # that load_manifest read (it never reads it a second time and never falls back to {})
    import json
    import shutil
    from edge_fpn.runtime import Detector
    bundle = str(tmp_path / "bundle")
    shutil.copytree(trt_bundle, bundle)
    path = os.path.join(bundle, "manifest.json")
    with open(path) as f:
        data = json.load(f)
    install_fakes(monkeypatch, FakeMemory())
    if damage == "not json":
        with open(path, "w") as f:
            f.write("{ not json")
        with pytest.raises(EdgeFpnError, match="not readable JSON"):
            Detector(bundle)
        return
    if damage == "no provenance":
        data.pop("provenance")
    else:
        data["provenance"]["tensorrt_version"] = "8.6.1"
    with open(path, "w") as f:
        json.dump(data, f)
    if damage == "no provenance":  # nothing to check against: said, once per stage, as a warning
        with Detector(bundle):
            pass
        assert "does not record tensorrt_version" in caplog.text
    else:
        with pytest.raises(EdgeFpnError, match="built with TensorRT 8.6.1"):
            Detector(bundle)


def test_cli_one_line_for_other_tensorrt(monkeypatch, trt_bundle, capsys):
    from edge_fpn.cli import main
    install_fakes(monkeypatch, FakeMemory(), version="8.6.1.6")
    assert main(["detect", trt_bundle, "test://?frames=1&realtime=0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TensorRT" in err and "edge-fpn build" in err


def test_missing_tensorrt_is_a_sentence(monkeypatch, trt_bundle):
    from edge_fpn.runtime import Detector
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(EdgeFpnError, match="need TensorRT"):
        Detector(trt_bundle)


def test_corrupt_engine(monkeypatch, trt_bundle):
    from edge_fpn.runtime import Detector
    with open(os.path.join(trt_bundle, "stage2.engine"), "w") as f:
        f.write("garbage")
    install_fakes(monkeypatch, FakeMemory())
    with pytest.raises(EdgeFpnError, match="could not deserialize"):
        Detector(trt_bundle)


@pytest.mark.parametrize("binding", BINDINGS)
@pytest.mark.parametrize("version, integrated, api", [("10.3.0.30", False, "v3"), ("8.5.2.2", True, "v2")])
def test_engine_layout_on_fake_tensorrt_equals_onnxruntime(monkeypatch, tiny_bundle, trt_engine_bundle, version,
                                                           integrated, api, binding):
    """One "detector" engine: uint8 image in the engine's own input buffer, int32 labels and count out."""
    from conftest import textured_image
    from edge_fpn.runtime import Detector

    manifest = _record_tensorrt_version(trt_engine_bundle, version)
    memory = FakeMemory()
    trt, cuda = install_fakes(monkeypatch, memory, version=version, integrated=integrated, binding=binding)
    image = textured_image(5, 240, 320)
    reference = Detector(tiny_bundle)(image)
    with Detector(trt_engine_bundle) as detector:
        engine = detector.layout.engine
        buffer = engine.input_array("image")
        assert buffer.dtype == np.uint8 and buffer.shape == tuple(manifest["stages"]["detector"]["inputs"][0]["shape"])
        assert engine.buffers["labels"].plan.dtype == np.int32 and engine.buffers["num_detections"].plan.dtype == np.int32
        assert detector.layout.own_buffer is buffer or np.shares_memory(detector.layout.own_buffer, buffer)
        result = detector(image)
        result_again = detector(image)
    assert_nothing_leaks(memory, cuda)
    assert trt.calls == [api, api] and trt.events.index("plugins") < trt.events.index("deserialize")
    if integrated:
        assert not memory.copies, "mapped memory needs no copies"
    for got in (result, result_again):
        assert len(got) == len(reference) > 0
        np.testing.assert_allclose(got.boxes, reference.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, reference.scores, atol=1e-5)
        np.testing.assert_array_equal(got.labels, reference.labels)


@pytest.mark.parametrize("layout", ["engine", "host"])
def test_an_fp16_engine_runs_fp16_and_keeps_the_detections(monkeypatch, tiny_bundle, tiny_host_bundle, tmp_path,
                                                           layout):
    from conftest import textured_image
    from detection_matching import matched_share
    from edge_fpn.runtime import Detector

    source = tiny_bundle if layout == "engine" else tiny_host_bundle
    bundle = _make_trt_bundle(source, tmp_path / "fp16", precision="fp16")
    memory = FakeMemory()
    _, cuda = install_fakes(monkeypatch, memory)
    forward, backward = [], []
    with Detector(source) as reference, Detector(bundle) as detector:
        for seed in (5, 6):
            image = textured_image(seed, 240, 320)
            want, got = reference(image), detector(image)
            pair = ((want.boxes, want.scores, want.labels), (got.boxes, got.scores, got.labels))
            forward.append(matched_share(*pair, 0.05, 0.9, 0.05))
            backward.append(matched_share(*pair[::-1], 0.05, 0.9, 0.05))
            assert not np.array_equal(got.scores, want.scores), "float16 arithmetic must show in the scores"
    assert_nothing_leaks(memory, cuda)
    # the FP16 tolerance of test_build_fp16.py (float16's 11-bit significand through the network)
    assert min(forward) >= 0.95 and min(backward) >= 0.95, (forward, backward)


def test_the_input_buffer_is_not_copied_into_itself(monkeypatch, tiny_bundle, trt_engine_bundle):
    from edge_fpn.runtime.backends import tensorrt_backend
    from edge_fpn.bundle import load_manifest

    memory = FakeMemory()
    install_fakes(monkeypatch, memory)
    manifest = load_manifest(trt_engine_bundle)
    stage = manifest.stages["detector"]
    copies = []
    real_copyto = np.copyto

    def copyto(dst, src, **kwargs):
        copies.append(dst.shape)
        return real_copyto(dst, src, **kwargs)

    with tensorrt_backend.TensorRTBackend(os.path.join(trt_engine_bundle, stage.file), stage,
                                          provenance=manifest.provenance, stages=manifest.stages,
                                          stage_key="detector") as engine:
        image = engine.input_array("image")
        image[...] = 7
        size = np.array([200, 320], np.float32)
        monkeypatch.setattr(tensorrt_backend.np, "copyto", copyto)
        in_place = engine({"image": image, "image_size": size})
        assert copies == [(2,)]  # image_size only: the image is already in the engine's buffer
        elsewhere = engine({"image": np.full_like(image, 7), "image_size": size})
        assert copies == [(2,), image.shape, (2,)]
        monkeypatch.setattr(tensorrt_backend.np, "copyto", real_copyto)
        for name in in_place:
            np.testing.assert_array_equal(in_place[name], elsewhere[name])
        with pytest.raises(EdgeFpnError, match="input image is float32, the engine takes uint8"):  # and a ValueError
            engine({"image": image.astype(np.float32), "image_size": size})
        with pytest.raises(EdgeFpnError, match="not an input"):  # and a KeyError
            engine.input_array("boxes")


def test_an_engine_with_a_plugin_needs_the_plugin_library(monkeypatch, trt_engine_bundle):
    # the defect this guards against: without init_libnvinfer_plugins the engine (ROIAlign_TRT) does not
    # load, and the user was told it was corrupt
    from edge_fpn.runtime import Detector
    trt, _ = install_fakes(monkeypatch, FakeMemory())
    trt.init_libnvinfer_plugins = lambda logger, namespace: False  # the library could not register
    with pytest.raises(EdgeFpnError, match="libnvinfer_plugin"):
        Detector(trt_engine_bundle)


def _with_dla(bundle, core):
    path = os.path.join(bundle, "manifest.json")
    manifest = json.loads(open(path).read())
    manifest["provenance"]["dla_core"] = core
    for stage in manifest["stages"].values():
        engine = os.path.join(bundle, stage["file"])
        spec = json.loads(open(engine).read())
        open(engine, "w").write(json.dumps(dict(spec, dla_core=core)))
    open(path, "w").write(json.dumps(manifest))


def test_a_dla_engine_gets_its_core_before_deserializing(monkeypatch, trt_engine_bundle):
    from edge_fpn.runtime import Detector
    _with_dla(trt_engine_bundle, 1)
    trt, _ = install_fakes(monkeypatch, FakeMemory(), dla_cores=2)
    with Detector(trt_engine_bundle) as detector:
        assert detector.layout.engine._runtime.DLA_core == 1
    assert trt.events.index("DLA_core=1") < trt.events.index("deserialize")
    install_fakes(monkeypatch, FakeMemory(), dla_cores=0)
    with pytest.raises(EdgeFpnError, match="built for DLA core 1, but TensorRT sees no DLA"):
        Detector(trt_engine_bundle)
    install_fakes(monkeypatch, FakeMemory(), dla_cores=1)
    with pytest.raises(EdgeFpnError, match=r"has 1 DLA core\(s\)"):
        Detector(trt_engine_bundle)
    assert logic.dla_core_of({"build": {"dla_core": 0}}) == 0 and logic.dla_core_of({}) is None


def test_a_refused_tensor_address_is_an_error(monkeypatch, trt_engine_bundle):
    from conftest import textured_image
    from edge_fpn.runtime import Detector
    install_fakes(monkeypatch, FakeMemory())
    with Detector(trt_engine_bundle) as detector:
        context = detector.layout.engine.context
        real = context.set_tensor_address
        monkeypatch.setattr(context, "set_tensor_address", lambda name, ptr: False if name == "boxes" else real(name, ptr))
        with pytest.raises(EdgeFpnError, match="refused the address .* of tensor boxes"):  # and a RuntimeError
            detector(textured_image(1, 120, 160))


def test_buffer_identity_and_engine_dtypes():
    host = np.zeros(12, np.uint8)
    assert logic.is_buffer(host[:12].reshape(1, 2, 2, 3), host, np.uint8)
    assert not logic.is_buffer(host.copy().reshape(1, 2, 2, 3), host, np.uint8)
    assert not logic.is_buffer(host[1:], host, np.uint8) and not logic.is_buffer(host.view(np.int8), host, np.uint8)
    stage = StageSpec(file="detector.engine", backend="tensorrt", precision="fp16",
                      inputs=[TensorSpec("image", [1, 8, 8, 3], "uint8"), TensorSpec("image_size", [2])],
                      outputs=[TensorSpec("labels", [10], "int32")])
    plans = {p.name: p for p in logic.plan_buffers(stage, dtypes={"image": np.uint8, "labels": np.int32})}
    assert plans["image"].nbytes == 192 and plans["labels"].dtype == np.int32 and plans["image_size"].dtype == np.float32


def test_tensorrt_types_map_to_numpy_without_trt_nptype():
    """TensorRT's DataType -> numpy by name, since trt.nptype raises on TensorRT 8.5 with NumPy >= 1.24."""
    data_type = FakeDataType.enum(["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "INT64", "BF16", "INT4"])
    want = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
            "BOOL": np.bool_, "UINT8": np.uint8}
    for name, numpy_type in want.items():
        member = getattr(data_type, name)
        assert logic.tensorrt_numpy_dtype(member, "t") == np.dtype(numpy_type)  # by .name
        assert logic.tensorrt_numpy_dtype(str(member), "t") == np.dtype(numpy_type)  # by str: "DataType.FLOAT"
    assert logic.tensorrt_numpy_dtype(data_type.BOOL, "t").itemsize == 1
    for name in ("FP8", "BF16", "INT4"):
        with pytest.raises(EdgeFpnError) as info:
            logic.tensorrt_numpy_dtype(getattr(data_type, name), "boxes", "detector.engine")
        message = str(info.value)
        assert len(message.splitlines()) == 1 and name in message and "tensor boxes" in message
        assert "detector.engine" in message and "edge-fpn build" in message


def test_an_engine_loads_on_tensorrt_8_5_whose_nptype_is_broken(monkeypatch, trt_engine_bundle):
    """JetPack 5.1 (TensorRT 8.5) with NumPy >= 1.24: trt.nptype raises for every type, and an engine
    must load regardless; an I/O type numpy cannot hold (BF16) is one sentence naming the tensor."""
    from edge_fpn.runtime import Detector
    _record_tensorrt_version(trt_engine_bundle, "8.5.2.2")
    trt, _ = install_fakes(monkeypatch, FakeMemory(), version="8.5.2.2", integrated=True)
    with pytest.raises(AttributeError, match="np.bool"):  # the fake is as broken as the real one
        trt.nptype(trt.DataType.FLOAT)
    with Detector(trt_engine_bundle) as detector:
        engine = detector.layout.engine
        assert engine.buffers["image"].plan.dtype == np.uint8 and engine.buffers["labels"].plan.dtype == np.int32
        assert engine.buffers["boxes"].plan.dtype == np.float32
    real = trt.Runtime.deserialize_cuda_engine

    def deserialize(self, blob):
        engine = real(self, blob)
        engine.types["boxes"] = trt.DataType.BF16
        return engine

    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", deserialize)
    with pytest.raises(EdgeFpnError, match=r"detector\.engine: tensor boxes is of TensorRT type BF16"):
        Detector(trt_engine_bundle)


# ---------------------------------------------------------------- the device-memory layer (cuda_memory)

# every cuda-python call the backend makes, by when: opening a bundle, a frame, closing
OPEN_CALLS = ["cudaDriverGetVersion", "cudaRuntimeGetVersion", "cudaGetDeviceCount", "cudaSetDevice",
              "cudaGetDeviceProperties", "cudaDeviceGetAttribute", "cudaStreamCreate", "cudaMalloc", "cudaMallocHost"]
MAPPED_CALLS = ["cudaHostAlloc", "cudaHostGetDevicePointer"]
FRAME_CALLS = ["cudaMemcpyAsync", "cudaStreamSynchronize"]
CLOSE_CALLS = ["cudaFree", "cudaFreeHost", "cudaStreamDestroy"]


@pytest.mark.parametrize("call, integrated", [(c, False) for c in OPEN_CALLS] + [(c, True) for c in MAPPED_CALLS])
def test_every_cuda_python_error_at_open_is_one_line_and_frees_what_was_made(monkeypatch, trt_bundle, call,
                                                                            integrated):
    from edge_fpn.runtime import Detector
    memory = FakeMemory()
    _, cudart = install_fakes(monkeypatch, memory, integrated=integrated)
    cudart.fail[call] = cudart.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(EdgeFpnError) as info:
        Detector(trt_bundle)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and f"CUDA call {call} failed" in message
    assert "cudaErrorMemoryAllocation" in message and "out of memory" in message
    assert_nothing_leaks(memory, cudart)  # the stream and every buffer made before the failure


@pytest.mark.parametrize("call", FRAME_CALLS)
def test_a_cuda_python_error_during_a_frame_is_one_line(monkeypatch, trt_engine_bundle, call):
    from conftest import textured_image
    from edge_fpn.runtime import Detector
    memory = FakeMemory()
    _, cudart = install_fakes(monkeypatch, memory)
    with Detector(trt_engine_bundle) as detector:
        cudart.fail[call] = cudart.cudaError_t.cudaErrorIllegalAddress
        with pytest.raises(EdgeFpnError, match=f"CUDA call {call} failed .*cudaErrorIllegalAddress"):
            detector(textured_image(1, 120, 160))
    assert_nothing_leaks(memory, cudart)


@pytest.mark.parametrize("call", CLOSE_CALLS)
def test_a_cuda_python_error_at_close_is_one_line(monkeypatch, trt_engine_bundle, call):
    from edge_fpn.runtime import Detector
    memory = FakeMemory()
    _, cudart = install_fakes(monkeypatch, memory)
    detector = Detector(trt_engine_bundle)
    cudart.fail[call] = cudart.cudaError_t.cudaErrorUnknown
    with pytest.raises(EdgeFpnError, match=f"CUDA call {call} failed"):
        detector.close()
    detector.close()  # a second close does nothing


@pytest.mark.parametrize("binding", BINDINGS)
def test_session_events_copies_and_teardown(monkeypatch, binding):
    """The layer on its own: page-locked and mapped buffers, copies both ways on the stream,
    events, and everything freed by the last release, also what a caller forgot to free."""
    from edge_fpn.runtime.backends.cuda_memory import CudaSession
    memory = FakeMemory()
    _, module = install_fakes(monkeypatch, memory, binding=binding)
    session = CudaSession.acquire(binding)
    assert CudaSession.acquire("auto") is session and session.refs == 2  # shared, counted
    assert session.implementation == binding and session.name == "Orin" and session.compute_capability == (8, 7)
    assert isinstance(session.stream_handle, int) and session.stream_handle
    with session:
        pinned = session.host_buffer(6, np.float16)
        mapped = session.host_buffer(4, np.int32, mapped=True)
        device = session.device_buffer(12)
        assert pinned.array.dtype == np.float16 and pinned.array.shape == (6,) and not pinned.mapped
        assert mapped.mapped and mapped.device_address != mapped.array.__array_interface__["data"][0]
        pinned.array[:] = np.arange(6)
        start = session.event().record()
        session.copy_to_device(device.address, pinned.array)
        back = session.host_buffer(6, np.float16)
        session.copy_to_host(back.array, device.address)
        end = session.event().record()
        end.synchronize()
        np.testing.assert_array_equal(back.array, np.arange(6))
        assert end.elapsed_ms(start) >= 0
        np.testing.assert_array_equal(session.download(device.address, (2, 3), np.float16), np.arange(6).reshape(2, 3))
        mapped.array[:] = 7  # the GPU sees it at its own address
        assert (memory.view(mapped.device_address, np.int32, (4,)) == 7).all()
        pinned.free()
        pinned.free()  # once only
        start.free()
    session.release()
    assert session.refs == 1 and not session.closed
    session.release()  # the last: frees the rest (mapped, device, back, end) and the stream
    assert session.closed and session.live == 0
    assert_nothing_leaks(memory, module)


def test_auto_takes_cuda_python_and_never_imports_pycuda(monkeypatch, trt_engine_bundle):
    from edge_fpn.runtime import Detector
    memory = FakeMemory()
    install_fakes(monkeypatch, memory, binding="cuda-python")
    monkeypatch.delitem(sys.modules, "pycuda")
    monkeypatch.delitem(sys.modules, "pycuda.driver")
    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__

    def guarded(name, *args, **kwargs):
        assert not name.startswith("pycuda"), "the cuda-python path imported pycuda"
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", guarded)
    with Detector(trt_engine_bundle) as detector:
        assert detector.layout.engine.cuda == "cuda-python"


def test_binding_choice(monkeypatch, trt_engine_bundle):
    from edge_fpn.runtime import Detector
    install_fakes(monkeypatch, FakeMemory(), binding="both")
    with Detector(trt_engine_bundle) as detector:
        assert detector.layout.engine.cuda == "cuda-python"
    with Detector(trt_engine_bundle, cuda="pycuda") as detector:
        assert detector.layout.engine.cuda == "pycuda"
    install_fakes(monkeypatch, FakeMemory(), binding="pycuda")  # where only pycuda is installed (JetPack 5.1)
    with Detector(trt_engine_bundle) as detector:
        assert detector.layout.engine.cuda == "pycuda"
    with pytest.raises(EdgeFpnError, match=r"--cuda cuda-python: cuda-python is not installed; pip install 'edge-fpn\[cuda12\]'"):
        Detector(trt_engine_bundle, cuda="cuda-python")
    install_fakes(monkeypatch, FakeMemory(), binding="cuda-python")
    with pytest.raises(EdgeFpnError, match="--cuda pycuda: pycuda is not installed"):
        Detector(trt_engine_bundle, cuda="pycuda")
    install_fakes(monkeypatch, FakeMemory(), binding="none")
    with pytest.raises(EdgeFpnError, match="needs cuda-python .* neither is installed"):
        Detector(trt_engine_bundle)
    with pytest.raises(EdgeFpnError, match="cuda must be one of auto, cuda-python, pycuda"):
        Detector(trt_engine_bundle, cuda="cupy")


@pytest.mark.parametrize("binding", BINDINGS)
def test_forced_memory_modes(monkeypatch, tiny_bundle, trt_engine_bundle, binding):
    """Mapped memory forced on a discrete GPU (what the GPU data-flow check does) and pinned memory
    forced on an integrated one give ONNX Runtime's outputs; mapped needs a GPU that can map."""
    from conftest import textured_image
    from edge_fpn.bundle import load_manifest
    from edge_fpn.runtime.backends import open_stage
    from edge_fpn.runtime.backends.tensorrt_backend import TensorRTBackend
    manifest = load_manifest(trt_engine_bundle)
    stage = manifest.stages["detector"]
    path = os.path.join(trt_engine_bundle, stage.file)
    facts = {"provenance": manifest.provenance, "stages": manifest.stages, "stage_key": "detector"}
    reference_backend = open_stage(tiny_bundle, load_manifest(tiny_bundle), "detector", device="cpu")
    image = np.ascontiguousarray(textured_image(3, 320, 320)[None])
    size = np.array([320, 320], np.float32)
    reference = reference_backend({"image": image, "image_size": size})
    for integrated, memory_mode in ((False, "mapped"), (True, "pinned")):
        memory = FakeMemory()
        _, module = install_fakes(monkeypatch, memory, integrated=integrated, binding=binding)
        with TensorRTBackend(path, stage, cuda=binding, memory=memory_mode, **facts) as engine:
            assert engine.mode == memory_mode
            got = engine({"image": image, "image_size": size})
        assert bool(memory.copies) == (memory_mode == "pinned")
        for name, value in reference.items():
            np.testing.assert_array_equal(got[name], value)
        assert_nothing_leaks(memory, module)
    install_fakes(monkeypatch, FakeMemory(), can_map=False)
    with pytest.raises(EdgeFpnError, match="memory 'mapped' needs a GPU that can map host memory"):
        TensorRTBackend(path, stage, memory="mapped", **facts)
    with pytest.raises(EdgeFpnError, match="memory must be one of"):
        TensorRTBackend(path, stage, memory="unified", **facts)


def test_cuda_13_bindings_on_a_cuda_12_driver_is_one_line_exit_2(monkeypatch, trt_engine_bundle, capsys):
    from edge_fpn.cli import main
    memory = FakeMemory()
    _, cudart = install_fakes(monkeypatch, memory, driver=12020, runtime=13050)
    assert main(["detect", trt_engine_bundle, "test://?frames=1&realtime=0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "cuda-python 13.5.0 is built for CUDA 13.5" in err and "driver supports CUDA 12.2" in err
    assert "edge-fpn[cuda12]" in err and "Traceback" not in err
    assert_nothing_leaks(memory, cudart)
    # an older major still: JetPack 5.1's CUDA 11.4 has no cuda-python wheels: pycuda
    install_fakes(monkeypatch, FakeMemory(), driver=11040, runtime=12060)
    assert main(["detect", trt_engine_bundle, "test://?frames=1&realtime=0", "--quiet", "--cuda", "auto"]) == 2
    assert "use pycuda" in capsys.readouterr().err


def test_the_real_cuda_python_without_a_driver_is_one_line(monkeypatch, trt_engine_bundle, capsys):
    """The real cuda.bindings, where it is installed and no driver is (this CI machine): one line."""
    real = pytest.importorskip("cuda.bindings.runtime")
    if real.cudaDriverGetVersion()[1]:
        pytest.skip("a CUDA driver is installed here")
    from edge_fpn.cli import main
    install_fakes(monkeypatch, FakeMemory(), binding="none")
    for key in ("cuda", "cuda.bindings", "cuda.bindings.runtime"):
        monkeypatch.delitem(sys.modules, key)
    assert main(["detect", trt_engine_bundle, "test://?frames=1&realtime=0", "--quiet", "--cuda", "cuda-python"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cudaDriverGetVersion: no NVIDIA driver is installed" in err


def test_error_messages_without_a_driver_match_the_real_bindings():
    """The fake's error tuples have the real bindings' shape and the layer words them in one line."""
    from edge_fpn.runtime.backends import cuda_memory
    real = pytest.importorskip("cuda.bindings.runtime")
    fake = make_fake_cudart(FakeMemory(), driver=0, runtime=13050)
    for module in (real, fake):
        result = module.cudaMalloc(16)
        if int(result[0]) == 0:  # a GPU is here: the real call worked
            module.cudaFree(result[1])
            continue
        assert len(result) == 2 and result[1] is None and result[0].name == "cudaErrorInsufficientDriver"
        assert len(module.cudaStreamSynchronize(0)) == 1
        with pytest.raises(EdgeFpnError) as info:
            cuda_memory.check(module, "cudaMalloc", result)
        message = str(info.value)
        assert message.startswith("CUDA call cudaMalloc failed (cudaErrorInsufficientDriver: CUDA driver version is "
                                  "insufficient for CUDA runtime version)") and "\n" not in message
    assert cuda_memory.check(fake, "cudaRuntimeGetVersion", fake.cudaRuntimeGetVersion()) == 13050
    assert cuda_memory.check(fake, "cudaFree", (fake.cudaError_t.cudaSuccess,)) is None


def test_missing_onnxruntime_is_one_line(monkeypatch, tiny_bundle):
    from edge_fpn.runtime import Detector
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgeFpnError) as info:
        Detector(tiny_bundle)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "pip install 'edge-fpn[onnxruntime]'" in message
    assert "neither TensorRT nor ONNX Runtime is installed" in message


# ---------------------------------------------------------------- on a real GPU

def _have_gpu_stack():
    try:
        import tensorrt  # noqa: F401
        from edge_fpn.runtime.backends.cuda_memory import choose_binding
        choose_binding("auto")  # cuda-python, else pycuda
    except (ImportError, EdgeFpnError):  # not installed here; a broken install on a GPU machine fails the test
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _have_gpu_stack(), reason="needs tensorrt and cuda-python or pycuda (an NVIDIA GPU)")
def test_real_tensorrt_bundle(tiny_host_bundle, tmp_path):
    """Build engines for the tiny bundle with the project's builder, then compare with ONNX Runtime."""
    from conftest import textured_image
    from edge_fpn.runtime import Detector
    from edge_fpn.builder.builder import BuildRequest, build_engine
    out = str(tmp_path / "engines")
    build_engine(BuildRequest(tiny_host_bundle, out, precision="fp32", backend="tensorrt", eval_data=None),
                 progress=False)
    image = textured_image(7, 320, 320)
    reference = Detector(tiny_host_bundle)(image)
    with Detector(out) as detector:
        result = detector(image)
    assert len(result) == len(reference)
    np.testing.assert_allclose(result.boxes, reference.boxes, atol=0.5)
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.gpu
@pytest.mark.skipif(not _have_gpu_stack(), reason="needs tensorrt and cuda-python or pycuda (an NVIDIA GPU)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_tensorrt_engine_layout(tiny_bundle, tmp_path, precision):
    """The engine layout built and run on the GPU: the same detections as ONNX Runtime (FP16: the
    network in FP16, the postprocessing kept FP32), the frame letterboxed into the engine's buffer."""
    from conftest import textured_image
    from edge_fpn.builder.builder import BuildRequest, build_engine
    from edge_fpn.runtime import Detector
    out = str(tmp_path / precision)
    build_engine(BuildRequest(tiny_bundle, out, precision=precision, backend="tensorrt", eval_data=None),
                 progress=False)
    image = textured_image(7, 320, 320)
    reference = Detector(tiny_bundle)(image)
    with Detector(out) as detector:
        engine = detector.layout.engine
        assert np.shares_memory(detector.layout.own_buffer, engine.input_array("image"))
        result = detector(image)
    if precision == "fp32":
        assert len(result) == len(reference)
        np.testing.assert_allclose(result.boxes, reference.boxes, atol=0.5)
        np.testing.assert_array_equal(result.labels, reference.labels)
    else:
        assert abs(len(result) - len(reference)) <= max(2, len(reference) // 10)
        np.testing.assert_allclose(result.boxes[:1], reference.boxes[:1], atol=2.0)


def test_the_fake_runtime_has_no_int64_engine_io_before_tensorrt_9(monkeypatch, tmp_path):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])
    path = str(tmp_path / "int64.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    blob = json.dumps({"onnx": path}).encode()
    for version, loads in (("8.6.1", False), ("10.3.0.30", True)):
        trt = make_fake_trt(FakeMemory(), version)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        assert (runtime.deserialize_cuda_engine(blob) is not None) == loads, version
