"""`edge-fpn check`: a TensorRT lint for ONNX graphs and bundles that needs no GPU and no TensorRT.

It finds what makes TensorRT refuse a graph, or build an engine that is not static and dense:
undeclared dynamic dimensions, shapes that depend on the data, operators that are forbidden by
edge-fpn's policy or that the target's ONNX parser cannot import, an opset newer than the parser,
INT64 where it costs, and Q/DQ zero points that are not symmetric INT8. It reads the graph and runs
ONNX shape inference only (no model run), so it takes well under a second for the shipped models.

What TensorRT supports, per version, and which JetPack ships which TensorRT, lives in one data file,
tensorrt_support.json, beside this module, with where each fact comes from.

Each finding is one line: "<kind>: <what, naming the tensor or node>; <what to do>", where kind is
one of dynamic-dim, data-dependent-shape, forbidden-op, unsupported-op, topk, dla, opset, int64, qdq,
shape-inference. `check_path` on a bundle prefixes each line with the stage's file name.

Besides findings (what stops a build), a report carries notes (what a user should know and need not
fix): RoiAlign imports through TensorRT's ROIAlign_TRT plugin, which the builder and the runtime
register with init_libnvinfer_plugins, and which runs on the GPU, never on the DLA. With ``dla`` (an
engine on the DLA alone) such plugin layers are findings (kind dla); whether any other layer runs on
the DLA is decided by TensorRT at build time (with GPU fallback), so `check` does not list those.

The engine layout (one graph with TopK, NonMaxSuppression and RoiAlign) is allowed where TensorRT
imports all three (8.5 on): TopK only with a constant K within the parser's limit, NonMaxSuppression
as the one data-dependent shape a graph may hold, provided its outputs are static again.
`layouts_line` says which layouts a target can build. The builder calls `require_bundle_buildable`
with the TensorRT it runs on, so that `edge-fpn build` stops before TensorRT with the sentence
`edge-fpn check` prints.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

from ..errors import EdgeFpnError
from ..versions import parse_version

if TYPE_CHECKING:
    from .nvidia_parser import NvidiaParser

SUPPORT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tensorrt_support.json")
DEFAULT_TARGET = "jetpack6.1"
# An INT64 constant larger than this is worth a finding: TensorRT 8.x casts it to INT32 with a warning,
# TensorRT 10 keeps twice the bytes; shape constants and small index lists stay well below it.
LARGE_INT64_ELEMENTS = 1000
# Float initializers above this size are dropped from the shape-inference probe: inference reads only
# small constants (shapes, scales), and copying weights would cost most of the run time.
_PROBE_KEEP_ELEMENTS = 1024
_ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_DEFAULT_DOMAINS = ("", "ai.onnx")

Range = Tuple[int, int]
# tensor name -> axis -> (min, max); None where an axis is declared dynamic without a usable range
Declared = Mapping[str, Mapping[int, Optional[Range]]]
Dims = Optional[List[Union[int, str, None]]]  # None: unknown rank; per axis: size, symbol or unknown


@lru_cache(maxsize=1)
def load_support_table() -> Dict[str, Any]:
    """The parsed tensorrt_support.json (read once)."""
    with open(SUPPORT_FILE, "r", encoding="utf-8") as f:
        return json.load(f)


def _targets() -> Dict[str, str]:
    return {name: entry["tensorrt"] for name, entry in load_support_table()["jetpack"].items()}


# --target name -> TensorRT version it ships; the CLI takes its choices from here.
TARGETS: Dict[str, str] = _targets()


def tensorrt_version(target: str) -> str:
    """The TensorRT version a --target stands for; an unknown target is a user error."""
    if target not in TARGETS:
        valid = ", ".join(sorted(TARGETS))
        raise EdgeFpnError(f"unknown target {target!r}; choose one of {valid}")
    return TARGETS[target]


@dataclass
class CheckReport:
    """Findings (each stops a build) and notes (each worth knowing, none stops a build)."""
    findings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def extend(self, other: "CheckReport", prefix: str = "") -> None:
        self.findings += [prefix + line for line in other.findings]
        self.notes += [prefix + line for line in other.notes]


def check_path(path: str, target: str = DEFAULT_TARGET) -> List[str]:
    """Lint an .onnx file, or every ONNX stage of a bundle directory (engine files are skipped)."""
    return check_path_report(path, target).findings


def check_path_report(path: str, target: str = DEFAULT_TARGET, dla: bool = False,
                      nvidia: Optional["NvidiaParser"] = None) -> CheckReport:
    """`check_path` with the notes too. dla: the engine must run on the DLA alone, so plugin layers
    (RoiAlign), which never run on the DLA, are findings instead of notes; other layers' DLA support is
    decided by TensorRT at build time (GPU fallback), so they are not listed. nvidia: a real parser
    (nvidia_parser.find_parser) whose errors follow the table's findings."""
    version = tensorrt_version(target)
    return _check_any_path(path, version, f"TensorRT {version} ({target})", dla, nvidia)


def check_model(model_or_path: Any, target: str = DEFAULT_TARGET,
                declared_dynamic: Optional[Declared] = None) -> List[str]:
    """Lint one ONNX model (a ModelProto or a path) for `target`; an empty list means clean."""
    return check_model_report(model_or_path, target, declared_dynamic).findings


