"""NVIDIA's own ONNX parser as the judge of a graph, wherever one can be imported.

edge-fpn's table (tensorrt_support.json) says what a parser of each version should accept; this
module asks a real one. On a Jetson that is the JetPack's ``tensorrt`` (with libnvinfer_plugin
registered, as the builder does); on a host with no TensorRT it is TensorRT-RTX
(``tensorrt_rtx_bindings``, x86-64 wheels on PyPI), whose parser is derived from the same
onnx-tensorrt importer and runs on a CPU with no GPU.

TensorRT-RTX's own gaps, worked around here and named where they are:

- it is strongly typed only: the network is created STRONGLY_TYPED (ONNX types are kept, as
  TensorRT 11 does);
- its 1.7.1 parser does not find its own ``ROIAlign_TRT`` (version 2) in the plugin registry:
  a stand-in creator with that name and version is registered in its place
  (``rtx_roialign.register_roialign_stand_in``), so that the real RoiAlign importer runs (its
  attribute mapping and its batch-index cast) and only the plugin object is ours;
- it has no NMS kernels (TensorRT-RTX#5): graphs with NonMaxSuppression parse but do not build,
  which does not matter for parsing.

``tensorrt`` and ``tensorrt_rtx_bindings`` are imported inside functions only. Python 3.8: this
module runs on the device.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

# lines of a parser error that say nothing about the graph: TensorRT-RTX on a machine without a
# CUDA driver logs a failed CUDA call next to the real message
_NOISE = re.compile(r"cudaError|CUDA driver version|catchCudaError|^Invalid Node - ")


@dataclass(frozen=True)
class NvidiaParser:
    """An importable NVIDIA ONNX parser: the module and how findings name it."""
    trt: Any
    label: str  # "TensorRT 10.3.0" or "TensorRT-RTX 1.7.1.116"
    rtx: bool


def find_parser() -> Tuple[Optional[NvidiaParser], str]:
    """(the parser to ask, '') or (None, a one-line warning where an install is broken; '' where
    none is installed). TensorRT first (the Jetson's own), then TensorRT-RTX."""
    warnings = []
    for module_name, rtx in (("tensorrt", False), ("tensorrt_rtx_bindings", True)):
        trt, why = _import(module_name)
        if trt is not None:
            return parser_for(trt), ""
        if why:
            warnings.append(f"{module_name} is installed but cannot be used ({why})")
    return None, "; ".join(warnings)


def is_tensorrt_rtx(trt: Any) -> bool:
    """Whether a module is TensorRT-RTX's bindings (tensorrt_rtx_bindings) rather than TensorRT's."""
    return "rtx" in str(getattr(trt, "__name__", "")).lower()


def library_label(trt: Any) -> str:
    """"TensorRT 10.3.0" or "TensorRT-RTX 1.7.1.116": how messages name a library."""
    return f"{'TensorRT-RTX' if is_tensorrt_rtx(trt) else 'TensorRT'} {trt.__version__}"


def parser_for(trt: Any) -> NvidiaParser:
    """The parser of a module already imported (the builder's tensorrt)."""
    return NvidiaParser(trt, library_label(trt), is_tensorrt_rtx(trt))


def _import(module_name: str) -> Tuple[Optional[Any], str]:
    import importlib

    try:
        if module_name == "tensorrt_rtx_bindings":  # its parser needs a library link made before it loads
            from .rtx_roialign import ensure_plugin_loading
            ensure_plugin_loading()
        trt = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) == module_name
        return None, "" if missing else f"{type(exc).__name__}: {exc}".splitlines()[0]
    except Exception as exc:  # a broken install raises anything (OSError for a missing .so)
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    if not hasattr(trt, "OnnxParser"):
        return None, "it has no OnnxParser (a stub or an incomplete install)"
    return trt, ""


class _CollectingLogger:
    """A TensorRT logger that keeps errors and prints nothing (a check prints findings only)."""

    def __init__(self, trt: Any):
        self.errors: List[str] = []
        outer = self

        class Logger(trt.ILogger):  # type: ignore[misc,name-defined]
            def __init__(inner) -> None:
                trt.ILogger.__init__(inner)

            def log(inner, severity: Any, message: str) -> None:
                if severity <= trt.ILogger.Severity.ERROR:
                    outer.errors.append(str(message))

        self.logger = Logger()


