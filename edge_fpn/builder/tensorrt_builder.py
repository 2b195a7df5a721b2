"""Everything that touches TensorRT's builder, in one thin module (TensorRT 8.5, 8.6, 10.x, 11).

``tensorrt`` is imported inside functions only, and every function that uses it takes the module
as an argument, so that the pure logic (version dispatch, flags from options, optimization-profile
shapes, calibration cache handling) is tested on machines without a GPU with a stand-in module.

What differs between versions, from NVIDIA's API documentation and migration guides:

- TensorRT 8.x parses ONNX only into explicit-batch networks (NetworkDefinitionCreationFlag
  EXPLICIT_BATCH); TensorRT 10 made every network explicit-batch and deprecated the flag.
- FP16 and INT8 are builder flags up to 10.x; TensorRT 11 removed them (and the calibrators)
  in favour of strongly typed networks: FP16 then comes from an FP16 ONNX, INT8 from Q/DQ nodes.
  NetworkDefinitionCreationFlag.STRONGLY_TYPED exists from TensorRT 9/10 (ignored in 11, where every
  network is strongly typed).
- Implicit INT8 (a calibrator, here fed from the calibration cache) was deprecated in 10.1 and
  removed in 11; explicit Q/DQ is the default path everywhere.
- Calibration cache headers carry the version as major*1000+minor*100+patch up to 8.x and
  major*10000+minor*100+patch from 9/10 on; TensorRT recalibrates (here: fails) on a mismatch,
  so the cache handed to the calibrator is rewritten to the local version.
- RoiAlign imports through the ROIAlign_TRT plugin of libnvinfer_plugin; from TensorRT 10 the
  ONNX parser no longer registers those plugins itself, so ``init_libnvinfer_plugins(logger, "")``
  is called before parsing ("plugin was not found in the plugin registry" otherwise).
- ``IBuilderConfig.set_timing_cache(cache, ignore_mismatch)`` returns False for a cache made on
  another GPU or by another TensorRT (it is then not used): the build starts from an empty cache,
  says so in one line, and writes its own cache over the stale file.
- The engine layout's postprocessing (layers named by graph_names.POSTPROCESS_SCOPES; TensorRT
  names a layer after its ONNX node, and from 8.6 also records "[ONNX Layer: <node>]" in its
  metadata) stays FP32 in FP16/INT8 engines: layer precision and output types FP32 plus
  BuilderFlag.OBEY_PRECISION_CONSTRAINTS on 8.5-10.x; TensorRT 11 rejects both (strong typing),
  so there the FP16 ONNX itself keeps those nodes float32 (fp16.py). The parser's helper layers
  (NonMaxSuppression's score transpose, TopK's unsqueeze/squeeze of 1-D data, ...) carry a generated
  name ("(Unnamed Layer* 12) [Shuffle]", "ONNXTRT_..."), and on 8.5 no metadata: such a layer is
  constrained too when all the float data it reads comes from constrained layers.
- DLA: TensorRT 11.0 to 11.3 have none (and 11.4.0 only on Windows on ARM); it returned in
  11.4.1 for Jetson AGX Orin on JetPack 7.2.2+ (NVIDIA's "Working with DLA", 11.x).

TensorRT-RTX (``tensorrt_rtx_bindings``, PyPI wheels for x86-64) has TensorRT 11's builder API
(strongly typed networks only, no FP16/INT8 builder flags, no calibrators) under its own version
number, and builds ahead of time on a CPU for a chosen compute capability. The small adapter here
(``api_version``, ``TrtOptions.compute_capability``, the RoiAlign stand-in in ``init_plugins``)
lets the tests run this module's real calls against it: TensorRT itself cannot be installed on
the machines that develop and test edge-fpn.

Python 3.8: this module runs on the device.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..bundle import StageSpec
from .. import versions
from ..errors import EdgeFpnError
from ..export.nvidia_parser import is_tensorrt_rtx, library_label
from ..logs import TENSORRT_LOGGER
from .device import device_info

logger = logging.getLogger(__name__)
tensorrt_logger = logging.getLogger(TENSORRT_LOGGER)  # TensorRT's own messages

Version = Tuple[int, int, int]
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class TrtOptions:
    precision: str = "fp32"  # fp32 | fp16 | int8
    implicit_int8: bool = False  # INT8 by calibrator + cache instead of Q/DQ (TensorRT < 11)
    workspace_mib: Optional[int] = None
    dla_core: Optional[int] = None
    timing_cache: Optional[str] = None
    # build ahead of time for this GPU ("8.6"), where the library can (TensorRT-RTX); None: this GPU
    compute_capability: Optional[str] = None


@dataclass(frozen=True)
class Capabilities:
    version: Version
    explicit_batch_flag: bool  # the ONNX parser needs NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
    precision_flags: bool  # BuilderFlag.FP16 / INT8 exist (weak typing)
    calibrators: bool  # IInt8Calibrator and IBuilderConfig.int8_calibrator exist
    calibrators_deprecated: bool


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built: which ONNX variant is parsed, with which flags."""
    onnx_variant: str  # "fp32" | "fp16" | "qdq" | "qdq_fp16"
    network_flags: Tuple[str, ...]  # NetworkDefinitionCreationFlag member names
    builder_flags: Tuple[str, ...]  # BuilderFlag member names
    use_calibrator: bool
    dla_core: Optional[int]
    notes: Tuple[str, ...] = field(default=())


