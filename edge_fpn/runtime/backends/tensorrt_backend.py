"""TensorRT backend: serialized engines run with tensorrt + pycuda (both imported lazily, here only).

Same interface as the ONNX Runtime backend (``backend(inputs) -> outputs``, name -> array), with:

* a refusal, in one sentence, of an engine whose TensorRT version or GPU differs from the
  manifest's provenance (``tensorrt_version``, ``gpu_name``, ``compute_capability``);
* name-based I/O (TensorRT >= 8.5): ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``,
  ``set_input_shape``; ``execute_async_v3`` + ``set_tensor_address`` on TensorRT 10+, and
  ``execute_async_v2`` with a bindings list on 8.5 / 8.6 (JetPack 5);
* one CUDA stream (per CUDA context, shared by the stages) and buffers sized once, at load, for
  each tensor's largest shape (stage 2's proposal count at its maximum);
* page-locked host buffers with async copies on a discrete GPU; mapped (zero-copy) page-locked
  host memory on an integrated GPU (Jetson), where the GPU reads the host buffer directly;
  ``input_array(name)`` hands out an input's own host buffer, so that the caller writes the input
  there (the Detector letterboxes the frame straight into it); a call given that very array does
  not copy it again;
* each buffer has the engine's own type (``tensorrt_numpy_dtype``, not ``trt.nptype``, which
  raises on TensorRT 8.5 with NumPy >= 1.24): the engine layout's uint8 image, int32 labels and
  detection count;
* libnvinfer_plugin's plugins registered (``init_libnvinfer_plugins``) before deserializing, since
  an engine holding RoiAlign's ROIAlign_TRT plugin cannot be loaded without them; a DLA engine's
  core (from the manifest) set on the runtime before deserializing;
* **stage 1's feature maps stay on the device.** An output that another stage of the bundle takes
  as input is not copied back: the call returns a ``DeviceTensor`` for it (a device pointer with
  its shape and dtype) instead of an array. The Detector passes stage 1's outputs to stage 2 by
  name as they are, so stage 2's backend receives the DeviceTensor and binds its address directly
  (no copy, no host round trip). ``np.asarray(device_tensor)`` still copies it to the host for
  anything else that wants it (e.g. an ONNX Runtime stage 2). A DeviceTensor is valid until its
  stage runs again (stage 2 always runs before the next stage 1, on the same thread); using a
  stale one raises an error rather than reading overwritten memory.

Pycuda is driven with the device's primary context, pushed around each call, so the stages can
be called from any thread (the pipeline's inference thread), and both stages share it (a device
pointer is only meaningful inside its context).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...bundle import MANIFEST_NAME, StageSpec
from ...errors import EdgeFpnError
from .tensorrt_logic import (BufferPlan, bind_axes, check_engine_io, compatibility_problem, device_resident_outputs,
                             dla_core_of, dla_problem, execute_api, host_memory_mode, is_buffer, missing_provenance,
                             parse_version, plan_buffers, resolve_shape, tensorrt_numpy_dtype)

logger = logging.getLogger("edge_fpn.runtime")


def load_api() -> Tuple[Any, Any]:
    """Import tensorrt and pycuda.driver (never at import time of edge_fpn)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgeFpnError("this bundle's engines need TensorRT, which is not installed here; install JetPack's python3-libnvinfer, or export an onnxruntime bundle for this machine") from None
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise EdgeFpnError("the TensorRT backend needs pycuda, which is not installed; run `pip3 install pycuda` (with the CUDA toolkit on PATH)") from None
    return trt, cuda


class DeviceTensor:
    """A tensor left in device memory by one stage for the next (see the module docstring)."""

    __slots__ = ("name", "shape", "dtype", "ptr", "owner", "generation")

    def __init__(self, name: str, shape: Tuple[int, ...], dtype: np.dtype, ptr: int, owner: "TensorRTBackend",
                 generation: int):
        self.name, self.shape, self.dtype, self.ptr = name, tuple(shape), np.dtype(dtype), int(ptr)
        self.owner, self.generation = owner, generation

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def valid(self) -> bool:
        return self.owner.generation == self.generation and not self.owner.closed

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.owner.to_host(self)
        return array if dtype is None else array.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __repr__(self) -> str:
        return f"DeviceTensor({self.name!r}, shape={self.shape}, dtype={self.dtype}, ptr=0x{self.ptr:x})"


