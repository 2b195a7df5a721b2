"""Test support for TensorRT-RTX (x86-64 wheels `tensorrt-rtx-cu13-libs`/`-bindings`, module
`tensorrt_rtx_bindings`): NVIDIA's ONNX parser and builder on a CPU with no GPU.

The workarounds for its gaps live in the package (edge_fpn/export/rtx_roialign.py, where each is
named: the parser that does not find its own ROIAlign_TRT, and the parser that aborts the process on
a plugin layer unless "libtensorrt_rtx.so" loads); the parse and the build go through edge-fpn's own
code (export/nvidia_parser.py, builder/tensorrt_builder.py), so that its real calls meet the real
library. This module only adds what a test wants to look at: a summary of the parsed network.
TensorRT-RTX has no NMS kernels (TensorRT-RTX#5): graphs with NonMaxSuppression parse, never build.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

from edge_fpn.export import rtx_roialign
from edge_fpn.export.rtx_roialign import ROIALIGN_FIELDS  # noqa: F401  (re-exported for the tests)

# How the ONNX importer (onnxOpImporters.cpp, importRoiAlign) encodes RoiAlign's string attributes
COORDINATE_TRANSFORMATION_MODES = {0: "output_half_pixel", 1: "half_pixel"}
ROIALIGN_MODES = {0: "max", 1: "avg"}


def rtx():
    """The NvidiaParser of TensorRT-RTX, or None where it is not installed (the test then skips)."""
    from edge_fpn.export.nvidia_parser import parser_for

    try:
        return parser_for(rtx_roialign.import_tensorrt_rtx())
    except ImportError:
        return None


@dataclasses.dataclass
class NetworkSummary:
    """What a parsed network holds, as plain data."""
    inputs: List[Tuple[str, Tuple[int, ...], str]]
    outputs: List[Tuple[str, Tuple[int, ...], str]]
    layer_types: Dict[str, int]
    plugin_layers: List[Dict[str, Any]]
    stand_in_fields: List[Dict[str, Any]]  # what the RoiAlign importer passed to the stand-in


def _name(enum_value: Any) -> str:
    return str(enum_value).rsplit(".", 1)[-1]


def parse_onnx(path: str) -> Tuple[bool, List[str], Optional[NetworkSummary]]:
    """Parse with edge-fpn's parse (nvidia_parser.parse): (ok, errors, summary of the network)."""
    from edge_fpn.export.nvidia_parser import parse

    parser = rtx()
    creator = rtx_roialign.stand_in_creator()
    first = len(creator.received) if creator is not None else 0
    parsed = parse(parser, path)
    errors = [f"{node}: {message}" for node, message in parsed.errors]
    if errors:
        return False, errors, None
    network = parsed.network
    describe = lambda t: (t.name, tuple(t.shape), _name(t.dtype))  # noqa: E731
    layer_types: Dict[str, int] = collections.Counter()
    plugins = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = _name(layer.type)
        layer_types[kind] += 1
        if kind.startswith("PLUGIN"):
            out = layer.get_output(0)
            plugins.append({"name": layer.name, "type": kind, "output_shape": tuple(out.shape),
                            "output_dtype": _name(out.dtype)})
    creator = rtx_roialign.stand_in_creator()
    fields = [dict(r["fields"]) for r in creator.received[first:]] if creator is not None else []
    return True, [], NetworkSummary([describe(network.get_input(i)) for i in range(network.num_inputs)],
                                    [describe(network.get_output(i)) for i in range(network.num_outputs)],
                                    dict(layer_types), plugins, fields)


def build_sm86(path: str, stage: Any = None, precision: str = "fp32") -> bytes:
    """A serialized plan for SM86, built ahead of time on the CPU by edge-fpn's TensorRT 11 path
    (tensorrt_builder.build_serialized) with TensorRT-RTX in place of tensorrt. `stage`: the
    manifest's StageSpec (default: the one beside `path` that names its file); `precision` picks
    the plan as on TensorRT 11 (the graph at `path` must already be the variant it names)."""
    from edge_fpn.builder.tensorrt_builder import TrtOptions, api_version, build_serialized, capabilities, plan_build
    from edge_fpn.bundle import load_manifest

    trt = rtx().trt
    if stage is None:
        manifest = load_manifest(os.path.dirname(os.path.abspath(path)))
        stage = next(s for s in manifest.stages.values() if s.file == os.path.basename(path))
    options = TrtOptions(precision=precision, compute_capability="8.6")
    plan = plan_build(capabilities(api_version(trt)), options)
    return build_serialized(trt, path, stage, plan, options)