def network_flags(parser: NvidiaParser) -> int:
    """Explicit batch where the flag exists (TensorRT 8.x needs it to parse ONNX), strongly typed
    on TensorRT-RTX (the only kind of network it has) and TensorRT 11 (every network is)."""
    flags = parser.trt.NetworkDefinitionCreationFlag
    value = 0
    wanted = ["EXPLICIT_BATCH"] if hasattr(flags, "EXPLICIT_BATCH") and _major(parser) < 10 else []
    if parser.rtx or _major(parser) >= 11:
        wanted.append("STRONGLY_TYPED")
    for name in wanted:
        member = getattr(flags, name, None)
        if member is not None:
            value |= 1 << int(member)
    return value


def _major(parser: NvidiaParser) -> int:
    match = re.match(r"\d+", str(parser.trt.__version__))
    return int(match.group(0)) if match else 0


def prepare_plugins(parser: NvidiaParser, logger: Any) -> bool:
    """Register libnvinfer_plugin's creators before parsing (TensorRT 10's parser no longer does it);
    on TensorRT-RTX, put the RoiAlign stand-in in place of the creator its parser cannot find.
    Returns init_libnvinfer_plugins' answer. The builder registers through here too."""
    registered = bool(parser.trt.init_libnvinfer_plugins(logger, ""))
    if parser.rtx:
        from ..errors import EdgeFpnError
        from .rtx_roialign import register_roialign_stand_in
        try:
            register_roialign_stand_in(parser.trt, logger)
        except RuntimeError as exc:  # a parse of a plugin layer would abort the process: say so instead
            raise EdgeFpnError(f"{parser.label} cannot be asked here: {exc}; uninstall tensorrt-rtx to check "
                               "with edge-fpn's table only") from None
    return registered


@dataclass
class ParsedNetwork:
    """A parsed network with what must outlive it (the ONNX parser owns the weights it points at)."""
    builder: Any
    network: Any
    onnx_parser: Any
    logger: Any
    errors: List[Tuple[str, str]]  # (node label, one-line message); empty when the parse succeeded


def parse(parser: NvidiaParser, onnx_path: str) -> ParsedNetwork:
    """Parse `onnx_path` into a new network, as the builder would."""
    trt = parser.trt
    logger = _CollectingLogger(trt)
    prepare_plugins(parser, logger.logger)
    builder = trt.Builder(logger.logger)
    network = builder.create_network(network_flags(parser))
    onnx_parser = trt.OnnxParser(network, logger.logger)
    ok = onnx_parser.parse_from_file(os.path.abspath(onnx_path))
    errors = [_error(onnx_parser.get_error(i), onnx_path) for i in range(onnx_parser.num_errors)]
    if not ok and not errors:
        errors = [("", _first_line(logger.errors) or "the parser failed without a message")]
    return ParsedNetwork(builder, network, onnx_parser, logger, errors)


def parser_findings(parser: NvidiaParser, onnx_path: str, prefix: str = "") -> List[str]:
    """One finding per parser error: "parser: NVIDIA's parser (TensorRT 10.3.0) rejects node '/x'
    (Transpose): <its message>; <what to do>"."""
    findings = []
    for node, message in parse(parser, onnx_path).errors:
        where = f"node {node}" if node else os.path.basename(onnx_path)
        findings.append(f"{prefix}parser: NVIDIA's parser ({parser.label}) rejects {where}: {message}; "
                        "fix the graph (re-export with this edge-fpn), or report it with the bundle")
    return findings


def _error(error: Any, onnx_path: str) -> Tuple[str, str]:
    """(node label, one-line message) of a parser error, across versions: node_name() and
    node_operator() exist from TensorRT 10 (8.x has the node index only)."""
    name = _call(error, "node_name")
    operator = _call(error, "node_operator")
    if not name:
        name, operator = _node_of_index(onnx_path, _call(error, "node"))
    node = f"{name!r} ({operator})" if name and operator else (repr(name) if name else "")
    return node, _first_line(str(error.desc()).splitlines())


def _call(error: Any, method: str) -> Any:
    function = getattr(error, method, None)
    try:
        return function() if callable(function) else None
    except Exception:  # an accessor that this version exposes but cannot answer
        return None


def _node_of_index(onnx_path: str, index: Any) -> Tuple[str, str]:
    if not isinstance(index, int) or index < 0:
        return "", ""
    import onnx

    nodes = onnx.load(onnx_path, load_external_data=False).graph.node
    if index >= len(nodes):
        return "", ""
    return nodes[index].name or f"#{index}", nodes[index].op_type


def _first_line(lines: Sequence[str]) -> str:
    """The most telling line: the first that is not noise, with TensorRT's location suffix cut."""
    useful = [line.strip() for line in lines if line.strip() and not _NOISE.search(line.strip())]
    text = useful[0] if useful else (lines[0].strip() if lines else "")
    return re.sub(r"\s*In \w+ at /?_?src/\S+\)?$", "", text).rstrip(" (")
