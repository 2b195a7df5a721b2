"""TensorRT backend: serialized engines run with tensorrt + cuda-python or pycuda (imported lazily, here only).

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

Memory moves through ``cuda_memory`` (one layer, two bindings): cuda-python's ``cuda.bindings``
by default, pycuda where only pycuda is installed or ``cuda="pycuda"`` asks for it. Either way the
device's primary context is made current around each call, so the stages can be called from any
thread (the pipeline's inference thread), and both stages share it and its stream (a device pointer
is only meaningful inside its context). ``memory="pinned"|"mapped"`` forces a host-memory mode
(the GPU data-flow check maps memory on a discrete GPU too); "auto" is the rule above.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...bundle import StageSpec
from ...errors import BackendInputError, BackendStateError, EdgeFpnError, UnknownTensorError
from .cuda_memory import MEMORY_MODES, CudaSession, DeviceBuffer, HostBuffer
from .tensorrt_logic import (BufferPlan, bind_axes, check_engine_io, compatibility_problem, device_resident_outputs,
                             dla_core_of, dla_problem, execute_api, host_memory_mode, is_buffer, missing_provenance,
                             parse_version, plan_buffers, resolve_shape, tensorrt_numpy_dtype)

logger = logging.getLogger("edge_fpn.runtime")


def load_tensorrt() -> Any:
    """Import tensorrt (never at import time of edge_fpn)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgeFpnError("this bundle's engines need TensorRT, which is not installed here; install JetPack's python3-libnvinfer, or export an onnxruntime bundle for this machine") from None
    return trt


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


class _Buffer:
    """Host and device memory of one I/O tensor (host may be None: device-resident outputs)."""

    def __init__(self, plan: BufferPlan, session: CudaSession, mode: str):
        self.plan = plan
        self.host: Optional[np.ndarray] = None
        self.host_memory: Optional[HostBuffer] = None
        self.device: Optional[DeviceBuffer] = None
        count = max(1, plan.max_elements)
        if mode == "mapped" and plan.needs_host:
            # Jetson: one page-locked buffer mapped into the GPU's address space, no copies at all
            self.host_memory = session.host_buffer(count, plan.dtype, mapped=True)
            self.address = int(self.host_memory.device_address or 0)
        else:
            self.device = session.device_buffer(count * plan.dtype.itemsize)
            self.address = self.device.address
            if plan.needs_host:
                self.host_memory = session.host_buffer(count, plan.dtype)
        if self.host_memory is not None:
            self.host = self.host_memory.array

    def host_view(self, shape: Tuple[int, ...]) -> np.ndarray:
        assert self.host is not None
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        return self.host[:size].reshape(shape)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
            self.device = None
        if self.host_memory is not None:
            self.host_memory.free()
            self.host_memory = None
        self.host = None


