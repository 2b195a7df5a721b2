"""The TensorRT backend's device-memory layer: one interface, two implementations.

* **cuda-python** (``from cuda.bindings import runtime as cudart``), the default: wheels on PyPI for
  x86-64 and aarch64 (nothing to compile), the binding NVIDIA's own TensorRT 10 samples use
  (``samples/python/common_runtime.py``), and safe beside PyTorch in one process. It raises
  nothing by itself: every call returns ``(cudaError_t, value...)``, and every error code here is
  checked and turned into one ``EdgeFpnError`` line naming the call.
* **pycuda**, where only pycuda is installed (JetPack 5.1: Python 3.8, for which cuda-python has no
  aarch64 wheels) or where the user asks for it (``--cuda pycuda``, ``Detector(..., cuda="pycuda")``).

What the TensorRT backend needs of either, and nothing more: a device's primary context and one
stream (``CudaSession``, shared by the stages of a bundle, since a device pointer is meaningful
only in its context); page-locked host buffers, and mapped (zero-copy) ones for an integrated GPU
such as Jetson's; device buffers; async copies on the stream; events; synchronisation; and the
device's name, compute capability and whether it is integrated and can map host memory.

Sessions are counted: each backend ``acquire``s one and ``release``s it on close; the last release
frees the stream (and any buffer a caller forgot), so nothing is left for interpreter exit.
Nothing is imported at import time of this module: the binding is imported by ``acquire``.
"""
from __future__ import annotations

import ctypes
import sys
import threading
from typing import Any, Dict, Optional, Set, Tuple

import numpy as np

from ...errors import EdgeFpnError

CUDA_CHOICES = ("auto", "cuda-python", "pycuda")
MEMORY_MODES = ("auto", "pinned", "mapped")

# the cuda-python line to install for a driver's CUDA major (the extras in pyproject.toml)
_INSTALL_FOR_MAJOR = {
    12: "pip install 'edge-fpn[cuda12]' (cuda-python>=12.6,<13: JetPack 6, CUDA 12 drivers)",
    13: "pip install 'edge-fpn[cuda13]' (cuda-python>=13,<14: JetPack 7, CUDA 13 drivers)",
}
_INSTALL_ANY = ("pip install 'edge-fpn[cuda12]' on JetPack 6 or a CUDA 12 driver, 'edge-fpn[cuda13]' on JetPack 7 "
                "or a CUDA 13 driver; on JetPack 5.1 (CUDA 11.4, Python 3.8) install pycuda instead")


# ---------------------------------------------------------------- loading a binding

def import_cudart() -> Any:
    """cuda-python's runtime module, or None where cuda-python is not installed.

    ``cuda.bindings.runtime`` is the import of cuda-python >= 12.6 (the only one since 13);
    ``cuda.cudart`` that of older releases (11.8 - 12.5), accepted so that an old install works.
    A cuda-python that is installed but broken is a sentence, not a traceback from inside it.
    """
    try:
        from cuda.bindings import runtime as cudart
        return cudart
    except ImportError:
        pass
    except Exception as exc:  # a broken install: its own exception, from inside the bindings
        raise EdgeFpnError(f"cuda-python is installed but does not import ({type(exc).__name__}: "
                           f"{_first_line(exc)}); reinstall it: {_INSTALL_ANY}") from None
    try:
        from cuda import cudart  # type: ignore[attr-defined,no-redef]
        return cudart
    except ImportError:
        return None
    except Exception as exc:
        raise EdgeFpnError(f"cuda-python is installed but does not import ({type(exc).__name__}: "
                           f"{_first_line(exc)}); reinstall it: {_INSTALL_ANY}") from None


