"""A fake cuda-python runtime (``cuda.bindings.runtime``), as strict as the real one where the
TensorRT backend depends on it, shared by the backend tests.

Like the real bindings it raises nothing by itself: every call returns a tuple whose first item is
a ``cudaError_t`` (``(err,)``, ``(err, value)``), and an error leaves the value None. Also as the
real one:

* a driver older than the bindings' CUDA major fails every call with cudaErrorInsufficientDriver
  (``cudaDriverGetVersion`` still answers; 0 where no driver is installed);
* page-locked host memory is real memory (numpy blocks, real addresses); device memory lives in
  ``FakeMemory`` blocks behind fake integer addresses that are not host addresses; a mapped host
  allocation has a device alias (``cudaHostGetDevicePointer``, flags must be 0) distinct from its
  host address, so host and device pointers cannot be mixed up unnoticed;
* copies, engine runs and event records are queued on their stream and happen at
  ``cudaStreamSynchronize`` / ``cudaEventSynchronize``, in order: a result read before the
  synchronisation is stale, as on a GPU;
* freeing an unknown or already freed pointer, a destroyed stream, a copy out of an
  allocation's bounds or with a bad ``cudaMemcpyKind``: ``cudaErrorInvalidValue`` /
  ``cudaErrorInvalidResourceHandle``.

``fail[name] = cudaError_t.X`` makes the next call of `name` return that error (the error path of
every call); ``leaks()`` lists what was allocated or created and not freed or destroyed;
``violations`` lists async copies from pageable memory (legal, but synchronous on a real GPU: the
backend must never do it).
"""
from __future__ import annotations

import enum
import types
from typing import Any, Callable, Dict, List

import numpy as np


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700
    cudaErrorUnknown = 999


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaDeviceAttr(enum.IntEnum):
    cudaDevAttrIntegrated = 18
    cudaDevAttrCanMapHostMemory = 19


# the calls the real bindings answer without a (new enough) driver
WITHOUT_DRIVER = ("cudaDriverGetVersion", "cudaRuntimeGetVersion", "cudaGetErrorString", "cudaGetErrorName")

_STRINGS = {
    cudaError_t.cudaSuccess: b"no error",
    cudaError_t.cudaErrorInvalidValue: b"invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: b"out of memory",
    cudaError_t.cudaErrorInsufficientDriver: b"CUDA driver version is insufficient for CUDA runtime version",
    cudaError_t.cudaErrorNoDevice: b"no CUDA-capable device is detected",
    cudaError_t.cudaErrorInvalidDevice: b"invalid device ordinal",
    cudaError_t.cudaErrorInvalidResourceHandle: b"invalid resource handle",
    cudaError_t.cudaErrorIllegalAddress: b"an illegal memory access was encountered",
    cudaError_t.cudaErrorUnknown: b"unknown error",
}