def check_model_report(model_or_path: Any, target: str = DEFAULT_TARGET, declared_dynamic: Optional[Declared] = None,
                       dla: bool = False) -> CheckReport:
    version = tensorrt_version(target)
    return _check_model(model_or_path, version, f"TensorRT {version} ({target})", declared_dynamic, dla)


def _check_model(model_or_path: Any, version: str, label: str, declared_dynamic: Optional[Declared],
                 dla: bool) -> CheckReport:
    trt = load_support_table()["tensorrt"][version]
    model, base_dir = _load_model(model_or_path)
    declared = _normalize_declared(declared_dynamic)
    report = CheckReport()
    report.findings += _check_opset(model, trt, label)
    report.findings += _check_ops(model.graph, trt, label, "")
    report.findings += _check_topk(model, trt, label)
    report.findings += _check_declared(model.graph, declared)
    inferred, inference_findings = _infer(model, declared)
    report.findings += inference_findings
    nms_findings: List[str] = []
    nms_notes: List[str] = []
    if inferred is not None:
        report.findings += _check_data_dependent(model, inferred, _bounded_ops(trt))
        report.findings += _check_uint8(inferred, label)
        nms_findings, nms_notes = _check_nms(inferred, label)
    report.findings += _check_int64(model.graph, trt, label)
    report.findings += _check_qdq(model.graph, base_dir, label)
    plugin_findings, plugin_notes = _check_plugins(model.graph, trt, dla)
    report.findings += plugin_findings + nms_findings
    report.notes += plugin_notes + nms_notes
    return report


# --------------------------------------------------------------------- layouts and the builder's check

def layouts_for_target(target: str) -> Tuple[List[str], str]:
    """The bundle layouts `target` can build, and why the others cannot ('' when all can)."""
    version = tensorrt_version(target)
    return _layouts(version, f"TensorRT {version} ({target})")


def layouts_line(target: str) -> str:
    """'layouts: engine, host', or 'layouts: host only (<why>)', for `edge-fpn check --target`."""
    layouts, why = layouts_for_target(target)
    if not layouts:
        return f"layouts: none ({why})"
    if len(layouts) == 1:
        return f"layouts: {layouts[0]} only ({why})"
    return "layouts: " + ", ".join(layouts)


def _layouts(version: str, label: str) -> Tuple[List[str], str]:
    table = load_support_table()
    unsupported = set(table["tensorrt"][version]["not_importable"])
    needs = {"engine": table["engine_layout"]["needs"], "host": table["engine_layout"]["host_needs"]}
    layouts, missing = [], []
    for layout in ("engine", "host"):
        lacking = [op for op in needs[layout] if op in unsupported]
        if lacking:
            missing += [op for op in lacking if op not in missing]
        else:
            layouts.append(layout)
    why = f"{label} cannot import {', '.join(missing)}" if missing else ""
    return layouts, why


def tensorrt_rules(tensorrt: str) -> Tuple[str, str]:
    """(support-table version, label) for a TensorRT found on a machine: the newest table entry
    not newer than it. The label equals `edge-fpn check --target`'s where the versions agree, so
    that `edge-fpn build` and `edge-fpn check` say the same sentence."""
    here = _version_key(tensorrt)
    entries = sorted(load_support_table()["tensorrt"], key=_version_key)
    usable = [entry for entry in entries if _version_key(entry) <= here[:2]]
    if not usable:
        raise EdgeFpnError(f"TensorRT {tensorrt} is older than edge-fpn supports (TensorRT 8.5, JetPack 5.1, or newer); "
                           "upgrade JetPack, or build an ONNX Runtime bundle (--backend onnxruntime)")
    entry = usable[-1]
    targets = sorted(name for name, version in TARGETS.items() if version == entry)
    if _version_key(entry) == here[:2] and targets:
        return entry, f"TensorRT {entry} ({targets[0]})"
    return entry, f"TensorRT {tensorrt} (checked with the rules of {entry})"


def require_lint_clean(bundle_dir: str, what: str) -> None:
    """The graphs edge-fpn itself wrote (`what`: "exported graphs", "Q/DQ graphs") must pass the
    lint for the default target; a finding here is edge-fpn's bug, so the sentence asks for a report."""
    findings = check_path(bundle_dir, DEFAULT_TARGET)
    if findings:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise EdgeFpnError(f"the {what} fail the TensorRT lint: {findings[0]}{more}; please report this")


def check_bundle_for_tensorrt(bundle_dir: str, tensorrt: str, stage_dir: Optional[str] = None,
                              nvidia: Optional["NvidiaParser"] = None) -> CheckReport:
    """Lint every ONNX stage of a bundle for the TensorRT version `tensorrt` (the builder's machine).
    stage_dir: where the stage files are, if not in the bundle (the Q/DQ graphs of an INT8 build);
    nvidia: the real parser to ask after the table (the builder's own TensorRT)."""
    entry, label = tensorrt_rules(tensorrt)
    return _check_bundle(bundle_dir, entry, label, False, stage_dir, nvidia)


