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


class FakeDataType:
    """A member of tensorrt.DataType (a pybind11 enum): ``.name`` "FLOAT", ``str`` "DataType.FLOAT"."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __str__(self):
        return f"DataType.{self.name}"

    def __repr__(self):
        return f"<DataType.{self.name}: {self.value}>"

    @classmethod
    def enum(cls, names):
        return types.SimpleNamespace(**{name: cls(name, value) for value, name in enumerate(names)})


def make_fake_trt(memory, version="10.3.0.30", dla_cores=0):
    """An 'engine' file is JSON naming an ONNX file; executing it runs ONNX Runtime on fake memory.

    As strict as TensorRT where the backend depends on it: an engine that holds a plugin
    ("plugins" in its JSON; RoiAlign's ROIAlign_TRT) deserializes only after init_libnvinfer_plugins;
    a DLA engine ("dla_core") only with the runtime's DLA_core set to that core first;
    set_tensor_address returns a bool (False for an unknown name, a null or misaligned address);
    tensor types come from the graph (uint8 image, int32 labels) as trt.DataType members (an enum:
    ``.name`` "FLOAT", ``str`` "DataType.FLOAT"); and trt.nptype, like TensorRT 8.5's with NumPy >= 1.24
    (it looks up the removed np.bool; NVIDIA/TensorRT #2557, #2701), raises AttributeError before 8.6."""
    import onnxruntime as ort
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # "v2" / "v3" executions
    trt.events = []  # "plugins", "DLA_core=<n>", "deserialize", in order
    trt.plugins_registered = False
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    kinds = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int32)": "INT32", "tensor(int8)": "INT8",
             "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(int64)": "INT64"}
    trt.DataType = FakeDataType.enum(list(kinds.values()) + ["FP8", "BF16", "INT4"])
    numpy_of = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32,
                trt.DataType.INT8: np.int8, trt.DataType.UINT8: np.uint8, trt.DataType.BOOL: np.bool_,
                trt.DataType.INT64: np.int64}

    def nptype(dtype):
        if logic.parse_version(version)[:2] < (8, 6):  # TensorRT 8.5's mapping holds np.bool: gone in NumPy 1.24
            raise AttributeError("module 'numpy' has no attribute 'bool'.\n`np.bool` was a deprecated alias for the "
                                 "builtin `bool`.")
        if dtype not in numpy_of:
            raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {dtype}")
        return numpy_of[dtype]

    trt.nptype = nptype

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level
            self.errors = []

    def init_libnvinfer_plugins(logger, namespace):
        assert isinstance(logger, Logger) and isinstance(namespace, str)
        trt.events.append("plugins")
        trt.plugins_registered = True
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            if name not in self.engine.names or not ptr or int(ptr) % 256:
                return False
            self.addresses[name] = int(ptr)
            return True

        def _run(self, addresses):
            session = self.engine.session
            feeds = {i.name: memory.view(addresses[i.name], self.engine.numpy(i.name), self.shapes[i.name]).copy()
                     for i in session.get_inputs()}
            outputs = session.run(None, feeds)
            for meta, value in zip(session.get_outputs(), outputs):
                memory.view(addresses[meta.name], value.dtype, value.shape)[...] = value
            return True

        def execute_async_v3(self, stream_handle):
            assert logic.parse_version(version)[0] >= 10, "execute_async_v3 is used only on TensorRT 10+"
            assert set(self.addresses) == set(self.engine.names), "every I/O tensor needs an address"
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
            self.types = {t.name: getattr(trt.DataType, kinds[t.type])
                          for t in list(self.session.get_inputs()) + list(self.session.get_outputs())}

        def numpy(self, name):
            return numpy_of[self.types[name]]

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return self.modes[name]

        def get_tensor_dtype(self, name):
            return self.types[name]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            self.logger = logger
            self._dla_core = -1

        @property
        def DLA_core(self):
            return self._dla_core

        @DLA_core.setter
        def DLA_core(self, core):
            if not 0 <= core < self.num_DLA_cores:
                raise RuntimeError(f"setDLACore({core}): this device has {self.num_DLA_cores} DLA core(s)")
            trt.events.append(f"DLA_core={core}")
            self._dla_core = core

        def deserialize_cuda_engine(self, blob):
            trt.events.append("deserialize")
            try:
                spec = json.loads(blob.decode())
                onnx_path = spec["onnx"]
            except (ValueError, KeyError):
                return None
            if spec.get("plugins") and not trt.plugins_registered:
                self.logger.errors.append(f"Cannot deserialize plugin {spec['plugins'][0]}: not in the plugin registry")
                return None
            if spec.get("dla_core") is not None and self._dla_core != spec["dla_core"]:
                self.logger.errors.append("the engine was built for another DLA core")
                return None
            return Engine(onnx_path)

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


def _make_trt_bundle(source, out):
    """`source` as a 'tensorrt' bundle whose engine files point at its ONNX stages."""
    import onnx
    out.mkdir()
    manifest = json.loads(open(os.path.join(source, "manifest.json")).read())
    for key, stage in manifest["stages"].items():
        onnx_path = os.path.join(source, stage["file"])
        plugins = ["ROIAlign_TRT"] if any(n.op_type == "RoiAlign" for n in onnx.load(onnx_path).graph.node) else []
        (out / f"{key}.engine").write_text(json.dumps({"onnx": onnx_path, "plugins": plugins}))
        stage.update(file=f"{key}.engine", backend="tensorrt", precision="fp32")
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


