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

from edge_fpn.bundle import StageSpec, TensorSpec, load_manifest
from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.backends import tensorrt_logic as logic

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

class FakeMemory:
    def __init__(self):
        self.blocks = {}
        self.next = 0x1000
        self.copies = []  # (direction, ptr, nbytes)

    def alloc(self, nbytes):
        ptr = self.next
        self.next += (nbytes + 0xFFF) & ~0xFFF or 0x1000
        self.blocks[ptr] = np.zeros(max(1, nbytes), np.uint8)
        return ptr

    def view(self, ptr, dtype, shape):
        count = int(np.prod(shape)) if shape else 1
        return self.blocks[ptr][: count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)


def make_fake_cuda(memory, integrated=False, name="Orin", cc=(8, 7)):
    cuda = types.ModuleType("pycuda.driver")

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.ptr = memory.alloc(nbytes)

        def __int__(self):
            return self.ptr

        def free(self):
            memory.blocks.pop(self.ptr, None)

    class HostAllocation:
        def __init__(self, count, dtype, mapped):
            self.ptr = memory.alloc(count * np.dtype(dtype).itemsize)
            self.mapped = mapped
            data = memory.blocks[self.ptr][: count * np.dtype(dtype).itemsize].view(dtype)
            self.__array_interface__ = data.__array_interface__
            self._data = data

        def get_device_pointer(self):
            assert self.mapped, "get_device_pointer needs DEVICEMAP"
            return self.ptr

    class Context:
        depth = 0

        def push(self):
            Context.depth += 1

        @staticmethod
        def pop():
            assert Context.depth > 0
            Context.depth -= 1

    class Device:
        def __init__(self, index):
            self.index = index

        def name(self):
            return name

        def compute_capability(self):
            return cc

        def get_attribute(self, attribute):
            return {"INTEGRATED": int(integrated), "CAN_MAP_HOST_MEMORY": 1}[attribute]

        def retain_primary_context(self):
            return Context()

    class Stream:
        handle = 1234

        def synchronize(self):
            pass

    def pagelocked_empty(count, dtype, mem_flags=0):
        return np.asarray(HostAllocation(count, dtype, mapped=bool(mem_flags)))

    def host_pointer(array):
        # the fake "host" arrays live in fake memory too: find the block holding them
        address = array.__array_interface__["data"][0]
        for ptr, block in memory.blocks.items():
            start = block.__array_interface__["data"][0]
            if start <= address < start + block.nbytes:
                return ptr, address - start
        raise AssertionError("copies must use page-locked buffers")

    def memcpy_htod_async(dest, src, stream):
        ptr, offset = host_pointer(src)
        raw = memory.blocks[ptr][offset: offset + src.nbytes]
        memory.blocks[int(dest)][: src.nbytes] = raw
        memory.copies.append(("htod", int(dest), src.nbytes))

    def memcpy_dtoh_async(dest, src, stream):
        host_pointer(dest)
        dest.reshape(-1).view(np.uint8)[:] = memory.blocks[int(src)][: dest.nbytes]
        memory.copies.append(("dtoh", int(src), dest.nbytes))

    def memcpy_dtoh(dest, src):
        dest.reshape(-1).view(np.uint8)[:] = memory.blocks[int(src)][: dest.nbytes]
        memory.copies.append(("dtoh-sync", int(src), dest.nbytes))

    cuda.init = lambda: None
    cuda.Device = Device
    cuda.Context = Context
    cuda.Stream = Stream
    cuda.mem_alloc = DeviceAllocation
    cuda.pagelocked_empty = pagelocked_empty
    cuda.memcpy_htod_async = memcpy_htod_async
    cuda.memcpy_dtoh_async = memcpy_dtoh_async
    cuda.memcpy_dtoh = memcpy_dtoh
    cuda.host_alloc_flags = types.SimpleNamespace(DEVICEMAP=2)
    cuda.device_attribute = types.SimpleNamespace(INTEGRATED="INTEGRATED", CAN_MAP_HOST_MEMORY="CAN_MAP_HOST_MEMORY")
    return cuda