class _CudaSession:
    """A device's primary context and the one stream the stages enqueue on."""

    _lock = threading.Lock()
    _sessions: Dict[Tuple[int, int], "_CudaSession"] = {}

    def __init__(self, cuda: Any, device_index: int):
        cuda.init()
        self.cuda = cuda
        self.device = cuda.Device(device_index)
        self.context = self.device.retain_primary_context()
        self.context.push()
        try:
            self.stream = cuda.Stream()
        finally:
            cuda.Context.pop()
        attribute = cuda.device_attribute
        self.name = str(self.device.name())
        self.compute_capability = tuple(int(v) for v in self.device.compute_capability())
        self.integrated = bool(self.device.get_attribute(attribute.INTEGRATED))
        self.can_map = bool(self.device.get_attribute(attribute.CAN_MAP_HOST_MEMORY))

    @classmethod
    def get(cls, cuda: Any, device_index: int) -> "_CudaSession":
        key = (id(cuda), device_index)
        with cls._lock:
            session = cls._sessions.get(key)
            if session is None:
                session = cls._sessions[key] = cls(cuda, device_index)
            return session

    def __enter__(self) -> "_CudaSession":
        self.context.push()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cuda.Context.pop()


class _Buffer:
    """Host and device memory of one I/O tensor (host may be None: device-resident outputs)."""

    def __init__(self, plan: BufferPlan, cuda: Any, mode: str):
        self.plan = plan
        self.host: Optional[np.ndarray] = None
        self.device: Any = None
        count = max(1, plan.max_elements)
        if mode == "mapped" and plan.needs_host:
            # Jetson: one page-locked buffer mapped into the GPU's address space, no copies at all
            self.host = cuda.pagelocked_empty(count, plan.dtype, mem_flags=cuda.host_alloc_flags.DEVICEMAP)
            self.address = int(self.host.base.get_device_pointer())
        else:
            self.device = cuda.mem_alloc(count * plan.dtype.itemsize)
            self.address = int(self.device)
            if plan.needs_host:
                self.host = cuda.pagelocked_empty(count, plan.dtype)

    def host_view(self, shape: Tuple[int, ...]) -> np.ndarray:
        assert self.host is not None
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        return self.host[:size].reshape(shape)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
            self.device = None
        self.host = None