def require_bundle_buildable(bundle_dir: str, tensorrt: str, stage_dir: Optional[str] = None,
                             nvidia: Optional["NvidiaParser"] = None) -> List[str]:
    """Raise the first finding as an EdgeFpnError (the sentence `edge-fpn check` prints for it);
    return the notes. The builder calls this with its own TensorRT's parser before any work."""
    report = check_bundle_for_tensorrt(bundle_dir, tensorrt, stage_dir)
    if nvidia is not None and not report.findings:  # the table's finding already stops the build
        for stage, path in _stage_paths(bundle_dir, stage_dir):
            report.findings += _parser_findings(nvidia, path, f"{stage.file}: ")
    if report.findings:
        more = len(report.findings) - 1
        raise EdgeFpnError(report.findings[0] + (f" (and {more} more: `edge-fpn check {bundle_dir}` lists them)"
                                                 if more else ""))
    return report.notes


def _version_key(text: str) -> Tuple[int, ...]:
    return parse_version(text, width=2)


# ---------------------------------------------------------------------------------------- loading

def _check_any_path(path: str, version: str, label: str, dla: bool,
                    nvidia: Optional["NvidiaParser"] = None) -> CheckReport:
    if os.path.isdir(path):
        return _check_bundle(path, version, label, dla, None, nvidia)
    if not os.path.exists(path):
        raise EdgeFpnError(f"{path!r} does not exist; give an .onnx file or a bundle directory")
    if path.endswith(_ENGINE_SUFFIXES):
        raise EdgeFpnError(f"{path!r} is a serialized TensorRT engine, which cannot be checked without TensorRT; "
                           "check the .onnx file or the bundle it was built from")
    report = _check_model(path, version, label, None, dla)
    if nvidia is not None:
        report.findings += _parser_findings(nvidia, path, "")
    return report


def _parser_findings(nvidia: "NvidiaParser", path: str, prefix: str) -> List[str]:
    from .nvidia_parser import parser_findings

    return parser_findings(nvidia, path, prefix)


def _check_bundle(bundle_dir: str, version: str, label: str, dla: bool, stage_dir: Optional[str] = None,
                  nvidia: Optional["NvidiaParser"] = None) -> CheckReport:
    """Every stage the manifest declares, whatever the layout (stage1/stage2, or detector)."""
    from ..bundle import load_manifest, onnx_stage_mismatches

    manifest = load_manifest(bundle_dir)  # the manifest checks its own files and format
    report = CheckReport()
    # a graph that is not the one its manifest describes (another layout's, another class count)
    report.findings += [f"{file}: manifest: {mismatch}; re-run `edge-fpn export`"
                        for file, mismatch in onnx_stage_mismatches(bundle_dir, manifest, stage_dir)]
    for stage, path in _stage_paths(bundle_dir, stage_dir, manifest):
        report.extend(_check_model(path, version, label, declared_from_stage(stage), dla), prefix=f"{stage.file}: ")
        if nvidia is not None:
            report.findings += _parser_findings(nvidia, path, f"{stage.file}: ")
    return report


def _stage_paths(bundle_dir: str, stage_dir: Optional[str], manifest: Any = None) -> List[Tuple[Any, str]]:
    """(stage spec, ONNX path) of every ONNX stage the manifest declares, whatever the layout
    (stage1/stage2, or detector); engine files are left out (they cannot be linted)."""
    if manifest is None:
        from ..bundle import load_manifest  # the manifest checks its own files and format
        manifest = load_manifest(bundle_dir)
    stages = [manifest.stages[key] for key in sorted(manifest.stages)]
    return [(stage, os.path.join(stage_dir or bundle_dir, stage.file)) for stage in stages
            if not stage.file.endswith(_ENGINE_SUFFIXES)]


def declared_from_stage(stage: Any) -> Dict[str, Dict[int, Optional[Range]]]:
    """The dynamic axes a manifest stage declares: every shape entry that is an axis name."""
    declared: Dict[str, Dict[int, Optional[Range]]] = {}
    for spec in list(stage.inputs) + list(stage.outputs):
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str):
                declared.setdefault(spec.name, {})[axis] = _valid_range(stage.dynamic_axes.get(dim))
    return declared


def _load_model(model_or_path: Any) -> Tuple[Any, str]:
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, ""
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
        raise EdgeFpnError(f"ONNX file {path!r} does not exist; give the path of an .onnx file or a bundle directory")
    try:
        # weights stay where they are: the lint needs shapes, and reads small constants on demand
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a corrupt file
        raise EdgeFpnError(f"{path} is not a readable ONNX model ({type(exc).__name__}); "
                           "re-export it (or re-run `edge-fpn export`)") from None
    if model.ir_version <= 0 or not (model.graph.node or model.graph.output):
        raise EdgeFpnError(f"{path} is empty or not an ONNX model; re-export it (or re-run `edge-fpn export`)")
    return model, os.path.dirname(os.path.abspath(path))


