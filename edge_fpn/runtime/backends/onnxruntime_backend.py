"""ONNX Runtime backend: the CPU reference, and the backend everywhere TensorRT is absent.

Where onnxruntime-gpu is installed it runs on the GPU: ``device="auto"`` (the default) takes the
CUDA execution provider when ONNX Runtime lists it, ``"cuda"`` insists on it and ``"cpu"`` never
uses it. ONNX Runtime's TensorRT execution provider goes in front of CUDA where it is listed *and*
the TensorRT libraries load: onnxruntime-gpu lists it whether or not libnvinfer is installed, and
then fails (or falls back, printing) when the session is created. ``select_providers`` is the
choice alone, pure, on whatever ``onnxruntime`` namespace it is given (the tests give it fakes);
the backend then checks what the session really got (``session.get_providers()``: ONNX Runtime
silently drops the CUDA provider when its CUDA or cuDNN libraries are missing) and records it in
``self.provider``.

Inputs and outputs stay numpy arrays on the host (a plain ``session.run``): ONNX Runtime copies
them to and from the GPU inside the call.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import EdgeFpnError

logger = logging.getLogger("edge_fpn.runtime")

DEVICES = ("auto", "cpu", "cuda")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)

# what ONNX Runtime's TensorRT provider dlopens (TensorRT 10 for onnxruntime-gpu >= 1.18, 8 before)
TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so", "nvinfer_10.dll", "nvinfer.dll")

INSTALL_GPU = ("install onnxruntime-gpu built for this machine's CUDA version "
               "(`pip uninstall onnxruntime && pip install onnxruntime-gpu`; CUDA 11 needs the CUDA 11 build), "
               "or use --device cpu")


@dataclass(frozen=True)
class ProviderPlan:
    providers: Tuple[str, ...]  # ONNX Runtime provider names, in precedence order, CPU last
    note: str = ""  # why a provider that might be expected is not in the plan ("" if none)


def tensorrt_libraries_load() -> bool:
    """Whether TensorRT's libnvinfer can be loaded (the TensorRT provider needs it at session creation)."""
    import ctypes
    for name in TENSORRT_LIBRARIES:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    # pip's `tensorrt` wheels keep the libraries in the tensorrt_libs package, off the loader's path;
    # loaded once by full path, a later dlopen of the same soname finds it
    try:
        import tensorrt_libs  # type: ignore[import-not-found]
    except ImportError:
        return False
    import glob
    for directory in getattr(tensorrt_libs, "__path__", []):
        for path in sorted(glob.glob(os.path.join(directory, "libnvinfer.so*"))):
            try:
                ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
                return True
            except OSError:
                continue
    return False


def select_providers(ort: Any, device: str = "auto", tensorrt: Optional[bool] = None,
                     tensorrt_loads: Optional[Callable[[], bool]] = None) -> ProviderPlan:
    """The execution providers to ask ONNX Runtime for, from what ``ort.get_available_providers()`` lists.

    device: "auto" (CUDA where listed, else CPU), "cpu", or "cuda" (an EdgeFpnError where CUDA is
    not listed). tensorrt: None puts ONNX Runtime's TensorRT provider in front of CUDA where it is
    listed and ``tensorrt_loads()`` (default: ``tensorrt_libraries_load``) says libnvinfer loads;
    False never; True insists on it.
    """
    if device not in DEVICES:
        raise EdgeFpnError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    available = list(ort.get_available_providers())
    if device == "cpu":
        if tensorrt:
            raise EdgeFpnError("ONNX Runtime's TensorRT provider runs on the GPU; it cannot be asked for with device 'cpu'")
        return ProviderPlan((CPU,))
    if CUDA not in available:
        version = getattr(ort, "__version__", "?")
        if device == "cuda" or tensorrt:
            raise EdgeFpnError(f"device 'cuda' needs ONNX Runtime's CUDA provider, which onnxruntime {version} here "
                               f"does not have (it has {', '.join(available) or 'none'}); {INSTALL_GPU}")
        return ProviderPlan((CPU,), note=f"no CUDA provider in onnxruntime {version}")
    if tensorrt is False:
        return ProviderPlan((CUDA, CPU))
    if TENSORRT not in available:
        if tensorrt:
            raise EdgeFpnError("ONNX Runtime's TensorRT provider is not in this onnxruntime-gpu build; "
                               "install one with it, or run without the TensorRT provider")
        return ProviderPlan((CUDA, CPU))
    if not (tensorrt_loads or tensorrt_libraries_load)():
        if tensorrt:
            raise EdgeFpnError("ONNX Runtime lists its TensorRT provider, but TensorRT's libnvinfer does not load; "
                               "install TensorRT (matching this onnxruntime-gpu) or put its libraries on LD_LIBRARY_PATH")
        return ProviderPlan((CUDA, CPU), note="TensorRT provider listed, but libnvinfer does not load: CUDA provider alone")
    return ProviderPlan((TENSORRT, CUDA, CPU))