def parse_version(text: str) -> Version:
    """(major, minor, patch) of a TensorRT version string (versions.parse_version)."""
    major, minor, patch = versions.parse_version(text, width=3)
    return major, minor, patch


def api_version(trt: Any) -> Version:
    """The TensorRT API version a module speaks: its own, except TensorRT-RTX's, which speaks
    TensorRT 11's (strongly typed only) whatever its own number (1.x)."""
    return (11, 0, 0) if is_tensorrt_rtx(trt) else parse_version(trt.__version__)


def capabilities(version: Version) -> Capabilities:
    major_minor = version[:2]
    return Capabilities(
        version=version,
        explicit_batch_flag=version[0] < 10,
        strongly_typed_flag=major_minor >= (9, 1),
        precision_flags=version[0] < 11,
        calibrators=version[0] < 11,
        calibrators_deprecated=major_minor >= (10, 1),
    )


def plan_build(caps: Capabilities, options: TrtOptions) -> BuildPlan:
    """The ONNX variant and flags for `options` on a TensorRT with `caps` (user errors raise)."""
    precision = options.precision
    if precision not in PRECISIONS:
        raise EdgeFpnError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    version = ".".join(str(v) for v in caps.version)
    notes: List[str] = []
    network: List[str] = ["EXPLICIT_BATCH"] if caps.explicit_batch_flag else []
    flags: List[str] = []
    use_calibrator = False
    strong = not caps.precision_flags  # TensorRT 11: every network is strongly typed
    if precision == "fp32":
        variant = "fp32"
    elif precision == "fp16":
        if strong:
            variant = "fp16"
        else:
            variant = "fp32"
            flags.append("FP16")
    elif options.implicit_int8:
        if not caps.calibrators:
            raise EdgeFpnError(f"TensorRT {version} removed implicit INT8 calibration; build without --implicit-int8 "
                               "(the default explicit Q/DQ INT8 path)")
        if caps.calibrators_deprecated:
            notes.append(f"implicit INT8 calibration is deprecated in TensorRT {version}; the Q/DQ path is the default")
        variant = "fp32"
        flags += ["INT8", "FP16"]
        use_calibrator = True
    else:
        # explicit quantization; the layers left out of INT8 run in FP16 (flag up to 10.x,
        # an FP16 graph around the Q/DQ nodes from 11 on)
        if strong:
            variant = "qdq_fp16"
        else:
            variant = "qdq"
            flags += ["INT8", "FP16"]
    if strong and caps.strongly_typed_flag:
        network.append("STRONGLY_TYPED")
    if options.dla_core is not None:
        no_dla = dla_unsupported(caps.version)
        if no_dla:
            raise EdgeFpnError(f"--dla-core {options.dla_core}: {no_dla}; drop --dla-core, or build for the DLA with "
                               "TensorRT 10.x (JetPack 6) or 11.4.1 and newer (JetPack 7.2.2 on Jetson AGX Orin)")
        if precision == "fp32":
            raise EdgeFpnError("the DLA runs FP16 and INT8 only; use --precision fp16 or int8 with --dla-core")
        if options.dla_core < 0:
            raise EdgeFpnError(f"--dla-core must be 0 or more, not {options.dla_core}")
        flags.append("GPU_FALLBACK")  # layers the DLA cannot run go to the GPU
    if options.workspace_mib is not None and options.workspace_mib <= 0:
        raise EdgeFpnError(f"--workspace must be a positive number of MiB, not {options.workspace_mib}")
    return BuildPlan(onnx_variant=variant, network_flags=tuple(network), builder_flags=tuple(flags),
                     use_calibrator=use_calibrator, dla_core=options.dla_core, notes=tuple(notes))