def _valid_range(value: Any) -> Optional[Range]:
    """(min, max) from a [min, max] pair of ints with 0 <= min <= max and max >= 1, else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    low, high = value
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        return None
    if low < 0 or high < max(low, 1):
        return None
    return int(low), int(high)


def _normalize_declared(declared: Optional[Declared]) -> Dict[str, Dict[int, Optional[Range]]]:
    out: Dict[str, Dict[int, Optional[Range]]] = {}
    for name, axes in (declared or {}).items():
        out[name] = {int(axis): _valid_range(rng) for axis, rng in (axes or {}).items()}
    return out


# ----------------------------------------------------------------------------------------- shapes

def _dims(value_info: Any) -> Dims:
    """Per-axis size (int), symbol (str) or None (unknown); None for a tensor of unknown rank."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: List[Union[int, str, None]] = []
    for dim in tensor_type.shape.dim:
        kind = dim.WhichOneof("value")
        dims.append(dim.dim_value if kind == "dim_value" else (dim.dim_param or None) if kind == "dim_param" else None)
    return dims


def _describe_dim(dim: Union[str, None]) -> str:
    return f"dynamic ({dim!r})" if isinstance(dim, str) else "dynamic (unnamed)"


def _graph_inputs(graph: Any) -> List[Any]:
    """Graph inputs that are fed at run time (old IR versions list initializers as inputs too)."""
    initializers = {t.name for t in graph.initializer}
    return [vi for vi in graph.input if vi.name not in initializers]


def _check_declared(graph: Any, declared: Dict[str, Dict[int, Optional[Range]]]) -> List[str]:
    """(a) Dynamic input/output dimensions that the caller did not declare with a range."""
    inputs, outputs = _graph_inputs(graph), list(graph.output)
    findings = _check_declared_names(inputs, outputs, declared)
    # an output axis carrying an input's symbol follows that input: if the input axis is undeclared,
    # the finding on the input says so once
    input_symbols = {d for vi in inputs for d in (_dims(vi) or []) if isinstance(d, str)}
    for role, infos in (("input", inputs), ("output", outputs)):
        for vi in infos:
            allowed = input_symbols if role == "output" else set()
            findings += _check_io_dims(role, vi, declared.get(vi.name, {}), allowed)
    return findings


def _check_declared_names(inputs: Sequence[Any], outputs: Sequence[Any],
                          declared: Dict[str, Dict[int, Optional[Range]]]) -> List[str]:
    names = {vi.name for vi in list(inputs) + list(outputs)}
    return [f"dynamic-dim: dynamic axes are declared for {name!r}, which is neither an input nor an output of the "
            "model; fix the name in the manifest (or in declared_dynamic)" for name in declared if name not in names]


def _check_io_dims(role: str, vi: Any, axes: Dict[int, Optional[Range]], allowed: Set[str]) -> List[str]:
    dims = _dims(vi)
    if dims is None:
        return [f"dynamic-dim: {role} {vi.name!r} has no shape (unknown rank); TensorRT needs a known rank: "
                "re-export with a fixed shape"]
    findings = []
    for axis, rng in sorted(axes.items()):
        if not 0 <= axis < len(dims):
            findings.append(f"dynamic-dim: axis {axis} of {role} {vi.name!r} is declared dynamic, but the tensor has "
                            f"rank {len(dims)}; fix the declaration")
        elif rng is None:
            findings.append(f"dynamic-dim: axis {axis} of {role} {vi.name!r} is declared dynamic without a valid "
                            "[min, max] range; give it one in the manifest's dynamic_axes (TensorRT needs it for "
                            "the optimization profile)")
        elif isinstance(dims[axis], int):
            findings.append(f"dynamic-dim: axis {axis} of {role} {vi.name!r} is declared dynamic {list(rng)}, but "
                            f"the model fixes it at {dims[axis]}; re-export with the axis dynamic or drop the "
                            "declaration")
    for axis, dim in enumerate(dims):
        if isinstance(dim, int) or axis in axes or (isinstance(dim, str) and dim in allowed):
            continue
        findings.append(f"dynamic-dim: axis {axis} of {role} {vi.name!r} is {_describe_dim(dim)} but not declared; "
                        "export it with a fixed size, or declare it with a [min, max] range")
    return findings


def _infer(model: Any, declared: Dict[str, Dict[int, Optional[Range]]]) -> Tuple[Optional[Any], List[str]]:
    """ONNX shape and type inference on a light probe of the model (see _shape_probe): the
    inferred model, or None and the finding that says why inference failed."""
    import onnx

    probe = _shape_probe(model, declared)
    try:
        return onnx.shape_inference.infer_shapes(probe, check_type=False, strict_mode=False, data_prop=True), []
    except Exception as exc:  # onnx raises InferenceError, ValidationError or RuntimeError
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, [f"shape-inference: ONNX shape inference failed ({first_line}); the graph is inconsistent: "
                      "run onnx.checker.check_model on it and re-export"]