def import_pycuda() -> Any:
    """pycuda.driver, or None where pycuda is not installed."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None
    except Exception as exc:  # e.g. a pycuda compiled for another CUDA: its libcuda symbols fail
        raise EdgeFpnError(f"pycuda is installed but does not import ({type(exc).__name__}: {_first_line(exc)}); "
                           f"reinstall it with `pip install --force-reinstall pycuda`, or use cuda-python: {_INSTALL_ANY}") from None
    return cuda


def choose_binding(choice: str = "auto") -> Tuple[str, Any]:
    """("cuda-python", cudart) or ("pycuda", pycuda.driver) for `choice` (one of CUDA_CHOICES):
    "auto" takes cuda-python, else pycuda; a named one only that one. One sentence when absent."""
    if choice not in CUDA_CHOICES:
        raise EdgeFpnError(f"cuda must be one of {', '.join(CUDA_CHOICES)}, not {choice!r}")
    if choice in ("auto", "cuda-python"):
        cudart = import_cudart()
        if cudart is not None:
            return "cuda-python", cudart
        if choice == "cuda-python":
            raise EdgeFpnError(f"--cuda cuda-python: cuda-python is not installed; {_INSTALL_ANY}")
    cuda = import_pycuda()
    if cuda is not None:
        return "pycuda", cuda
    if choice == "pycuda":
        raise EdgeFpnError("--cuda pycuda: pycuda is not installed; `pip install pycuda` (it compiles: the CUDA toolkit "
                           "must be on PATH), or leave --cuda at auto and install cuda-python: " + _INSTALL_ANY)
    raise EdgeFpnError("the TensorRT backend needs cuda-python (or pycuda) to move memory to the GPU, and neither is "
                       "installed; " + _INSTALL_ANY)


# ---------------------------------------------------------------- buffers

class HostBuffer:
    """Page-locked host memory as a flat numpy array of `count` elements; ``device_address`` is the
    GPU's address of it where it is mapped (zero-copy), else None."""

    def __init__(self, session: "CudaSession", array: np.ndarray, handle: Any, device_address: Optional[int]):
        self.session, self.array, self.handle, self.device_address = session, array, handle, device_address

    @property
    def mapped(self) -> bool:
        return self.device_address is not None

    def free(self) -> None:
        if self.handle is not None:
            handle, self.handle, self.array = self.handle, None, None  # type: ignore[assignment]
            self.session._free_host(self, handle)


