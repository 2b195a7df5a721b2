#!/usr/bin/env python3
"""Live latency under the newest-frame policy: a camera faster than the engine, timed on the wall clock.

    python3 benchmarks/live_latency.py                       # the shipped model, exported to a temp dir
    python3 benchmarks/live_latency.py engines/shapes --fps 100 --engine-ms 80 --frames 30 --json

A realtime ``test://`` camera at --fps feeds the threaded pipeline; the engine is replaced by one
that returns the bundle's real outputs for one frame after sleeping --engine-ms (so the figure is
the pipeline's, on any machine: real capture, preprocessing, postprocessing and sinks around an
engine of known speed). With a camera faster than the engine, a live pipeline must run each
inference on the newest frame: capture-to-detections latency about one inference plus a frame's
age, not a growing backlog. Printed: frames delivered, camera frames dropped, latency median and
p95 in ms and in engine calls, and whether the median is within the goal of 3 engine calls (the
unit tests check the policy by counting frames on a stepped camera, tests/test_pipeline.py; wall
clock figures live here).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Dict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

GOAL_ENGINE_CALLS = 3.0  # median latency within 3 engine calls: no backlog behind the newest frame


def paced_detector(bundle: str, seconds: float) -> Any:
    """The real Detector with its engine call(s) replayed after `seconds` a frame: the tests' own
    stand-in (tests/test_pipeline.py fast_detector), so the benchmark and the tests time one thing."""
    from test_pipeline import fast_detector

    return fast_detector(bundle, delay=seconds)


def measure(bundle: str, fps: float, engine_ms: float, frames: int) -> Dict[str, Any]:
    from edge_fpn.runtime.pipeline import Pipeline

    detector = paced_detector(bundle, engine_ms / 1000.0)
    source = f"test://?width=320&height=240&fps={fps:g}"
    with Pipeline(detector, source, max_frames=frames, quiet=True) as pipeline:
        results = list(pipeline)
    snap = pipeline.stats.snapshot()
    latency = np.array([r.latency for r in results]) * 1000.0
    indices = [r.index for r in results]
    median = float(np.median(latency))
    return {
        "camera_fps": fps, "engine_ms": engine_ms, "frames": len(results),
        "camera_frames": indices[-1] + 1 if indices else 0, "dropped": snap["dropped"],
        "latency_ms": {"median": round(median, 1), "p95": round(float(np.percentile(latency, 95)), 1),
                       "max": round(float(latency.max()), 1)},
        "latency_engine_calls": {"median": round(median / engine_ms, 2),
                                 "p95": round(float(np.percentile(latency, 95)) / engine_ms, 2)},
        "goal_engine_calls": GOAL_ENGINE_CALLS, "goal_met": median / engine_ms < GOAL_ENGINE_CALLS,
    }


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", help="bundle directory (default: the shipped model, exported to a temp dir)")
    parser.add_argument("--fps", type=float, default=100.0, help="the test:// camera's frame rate")
    parser.add_argument("--engine-ms", type=float, default=80.0, help="time each engine call takes")
    parser.add_argument("--frames", type=int, default=30, help="results to collect")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-fpn-latency-") as scratch:
        bundle = args.bundle
        if bundle is None:
            from edge_fpn.cli import main as cli
            bundle = os.path.join(scratch, "shapes")
            if cli(["export", "--model", "shapes", "--output", bundle, "--quiet"]) != 0:
                return 2
        report = measure(bundle, args.fps, args.engine_ms, args.frames)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"camera {report['camera_fps']:g} fps, engine {report['engine_ms']:g} ms a call: {report['frames']} results "
          f"from {report['camera_frames']} camera frames, {report['dropped']} dropped (newest-frame policy)")
    print(f"capture-to-detections latency: median {report['latency_ms']['median']} ms "
          f"({report['latency_engine_calls']['median']} engine calls), p95 {report['latency_ms']['p95']} ms "
          f"({report['latency_engine_calls']['p95']}), max {report['latency_ms']['max']} ms")
    print(f"goal: median within {GOAL_ENGINE_CALLS:g} engine calls: {'met' if report['goal_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