def _check_data_dependent(model: Any, inferred: Any, bounded: Set[str] = frozenset()) -> List[str]:
    """(b) Tensors whose size is not a function of the input shapes, found by shape inference.

    Every dynamic input axis is replaced by a number (a declared axis by its max) before inference,
    so that anything derived from input shapes becomes a number too, even through Shape/Reshape
    arithmetic that symbolic inference loses; what stays unknown depends on the data.
    `bounded`: operators whose data-dependent output TensorRT builds (NonMaxSuppression); they are
    no finding themselves, but whatever of theirs reaches a graph output still is.
    """
    known = _known_dims(inferred.graph)
    origins = _dynamic_origins(inferred.graph, known)
    findings = [_origin_finding(tensor, label, known.get(tensor)) for tensor, (label, op) in origins.items()
                if op not in bounded]
    for vi in model.graph.output:
        dims = known.get(vi.name)
        if (vi.name not in origins or origins[vi.name][1] in bounded) and not _is_static(dims):
            findings.append(f"data-dependent-shape: output {vi.name!r} has {_unknown_part(dims)} that shape "
                            "inference cannot derive from the input shapes; an output's size must be fixed or "
                            "follow a declared input axis: move the data-dependent step into the runtime")
    return findings


def _shape_probe(model: Any, declared: Dict[str, Dict[int, Optional[Range]]]) -> Any:
    """A light copy of the model for inference: concrete input dims, no weights, no old shape info."""
    import onnx

    probe = onnx.ModelProto()
    probe.ir_version = model.ir_version
    probe.opset_import.extend(model.opset_import)
    probe.functions.extend(model.functions)
    graph = probe.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.initializer.extend(_light_initializer(t) for t in model.graph.initializer)
    values = _probe_values(model.graph, declared)
    for vi in _graph_inputs(model.graph):
        graph.input.append(_concrete_input(vi, declared.get(vi.name, {}), values))
    for vi in model.graph.output:  # outputs get only their element type: inference fills the shape
        out = graph.output.add()
        out.name = vi.name
        out.type.tensor_type.elem_type = vi.type.tensor_type.elem_type
    return probe


def _probe_values(graph: Any, declared: Dict[str, Dict[int, Optional[Range]]]) -> Dict[str, int]:
    """One number per declared input symbol (its largest max), so that axes sharing a symbol agree."""
    values: Dict[str, int] = {}
    for vi in _graph_inputs(graph):
        dims = _dims(vi) or []
        for axis, rng in declared.get(vi.name, {}).items():
            if 0 <= axis < len(dims) and isinstance(dims[axis], str) and rng is not None:
                values[str(dims[axis])] = max(values.get(str(dims[axis]), 1), rng[1])
    return values


def _concrete_input(vi: Any, axes: Dict[int, Optional[Range]], values: Dict[str, int]) -> Any:
    import onnx

    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    if not out.type.tensor_type.HasField("shape"):
        return out
    for axis, dim in enumerate(out.type.tensor_type.shape.dim):
        if dim.WhichOneof("value") == "dim_value":
            continue
        rng = axes.get(axis)
        size = values.get(dim.dim_param, rng[1] if rng else 1)  # undeclared ones are already a finding
        dim.Clear()
        dim.dim_value = max(int(size), 1)
    return out


def _light_initializer(tensor: Any) -> Any:
    """The initializer itself if small or integer (shape inference may read it), else dims and type only."""
    import onnx

    if tensor.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) or _numel(tensor) <= _PROBE_KEEP_ELEMENTS:
        return tensor
    light = onnx.TensorProto()
    light.name = tensor.name
    light.data_type = tensor.data_type
    light.dims.extend(tensor.dims)
    return light


def _numel(tensor: Any) -> int:
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count


def _known_dims(graph: Any) -> Dict[str, Dims]:
    known: Dict[str, Dims] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type"):
            known[vi.name] = _dims(vi)
    for tensor in graph.initializer:
        known[tensor.name] = [int(d) for d in tensor.dims]
    return known


def _is_static(dims: Dims) -> bool:
    return dims is not None and all(isinstance(d, int) for d in dims)


def _unknown_part(dims: Dims) -> str:
    if dims is None:
        return "an unknown rank"
    axes = [str(axis) for axis, dim in enumerate(dims) if not isinstance(dim, int)]
    return ("dimension " if len(axes) == 1 else "dimensions ") + ", ".join(axes)


def _dynamic_origins(graph: Any, known: Dict[str, Dims]) -> Dict[str, Tuple[str, str]]:
    """Tensors that become dynamic at their node (all of its inputs static): tensor -> (node label, op type).

    Reporting only where a dynamic size starts keeps one finding per cause instead of one per
    downstream tensor. Nodes of custom domains are skipped: inference cannot know them, and the
    operator check reports them already.
    """
    origins: Dict[str, Tuple[str, str]] = {}
    for index, node in enumerate(graph.node):
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        if any(name and not _is_static(known.get(name)) for name in node.input):
            continue
        for name in node.output:
            if name and not _is_static(known.get(name)):
                origins[name] = (_node_label(node, index), node.op_type)
    return origins


def _origin_finding(tensor: str, node_label: str, dims: Dims) -> str:
    return (f"data-dependent-shape: tensor {tensor!r} from {node_label} has {_unknown_part(dims)} that shape "
            "inference cannot derive from the input shapes (it depends on the data, or on arithmetic TensorRT "
            "cannot do at build time); TensorRT needs sizes fixed by the input shapes: do this step in the "
            "runtime, or give it a fixed size")