class DeviceBuffer:
    """`nbytes` of device memory at ``address``."""

    def __init__(self, session: "CudaSession", address: int, nbytes: int, handle: Any):
        self.session, self.address, self.nbytes, self.handle = session, int(address), int(nbytes), handle

    def free(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            self.session._free_device(self, handle)


class Event:
    """A CUDA event on the session's stream: ``record()``, ``synchronize()``, ``elapsed_ms(start)``."""

    def __init__(self, session: "CudaSession", handle: Any):
        self.session, self.handle = session, handle

    def record(self) -> "Event":
        self.session._record(self.handle)
        return self

    def synchronize(self) -> None:
        self.session._event_synchronize(self.handle)

    def elapsed_ms(self, start: "Event") -> float:
        """Milliseconds from `start` to this event (both recorded, this one completed)."""
        return self.session._elapsed(start.handle, self.handle)

    def free(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            self.session._free_event(self, handle)


# ---------------------------------------------------------------- sessions

class CudaSession:
    """A device's primary context and one stream, through one binding. ``with session:`` makes the
    context current on the calling thread (the pipeline calls the engine from its own thread)."""

    implementation = ""
    _lock = threading.Lock()
    _sessions: Dict[Tuple[str, int, int], "CudaSession"] = {}

    def __init__(self, module: Any, device: int):
        self.module, self.device = module, int(device)
        self.refs = 0
        self.closed = False
        self.name = ""
        self.compute_capability: Tuple[int, int] = (0, 0)
        self.integrated = False
        self.can_map = False
        self.stream_handle = 0
        self._live: Set[Any] = set()  # buffers and events not freed yet

    # -- counted sharing
    @classmethod
    def acquire(cls, choice: str = "auto", device: int = 0) -> "CudaSession":
        """The shared session of `device` through the binding `choice` names (see choose_binding)."""
        implementation, module = choose_binding(choice)
        session_class = CudaPythonSession if implementation == "cuda-python" else PycudaSession
        key = (implementation, id(module), int(device))
        with cls._lock:
            session = cls._sessions.get(key)
            if session is None or session.closed:
                session = cls._sessions[key] = session_class(module, device)
            session.refs += 1
            return session

    def release(self) -> None:
        """One user fewer; the last one frees everything still held and the stream."""
        with CudaSession._lock:
            self.refs -= 1
            if self.refs > 0 or self.closed:
                return
            self.closed = True
            for key, session in list(CudaSession._sessions.items()):
                if session is self:
                    del CudaSession._sessions[key]
        with self:
            for item in list(self._live):
                item.free()
            self._destroy_stream()

    @property
    def live(self) -> int:
        """Buffers and events allocated and not freed."""
        return len(self._live)

    # -- the interface (each implementation fills these in)
    def __enter__(self) -> "CudaSession":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def host_buffer(self, count: int, dtype: Any, mapped: bool = False) -> HostBuffer:
        raise NotImplementedError

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        raise NotImplementedError

    def copy_to_device(self, address: int, array: np.ndarray) -> None:
        """Enqueue a copy of page-locked `array` to device `address` on the stream."""
        raise NotImplementedError

    def copy_to_host(self, array: np.ndarray, address: int) -> None:
        """Enqueue a copy of device `address` into page-locked `array` on the stream."""
        raise NotImplementedError

    def download(self, address: int, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        """A new host array with the device tensor at `address` (after the stream's pending work)."""
        out = np.empty(shape, dtype=dtype)
        staging = self.host_buffer(max(1, out.nbytes), np.uint8)
        try:
            if out.nbytes:
                self.copy_to_host(staging.array[: out.nbytes], address)
            self.synchronize()
            out.reshape(-1).view(np.uint8)[:] = staging.array[: out.nbytes]
        finally:
            staging.free()
        return out

    def synchronize(self) -> None:
        raise NotImplementedError

    def event(self) -> Event:
        raise NotImplementedError

    def _free_host(self, buffer: HostBuffer, handle: Any) -> None:
        raise NotImplementedError

    def _free_device(self, buffer: DeviceBuffer, handle: Any) -> None:
        raise NotImplementedError

    def _record(self, handle: Any) -> None:
        raise NotImplementedError

    def _event_synchronize(self, handle: Any) -> None:
        raise NotImplementedError

    def _elapsed(self, start: Any, end: Any) -> float:
        raise NotImplementedError

    def _free_event(self, event: Event, handle: Any) -> None:
        raise NotImplementedError

    def _destroy_stream(self) -> None:
        raise NotImplementedError


def _host_array(address: int, count: int, dtype: Any) -> np.ndarray:
    """A numpy view of `count` elements of `dtype` at host `address` (float16 and bool included,
    which have no ctypes type: bytes first, then a view)."""
    dtype = np.dtype(dtype)
    nbytes = max(1, count * dtype.itemsize)
    raw = np.frombuffer((ctypes.c_ubyte * nbytes).from_address(address), dtype=np.uint8)
    return raw[: count * dtype.itemsize].view(dtype)


class CudaPythonSession(CudaSession):
    """The runtime API through cuda-python: the device's primary context (``cudaSetDevice``)."""

    implementation = "cuda-python"

    def __init__(self, cudart: Any, device: int):
        super().__init__(cudart, device)
        self.cudart = cudart
        self._thread = threading.local()
        self._check_versions()
        count = self.call("cudaGetDeviceCount", cudart.cudaGetDeviceCount())
        if count < 1:
            raise EdgeFpnError("cudaGetDeviceCount: no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver); "
                               "this bundle's TensorRT engines need one")
        if not 0 <= self.device < count:
            raise EdgeFpnError(f"GPU {self.device} does not exist: cudaGetDeviceCount sees {count} (0..{count - 1})")
        self._set_device()
        properties = self.call("cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(self.device))
        name = getattr(properties, "name", b"")
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
        self.name = str(name).strip()
        self.compute_capability = (int(properties.major), int(properties.minor))
        attribute = cudart.cudaDeviceAttr
        self.integrated = bool(self.call("cudaDeviceGetAttribute",
                                         cudart.cudaDeviceGetAttribute(attribute.cudaDevAttrIntegrated, self.device)))
        self.can_map = bool(self.call("cudaDeviceGetAttribute",
                                      cudart.cudaDeviceGetAttribute(attribute.cudaDevAttrCanMapHostMemory, self.device)))
        self._stream = self.call("cudaStreamCreate", cudart.cudaStreamCreate())
        self.stream_handle = int(self._stream)
        self._h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    # -- errors
    def call(self, name: str, result: Any) -> Any:
        """The value(s) of a cuda-python call's result tuple, or one EdgeFpnError line naming the call."""
        return check(self.cudart, name, result)

    def _check_versions(self) -> None:
        """A driver older than the bindings' CUDA major (CUDA 13 bindings on a CUDA 12 driver) fails
        every call with cudaErrorInsufficientDriver: say up front which cuda-python to install."""
        cudart = self.cudart
        driver = self.call("cudaDriverGetVersion", cudart.cudaDriverGetVersion())
        runtime = self.call("cudaRuntimeGetVersion", cudart.cudaRuntimeGetVersion())
        if not driver:
            raise EdgeFpnError("cudaDriverGetVersion: no NVIDIA driver is installed on this machine, so TensorRT engines "
                               "cannot run here; run an onnxruntime bundle of this model instead")
        problem = driver_mismatch(int(driver), int(runtime), bindings_version(cudart))
        if problem:
            raise EdgeFpnError(problem)

    # -- context
    def _set_device(self) -> None:
        self.call("cudaSetDevice", self.cudart.cudaSetDevice(self.device))
        self._thread.device_set = True

    def __enter__(self) -> "CudaSession":
        # the runtime API's current device is per thread: set once on each thread that calls
        if not getattr(self._thread, "device_set", False):
            self._set_device()
        return self

    # -- memory
    def host_buffer(self, count: int, dtype: Any, mapped: bool = False) -> HostBuffer:
        cudart = self.cudart
        nbytes = max(1, int(count) * np.dtype(dtype).itemsize)
        if mapped:
            pointer = self.call("cudaHostAlloc", cudart.cudaHostAlloc(nbytes, cudart.cudaHostAllocMapped))
            try:
                device_address = int(self.call("cudaHostGetDevicePointer", cudart.cudaHostGetDevicePointer(pointer, 0)))
            except EdgeFpnError:
                cudart.cudaFreeHost(pointer)
                raise
        else:
            pointer = self.call("cudaMallocHost", cudart.cudaMallocHost(nbytes))
            device_address = None
        buffer = HostBuffer(self, _host_array(int(pointer), int(count), dtype), pointer, device_address)
        self._live.add(buffer)
        return buffer

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        pointer = self.call("cudaMalloc", self.cudart.cudaMalloc(max(1, int(nbytes))))
        buffer = DeviceBuffer(self, int(pointer), nbytes, pointer)
        self._live.add(buffer)
        return buffer

    def _free_host(self, buffer: HostBuffer, handle: Any) -> None:
        self._live.discard(buffer)
        self.call("cudaFreeHost", self.cudart.cudaFreeHost(handle))

    def _free_device(self, buffer: DeviceBuffer, handle: Any) -> None:
        self._live.discard(buffer)
        self.call("cudaFree", self.cudart.cudaFree(handle))

    # -- copies and synchronisation
    def copy_to_device(self, address: int, array: np.ndarray) -> None:
        self.call("cudaMemcpyAsync", self.cudart.cudaMemcpyAsync(
            int(address), array.__array_interface__["data"][0], array.nbytes, self._h2d, self._stream))

    def copy_to_host(self, array: np.ndarray, address: int) -> None:
        self.call("cudaMemcpyAsync", self.cudart.cudaMemcpyAsync(
            array.__array_interface__["data"][0], int(address), array.nbytes, self._d2h, self._stream))

    def synchronize(self) -> None:
        self.call("cudaStreamSynchronize", self.cudart.cudaStreamSynchronize(self._stream))

    # -- events
    def event(self) -> Event:
        event = Event(self, self.call("cudaEventCreate", self.cudart.cudaEventCreate()))
        self._live.add(event)
        return event

    def _record(self, handle: Any) -> None:
        self.call("cudaEventRecord", self.cudart.cudaEventRecord(handle, self._stream))

    def _event_synchronize(self, handle: Any) -> None:
        self.call("cudaEventSynchronize", self.cudart.cudaEventSynchronize(handle))

    def _elapsed(self, start: Any, end: Any) -> float:
        return float(self.call("cudaEventElapsedTime", self.cudart.cudaEventElapsedTime(start, end)))

    def _free_event(self, event: Event, handle: Any) -> None:
        self._live.discard(event)
        self.call("cudaEventDestroy", self.cudart.cudaEventDestroy(handle))

    def _destroy_stream(self) -> None:
        stream, self._stream = getattr(self, "_stream", None), None
        if stream is not None:
            self.call("cudaStreamDestroy", self.cudart.cudaStreamDestroy(stream))


class PycudaSession(CudaSession):
    """pycuda's driver API: the device's primary context, pushed around each use."""

    implementation = "pycuda"

    def __init__(self, cuda: Any, device: int):
        super().__init__(cuda, device)
        self.cuda = cuda
        cuda.init()
        self._device = cuda.Device(self.device)
        self.context = self._device.retain_primary_context()
        self.context.push()
        try:
            self._stream = cuda.Stream()
        finally:
            cuda.Context.pop()
        self.stream_handle = int(self._stream.handle)
        attribute = cuda.device_attribute
        self.name = str(self._device.name()).strip()
        self.compute_capability = tuple(int(v) for v in self._device.compute_capability())  # type: ignore[assignment]
        self.integrated = bool(self._device.get_attribute(attribute.INTEGRATED))
        self.can_map = bool(self._device.get_attribute(attribute.CAN_MAP_HOST_MEMORY))

    def __enter__(self) -> "CudaSession":
        self.context.push()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cuda.Context.pop()

    def host_buffer(self, count: int, dtype: Any, mapped: bool = False) -> HostBuffer:
        cuda = self.cuda
        count = max(1, int(count))
        if mapped:
            array = cuda.pagelocked_empty(count, dtype, mem_flags=cuda.host_alloc_flags.DEVICEMAP)
            device_address: Optional[int] = int(array.base.get_device_pointer())
        else:
            array = cuda.pagelocked_empty(count, dtype)
            device_address = None
        buffer = HostBuffer(self, array, array.base, device_address)
        self._live.add(buffer)
        return buffer

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        allocation = self.cuda.mem_alloc(max(1, int(nbytes)))
        buffer = DeviceBuffer(self, int(allocation), nbytes, allocation)
        self._live.add(buffer)
        return buffer

    def _free_host(self, buffer: HostBuffer, handle: Any) -> None:
        self._live.discard(buffer)
        free = getattr(handle, "free", None)
        if callable(free):  # pycuda's HostAllocation: freed now, not at garbage collection
            free()

    def _free_device(self, buffer: DeviceBuffer, handle: Any) -> None:
        self._live.discard(buffer)
        handle.free()

    def copy_to_device(self, address: int, array: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(address, array, self._stream)

    def copy_to_host(self, array: np.ndarray, address: int) -> None:
        self.cuda.memcpy_dtoh_async(array, address, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def event(self) -> Event:
        event = Event(self, self.cuda.Event())
        self._live.add(event)
        return event

    def _record(self, handle: Any) -> None:
        handle.record(self._stream)

    def _event_synchronize(self, handle: Any) -> None:
        handle.synchronize()

    def _elapsed(self, start: Any, end: Any) -> float:
        return float(end.time_since(start))

    def _free_event(self, event: Event, handle: Any) -> None:
        self._live.discard(event)

    def _destroy_stream(self) -> None:
        self._stream = None  # pycuda destroys it when collected, inside its own context


# ---------------------------------------------------------------- cuda-python errors

def check(cudart: Any, name: str, result: Any) -> Any:
    """The value(s) of cuda-python call `name`'s result: ``(err,)`` -> None, ``(err, v)`` -> v,
    ``(err, a, b)`` -> (a, b). Any error code but cudaSuccess is one EdgeFpnError line naming
    the call, the error and what to do."""
    if isinstance(result, tuple):
        err, values = (result[0], result[1:]) if result else (None, ())
    else:
        err, values = result, ()
    if error_code(err) != 0:
        raise EdgeFpnError(error_message(cudart, name, err))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def error_code(err: Any) -> int:
    try:
        return int(err)
    except (TypeError, ValueError):
        return int(getattr(err, "value", -1))


# cudaError_t values with a known remedy (the same numbers in CUDA 11, 12 and 13)
_REMEDIES = {
    2: "the GPU is out of memory: close other GPU programs or use a smaller engine",  # cudaErrorMemoryAllocation
    35: "the NVIDIA driver is older than this cuda-python's CUDA; " + _INSTALL_ANY,  # cudaErrorInsufficientDriver
    100: "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)",  # cudaErrorNoDevice
    101: "no CUDA GPU is visible with that index",  # cudaErrorInvalidDevice
    999: "the driver is in a bad state: reboot, or reload the NVIDIA kernel module",  # cudaErrorUnknown
}


def error_message(cudart: Any, name: str, err: Any) -> str:
    code = error_code(err)
    label = getattr(err, "name", None) or f"error {code}"
    description = ""
    try:
        text_result = cudart.cudaGetErrorString(err)
        text = text_result[1] if isinstance(text_result, tuple) and len(text_result) > 1 else b""
        description = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text or "")
    except Exception:  # the message is best effort; the code alone still says what failed
        description = ""
    remedy = _REMEDIES.get(code, "see the CUDA error above; re-run after closing other GPU programs")
    detail = f"{label}: {description}" if description else label
    return _first_line(f"CUDA call {name} failed ({detail}); {remedy}")


def bindings_version(cudart: Any) -> str:
    package = sys.modules.get("cuda.bindings")
    version = getattr(package, "__version__", None)
    if not version:
        try:
            from importlib.metadata import version as dist_version
            version = dist_version("cuda-bindings")
        except Exception:
            try:
                from importlib.metadata import version as dist_version
                version = dist_version("cuda-python")
            except Exception:
                version = "?"
    return str(version)


def driver_mismatch(driver: int, runtime: int, version: str = "?") -> Optional[str]:
    """A sentence when the driver's CUDA major (``cudaDriverGetVersion``, 12020 = 12.2) is older than
    the major of the CUDA that cuda-python is built for (``cudaRuntimeGetVersion``), else None.
    Within one major, CUDA's minor-version compatibility lets newer bindings run on an older driver."""
    driver_major, runtime_major = driver // 1000, runtime // 1000
    if driver_major >= runtime_major:
        return None
    install = _INSTALL_FOR_MAJOR.get(driver_major)
    if install is None:
        install = ("cuda-python has no release for it: use pycuda (`pip install pycuda`, --cuda pycuda)"
                   if driver_major < 12 else _INSTALL_ANY)
    return (f"cuda-python {version} is built for CUDA {runtime_major}.{runtime % 1000 // 10} but this machine's "
            f"driver supports CUDA {driver_major}.{driver % 1000 // 10}, so every CUDA call would fail; {install}")


def _first_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 400 else text[:397] + "..."