def dla_unsupported(version: Version) -> str:
    """Why this TensorRT cannot build for the DLA ('' where it can). NVIDIA's "Working with DLA"
    (11.3 and 11.4.1): DLA was unavailable in TensorRT 11.0 through 11.3; 11.4.0 restored it on
    Windows on ARM only; 11.4.1 on Jetson AGX Orin with JetPack 7.2.2 or later."""
    text = ".".join(str(v) for v in version)
    if (11, 0, 0) <= tuple(version) < (11, 4, 0):
        return f"TensorRT {text} has no DLA support (NVIDIA removed it in 11.0; it returned in 11.4.1)"
    if tuple(version[:2]) == (11, 4) and tuple(version) < (11, 4, 1):
        return f"TensorRT {text} supports the DLA on Windows on ARM only (Jetson DLA support returned in 11.4.1)"
    return ""


def network_flags_value(trt: Any, names: Sequence[str]) -> int:
    value = 0
    for name in names:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:  # a flag this TensorRT no longer has is simply not needed
            value |= 1 << int(member)
    return value


# names TensorRT and its ONNX parser give layers of their own: TensorRT's default name of an unnamed
# layer, and the parser's helper names (ONNXTRT_Broadcast, ONNXTRT_ShapeElementWise, ...)
_GENERATED_LAYER_NAME = re.compile(r"^(\(Unnamed Layer\* \d+\)|ONNXTRT_)")


def onnx_node_names(layer: Any) -> List[str]:
    """The ONNX nodes a network layer comes from, as far as the network says: its name (the parser
    names a layer after its node; a generated name says nothing) and, from TensorRT 8.6, the
    "[ONNX Layer: <node>]" entries of its metadata (helper layers too). Empty for a helper layer of
    TensorRT 8.5 (no metadata, a generated name)."""
    name = str(layer.name or "")
    names = [name] if name and not _GENERATED_LAYER_NAME.match(name) else []
    names += re.findall(r"\[ONNX Layer: ([^\]]+)\]", str(getattr(layer, "metadata", "") or ""))
    return names


def keep_postprocess_fp32(trt: Any, network: Any) -> int:
    """Constrain the postprocessing layers (graph_names.POSTPROCESS_SCOPES) to FP32 in a weakly typed
    network: computation precision FP32 for every such layer that reads or writes float data (shape
    layers excepted: they compute dimensions), output type FP32 for its float outputs only (TensorRT
    refuses other output types: TopK's indices, shape outputs). Returns how many layers it set.

    A layer that no ONNX node name identifies (a parser helper on TensorRT 8.5: NonMaxSuppression's
    score transpose, TopK's unsqueeze/squeeze of 1-D data, casts) is constrained the same way when it
    reads float data and all of it from layers constrained before it (the network is in topological
    order, so one pass propagates along chains of helpers). A layer named after an ONNX node outside
    the scopes is never constrained (the box head reading RoIAlign's output stays free)."""
    from ..graph_names import is_postprocess_node

    floats = {trt.DataType.FLOAT, trt.DataType.HALF}
    shape_type = getattr(getattr(trt, "LayerType", None), "SHAPE", None)
    fp32_tensors = set()  # names of the float tensors that constrained layers write
    count = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        inputs = [layer.get_input(i) for i in range(layer.num_inputs)]
        float_inputs = [t for t in inputs if t is not None and t.dtype in floats]
        nodes = onnx_node_names(layer)
        if nodes:
            if not any(is_postprocess_node(name) for name in nodes):
                continue
        elif not float_inputs or any(t.name not in fp32_tensors for t in float_inputs):
            continue  # a helper that reads no float data, or some not kept FP32
        float_outputs = [i for i in range(layer.num_outputs) if layer.get_output(i).dtype in floats]
        if not float_outputs and (not float_inputs or (shape_type is not None and layer.type == shape_type)):
            continue
        layer.precision = trt.DataType.FLOAT
        for i in float_outputs:
            layer.set_output_type(i, trt.DataType.FLOAT)
            fp32_tensors.add(layer.get_output(i).name)
        count += 1
    return count