def _version(ort: Any) -> Tuple[int, int]:
    try:
        major, minor = str(getattr(ort, "__version__", "0.0")).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def provider_options(ort: Any, name: str, stage: Any = None, cache_dir: Optional[str] = None) -> Dict[str, str]:
    """Options of one provider. An FP32 stage (or one of unknown precision) runs strict FP32 on
    CUDA (no TF32 convolutions): the FP32 bundle is the one whose numbers match torchvision's."""
    precision = getattr(stage, "precision", "fp32")
    if name == CUDA:
        options = {"device_id": "0"}
        if precision == "fp32" and _version(ort) >= (1, 16):  # use_tf32 arrived in 1.15; unknown options are errors
            options["use_tf32"] = "0"
        return options
    if name == TENSORRT:
        options = {"device_id": "0"}
        if cache_dir:
            # building an engine takes seconds to minutes: keep it between runs
            options.update(trt_engine_cache_enable="True", trt_engine_cache_path=cache_dir)
        shapes = profile_shapes(stage)
        if shapes:
            # one optimization profile over the whole dynamic range (stage 2's proposals: 1..post_nms_top_n),
            # instead of an engine rebuilt each time a larger proposal count comes
            options.update(trt_profile_min_shapes=shapes[0], trt_profile_opt_shapes=shapes[1],
                           trt_profile_max_shapes=shapes[2])
        return options
    return {}


def profile_shapes(stage: Any) -> Optional[Tuple[str, str, str]]:
    """TensorRT provider profile strings ("name:1x4,...") for min, opt and max, from the manifest's dynamic axes."""
    if stage is None or not getattr(stage, "dynamic_axes", None):
        return None
    low, opt, high = [], [], []
    for tensor in stage.inputs:
        if all(isinstance(d, int) for d in tensor.shape):
            continue
        dims = [[], [], []]
        for d in tensor.shape:
            if isinstance(d, int):
                lo = hi = d
            elif d in stage.dynamic_axes:
                lo, hi = stage.dynamic_axes[d]
            else:
                return None  # an axis with no declared range: let the provider find its own profiles
            dims[0].append(lo)
            dims[1].append(hi)  # most frames fill stage 2 with its maximum of proposals
            dims[2].append(hi)
        for out, ds in zip((low, opt, high), dims):
            out.append(f"{tensor.name}:{'x'.join(str(v) for v in ds)}")
    if not low:
        return None
    return ",".join(low), ",".join(opt), ",".join(high)


def tensorrt_cache_dir(path: str) -> Optional[str]:
    """Where the TensorRT provider keeps the engines it builds for one ONNX file.

    Per file and version of it (path, size, modification time): ONNX Runtime does not notice
    changed weights under an unchanged file name and would reuse a stale engine.
    """
    try:
        info = os.stat(path)
        key = hashlib.sha1(f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:16]
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        directory = os.path.join(root, "edge-fpn", "onnxruntime-tensorrt", key)
        os.makedirs(directory, exist_ok=True)
        return directory
    except OSError:
        return None


