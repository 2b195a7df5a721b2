#!/usr/bin/env python3
"""The TensorRT backend's data flow on a real GPU, without TensorRT: frames equal to ONNX Runtime's,
through both CUDA bindings and both host-memory modes, and the per-frame host overhead of each.

    python3 benchmarks/tensorrt_data_flow.py ENGINE_BUNDLE [HOST_BUNDLE] [--frames 60] [--json]

The bundles are ONNX Runtime bundles (``edge-fpn export``). Each is turned into a "tensorrt" bundle
whose engine files name the ONNX graphs, and a stand-in ``tensorrt`` module runs them: its engine
runs ONNX Runtime on the CPU but reads its inputs from, and writes its outputs to, the real device
addresses the backend binds (cuda-python copies on the backend's own stream). So everything the
backend does with GPU memory is real: page-locked or mapped host buffers, device buffers, async
copies, the stream, stage 1's feature maps left on the device for stage 2, teardown.

For each binding (cuda-python, pycuda) and memory mode (pinned; mapped, forced on a discrete GPU):
--frames frames of ``test://`` through the threaded pipeline, each compared with ONNX Runtime's
Detector on the same frame (boxes within 1e-3 px, scores within 1e-5, labels equal).

Host overhead: the backend's own work per call (copies in and out, binding addresses, enqueue,
synchronisation) with an engine that does nothing, median over --overhead-calls calls.

Where there is no GPU (or no cuda-python) it prints why and exits 0: nothing to measure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

STAND_IN_VERSION = "10.99.0"


def gpu_problem() -> Optional[str]:
    """Why this cannot run here, or None."""
    try:
        from cuda.bindings import runtime as cudart
    except Exception as exc:
        return f"cuda-python is not importable ({type(exc).__name__})"
    err, driver = cudart.cudaDriverGetVersion()
    if int(err) != 0 or not driver:
        return "no NVIDIA driver on this machine"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        return f"no CUDA GPU visible ({getattr(err, 'name', err)})"
    return None


def bindings_available() -> List[str]:
    found = []
    for name, module in (("cuda-python", "cuda.bindings.runtime"), ("pycuda", "pycuda.driver")):
        try:
            __import__(module)
            found.append(name)
        except Exception:
            pass
    return found


# ---------------------------------------------------------------- the stand-in tensorrt

class _DeviceAccess:
    """Reads and writes device memory for the stand-in engine, with cuda-python on the backend's
    stream, through page-locked staging (what a TensorRT kernel would read and write in place)."""

    def __init__(self, cudart: Any):
        self.cudart = cudart
        self.staging: Dict[int, Tuple[int, np.ndarray]] = {}

    def _check(self, name: str, result: Any) -> Any:
        if int(result[0]) != 0:
            raise RuntimeError(f"stand-in engine: {name} failed ({getattr(result[0], 'name', result[0])})")
        return result[1] if len(result) > 1 else None

    def _stage(self, nbytes: int) -> np.ndarray:
        have = self.staging.get(nbytes)
        if have is None:
            import ctypes
            pointer = self._check("cudaMallocHost", self.cudart.cudaMallocHost(max(1, nbytes)))
            array = np.frombuffer((ctypes.c_ubyte * max(1, nbytes)).from_address(int(pointer)), np.uint8)
            have = self.staging[nbytes] = (pointer, array)
        return have[1][:nbytes]

    def read(self, address: int, dtype: Any, shape: Tuple[int, ...], stream: int) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        staging = self._stage(nbytes)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check("cudaMemcpyAsync", self.cudart.cudaMemcpyAsync(
            staging.__array_interface__["data"][0], int(address), nbytes, kind, stream))
        self._check("cudaStreamSynchronize", self.cudart.cudaStreamSynchronize(stream))
        return staging.view(dtype).reshape(shape).copy()

    def write(self, address: int, value: np.ndarray, stream: int) -> None:
        value = np.ascontiguousarray(value)
        staging = self._stage(value.nbytes)
        staging[:] = value.reshape(-1).view(np.uint8)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check("cudaMemcpyAsync", self.cudart.cudaMemcpyAsync(
            int(address), staging.__array_interface__["data"][0], value.nbytes, kind, stream))
        self._check("cudaStreamSynchronize", self.cudart.cudaStreamSynchronize(stream))

    def free(self) -> None:
        for pointer, _ in self.staging.values():
            self.cudart.cudaFreeHost(pointer)
        self.staging.clear()


def make_stand_in_tensorrt(cudart: Any, null_engine: bool = False) -> types.ModuleType:
    """A ``tensorrt`` with the API the backend uses; an engine file is JSON {"onnx": path}.
    null_engine: execute does nothing (for the host-overhead figure)."""
    import onnxruntime as ort
    trt = types.ModuleType("tensorrt")
    trt.__version__ = STAND_IN_VERSION
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    kinds = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int32)": "INT32", "tensor(int8)": "INT8",
             "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(int64)": "INT64"}
    numpy_of = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8,
                "BOOL": np.bool_, "INT64": np.int64}
    trt.DataType = types.SimpleNamespace(**{name: types.SimpleNamespace(name=name) for name in numpy_of})
    access = _DeviceAccess(cudart)
    trt.device_access = access

    class Logger:
        WARNING = 2

        def __init__(self, level: int):
            self.level = level

    class Context:
        def __init__(self, engine: "Engine"):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            self.shapes[name] = tuple(int(v) for v in shape)
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            if name not in self.engine.names or not ptr:
                return False
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert type(stream_handle) is int
            if null_engine:
                return True
            session = self.engine.session
            feeds = {i.name: access.read(self.addresses[i.name], numpy_of[self.engine.types[i.name]],
                                         self.shapes[i.name], stream_handle) for i in session.get_inputs()}
            for meta, value in zip(session.get_outputs(), session.run(None, feeds)):
                access.write(self.addresses[meta.name], value, stream_handle)
            return True

    class Engine:
        def __init__(self, onnx_path: str):
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            metas = list(self.session.get_inputs()) + list(self.session.get_outputs())
            inputs = [i.name for i in self.session.get_inputs()]
            self.names = [m.name for m in metas]
            self.modes = {n: ("INPUT" if n in inputs else "OUTPUT") for n in self.names}
            self.types = {m.name: kinds[m.type] for m in metas}

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> str:
            return self.modes[name]

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(trt.DataType, self.types[name])

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        num_DLA_cores = 0

        def __init__(self, logger: Logger):
            self.logger = logger

        def deserialize_cuda_engine(self, blob: bytes) -> Optional[Engine]:
            return Engine(json.loads(blob.decode())["onnx"])

    trt.Logger, trt.Runtime = Logger, Runtime
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    return trt


def make_tensorrt_bundle(source: str, out: str, gpu_name: str, capability: Tuple[int, int]) -> str:
    """`source` (an ONNX Runtime bundle) as a tensorrt bundle whose engines name its ONNX files."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(source, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    for key, stage in manifest["stages"].items():
        with open(os.path.join(out, f"{key}.engine"), "w", encoding="utf-8") as f:
            json.dump({"onnx": os.path.abspath(os.path.join(source, stage["file"]))}, f)
        stage.update(file=f"{key}.engine", backend="tensorrt", precision="fp32")
    manifest["provenance"].update(tensorrt_version=STAND_IN_VERSION, gpu_name=gpu_name,
                                  compute_capability=f"{capability[0]}.{capability[1]}")
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return out