class FakeMemory:
    """Device memory: numpy blocks behind integer pointers (shared by the fake tensorrt, which
    reads and writes tensors by address), and the queues of the fake streams."""

    def __init__(self):
        self.blocks = {}
        self.next = 0x1000
        self.copies = []  # (direction, ptr, nbytes)
        self.queues: Dict[int, List[Callable[[], None]]] = {}  # stream handle -> pending work
        self.foreign_streams = set()  # handles of the fake pycuda's streams (one driver: usable by both)

    def alloc(self, nbytes):
        ptr = self.next
        self.next += (nbytes + 0xFFF) & ~0xFFF or 0x1000
        self.blocks[ptr] = np.zeros(max(1, nbytes), np.uint8)
        return ptr

    def view(self, ptr, dtype, shape):
        count = int(np.prod(shape)) if shape else 1
        return self.blocks[ptr][: count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    def enqueue(self, stream_handle, work):
        """Run `work` in the stream's order: queued on a fake cuda-python stream, at once elsewhere."""
        queue = self.queues.get(int(stream_handle))
        if queue is None:
            work()
        else:
            queue.append(work)

    def flush(self, stream_handle):
        queue = self.queues.get(int(stream_handle), [])
        while queue:
            queue.pop(0)()


class _Handle:
    """cudaStream_t / cudaEvent_t: opaque objects whose int() is the handle's address."""

    def __init__(self, init_value=0):
        self._value = int(init_value)

    def __int__(self):
        return self._value

    def getPtr(self):
        return self._value

    def __repr__(self):
        return f"<{type(self).__name__} 0x{self._value:x}>"


class cudaStream_t(_Handle):
    pass


class cudaEvent_t(_Handle):
    pass


class cudaDeviceProp:
    def __init__(self, name, major, minor, integrated, can_map):
        self.name = name.encode() + b"\0" * (256 - len(name))  # char[256], NUL padded
        self.major, self.minor = major, minor
        self.integrated, self.canMapHostMemory = int(integrated), int(can_map)


def make_fake_cudart(memory: FakeMemory, integrated=False, name="Orin", cc=(8, 7), driver=12060, runtime=12060,
                     devices=1, can_map=True):
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t, rt.cudaMemcpyKind, rt.cudaDeviceAttr = cudaError_t, cudaMemcpyKind, cudaDeviceAttr
    rt.cudaStream_t, rt.cudaEvent_t, rt.cudaDeviceProp = cudaStream_t, cudaEvent_t, cudaDeviceProp
    rt.cudaHostAllocDefault, rt.cudaHostAllocMapped = 0, 2
    rt.fail: Dict[str, cudaError_t] = {}
    rt.calls: List[str] = []
    rt.violations: List[str] = []
    host: Dict[int, Dict[str, Any]] = {}  # real address -> {"block", "mapped", "alias"}
    device_owned: set = set()  # pointers from cudaMalloc (not mapped aliases)
    streams: Dict[int, cudaStream_t] = {}
    events: Dict[int, Dict[str, Any]] = {}
    counter = [0x7F0000]
    ok = cudaError_t.cudaSuccess
    bad = cudaError_t.cudaErrorInvalidValue
    no_driver = driver // 1000 < runtime // 1000

    def api(arity):
        """Wrap a fake call: record it, apply an injected failure or a missing driver, return a tuple."""
        def wrap(fn):
            def call(*args):
                rt.calls.append(fn.__name__)
                error = rt.fail.pop(fn.__name__, None)
                if error is None and no_driver and fn.__name__ not in WITHOUT_DRIVER:
                    error = cudaError_t.cudaErrorInsufficientDriver
                if error is not None:
                    return (error,) if arity == 0 else (error,) + (None,) * arity
                return fn(*args)
            call.__name__ = fn.__name__
            setattr(rt, fn.__name__, call)
            return call
        return wrap

    def host_block(address, nbytes):
        """(block, offset) of a page-locked host range, or None."""
        for base, entry in host.items():
            if base <= address and address + nbytes <= base + entry["block"].nbytes:
                return entry["block"], address - base
        return None

    def device_block(address, nbytes):
        for base, block in memory.blocks.items():
            if base <= address and address + nbytes <= base + block.nbytes:
                return block, address - base
        return None

    def live_stream(stream):
        handle = int(stream)
        return handle == 0 or handle in streams or handle in memory.foreign_streams

    @api(1)
    def cudaDriverGetVersion():
        return ok, driver

    @api(1)
    def cudaRuntimeGetVersion():
        return ok, runtime

    @api(1)
    def cudaGetDeviceCount():
        return ok, devices

    @api(0)
    def cudaSetDevice(device):
        if not isinstance(device, int) or not 0 <= device < devices:
            return (cudaError_t.cudaErrorInvalidDevice,)
        return (ok,)

    @api(1)
    def cudaGetDeviceProperties(device):
        if not 0 <= device < devices:
            return cudaError_t.cudaErrorInvalidDevice, None
        return ok, cudaDeviceProp(name, cc[0], cc[1], integrated, can_map)

    @api(1)
    def cudaDeviceGetAttribute(attr, device):
        if not isinstance(attr, cudaDeviceAttr):
            return bad, None
        if not 0 <= device < devices:
            return cudaError_t.cudaErrorInvalidDevice, None
        return ok, {cudaDeviceAttr.cudaDevAttrIntegrated: int(integrated),
                    cudaDeviceAttr.cudaDevAttrCanMapHostMemory: int(can_map)}[attr]

    @api(1)
    def cudaGetErrorString(error):
        return ok, _STRINGS.get(error, b"unrecognized error code")

    @api(1)
    def cudaGetErrorName(error):
        return ok, getattr(error, "name", "unrecognized error code").encode()

    # -- memory
    def _host_alloc(size, mapped):
        if not isinstance(size, int) or size <= 0:
            return bad, None
        block = np.zeros(size, np.uint8)
        address = block.__array_interface__["data"][0]
        alias = None
        if mapped:
            alias = memory.alloc(size)
            memory.blocks[alias] = block  # the GPU's view of the same bytes
        host[address] = {"block": block, "mapped": mapped, "alias": alias}
        return ok, address

    @api(1)
    def cudaMallocHost(size):
        return _host_alloc(size, False)

    @api(1)
    def cudaHostAlloc(size, flags):
        if flags not in (0, 1, 2, 3, 4, 6):
            return bad, None
        return _host_alloc(size, bool(flags & 2))

    @api(1)
    def cudaHostGetDevicePointer(pHost, flags):
        entry = host.get(int(pHost))
        if flags != 0 or entry is None or not entry["mapped"]:
            return bad, None
        return ok, entry["alias"]

    @api(1)
    def cudaMalloc(size):
        if not isinstance(size, int) or size <= 0:
            return bad, None
        ptr = memory.alloc(size)
        device_owned.add(ptr)
        return ok, ptr

    def synchronize_device():
        for handle in list(memory.queues):
            memory.flush(handle)

    @api(0)
    def cudaFree(devPtr):
        synchronize_device()  # as the real cudaFree, which waits for the device's work
        ptr = int(devPtr)
        if ptr not in device_owned:
            return (bad,)
        device_owned.discard(ptr)
        memory.blocks.pop(ptr)
        return (ok,)

    @api(0)
    def cudaFreeHost(ptr):
        synchronize_device()
        entry = host.pop(int(ptr), None)
        if entry is None:
            return (bad,)
        if entry["alias"] is not None:
            memory.blocks.pop(entry["alias"])
        return (ok,)

    @api(0)
    def cudaMemcpyAsync(dst, src, count, kind, stream):
        if not isinstance(kind, cudaMemcpyKind) and kind not in (0, 1, 2, 3, 4):
            return (bad,)
        if not isinstance(count, int) or count < 0 or not live_stream(stream):
            return (cudaError_t.cudaErrorInvalidResourceHandle if not live_stream(stream) else bad,)
        kind = cudaMemcpyKind(int(kind))
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            source, target = host_block(int(src), count), device_block(int(dst), count)
            direction, device_ptr = "htod", int(dst)
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            source, target = device_block(int(src), count), host_block(int(dst), count)
            direction, device_ptr = "dtoh", int(src)
        else:
            return (bad,)
        if direction == "htod" and source is None or direction == "dtoh" and target is None:
            rt.violations.append(f"{direction} async copy with pageable host memory")
            return (bad,)
        if source is None or target is None:
            return (bad,)  # a device range outside any allocation

        def run():
            (src_block, src_offset), (dst_block, dst_offset) = source, target
            dst_block[dst_offset: dst_offset + count] = src_block[src_offset: src_offset + count]
        memory.enqueue(int(stream), run)
        memory.copies.append((direction, device_ptr, count))
        return (ok,)

    # -- streams and events
    @api(1)
    def cudaStreamCreate():
        counter[0] += 0x100
        stream = cudaStream_t(counter[0])
        streams[counter[0]] = stream
        memory.queues[counter[0]] = []
        return ok, stream

    @api(0)
    def cudaStreamSynchronize(stream):
        if not live_stream(stream):
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        memory.flush(int(stream))
        return (ok,)

    @api(0)
    def cudaStreamDestroy(stream):
        handle = int(stream)
        if handle not in streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        memory.flush(handle)  # queued work still completes
        del streams[handle]
        memory.queues.pop(handle, None)
        return (ok,)

    @api(1)
    def cudaEventCreate():
        counter[0] += 0x100
        event = cudaEvent_t(counter[0])
        events[counter[0]] = {"time": None, "stream": None}
        return ok, event

    @api(0)
    def cudaEventRecord(event, stream):
        entry = events.get(int(event))
        if entry is None or not live_stream(stream):
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        entry["stream"] = int(stream)
        entry["time"] = None

        def mark():
            entry["time"] = float(len(rt.calls))  # a monotonic "clock"
        memory.enqueue(int(stream), mark)
        return (ok,)

    @api(0)
    def cudaEventSynchronize(event):
        entry = events.get(int(event))
        if entry is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        if entry["stream"] is not None:
            memory.flush(entry["stream"])
        return (ok,)

    @api(1)
    def cudaEventElapsedTime(start, end):
        a, b = events.get(int(start)), events.get(int(end))
        if a is None or b is None:
            return cudaError_t.cudaErrorInvalidResourceHandle, None
        if a["time"] is None or b["time"] is None:
            return bad, None  # cudaErrorNotReady in the real one
        return ok, (b["time"] - a["time"]) * 1e-3

    @api(0)
    def cudaEventDestroy(event):
        if events.pop(int(event), None) is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (ok,)

    def leaks():
        found = {}
        if host:
            found["host allocations"] = len(host)
        if device_owned:
            found["device allocations"] = len(device_owned)
        if streams:
            found["streams"] = len(streams)
        if events:
            found["events"] = len(events)
        return found

    rt.leaks = leaks
    rt.versions = (driver, runtime)
    return rt


def cuda_python_modules(cudart):
    """sys.modules entries that make ``from cuda.bindings import runtime`` give `cudart`."""
    cuda = types.ModuleType("cuda")
    cuda.__path__ = []
    bindings = types.ModuleType("cuda.bindings")
    bindings.__path__ = []
    bindings.__version__ = "12.9.4" if cudart.versions[1] // 1000 == 12 else "13.5.0"
    bindings.runtime = cudart
    cuda.bindings = bindings
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": cudart}


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

        def free(self):
            assert memory.blocks.pop(self.ptr, None) is not None, "host allocation freed twice"

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
        count = 0

        def __init__(self):
            assert Context.depth > 0, "a stream is created inside its context"
            Stream.count += 1
            self.handle = 1234 + Stream.count
            memory.foreign_streams.add(self.handle)

        def synchronize(self):
            pass

    class Event:
        def record(self, stream=None):
            self.time = len(memory.copies)

        def synchronize(self):
            pass

        def time_since(self, start):
            return float(self.time - start.time)

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
    cuda.Event = Event
    cuda.mem_alloc = DeviceAllocation
    cuda.pagelocked_empty = pagelocked_empty
    cuda.memcpy_htod_async = memcpy_htod_async
    cuda.memcpy_dtoh_async = memcpy_dtoh_async
    cuda.memcpy_dtoh = memcpy_dtoh
    cuda.host_alloc_flags = types.SimpleNamespace(DEVICEMAP=2)
    cuda.device_attribute = types.SimpleNamespace(INTEGRATED="INTEGRATED", CAN_MAP_HOST_MEMORY="CAN_MAP_HOST_MEMORY")
    return cuda
