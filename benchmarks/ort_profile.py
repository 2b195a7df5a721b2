"""Where an ONNX Runtime session spends its time: per operator type, and on which provider each
node ran (a node that the CUDA provider has no kernel for runs on the CPU, with copies around it).

ONNX Runtime writes the profile itself (``SessionOptions.enable_profiling``, a Chrome-trace JSON);
this module only runs a session with it on and sums the trace's node events, which no library does.

    from ort_profile import profile_session, format_profile
    summary = profile_session("detector.onnx", inputs, providers, runs=20)
    print(format_profile("edge-fpn engine", summary))
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np


def summarize(trace: Sequence[Mapping[str, Any]], runs: int) -> Dict[str, Any]:
    """Per op type: milliseconds per run and node count; per provider: nodes and milliseconds per run.

    The trace's node events are named "<node>_kernel_time" (ONNX Runtime's own naming) and carry
    the op type and provider in ``args``; "_fence_before"/"_fence_after" events are not kernels."""
    op_ms: Dict[str, float] = collections.defaultdict(float)
    op_nodes: Dict[str, set] = collections.defaultdict(set)
    provider_ms: Dict[str, float] = collections.defaultdict(float)
    provider_nodes: Dict[str, set] = collections.defaultdict(set)
    node_ms: Dict[Tuple[str, str], float] = collections.defaultdict(float)
    events = 0
    for event in trace:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        op, provider = str(args.get("op_name", "?")), str(args.get("provider", "?"))
        node = name[: -len("_kernel_time")]
        milliseconds = float(event.get("dur", 0)) / 1000.0 / runs
        events += 1
        op_ms[op] += milliseconds
        op_nodes[op].add(node)
        provider_ms[provider] += milliseconds
        provider_nodes[provider].add((node, op))
        node_ms[node, op] += milliseconds
    return {
        "runs": runs,
        "kernel_events": events,
        "kernel_ms": round(sum(op_ms.values()), 4),
        "ops": sorted(({"op": op, "ms": round(ms, 4), "nodes": len(op_nodes[op])} for op, ms in op_ms.items()),
                      key=lambda row: -row["ms"]),
        "slowest_nodes": [{"node": node, "op": op, "ms": round(ms, 4)}
                          for (node, op), ms in sorted(node_ms.items(), key=lambda item: -item[1])[:10]],
        "providers": {provider: {"nodes": len(nodes), "ms": round(provider_ms[provider], 4),
                                 "ops": sorted({op for _, op in nodes})}
                      for provider, nodes in provider_nodes.items()},
    }


def profile_session(path: str, inputs: Union[Mapping[str, np.ndarray], np.ndarray], providers: List[Any], runs: int = 20,
                    warmup: int = 3) -> Dict[str, Any]:
    """Run `path` `warmup` + `runs` times with ONNX Runtime's profiler on; summarize the last `runs`.

    The profiler is a session option, so the warm-up runs are in the trace too: the trace's
    "model_run" events mark where each run starts, and the warm-up runs' events are dropped."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        options.log_severity_level = 3
        session = ort.InferenceSession(path, sess_options=options, providers=providers)
        # one array: the graph's only input
        feed = dict(inputs) if isinstance(inputs, Mapping) else {session.get_inputs()[0].name: inputs}
        for _ in range(warmup + runs):
            session.run(None, feed)
        with open(session.end_profiling(), encoding="utf-8") as f:
            trace = json.load(f)
    starts = sorted(e["ts"] for e in trace if e.get("name") == "model_run")
    first_timed = starts[warmup] if len(starts) > warmup else 0
    summary = summarize([e for e in trace if e.get("ts", 0) >= first_timed], runs)
    summary["session_providers"] = list(session.get_providers())
    return summary


def format_profile(label: str, summary: Mapping[str, Any], top: int = 8) -> str:
    lines = [f"    {label}: {summary['kernel_ms']:.2f} ms of kernels a run ({summary['runs']} runs)"]
    for provider, row in summary["providers"].items():
        named = ", ".join(row["ops"][:12]) + (" ..." if len(row["ops"]) > 12 else "")
        lines.append(f"      {provider}: {row['nodes']} nodes, {row['ms']:.2f} ms ({named})")
    for row in summary["ops"][:top]:
        lines.append(f"      {row['op']:<20} {row['ms']:8.3f} ms  {row['nodes']:4d} nodes")
    lines.append("      slowest nodes: " + "; ".join(f"{row['node']} ({row['op']}) {row['ms']:.3f} ms"
                                                     for row in summary.get("slowest_nodes", [])[:4]))
    return "\n".join(lines)
