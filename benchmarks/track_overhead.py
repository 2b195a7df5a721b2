#!/usr/bin/env python3
"""What tracking costs the pipeline: FPS with and without the tracker, side by side.

    python3 benchmarks/track_overhead.py                  # exports the shipped model into a temp dir
    python3 benchmarks/track_overhead.py --bundle engines/shapes --rounds 7 --frames 200 --json

The threaded pipeline (capture, preprocess, engine, postprocess, sinks on their threads) on the
shipped model reads a file-like ``test://`` source (``realtime=0``: every frame is processed, none
dropped, so FPS is the pipeline's own speed) with tracking off and on, interleaved: the rounds
alternate which goes first (off, on, on, off, ...), each run after a pause (ONNX Runtime's idle
threads busy-wait after a call and would bill the next run). FPS of a run: its results after
--warmup, over their time span. Printed: min / median / max FPS of each, the ratio of the
medians and the per-round ratios (the issue's goal: >= 0.97), and the load average (on a shared
machine the runs can differ more than tracking costs).

Beside it, per frame: the tracker's own time (the pipeline's "tracking" stage, on the
postprocessing thread) and what drawing the trails costs a drawing sink (``Trails.update``, the
copy of the annotated frame and the ``cv2.polylines`` calls) on the results of a tracked run, next
to drawing the boxes alone (``annotate``). With --sink (e.g. out.avi) both runs also write it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np


def export_shipped(out: str) -> str:
    from edge_fpn.export.onnx_export import ExportOptions, export_bundle
    from edge_fpn.model.loading import load_shipped_model

    model, meta = load_shipped_model("shapes")
    path = os.path.join(out, "shapes")
    export_bundle(model, meta["architecture"], meta["class_names"], tuple(meta["input_size"]), path,
                  ExportOptions(progress=False, force=True))
    return path


def run_once(detector: Any, track: bool, frames: int, warmup: int, sinks: List[str], keep: int = 0) -> Dict[str, Any]:
    """One pipeline run over `warmup` + `frames` frames; its FPS after the warm-up, the tracker's
    per-frame seconds, and the last `keep` results (for the drawing measurement)."""
    from edge_fpn.runtime.pipeline import Pipeline

    uri = f"test://?width=640&height=480&realtime=0&frames={warmup + frames}"
    done: List[float] = []
    tracking: List[float] = []
    kept: List[Any] = []

    def on_result(result: Any) -> None:
        done.append(time.perf_counter())
        if len(done) > warmup:
            tracking.append(result.timings.get("tracking", 0.0))
            if keep:
                kept.append(result)
                del kept[:-keep]

    Pipeline(detector, uri, sinks, quiet=True, tracker=True if track else None, on_result=on_result).run()
    measured = done[warmup:]
    fps = (len(measured) - 1) / (measured[-1] - measured[0]) if len(measured) > 1 else 0.0
    return {"fps": fps, "frames": len(done), "tracking": tracking, "results": kept}


def drawing_cost(results: List[Any]) -> Dict[str, float]:
    """Per-frame ms of drawing the boxes (``annotate``) and of adding the trails to them, over
    `results` in order (after 2 passes to fill the trails)."""
    from edge_fpn.runtime.sinks import annotate, draw_trails
    from edge_fpn.runtime.trails import Trails

    boxes_ms, trails_ms, drawn = [], [], []
    for repeat in range(3):
        trails = Trails()
        for result in results:
            t0 = time.perf_counter()
            image = annotate(result.frame, result.detections)
            t1 = time.perf_counter()
            lines = trails.update(result.detections, 0)
            draw_trails(image, lines)  # as Result.annotated() does, once for all sinks
            t2 = time.perf_counter()
            if repeat == 2:
                boxes_ms.append((t1 - t0) * 1000.0)
                trails_ms.append((t2 - t1) * 1000.0)
                drawn.append(len(lines))
    return {"boxes_median_ms": statistics.median(boxes_ms), "trails_median_ms": statistics.median(trails_ms),
            "trails_p95_ms": float(np.percentile(trails_ms, 95)), "trails_per_frame": statistics.mean(drawn)}


def measure(detector: Any, args: argparse.Namespace) -> Dict[str, Any]:
    fps: Dict[str, List[float]] = {"off": [], "on": []}
    tracking: List[float] = []
    results: List[Any] = []
    run_once(detector, False, 10, 2, args.sink)  # warm the engine and the caches
    for index in range(args.rounds):
        order = ("off", "on") if index % 2 == 0 else ("on", "off")
        for mode in order:
            time.sleep(args.pause)
            run = run_once(detector, mode == "on", args.frames, args.warmup, args.sink,
                           keep=args.keep if mode == "on" and not results else 0)
            fps[mode].append(run["fps"])
            if mode == "on":
                tracking.extend(run["tracking"])
                results = results or run["results"]
            if not args.json:
                print(f"  round {index + 1} tracking {mode:3s}: {run['fps']:.2f} FPS", flush=True)
    summary = {mode: {"min": min(v), "median": statistics.median(v), "max": max(v), "runs": v} for mode, v in fps.items()}
    tracking_ms = np.asarray(tracking) * 1000.0
    return {"fps": summary, "ratio": summary["on"]["median"] / summary["off"]["median"],
            "paired_ratios": [on / off for on, off in zip(fps["on"], fps["off"])],
            "tracker_median_ms": float(np.median(tracking_ms)), "tracker_p95_ms": float(np.percentile(tracking_ms, 95)),
            "drawing": drawing_cost(results)}


def format_report(report: Dict[str, Any]) -> str:
    off, on, drawing = report["fps"]["off"], report["fps"]["on"], report["drawing"]
    paired = report["paired_ratios"]
    return "\n".join([
        f"pipeline FPS (min / median / max over {len(off['runs'])} runs of {report['frames']} frames, "
        f"{report['providers']}):",
        f"  tracking off: {off['min']:.2f} / {off['median']:.2f} / {off['max']:.2f}",
        f"  tracking on:  {on['min']:.2f} / {on['median']:.2f} / {on['max']:.2f}",
        f"  on / off (medians): {report['ratio']:.3f}; per round: median {statistics.median(paired):.3f}, "
        f"{min(paired):.3f} .. {max(paired):.3f} (goal >= 0.97)",
        f"tracker per frame: {report['tracker_median_ms']:.2f} ms median, {report['tracker_p95_ms']:.2f} ms p95",
        f"trails per frame (update + copy + polylines, {drawing['trails_per_frame']:.1f} trails): "
        f"{drawing['trails_median_ms']:.3f} ms median, {drawing['trails_p95_ms']:.3f} ms p95 "
        f"(drawing the boxes alone: {drawing['boxes_median_ms']:.3f} ms)",
        f"load average before / after: {report['load_before']:.1f} / {report['load_after']:.1f} on {report['cpus']} CPUs"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", help="a bundle (default: export the shipped model into a temp dir)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument("--frames", type=int, default=150, help="measured frames per run (default 150)")
    parser.add_argument("--warmup", type=int, default=10, help="frames skipped at the start of each run")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between runs")
    parser.add_argument("--keep", type=int, default=100, help="results of a tracked run kept for the drawing figures")
    parser.add_argument("--sink", nargs="*", default=[], help="sinks both runs write (default: none)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (ONNX Runtime bundles)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from edge_fpn import Detector

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edge-fpn-track-") as tmp:
        bundle = args.bundle or export_shipped(tmp)
        with Detector(bundle, device=args.device) as detector:
            providers = ", ".join(sorted({str(getattr(b, "provider", "")) for b in detector.backends()}))
            report = measure(detector, args)
    report.update({"bundle": args.bundle or "shipped shapes (exported)", "frames": args.frames,
                   "providers": providers, "cpus": os.cpu_count(), "load_before": load_before,
                   "load_after": os.getloadavg()[0]})
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