def profile_shapes(stage: StageSpec) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]:
    """(min, opt, max) of every input with a dynamic axis; opt is the largest size, which is what
    the RPN returns on nearly every frame (post_nms_top_n proposals)."""
    shapes = {}
    for tensor in stage.inputs:
        if all(isinstance(d, int) for d in tensor.shape):
            continue
        low, opt, high = [], [], []
        for dim in tensor.shape:
            if isinstance(dim, int):
                low.append(dim)
                opt.append(dim)
                high.append(dim)
                continue
            if dim not in stage.dynamic_axes:
                raise EdgeFpnError(f"input {tensor.name} has the dynamic axis {dim!r} without a declared range; re-export the bundle")
            first, last = (int(v) for v in stage.dynamic_axes[dim])
            low.append(first)
            opt.append(last)
            high.append(last)
        shapes[tensor.name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def import_tensorrt() -> Tuple[Optional[Any], str]:
    """(the tensorrt module, '') or (None, why it cannot be used)."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    if not hasattr(trt, "Builder"):
        return None, "the tensorrt module has no Builder (a stub or an incomplete install)"
    return trt, ""


class _Logger:
    """A TensorRT logger that keeps errors for the message and hands every message to the
    "edge_fpn.tensorrt" logging logger, at the matching level (TensorRT's severities mapped once,
    here)."""

    def __init__(self, trt: Any):
        self.errors: List[str] = []
        self.plugins: Optional[bool] = None  # init_libnvinfer_plugins' result, once called
        severity = trt.ILogger.Severity
        levels = [(severity.ERROR, logging.ERROR), (severity.WARNING, logging.WARNING), (severity.INFO, logging.INFO)]

        class Logger(trt.ILogger):  # type: ignore[misc,name-defined]
            def __init__(inner) -> None:
                trt.ILogger.__init__(inner)

            def log(inner, level: Any, message: str) -> None:
                if level <= severity.ERROR:
                    self.errors.append(str(message))
                mapped = next((python for trt_level, python in levels if level <= trt_level), logging.DEBUG)
                tensorrt_logger.log(mapped, "[TensorRT] %s", message)

        self.logger = Logger()


def cache_calibrator(trt: Any, cache_text: str, algorithm: str) -> Any:
    """An IInt8EntropyCalibrator2 (or IInt8MinMaxCalibrator) that serves a ready calibration cache
    and has no batches: TensorRT reads the scales from the cache and never asks for data."""
    base = trt.IInt8MinMaxCalibrator if algorithm == "MinMaxCalibration" else trt.IInt8EntropyCalibrator2
    payload = cache_text.encode("utf-8")

    class CacheCalibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Sequence[str]) -> None:
            return None  # no data: the cache must be accepted

        def read_calibration_cache(self) -> bytes:
            return payload

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return CacheCalibrator()


def init_plugins(trt: Any, logger: "_Logger") -> bool:
    """Register libnvinfer_plugin's plugins (ROIAlign_TRT for RoiAlign) once per logger, before
    parsing: TensorRT 10's ONNX parser no longer does it. Registering twice is harmless (TensorRT
    skips creators it has), but one call per build is enough. The same registration as the parser
    check's (nvidia_parser.prepare_plugins: the RoiAlign stand-in on TensorRT-RTX)."""
    from ..export.nvidia_parser import parser_for, prepare_plugins

    if logger.plugins is None:
        logger.plugins = bool(prepare_plugins(parser_for(trt), logger.logger))
    return logger.plugins


def load_timing_cache(config: Any, path: Optional[str]) -> Tuple[Any, str]:
    """An ITimingCache from `path` and a warning line ('' if none): the cache is empty where the
    file is missing, unreadable, or rejected by TensorRT (made on another GPU or by another
    TensorRT: ``set_timing_cache`` returns False, and `config` is a probe config for that test)."""
    data = b""
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    if not data:
        return config.create_timing_cache(b""), ""
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # a corrupt file: some TensorRT versions raise instead of returning None
        cache = None
    if cache is None:
        why = "is not a TensorRT timing cache (corrupt?)"
    elif not config.set_timing_cache(cache, False):
        why = "was made on another GPU or by another TensorRT, and TensorRT rejected it"
    else:
        return cache, ""
    return config.create_timing_cache(b""), (f"warning: the timing cache {path} {why}; building with an empty cache, "
                                             f"which then replaces {path}")