class TensorRTBackend:
    """One stage's engine. ``stage`` is its manifest StageSpec; the manifest beside the engine
    gives the provenance and the other stages (to know which outputs stay on the device)."""

    def __init__(self, path: str, stage: StageSpec, provenance: Optional[Dict[str, Any]] = None,
                 stages: Optional[Dict[str, StageSpec]] = None, stage_key: Optional[str] = None,
                 device: int = 0, api: Optional[Tuple[Any, Any]] = None):
        self.path = path
        self.stage = stage
        self.closed = False
        self.generation = 0
        trt, cuda = api or load_api()
        self._trt, self._cuda = trt, cuda
        if provenance is None or stages is None:
            provenance_found, stages_found, key_found = _read_manifest(path, stage)
            provenance = provenance if provenance is not None else provenance_found
            stages = stages if stages is not None else stages_found
            stage_key = stage_key or key_found
        self.version = parse_version(trt.__version__)
        self.api = execute_api(self.version)  # refuses TensorRT < 8.5
        self.session = _CudaSession.get(cuda, device)
        problem = compatibility_problem(provenance, path, trt.__version__, self.session.name, self.session.compute_capability)
        if problem:
            raise EdgeFpnError(problem)
        built_gpu = str(provenance.get("gpu_name") or "")
        if built_gpu and built_gpu.strip().lower() != self.session.name.strip().lower():
            logger.warning("engine %s was built on %s and runs on %s (same compute capability %d.%d)", path,
                           built_gpu, self.session.name, *self.session.compute_capability)
        missing = missing_provenance(provenance)
        if missing:
            logger.warning("the manifest does not record %s for %s; cannot check that this engine fits this machine",
                           ", ".join(missing), path)
        self.mode = host_memory_mode(self.session.integrated, self.session.can_map)
        self.provenance = dict(provenance)
        self.device_outputs = device_resident_outputs(stage_key, stages) if stage_key and stages else []
        self.input_names = [t.name for t in stage.inputs]
        self.output_names = [t.name for t in stage.outputs]
        self._specs = {t.name: t for t in list(stage.inputs) + list(stage.outputs)}
        with self.session:
            self._load(trt, cuda)

    def _load(self, trt: Any, cuda: Any) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        # the engine may hold plugin layers (RoiAlign: ROIAlign_TRT), which deserialize only once
        # libnvinfer_plugin has registered them; a second registration is skipped by TensorRT
        plugins = bool(trt.init_libnvinfer_plugins(self._logger, ""))
        self._runtime = trt.Runtime(self._logger)
        dla_core = dla_core_of(self.provenance)
        if dla_core is not None:
            problem = dla_problem(dla_core, int(getattr(self._runtime, "num_DLA_cores", 0) or 0), self.path)
            if problem:
                raise EdgeFpnError(problem)
            self._runtime.DLA_core = dla_core  # before deserializing: the engine runs on that core
        try:
            with open(self.path, "rb") as f:
                blob = f.read()
        except OSError as exc:
            raise EdgeFpnError(f"cannot read engine {self.path} ({exc.strerror}); re-run `edge-fpn build`") from None
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            why = ("" if plugins else "; TensorRT's plugin library (libnvinfer_plugin) could not be registered, so an "
                   "engine with RoiAlign cannot load: install JetPack's libnvinfer-plugin")
            raise EdgeFpnError(f"TensorRT could not deserialize {self.path} (see TensorRT's message above: a corrupt file, "
                               f"or one built by another TensorRT){why}; rebuild it with `edge-fpn build`")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EdgeFpnError(f"TensorRT could not create an execution context for {self.path} (out of GPU memory?); close other GPU programs")
        # the engine's own I/O, by name, in binding order (execute_async_v2 takes pointers in that order)
        self.tensor_order: List[str] = []
        engine_io: Dict[str, Tuple[bool, np.dtype]] = {}
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            self.tensor_order.append(name)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            # not trt.nptype: TensorRT 8.5's uses np.bool, gone from NumPy >= 1.24 (JetPack 5.1)
            engine_io[name] = (is_input, tensorrt_numpy_dtype(self.engine.get_tensor_dtype(name), name, self.path))
        check_engine_io(self.stage, engine_io, self.path)
        self.plans = plan_buffers(self.stage, self.device_outputs, {name: dtype for name, (_, dtype) in engine_io.items()})
        self.buffers: Dict[str, _Buffer] = {plan.name: _Buffer(plan, cuda, self.mode) for plan in self.plans}

    def input_array(self, name: str) -> np.ndarray:
        """The page-locked (on Jetson: mapped, zero-copy) host buffer of input `name`, shaped for the
        input's largest shape and of the engine's type. Write the input into it and pass this array
        to the call: it is then not copied again. It may be rewritten between calls only (the
        engine reads it during a call; on Jetson the GPU reads it in place)."""
        buffer = self.buffers.get(name)
        if buffer is None or not buffer.plan.is_input:
            raise KeyError(f"{name!r} is not an input of {self.path} (inputs: {', '.join(self.input_names)})")
        return buffer.host_view(buffer.plan.max_shape)

    # ------------------------------------------------------------ inference
    def __call__(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
        if self.closed:
            raise RuntimeError(f"TensorRT backend for {self.path} is closed")
        cuda, stream = self._cuda, self.session.stream
        shapes = {name: tuple(np.shape(inputs[name])) if not isinstance(inputs[name], DeviceTensor)
                  else inputs[name].shape for name in self.input_names if name in inputs}
        try:
            axes = bind_axes(self.stage, shapes)
        except ValueError as exc:
            raise ValueError(f"{os.path.basename(self.path)}: {exc}") from None
        addresses: Dict[str, int] = {}
        with self.session:
            for name in self.input_names:
                value = inputs[name]
                shape = shapes[name]
                buffer = self.buffers[name]
                if isinstance(value, DeviceTensor):
                    if not value.valid:
                        raise RuntimeError(f"device tensor {value.name} is stale: its stage ran again since it was made")
                    if value.dtype != buffer.plan.dtype:
                        raise ValueError(f"input {name} is {value.dtype} on the device, the engine takes {buffer.plan.dtype}")
                    addresses[name] = value.ptr  # stage 1's feature map, bound where it lies
                else:
                    array = np.asarray(value)
                    if is_buffer(array, buffer.host, buffer.plan.dtype):
                        view = array  # written in place by the caller (input_array): nothing to copy
                    else:
                        if not np.can_cast(array.dtype, buffer.plan.dtype, casting="same_kind"):
                            raise ValueError(f"{os.path.basename(self.path)}: input {name} is {array.dtype}, the engine "
                                             f"takes {buffer.plan.dtype}")
                        view = buffer.host_view(shape)
                        np.copyto(view, array, casting="same_kind")
                    if buffer.device is not None:
                        cuda.memcpy_htod_async(buffer.address, view, stream)
                    addresses[name] = buffer.address
                if not self.context.set_input_shape(name, shape):
                    raise ValueError(f"TensorRT refused shape {shape} for input {name} of {self.path}")
            output_shapes = {name: resolve_shape(self._specs[name], self.stage.dynamic_axes, axes)
                             for name in self.output_names}
            for name in self.output_names:
                addresses[name] = self.buffers[name].address
            self._execute(addresses, stream)
            for name in self.output_names:
                buffer = self.buffers[name]
                if buffer.plan.needs_host and buffer.device is not None:
                    cuda.memcpy_dtoh_async(buffer.host_view(output_shapes[name]), buffer.address, stream)
            stream.synchronize()
        self.generation += 1
        outputs: Dict[str, Any] = {}
        for name in self.output_names:
            buffer = self.buffers[name]
            shape = output_shapes[name]
            if buffer.plan.needs_host:
                # a copy: the page-locked buffer is overwritten by the next call, possibly while
                # another thread still reads this result
                outputs[name] = buffer.host_view(shape).copy()
            else:
                outputs[name] = DeviceTensor(name, shape, buffer.plan.dtype, buffer.address, self, self.generation)
        return outputs

    def _execute(self, addresses: Dict[str, int], stream: Any) -> None:
        if self.api == "v3":
            for name in self.tensor_order:
                # False (TensorRT 10) for an unknown name or a misaligned or null address
                if not self.context.set_tensor_address(name, addresses[name]):
                    raise RuntimeError(f"TensorRT refused the address 0x{addresses[name]:x} of tensor {name} of "
                                       f"{self.path} (see the TensorRT log above)")
            ok = self.context.execute_async_v3(stream_handle=stream.handle)
        else:
            bindings = [addresses[name] for name in self.tensor_order]
            ok = self.context.execute_async_v2(bindings=bindings, stream_handle=stream.handle)
        if not ok:
            raise RuntimeError(f"TensorRT failed to run {self.path} (see the TensorRT log above)")

    def to_host(self, tensor: DeviceTensor) -> np.ndarray:
        """Copy a device tensor to a new host array."""
        if not tensor.valid:
            raise RuntimeError(f"device tensor {tensor.name} is stale: its stage ran again since it was made")
        out = np.empty(tensor.shape, dtype=tensor.dtype)
        with self.session:
            self._cuda.memcpy_dtoh(out, tensor.ptr)
        return out

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self.session:
            for buffer in getattr(self, "buffers", {}).values():
                buffer.free()
            self.context = None
            self.engine = None
            self._runtime = None

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_manifest(path: str, stage: StageSpec) -> Tuple[Dict[str, Any], Dict[str, StageSpec], Optional[str]]:
    """Provenance, all stages and this stage's key, from the manifest of the bundle holding `path`."""
    from ...bundle import _stage_from_dict  # the manifest is read in one place: bundle.py
    normalized = os.path.normpath(path)
    suffix = os.path.normpath(stage.file)
    bundle_dir = normalized[: -len(suffix)] if normalized.endswith(suffix) else os.path.dirname(normalized)
    manifest_path = os.path.join(bundle_dir or ".", MANIFEST_NAME)
    try:
        with open(manifest_path, "r", encoding="utf-8") as f:
            data = json.load(f)
        stages = {key: _stage_from_dict(value) for key, value in data.get("stages", {}).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}, {}, None
    key = next((k for k, s in stages.items() if os.path.normpath(s.file) == suffix), None)
    return dict(data.get("provenance", {})), stages, key