@contextlib.contextmanager
def stand_in(cudart: Any, memory: str, null_engine: bool = False) -> Iterator[types.ModuleType]:
    """The stand-in as `tensorrt`, and the memory mode forced for the backends opened inside
    (the Detector takes no memory option: "auto" is the rule for users; here both are measured)."""
    from edge_fpn.runtime.backends import tensorrt_backend
    trt = make_stand_in_tensorrt(cudart, null_engine)
    saved_module, saved_rule = sys.modules.get("tensorrt"), tensorrt_backend.host_memory_mode
    sys.modules["tensorrt"] = trt
    tensorrt_backend.host_memory_mode = lambda integrated, can_map: memory  # type: ignore[assignment]
    try:
        yield trt
    finally:
        tensorrt_backend.host_memory_mode = saved_rule  # type: ignore[assignment]
        if saved_module is None:
            sys.modules.pop("tensorrt", None)
        else:
            sys.modules["tensorrt"] = saved_module
        trt.device_access.free()


# ---------------------------------------------------------------- the checks

def frames_equal(got: Any, want: Any) -> bool:
    if len(got) != len(want):
        return False
    return bool(np.allclose(got.boxes, want.boxes, atol=1e-3) and np.allclose(got.scores, want.scores, atol=1e-5)
                and np.array_equal(got.labels, want.labels))