def save_timing_cache(cache: Any, path: str) -> None:
    """Serialize the timing cache to `path` (tmp + rename: a crash never leaves half a cache)."""
    data = bytes(memoryview(cache.serialize()))
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise EdgeFpnError(f"the directory {directory!r} for --timing-cache does not exist; create it first")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def check_dla(builder: Any, dla_core: Optional[int], version: Optional[Version] = None) -> None:
    if dla_core is None:
        return
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if cores == 0:
        late = (" (or this TensorRT has no DLA support: NVIDIA names 10.7 as the last 10.x release with it, "
                "beside the 10.x of JetPack 6)" if version is not None and (10, 8) <= tuple(version[:2]) < (11, 0) else "")
        raise EdgeFpnError(f"--dla-core {dla_core} was given but this device has no DLA{late}; drop --dla-core "
                           "(DLAs exist on Jetson AGX/NX Orin and Xavier)")
    if dla_core >= cores:
        raise EdgeFpnError(f"--dla-core {dla_core} was given but this device has {cores} DLA core(s) "
                           f"(0..{cores - 1}); choose one of them")


class BuildSession:
    """What the stages of one build share: TensorRT's logger and builder, the timing cache, and
    what the builds report (postprocessing layers kept FP32, per ONNX file)."""

    def __init__(self, trt: Any, timing_cache: Any = None):
        self.logger = _Logger(trt)
        self.builder = trt.Builder(self.logger.logger)
        self.timing_cache = timing_cache
        self.fp32_layers: Dict[str, int] = {}
        self.parsers: List[Any] = []


def build_serialized(trt: Any, onnx_path: str, stage: StageSpec, plan: BuildPlan, options: TrtOptions,
                     session: Optional[BuildSession] = None, calibrator: Any = None) -> bytes:
    """Parse `onnx_path` and build one serialized engine; the session (a new one if none) gets the
    number of postprocessing layers kept FP32 under the file's name."""
    session = session or BuildSession(trt)
    check_dla(session.builder, plan.dla_core, api_version(trt))
    network = _parse_network(trt, onnx_path, plan, session)
    config = session.builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    fp32_layers = 0
    if any(flag in plan.builder_flags for flag in ("FP16", "INT8")):
        fp32_layers = keep_postprocess_fp32(trt, network)
        if fp32_layers:
            # weak typing: the constraints bind only with this flag (else TensorRT may still pick FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    session.fp32_layers[os.path.basename(onnx_path)] = fp32_layers
    _configure(trt, config, session, onnx_path, stage, plan, options, calibrator)
    serialized = session.builder.build_serialized_network(network, config)
    if serialized is None:
        detail = session.logger.errors[-1] if session.logger.errors else "no error message"
        raise EdgeFpnError(f"{library_label(trt)} could not build {os.path.basename(onnx_path)} ({detail}); "
                           "if it ran out of memory, try a larger --workspace or --precision fp16")
    return bytes(memoryview(serialized))


def _parse_network(trt: Any, onnx_path: str, plan: BuildPlan, session: BuildSession) -> Any:
    plugins = init_plugins(trt, session.logger)
    network = session.builder.create_network(network_flags_value(trt, plan.network_flags))
    parser = trt.OnnxParser(network, session.logger.logger)
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        why = "" if plugins else " (TensorRT's plugin library could not be registered: is libnvinfer_plugin installed?)"
        raise EdgeFpnError(f"{library_label(trt)} cannot parse {os.path.basename(onnx_path)}: "
                           f"{(errors or session.logger.errors or ['unknown error'])[0]}{why}; run `edge-fpn check` "
                           "on the bundle")
    session.parsers.append(parser)  # the parser owns the weights the network points at: keep it alive
    return network