# -------------------------------------------------------------------------------------- UINT8

def _check_uint8(inferred: Any, label: str) -> List[str]:
    """TensorRT takes UINT8 only as network I/O, and only through a Cast: every UINT8 tensor may
    feed Cast nodes alone, and no node may write a UINT8 tensor that is not a graph output (the
    API docs of 8.5 to 11 say to convert kUINT8 inputs to float first; the 8.5 Gather importer
    rejects UINT8; from 8.6 the parser refuses UINT8 intermediate tensors; NVIDIA/TensorRT#3985;
    TensorRT-RTX stops at the first such node: "first input has type UInt8 but must have type Float...")."""
    import onnx

    uint8 = onnx.TensorProto.UINT8
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    outputs = {vi.name for vi in inferred.graph.output}
    findings = []
    for index, node in enumerate(inferred.graph.node):
        node_label = _node_label(node, index)
        read = [name for name in node.input if name and types.get(name) == uint8]
        if read and node.op_type != "Cast":
            findings.append(f"uint8: {node_label} reads the UINT8 tensor {read[0]!r}; {label} takes UINT8 only as an "
                            "input that feeds a Cast directly: cast it to float first (re-export with this edge-fpn)")
        written = [name for name in node.output if name and types.get(name) == uint8 and name not in outputs]
        if written:
            findings.append(f"uint8: {node_label} writes the UINT8 intermediate tensor {written[0]!r}, which {label} "
                            "refuses (UINT8 is for network inputs and outputs only); keep it float or INT32")
    return findings


def _check_nms(inferred: Any, label: str) -> Tuple[List[str], List[str]]:
    """TensorRT's NMS layer considers only the best `nms_max_boxes` (5000) boxes of an image
    across all classes (2000 on SM 5.3/6.2), a limit the ONNX parser cannot raise: more boxes than
    that are a finding (boxes past it are silently ignored), the limit itself a note."""
    table = load_support_table()["engine_layout"]
    limit, small = int(table["nms_max_boxes"]), int(table["nms_max_boxes_sm53_sm62"])
    known = _known_dims(inferred.graph)
    findings, notes = [], []
    for index, node in enumerate(inferred.graph.node):
        if node.op_type != "NonMaxSuppression" or node.domain not in _DEFAULT_DOMAINS:
            continue
        dims = known.get(node.input[0]) or []
        boxes = dims[1] if len(dims) == 3 and isinstance(dims[1], int) else None
        node_label = _node_label(node, index)
        if boxes is not None and boxes > limit:
            findings.append(f"nms: {node_label} gets {boxes} boxes an image, but {label}'s NMS considers only the best "
                            f"{limit} (across all classes) and the parser cannot raise that limit; lower the count "
                            f"that feeds it (pre_nms_top_n summed over the levels, or --detection-candidates) to {limit}")
        else:
            count = f"{boxes} boxes" if boxes is not None else "a number of boxes shape inference cannot tell"
            notes.append(f"nms: {node_label} gets {count} an image; TensorRT's NMS considers at most {limit} "
                         f"boxes an image across all classes ({small} on SM 5.3/6.2 GPUs), a limit the parser "
                         "cannot raise")
    return findings, notes


# -------------------------------------------------------------------------------------- operators

def _node_label(node: Any, index: int) -> str:
    if node.name:
        return f"node {node.name!r} ({node.op_type})"
    first_output = next((o for o in node.output if o), "")
    return f"node #{index} ({node.op_type}, output {first_output!r})"


def _walk_nodes(graph: Any, where: str) -> Iterator[Tuple[Any, int, str]]:
    """Every node with its index and a 'where' prefix, including nodes inside If/Loop/Scan bodies."""
    import onnx

    for index, node in enumerate(graph.node):
        yield node, index, where
        for attr in node.attribute:
            inner_where = f"{where}in the {attr.name!r} subgraph of {_node_label(node, index)}, "
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_nodes(attr.g, inner_where)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk_nodes(sub, inner_where)


def _check_ops(graph: Any, trt: Dict[str, Any], label: str, where: str) -> List[str]:
    """(c) Operators forbidden by edge-fpn's policy, or that the target's parser cannot import."""
    policy = load_support_table()["policy"]["forbidden"]
    unsupported = set(trt["not_importable"])
    findings = []
    for node, index, prefix in _walk_nodes(graph, where):
        finding = _op_finding(node, _node_label(node, index), policy, unsupported, label)
        if finding:
            findings.append(f"{finding[0]}: {prefix}{finding[1]}")
    return findings


def _op_finding(node: Any, node_label: str, policy: Dict[str, str], unsupported: Set[str],
                label: str) -> Optional[Tuple[str, str]]:
    if node.domain not in _DEFAULT_DOMAINS:
        return ("unsupported-op", f"{node_label} is in the custom domain {node.domain!r}, which the ONNX parser of "
                f"{label} imports only through a plugin of that name; replace it with standard ONNX operators")
    if node.op_type in policy:
        also = f" (and {label} cannot import it)" if node.op_type in unsupported else ""
        return ("forbidden-op", f"{node_label} is forbidden by edge-fpn policy for static engines "
                f"({policy[node.op_type]}){also}; do this step in the runtime instead")
    if node.op_type in unsupported:
        return ("unsupported-op", f"{node_label} is not importable by the ONNX parser of {label}; rewrite it with "
                "supported operators, or choose a newer --target")
    return None