def _preload_cuda_libraries(ort: Any) -> None:
    """onnxruntime-gpu >= 1.21 can load CUDA and cuDNN from the nvidia-* pip packages itself; without
    it (or torch imported first) the CUDA provider is dropped when those are not on the loader's path."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    import contextlib
    import io
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its warnings
            preload()
    except Exception:  # best effort: the session below says whether CUDA really loaded
        pass


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# ONNX Runtime is an extra, not a dependency: onnxruntime and onnxruntime-gpu (and NVIDIA's Jetson
# builds) all install the same `onnxruntime` package, and only one of them may be installed
INSTALL_ONNXRUNTIME = ("pip install 'edge-fpn[onnxruntime]' on a CPU host, onnxruntime-gpu on a GPU host, "
                       "NVIDIA's onnxruntime-gpu wheel for your JetPack on a Jetson")


def import_onnxruntime(path: str = "") -> Any:
    """The onnxruntime module, or one sentence saying what to install (naming TensorRT too where
    it is absent as well: then nothing here can run an engine)."""
    try:
        import onnxruntime as ort
    except ImportError:
        what = f"{os.path.basename(path)} runs on ONNX Runtime" if path else "this bundle runs on ONNX Runtime"
        try:
            import tensorrt  # noqa: F401  (only to word the sentence)
            other = "or build a TensorRT bundle of this model here (`edge-fpn build --backend tensorrt`)"
        except Exception:
            other = "and neither TensorRT nor ONNX Runtime is installed, so no engine can run here"
        raise EdgeFpnError(f"{what}, which is not installed: {INSTALL_ONNXRUNTIME}; {other}") from None
    return ort


class OnnxRuntimeBackend:
    """``backend(inputs) -> outputs`` on an ONNX Runtime session.

    providers: an explicit list of ONNX Runtime providers (overrides device). device: auto | cpu |
    cuda (see the module docstring). stage: the manifest's StageSpec, for the TensorRT provider's
    shape profiles and the precision. tensorrt: None (where it loads), False or True, as in
    ``select_providers``. After loading, ``provider`` is the provider that really runs the graph
    (the first of ``providers``), and ``note`` says why a GPU provider was not used, if one was not.
    """

    def __init__(self, path: str, threads: int = 0, providers: Optional[List[str]] = None,
                 device: str = "auto", stage: Any = None, tensorrt: Optional[bool] = None):
        ort = import_onnxruntime(path)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # two sessions run one after the other: idle threads spinning for work would steal the
        # cores from the session that is running (on 2 cores that halves its speed)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")

        self.path = path
        self.device = device
        if providers:
            plan = ProviderPlan(tuple(providers))
        else:
            plan = select_providers(ort, device, tensorrt)
        self.note = plan.note
        if CUDA in plan.providers or TENSORRT in plan.providers:
            _preload_cuda_libraries(ort)
        self.session, used = self._create(ort, path, options, plan.providers, device, stage)
        self.providers: List[str] = list(self.session.get_providers())
        self.provider: str = self.providers[0] if self.providers else CPU
        if any(p in GPU_PROVIDERS for p in used) and self.provider not in GPU_PROVIDERS:
            # ONNX Runtime drops the CUDA provider without an error when its CUDA or cuDNN libraries are missing
            if device == "cuda":
                raise EdgeFpnError(f"ONNX Runtime's CUDA provider did not load for {path} (its CUDA or cuDNN "
                                   f"libraries are missing or of another version); {INSTALL_GPU}")
            self._fall_back(f"ONNX Runtime's CUDA provider did not load (CUDA or cuDNN libraries missing?); running {os.path.basename(path)} on the CPU")
        elif TENSORRT in used and TENSORRT not in self.providers:
            self._fall_back(f"ONNX Runtime's TensorRT provider did not load; running {os.path.basename(path)} on the CUDA provider")
        if hasattr(self.session, "disable_fallback"):
            # a failed run on the GPU should raise, not quietly re-create the session on the CPU
            self.session.disable_fallback()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _create(self, ort: Any, path: str, options: Any, providers: Sequence[str], device: str,
                stage: Any) -> Tuple[Any, Tuple[str, ...]]:
        """Create the session, retrying without the TensorRT provider (then, for device auto, without
        CUDA) where one fails to initialize; a file that fails on the CPU is corrupt.
        Returns the session and the providers it was created with."""
        attempts: List[Tuple[str, ...]] = [tuple(providers)]
        if TENSORRT in providers:
            attempts.append(tuple(p for p in providers if p != TENSORRT))
        if CUDA in providers and device != "cuda":
            attempts.append((CPU,))
        cache_dir = tensorrt_cache_dir(path) if TENSORRT in providers else None
        for attempt in attempts:
            gpu = [p for p in attempt if p in GPU_PROVIDERS]
            with_options: List[Union[str, Tuple[str, Dict[str, str]]]] = [
                (p, provider_options(ort, p, stage, cache_dir)) if p in GPU_PROVIDERS else p for p in attempt]
            try:
                if gpu:
                    # enable_fallback=0: ONNX Runtime would otherwise retry by itself, printing to stdout
                    return ort.InferenceSession(path, sess_options=options, providers=with_options,
                                                enable_fallback=0), attempt
                return ort.InferenceSession(path, sess_options=options, providers=list(attempt)), attempt
            except Exception as exc:  # onnxruntime raises its own exception types
                message = _first_line(exc)
                if attempt is attempts[-1]:
                    if gpu:
                        raise EdgeFpnError(f"cannot load {path} with ONNX Runtime on {gpu[-1]} ({message}); "
                                           f"the file is corrupt, or {INSTALL_GPU}") from None
                    raise EdgeFpnError(f"cannot load {path} with ONNX Runtime ({message}); the file is corrupt or not ONNX, re-run `edge-fpn export`") from None
                self._fall_back(f"{gpu[0]} failed for {os.path.basename(path)} ({message}); trying {', '.join(attempts[attempts.index(attempt) + 1])}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _fall_back(self, message: str) -> None:
        self.note = message
        logger.warning("edge-fpn: %s", message)

    def __call__(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, {name: inputs[name] for name in self.input_names})
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        self.session = None

    def __enter__(self) -> "OnnxRuntimeBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