def _configure(trt: Any, config: Any, session: BuildSession, onnx_path: str, stage: StageSpec, plan: BuildPlan,
               options: TrtOptions, calibrator: Any) -> None:
    """Workspace, DLA, ahead-of-time GPU, optimization and calibration profiles, timing cache."""
    builder = session.builder
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan.dla_core)
    if options.compute_capability is not None:
        set_compute_capability(trt, config, options.compute_capability)
    shapes = profile_shapes(stage)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        # add_optimization_profile returns the profile's index, or -1 for one TensorRT refuses
        # (it does not raise: the build would fail later with "no optimization profile")
        if config.add_optimization_profile(profile) < 0:
            ranges = "; ".join(f"{name}: min {list(low)}, opt {list(opt)}, max {list(high)}"
                               for name, (low, opt, high) in shapes.items())
            raise EdgeFpnError(f"TensorRT refused the optimization profile of {os.path.basename(onnx_path)} ({ranges}): "
                               "every axis needs min <= opt <= max; fix the stage's dynamic_axes (re-export the bundle)")
    if calibrator is not None:
        config.int8_calibrator = calibrator
        if shapes:
            calibration = builder.create_optimization_profile()
            for name, (_, opt, _) in shapes.items():
                calibration.set_shape(name, opt, opt, opt)
            config.set_calibration_profile(calibration)
    if session.timing_cache is not None and not config.set_timing_cache(session.timing_cache, False):
        raise EdgeFpnError("TensorRT rejected the timing cache it had accepted for the first stage; "
                           "build again without --timing-cache")


def set_compute_capability(trt: Any, config: Any, capability: str) -> None:
    """Build ahead of time for one GPU ("8.6" -> ComputeCapability.SM86), as TensorRT-RTX can on
    a machine without a GPU; TensorRT itself builds for the GPU it runs on."""
    kinds = getattr(trt, "ComputeCapability", None)
    member = getattr(kinds, "SM" + str(capability).replace(".", ""), None) if kinds is not None else None
    if member is None:
        have = sorted(m for m in dir(kinds) if m.startswith("SM")) if kinds is not None else []
        where = f"it knows {', '.join(have)}" if have else "it builds for the GPU it runs on"
        raise EdgeFpnError(f"TensorRT {trt.__version__} cannot build ahead of time for compute capability "
                           f"{capability} ({where}); drop the compute capability or choose one of those")
    config.num_compute_capabilities = 1
    config.set_compute_capability(member, 0)


def build_engines(trt: Any, stages: Dict[str, StageSpec], onnx_paths: Dict[str, str], options: TrtOptions,
                  output_dir: str, calibration_caches: Optional[Dict[str, Tuple[str, str]]] = None) -> Dict[str, Any]:
    """Build every stage into `output_dir`/<stage>.engine; returns build facts for the manifest.

    onnx_paths: stage -> the ONNX variant to parse (chosen by `plan_build`); calibration_caches:
    stage -> (cache text, algorithm) for the implicit INT8 path.
    """
    version = api_version(trt)
    plan = plan_build(capabilities(version), options)
    for note in plan.notes:
        logger.info(note)
    session = BuildSession(trt)
    check_dla(session.builder, plan.dla_core, version)
    if options.timing_cache:
        probe = session.builder.create_builder_config()
        session.timing_cache, note = load_timing_cache(probe, options.timing_cache)
        if note:
            logger.info(note)
    files = {}
    fp32_layers: Dict[str, int] = {}
    for key, stage in stages.items():
        calibrator = None
        if plan.use_calibrator:
            if not calibration_caches or key not in calibration_caches:
                raise EdgeFpnError("implicit INT8 needs the calibration ranges; pass --calibration CAL_DIR")
            text, algorithm = calibration_caches[key]
            calibrator = cache_calibrator(trt, text, algorithm)
        engine = build_serialized(trt, onnx_paths[key], stage, plan, options, session, calibrator)
        fp32_layers[key] = session.fp32_layers[os.path.basename(onnx_paths[key])]
        name = f"{key}.engine"
        with open(os.path.join(output_dir, name), "wb") as f:
            f.write(engine)
        files[key] = name
    if session.timing_cache is not None and options.timing_cache:
        save_timing_cache(session.timing_cache, options.timing_cache)
    facts: Dict[str, Any] = {"tensorrt_version": str(trt.__version__), "files": files,
                             "onnx_variant": plan.onnx_variant, "builder_flags": list(plan.builder_flags),
                             "network_flags": list(plan.network_flags)}
    if any(fp32_layers.values()):
        facts["postprocess_fp32_layers"] = fp32_layers  # kept FP32 by layer constraints (weak typing)
    if plan.dla_core is not None:
        facts["dla_core"] = int(plan.dla_core)
    facts.update(device_info())
    return facts