def _bounded_ops(trt: Dict[str, Any]) -> Set[str]:
    """Operators whose data-dependent output the target's TensorRT builds (NonMaxSuppression from 8.5)."""
    bounded = load_support_table()["policy"]["bounded_data_dependent"]
    return {op for op in bounded if op not in trt["not_importable"]}


def _check_topk(model: Any, trt: Dict[str, Any], label: str) -> List[str]:
    """TopK needs a constant K (edge-fpn's policy; TensorRT 8.5's parser too) within TensorRT's limit."""
    graph = model.graph
    opset = max([op.version for op in model.opset_import if op.domain in _DEFAULT_DOMAINS] or [0])
    constants = _constant_tensors(graph)
    limit = int(trt["topk_max_k"])
    findings = []
    for node, index, prefix in _walk_nodes(graph, ""):
        if node.op_type != "TopK" or node.domain not in _DEFAULT_DOMAINS:
            continue
        node_label = _node_label(node, index)
        if opset < 10:  # TopK-1 carries K as an attribute: always a constant
            k: Optional[int] = next((int(a.i) for a in node.attribute if a.name == "k"), None)
        else:
            name = node.input[1] if len(node.input) > 1 else ""
            if name not in constants:
                parser = ("" if trt.get("topk_dynamic_k") else
                          f", and the ONNX parser of {label} imports TopK only with K as an initializer")
                findings.append(f"topk: {prefix}{node_label} takes K from {name!r}, which is computed at run time; "
                                f"edge-fpn's static engines need K as a constant{parser}: export K as a Python int "
                                "(or constant-fold the graph, e.g. with onnxslim)")
                continue
            k = _first_int(constants[name])
        if k is not None and k > limit:
            findings.append(f"topk: {prefix}{node_label} has K = {k}, more than the {limit} that {label} supports for "
                            f"TopK; lower the count it selects (pre_nms_top_n, post_nms_top_n or the detection "
                            f"candidates) to {limit} or less")
    return findings


def _first_int(tensor: Any) -> Optional[int]:
    from onnx import numpy_helper

    try:
        values = numpy_helper.to_array(tensor).ravel()
    except Exception:  # external data that is not there: the value cannot be checked
        return None
    return int(values[0]) if values.size else None


def _check_plugins(graph: Any, trt: Dict[str, Any], dla: bool) -> Tuple[List[str], List[str]]:
    """Operators TensorRT imports through a libnvinfer_plugin plugin (RoiAlign: ROIAlign_TRT): a
    note, or with `dla` (the engine on the DLA alone) a finding, since plugin layers never run on the
    DLA. Only plugins: other layers' DLA support is decided by TensorRT at build time (GPU fallback)."""
    plugins = trt.get("plugin_ops", {})
    findings, notes = [], []
    for node, index, prefix in _walk_nodes(graph, ""):
        plugin = plugins.get(node.op_type) if node.domain in _DEFAULT_DOMAINS else None
        if plugin is None or node.op_type in trt["not_importable"]:
            continue
        node_label = _node_label(node, index)
        if dla:
            findings.append(f"dla: {prefix}{node_label} imports through TensorRT's {plugin} plugin, which runs on the "
                            "GPU only, so an engine on the DLA alone cannot hold it; build with GPU fallback "
                            "(`edge-fpn build --dla-core N` sets it) or without the DLA")
        else:
            notes.append(f"plugin: {prefix}{node_label} imports through TensorRT's {plugin} plugin of "
                         "libnvinfer_plugin (edge-fpn registers it with init_libnvinfer_plugins before parsing and "
                         "before loading the engine) and runs on the GPU, not the DLA")
    return findings, notes


def _check_opset(model: Any, trt: Dict[str, Any], label: str) -> List[str]:
    """(d) The default-domain opset must lie in the range the target's parser imports."""
    versions = [op.version for op in model.opset_import if op.domain in _DEFAULT_DOMAINS]
    if not versions:
        return []
    opset, high, low = max(versions), int(trt["max_opset"]), int(trt["min_opset"])
    if opset > high:
        return [f"opset: the model uses ONNX opset {opset}, newer than {label} imports (up to {high}); re-export "
                f"with opset_version={high} (or convert it with onnx.version_converter)"]
    if opset < low:
        return [f"opset: the model uses ONNX opset {opset}, older than {label} imports (from {low}); re-export "
                f"with opset_version between {low} and {high}"]
    return []


# ------------------------------------------------------------------------------------------ int64