def data_flow(onnx_bundle: str, trt_bundle: str, cudart: Any, binding: str, memory: str, frames: int,
              threshold: float = 0.05) -> Dict[str, Any]:
    """`frames` frames of test:// through the threaded pipeline on the stand-in TensorRT bundle,
    each compared with ONNX Runtime's Detector on the same frame."""
    from edge_fpn.runtime import Detector
    from edge_fpn.runtime.backends.cuda_memory import CudaSession
    from edge_fpn.runtime.pipeline import Pipeline
    reference = Detector(onnx_bundle, score_threshold=threshold, device="cpu")
    equal, total, detections = 0, 0, 0
    with stand_in(cudart, memory):
        with Detector(trt_bundle, cuda=binding) as detector:
            backends = detector.backends()
            assert all(b.cuda == binding and b.mode == memory for b in backends), [(b.cuda, b.mode) for b in backends]
            session = backends[0].session
            source = f"test://?frames={frames}&realtime=0&seed=11&width=480&height=360"
            with Pipeline(detector, source, quiet=True, score_threshold=threshold) as pipeline:
                for result in pipeline:
                    total += 1
                    want = reference(result.frame)
                    equal += frames_equal(result.detections, want)
                    detections += len(want)
        left = session.live
        open_sessions = [s for s in CudaSession._sessions.values() if s is session]
    return {"binding": binding, "memory": memory, "frames": total, "equal": equal, "detections": detections,
            "left_allocated": left, "session_open_after_close": bool(open_sessions)}


def host_overhead(onnx_bundle: str, trt_bundle: str, cudart: Any, binding: str, memory: str,
                  calls: int = 2000) -> Dict[str, Any]:
    """Median microseconds of the backend's own work per call (an engine that does nothing)."""
    from edge_fpn.runtime import Detector
    with stand_in(cudart, memory, null_engine=True):
        with Detector(trt_bundle, cuda=binding) as detector:
            frame = np.zeros((360, 480, 3), np.uint8)
            inputs, letterbox = detector.preprocess(frame)
            run = detector.engine_runner(inputs, letterbox)
            for _ in range(50):
                run()
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
    return {"binding": binding, "memory": memory, "calls": calls,
            "median_us": round(statistics.median(times) * 1e6, 1),
            "p90_us": round(sorted(times)[int(0.9 * len(times))] * 1e6, 1)}


def run(bundles: List[str], frames: int = 60, overhead_calls: int = 2000,
        bindings: Optional[List[str]] = None) -> Dict[str, Any]:
    problem = gpu_problem()
    if problem:
        return {"skipped": problem}
    from cuda.bindings import runtime as cudart
    from edge_fpn.runtime.backends.cuda_memory import CudaSession
    bindings = bindings or bindings_available()
    session = CudaSession.acquire("cuda-python")
    name, capability, integrated = session.name, session.compute_capability, session.integrated
    session.release()
    report: Dict[str, Any] = {"gpu": name, "compute_capability": f"{capability[0]}.{capability[1]}",
                              "integrated": integrated, "bindings": bindings, "data_flow": [], "host_overhead": []}
    work = tempfile.mkdtemp(prefix="edge-fpn-data-flow-")
    try:
        for bundle in bundles:
            trt_bundle = make_tensorrt_bundle(bundle, os.path.join(work, os.path.basename(os.path.normpath(bundle))),
                                              name, capability)
            for binding in bindings:
                for memory in ("pinned", "mapped"):
                    row = data_flow(bundle, trt_bundle, cudart, binding, memory, frames)
                    row["bundle"] = bundle
                    report["data_flow"].append(row)
                    overhead = host_overhead(bundle, trt_bundle, cudart, binding, memory, overhead_calls)
                    overhead["bundle"] = bundle
                    report["host_overhead"].append(overhead)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["ok"] = all(r["frames"] == frames and r["equal"] == frames and not r["left_allocated"]
                       and not r["session_open_after_close"] for r in report["data_flow"])
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", help="ONNX Runtime bundles (engine layout, host layout)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--overhead-calls", type=int, default=2000)
    parser.add_argument("--binding", action="append", choices=("cuda-python", "pycuda"),
                        help="only this binding (repeatable; default: every one installed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.bundles, args.frames, args.overhead_calls, args.binding)
    if args.json or "skipped" in report:
        print(json.dumps(report, indent=1) if args.json else f"skipped: {report['skipped']}")
        return 0
    print(f"{report['gpu']} (compute capability {report['compute_capability']}, integrated: {report['integrated']})")
    for row in report["data_flow"]:
        print(f"{os.path.basename(os.path.normpath(row['bundle']))}  {row['binding']:<11} {row['memory']:<6}  "
              f"{row['equal']}/{row['frames']} frames equal to ONNX Runtime ({row['detections']} detections), "
              f"left allocated: {row['left_allocated']}")
    for row in report["host_overhead"]:
        print(f"{os.path.basename(os.path.normpath(row['bundle']))}  {row['binding']:<11} {row['memory']:<6}  "
              f"host overhead per call: median {row['median_us']} us, p90 {row['p90_us']} us")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