def install_fakes(monkeypatch, memory, version="10.3.0.30", integrated=False, name="Orin", cc=(8, 7), dla_cores=0):
    trt = make_fake_trt(memory, version, dla_cores=dla_cores)
    cuda = make_fake_cuda(memory, integrated=integrated, name=name, cc=cc)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return trt, cuda


def _record_tensorrt_version(bundle, version):
    """Make a bundle claim it was built by this TensorRT version (the fake installed with it)."""
    manifest_path = os.path.join(bundle, "manifest.json")
    manifest = json.loads(open(manifest_path).read())
    manifest["provenance"]["tensorrt_version"] = version
    open(manifest_path, "w").write(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize("version, integrated, api", [("10.3.0.30", False, "v3"), ("8.6.2.3", True, "v2")])
def test_detector_on_fake_tensorrt_equals_onnxruntime(monkeypatch, tiny_host_bundle, trt_bundle, version, integrated,
                                                      api):
    from conftest import textured_image
    from edge_fpn.runtime import Detector
    from edge_fpn.runtime.backends.tensorrt_backend import DeviceTensor

    _record_tensorrt_version(trt_bundle, version)
    memory = FakeMemory()
    trt, _ = install_fakes(monkeypatch, memory, version=version, integrated=integrated)
    image = textured_image(5, 240, 320)
    reference = Detector(tiny_host_bundle)(image)
    with Detector(trt_bundle) as detector:
        assert detector.layout.stage1.mode == ("mapped" if integrated else "pinned")
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
            detector.layout.stage2({"proposals": np.zeros((2, 4), np.float32), **{n: outputs1[n] for n in features}})
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


@pytest.mark.parametrize("version, integrated, api", [("10.3.0.30", False, "v3"), ("8.5.2.2", True, "v2")])
def test_engine_layout_on_fake_tensorrt_equals_onnxruntime(monkeypatch, tiny_bundle, trt_engine_bundle, version,
                                                           integrated, api):
    """One "detector" engine: uint8 image in the engine's own input buffer, int32 labels and count out."""
    from conftest import textured_image
    from edge_fpn.runtime import Detector

    manifest = _record_tensorrt_version(trt_engine_bundle, version)
    memory = FakeMemory()
    trt, _ = install_fakes(monkeypatch, memory, version=version, integrated=integrated)
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
    assert trt.calls == [api, api] and trt.events.index("plugins") < trt.events.index("deserialize")
    if integrated:
        assert not memory.copies, "mapped memory needs no copies"
    for got in (result, result_again):
        assert len(got) == len(reference) > 0
        np.testing.assert_allclose(got.boxes, reference.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, reference.scores, atol=1e-5)
        np.testing.assert_array_equal(got.labels, reference.labels)


def test_the_input_buffer_is_not_copied_into_itself(monkeypatch, tiny_bundle, trt_engine_bundle):
    from edge_fpn.runtime.backends import tensorrt_backend
    from edge_fpn.bundle import load_manifest

    memory = FakeMemory()
    install_fakes(monkeypatch, memory)
    stage = load_manifest(trt_engine_bundle).stages["detector"]
    copies = []
    real_copyto = np.copyto

    def copyto(dst, src, **kwargs):
        copies.append(dst.shape)
        return real_copyto(dst, src, **kwargs)

    with tensorrt_backend.TensorRTBackend(os.path.join(trt_engine_bundle, stage.file), stage) as engine:
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
        with pytest.raises(ValueError, match="input image is float32, the engine takes uint8"):
            engine({"image": image.astype(np.float32), "image_size": size})
        with pytest.raises(KeyError, match="not an input"):
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
        with pytest.raises(RuntimeError, match="refused the address .* of tensor boxes"):
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
def test_real_tensorrt_bundle(tiny_host_bundle, tmp_path):
    """Build engines for the tiny bundle with the project's builder, then compare with ONNX Runtime."""
    from conftest import textured_image
    from edge_fpn.runtime import Detector
    from edge_fpn.builder.builder import build_engine
    out = str(tmp_path / "engines")
    build_engine(tiny_host_bundle, precision="fp32", backend="tensorrt", output=out, eval_data=None, progress=False,
                 log=lambda text: None)
    image = textured_image(7, 320, 320)
    reference = Detector(tiny_host_bundle)(image)
    with Detector(out) as detector:
        result = detector(image)
    assert len(result) == len(reference)
    np.testing.assert_allclose(result.boxes, reference.boxes, atol=0.5)
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.gpu
@pytest.mark.skipif(not _have_gpu_stack(), reason="needs tensorrt and pycuda (an NVIDIA GPU)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_tensorrt_engine_layout(tiny_bundle, tmp_path, precision):
    """The engine layout built and run on the GPU: the same detections as ONNX Runtime (FP16: the
    network in FP16, the postprocessing kept FP32), the frame letterboxed into the engine's buffer."""
    from conftest import textured_image
    from edge_fpn.builder.builder import build_engine
    from edge_fpn.runtime import Detector
    out = str(tmp_path / precision)
    build_engine(tiny_bundle, precision=precision, backend="tensorrt", output=out, eval_data=None, progress=False,
                 log=lambda text: None)
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