def _check_int64(graph: Any, trt: Dict[str, Any], label: str) -> List[str]:
    """(e) INT64 graph inputs/outputs and large INT64 constants."""
    import onnx

    int64 = onnx.TensorProto.INT64
    findings = []
    for role, infos in (("input", _graph_inputs(graph)), ("output", list(graph.output))):
        for vi in infos:
            if vi.type.tensor_type.elem_type == int64:
                findings.append(f"int64: {role} {vi.name!r} is INT64; {_int64_io_effect(trt, label)}: make it "
                                "INT32 (or float) at export")
    for name, count in _large_int64_constants(graph):
        findings.append(f"int64: constant {name!r} holds {count} INT64 values; {_int64_constant_effect(trt, label)}: "
                        "store it as INT32, or compute it in the runtime")
    return findings


def _int64_io_effect(trt: Dict[str, Any], label: str) -> str:
    if trt["int64"] == "cast-to-int32":
        return f"{label} casts it to INT32, so the engine binding is INT32 and values beyond 2^31 are clamped"
    return f"{label} keeps it INT64, which doubles its bandwidth and needs INT64 bindings in the runtime"


def _int64_constant_effect(trt: Dict[str, Any], label: str) -> str:
    if trt["int64"] == "cast-to-int32":
        return f"{label} casts it to INT32 at build time (with a warning) and keeps both copies while building"
    return f"{label} keeps it INT64, twice the memory of INT32, and INT64 gathers are slower"


def _large_int64_constants(graph: Any) -> Iterator[Tuple[str, int]]:
    import onnx

    int64 = onnx.TensorProto.INT64
    for tensor in graph.initializer:
        if tensor.data_type == int64 and _numel(tensor) > LARGE_INT64_ELEMENTS:
            yield tensor.name, _numel(tensor)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == int64 and _numel(attr.t) > LARGE_INT64_ELEMENTS:
                    yield node.output[0], _numel(attr.t)
                elif attr.name == "value_ints" and len(attr.ints) > LARGE_INT64_ELEMENTS:
                    yield node.output[0], len(attr.ints)


# -------------------------------------------------------------------------------------------- Q/DQ

def _check_qdq(graph: Any, base_dir: str, label: str) -> List[str]:
    """(f) Q/DQ zero points: TensorRT needs them 0, and edge-fpn builds symmetric INT8 only."""
    constants = _constant_tensors(graph)
    findings: List[str] = []
    for index, node in enumerate(graph.node):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain in _DEFAULT_DOMAINS:
            findings += _zero_point_findings(node, _node_label(node, index), constants, base_dir, label)
    return findings


def _constant_tensors(graph: Any) -> Dict[str, Any]:
    """Initializers and Constant-node tensors by name: where zero points live."""
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = attr.t
    return constants


def _zero_point_findings(node: Any, node_label: str, constants: Dict[str, Any], base_dir: str,
                         label: str) -> List[str]:
    zero_point = node.input[2] if len(node.input) > 2 else ""
    if not zero_point:
        return _missing_zero_point_findings(node, node_label, constants)
    tensor = constants.get(zero_point)
    if tensor is None:
        return [f"qdq: the zero point {zero_point!r} of {node_label} is computed at run time; {label} needs a "
                "constant zero point of 0: make it an int8 initializer holding 0"]
    findings = []
    if not _is_int8(tensor.data_type):
        findings.append(f"qdq: the zero point {zero_point!r} of {node_label} is {_type_name(tensor.data_type)}; "
                        "edge-fpn builds symmetric INT8 only: use an int8 zero point of 0")
    nonzero = _nonzero_values(tensor, base_dir)
    if nonzero:
        findings.append(f"qdq: the zero point {zero_point!r} of {node_label} holds {nonzero}, not 0; {label} "
                        "accepts only zero points of 0 (symmetric quantization): recalibrate symmetrically")
    return findings


def _missing_zero_point_findings(node: Any, node_label: str, constants: Dict[str, Any]) -> List[str]:
    # Without a zero point ONNX quantizes to uint8 (or to output_dtype from opset 21 on)
    if node.op_type == "QuantizeLinear":
        output_dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
        if output_dtype == 0 or not _is_int8(output_dtype):
            kind = _type_name(output_dtype) if output_dtype else "uint8"
            return [f"qdq: {node_label} has no zero point, so it quantizes to {kind}; edge-fpn builds symmetric "
                    "INT8: give it an int8 zero point of 0"]
        return []
    source = constants.get(node.input[0]) if node.input else None
    if source is not None and not _is_int8(source.data_type):
        return [f"qdq: {node_label} dequantizes {_type_name(source.data_type)} data; edge-fpn builds symmetric "
                "INT8: store the quantized weights as int8 with a zero point of 0"]
    return []


def _is_int8(data_type: int) -> bool:
    import onnx

    return data_type == onnx.TensorProto.INT8


def _type_name(data_type: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"type {data_type}"


def _nonzero_values(tensor: Any, base_dir: str) -> str:
    """'' when every value is 0, else a short list of the values that are not."""
    from onnx import numpy_helper

    try:
        values = numpy_helper.to_array(tensor, base_dir=base_dir).astype("float64").ravel()
    except Exception:  # unreadable external data: the value cannot be shown, so say so
        return "values that cannot be read"
    nonzero = sorted({float(v) for v in values if v != 0})
    if not nonzero:
        return ""
    shown = ", ".join(f"{v:g}" for v in nonzero[:3]) + (", ..." if len(nonzero) > 3 else "")
    return shown