def make_fake_trt(memory, version="10.3.0.30"):
    """An 'engine' file is JSON naming an ONNX file; executing it runs ONNX Runtime on fake memory."""
    import onnxruntime as ort
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = lambda dtype: np.dtype(dtype).type

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = int(ptr)

        def _run(self, addresses):
            session = self.engine.session
            feeds = {i.name: memory.view(addresses[i.name], np.float32, self.shapes[i.name]).copy()
                     for i in session.get_inputs()}
            outputs = session.run(None, feeds)
            for meta, value in zip(session.get_outputs(), outputs):
                memory.view(addresses[meta.name], value.dtype, value.shape)[...] = value
            return True

        def execute_async_v3(self, stream_handle):
            assert logic.parse_version(version)[0] >= 10, "execute_async_v3 is used only on TensorRT 10+"
            trt.calls.append("v3")
            return self._run(self.addresses)

        def execute_async_v2(self, bindings, stream_handle):
            assert logic.parse_version(version)[0] < 10, "TensorRT 10 has no execute_async_v2"
            trt.calls.append("v2")
            return self._run(dict(zip(self.engine.names, bindings)))

    class Engine:
        def __init__(self, onnx_path):
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            inputs = [i.name for i in self.session.get_inputs()]
            outputs = [o.name for o in self.session.get_outputs()]
            self.names = inputs[::-1] + outputs  # an engine's own order, not the manifest's
            self.modes = {n: ("INPUT" if n in inputs else "OUTPUT") for n in self.names}

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return self.modes[name]

        def get_tensor_dtype(self, name):
            return np.float32

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, blob):
            try:
                return Engine(json.loads(blob.decode())["onnx"])
            except (ValueError, KeyError):
                return None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture()
def trt_bundle(tiny_bundle, tmp_path):
    """The tiny bundle as a 'tensorrt' bundle whose engine files point at its ONNX stages."""
    out = tmp_path / "trt"
    out.mkdir()
    manifest = json.loads(open(os.path.join(tiny_bundle, "manifest.json")).read())
    for key, stage in manifest["stages"].items():
        (out / f"{key}.engine").write_text(json.dumps({"onnx": os.path.join(tiny_bundle, stage["file"])}))
        stage.update(file=f"{key}.engine", backend="tensorrt", precision="fp32")
    manifest["provenance"].update(PROVENANCE)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return str(out)


def install_fakes(monkeypatch, memory, version="10.3.0.30", integrated=False, name="Orin", cc=(8, 7)):
    trt = make_fake_trt(memory, version)
    cuda = make_fake_cuda(memory, integrated=integrated, name=name, cc=cc)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return trt, cuda


@pytest.mark.parametrize("version, integrated, api", [("10.3.0.30", False, "v3"), ("8.6.2.3", True, "v2")])
def test_detector_on_fake_tensorrt_equals_onnxruntime(monkeypatch, tiny_bundle, trt_bundle, version, integrated, api):
    from conftest import textured_image
    from edge_fpn.runtime import Detector
    from edge_fpn.runtime.backends.tensorrt_backend import DeviceTensor

    manifest_path = os.path.join(trt_bundle, "manifest.json")
    manifest = json.loads(open(manifest_path).read())
    manifest["provenance"]["tensorrt_version"] = version
    open(manifest_path, "w").write(json.dumps(manifest))
    memory = FakeMemory()
    trt, _ = install_fakes(monkeypatch, memory, version=version, integrated=integrated)
    image = textured_image(5, 240, 320)
    reference = Detector(tiny_bundle)(image)
    with Detector(trt_bundle) as detector:
        assert detector.stage1.mode == ("mapped" if integrated else "pinned")
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
        with pytest.raises(RuntimeError, match="stale"):
            detector.stage2({"proposals": np.zeros((2, 4), np.float32), **{n: outputs1[n] for n in features}})
    assert set(trt.calls) == {api}
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


# ---------------------------------------------------------------- on a real GPU

def _have_gpu_stack():
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _have_gpu_stack(), reason="needs tensorrt and pycuda (an NVIDIA GPU)")
def test_real_tensorrt_bundle(tiny_bundle, tmp_path):
    """Build engines for the tiny bundle with the project's builder, then compare with ONNX Runtime."""
    from conftest import textured_image
    from edge_fpn.runtime import Detector
    from edge_fpn.builder.builder import build_engine
    out = str(tmp_path / "engines")
    build_engine(tiny_bundle, precision="fp32", backend="tensorrt", output=out, eval_data=None, progress=False,
                 log=lambda text: None)
    image = textured_image(7, 320, 320)
    reference = Detector(tiny_bundle)(image)
    with Detector(out) as detector:
        result = detector(image)
    assert len(result) == len(reference)
    np.testing.assert_allclose(result.boxes, reference.boxes, atol=0.5)
    shutil.rmtree(out, ignore_errors=True)