class TensorRTBackend:
    """One stage's engine. ``stage`` is its manifest StageSpec; ``provenance``, ``stages`` and
    ``stage_key`` come from the manifest bundle.load_manifest read (the provenance says which
    TensorRT and GPU built it; the other stages say which outputs stay on the device)."""

    provider = "TensorRT"  # where it runs, as the ONNX Runtime backend's `provider` says its own

    def __init__(self, path: str, stage: StageSpec, *, provenance: Dict[str, Any], stages: Dict[str, StageSpec],
                 stage_key: str, gpu_index: int = 0, cuda: str = "auto", memory: str = "auto"):
        """cuda: "auto" (cuda-python, else pycuda), "cuda-python" or "pycuda". memory: "auto"
        (mapped on an integrated GPU, pinned on a discrete one), "pinned" or "mapped"."""
        self.path = path
        self.stage = stage
        self.closed = False
        self.generation = 0
        self.session: Optional[CudaSession] = None
        self.buffers: Dict[str, _Buffer] = {}
        if memory not in MEMORY_MODES:
            raise EdgeFpnError(f"memory must be one of {', '.join(MEMORY_MODES)}, not {memory!r}")
        trt = load_tensorrt()
        self._trt = trt
        self.version = parse_version(trt.__version__)
        self.api = execute_api(self.version)  # refuses TensorRT < 8.5
        self.session = CudaSession.acquire(cuda, gpu_index)
        try:
            self._open(trt, path, stage, provenance, stages, stage_key, memory)
        except BaseException:
            self.close()  # buffers allocated so far, and this backend's share of the session
            raise

    @property
    def cuda(self) -> str:
        """The binding that moves this engine's memory: "cuda-python" or "pycuda"."""
        return self.session.implementation if self.session is not None else ""

    def _open(self, trt: Any, path: str, stage: StageSpec, provenance: Dict[str, Any],
              stages: Optional[Dict[str, StageSpec]], stage_key: Optional[str], memory: str) -> None:
        session = self.session
        assert session is not None
        problem = compatibility_problem(provenance, path, trt.__version__, session.name, session.compute_capability)
        if problem:
            raise EdgeFpnError(problem)
        built_gpu = str(provenance.get("gpu_name") or "")
        if built_gpu and built_gpu.strip().lower() != session.name.strip().lower():
            logger.warning("engine %s was built on %s and runs on %s (same compute capability %d.%d)", path,
                           built_gpu, session.name, *session.compute_capability)
        missing = missing_provenance(provenance)
        if missing:
            logger.warning("the manifest does not record %s for %s; cannot check that this engine fits this machine",
                           ", ".join(missing), path)
        if memory == "auto":
            self.mode = host_memory_mode(session.integrated, session.can_map)
        elif memory == "mapped" and not session.can_map:
            raise EdgeFpnError(f"memory 'mapped' needs a GPU that can map host memory, and {session.name} cannot; "
                               "use memory 'auto' or 'pinned'")
        else:
            self.mode = memory
        self.provenance = dict(provenance)
        self.device_outputs = device_resident_outputs(stage_key, stages) if stage_key and stages else []
        self.input_names = [t.name for t in stage.inputs]
        self.output_names = [t.name for t in stage.outputs]
        self._specs = {t.name: t for t in list(stage.inputs) + list(stage.outputs)}
        with session:
            self._load(trt, session)

    def _load(self, trt: Any, session: CudaSession) -> None:
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
        for plan in self.plans:
            self.buffers[plan.name] = _Buffer(plan, session, self.mode)

    def input_array(self, name: str) -> np.ndarray:
        """The page-locked (on Jetson: mapped, zero-copy) host buffer of input `name`, shaped for the
        input's largest shape and of the engine's type. Write the input into it and pass this array
        to the call: it is then not copied again. It may be rewritten between calls only (the
        engine reads it during a call; on Jetson the GPU reads it in place)."""
        buffer = self.buffers.get(name)
        if buffer is None or not buffer.plan.is_input:
            raise UnknownTensorError(f"{name!r} is not an input of {self.path} (inputs: {', '.join(self.input_names)})")
        return buffer.host_view(buffer.plan.max_shape)

    # ------------------------------------------------------------ inference
    def __call__(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
        if self.closed:
            raise BackendStateError(f"TensorRT backend for {self.path} is closed")
        session = self.session
        assert session is not None
        shapes = {name: tuple(np.shape(inputs[name])) if not isinstance(inputs[name], DeviceTensor)
                  else inputs[name].shape for name in self.input_names if name in inputs}
        try:
            axes = bind_axes(self.stage, shapes)
        except ValueError as exc:
            raise BackendInputError(f"{os.path.basename(self.path)}: {exc}") from None
        addresses: Dict[str, int] = {}
        with session:
            for name in self.input_names:
                value = inputs[name]
                shape = shapes[name]
                buffer = self.buffers[name]
                if isinstance(value, DeviceTensor):
                    if not value.valid:
                        raise BackendStateError(f"device tensor {value.name} is stale: its stage ran again since it was made")
                    if value.dtype != buffer.plan.dtype:
                        raise BackendInputError(f"input {name} is {value.dtype} on the device, the engine takes {buffer.plan.dtype}")
                    addresses[name] = value.ptr  # stage 1's feature map, bound where it lies
                else:
                    array = np.asarray(value)
                    if is_buffer(array, buffer.host, buffer.plan.dtype):
                        view = array  # written in place by the caller (input_array): nothing to copy
                    else:
                        if not np.can_cast(array.dtype, buffer.plan.dtype, casting="same_kind"):
                            raise BackendInputError(f"{os.path.basename(self.path)}: input {name} is {array.dtype}, the engine "
                                             f"takes {buffer.plan.dtype}")
                        view = buffer.host_view(shape)
                        np.copyto(view, array, casting="same_kind")
                    if buffer.device is not None:
                        session.copy_to_device(buffer.address, view)
                    addresses[name] = buffer.address
                if not self.context.set_input_shape(name, shape):
                    raise BackendInputError(f"TensorRT refused shape {shape} for input {name} of {self.path}")
            output_shapes = {name: resolve_shape(self._specs[name], self.stage.dynamic_axes, axes)
                             for name in self.output_names}
            for name in self.output_names:
                addresses[name] = self.buffers[name].address
            self._execute(addresses, session.stream_handle)
            for name in self.output_names:
                buffer = self.buffers[name]
                if buffer.plan.needs_host and buffer.device is not None:
                    session.copy_to_host(buffer.host_view(output_shapes[name]), buffer.address)
            session.synchronize()
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

    def _execute(self, addresses: Dict[str, int], stream_handle: int) -> None:
        if self.api == "v3":
            for name in self.tensor_order:
                # False (TensorRT 10) for an unknown name or a misaligned or null address
                if not self.context.set_tensor_address(name, addresses[name]):
                    raise BackendStateError(f"TensorRT refused the address 0x{addresses[name]:x} of tensor {name} of "
                                       f"{self.path} (see the TensorRT log above)")
            ok = self.context.execute_async_v3(stream_handle=stream_handle)
        else:
            bindings = [addresses[name] for name in self.tensor_order]
            ok = self.context.execute_async_v2(bindings=bindings, stream_handle=stream_handle)
        if not ok:
            raise BackendStateError(f"TensorRT failed to run {self.path} (see the TensorRT log above)")

    def to_host(self, tensor: DeviceTensor) -> np.ndarray:
        """Copy a device tensor to a new host array."""
        if not tensor.valid:
            raise BackendStateError(f"device tensor {tensor.name} is stale: its stage ran again since it was made")
        assert self.session is not None
        with self.session:
            return self.session.download(tensor.ptr, tensor.shape, tensor.dtype)

    def close(self) -> None:
        """Free this engine's buffers and release its share of the CUDA session (the last stage to
        close frees the stream). Safe to call twice, and after a failed open."""
        if self.closed:
            return
        self.closed = True
        session, self.session = self.session, None
        if session is None:
            return
        try:
            with session:
                try:
                    session.synchronize()  # no work of this engine may still use its buffers
                except EdgeFpnError:
                    pass  # the frame that failed said why; the memory is freed all the same
                for buffer in self.buffers.values():
                    buffer.free()
                self.buffers = {}
                # TensorRT's objects before the memory's context goes: context, engine, runtime
                self.context = None
                self.engine = None
                self._runtime = None
        finally:
            session.release()

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


