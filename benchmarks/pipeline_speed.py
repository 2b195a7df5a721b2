#!/usr/bin/env python3
"""Pipeline FPS against engine-only FPS (what `edge-fpn bench` prints), for a bundle.

    python3 benchmarks/pipeline_speed.py engines/shapes --frames 100
    python3 benchmarks/pipeline_speed.py engines/shapes --threads 1 2 --json
    python3 benchmarks/pipeline_speed.py                  # only the test:// camera's frames/s

First, the synthetic camera alone: frames/s that ``test://`` delivers at 640x480, unpaced
(min/median/max over --source-runs runs), to show that the source never bounds the pipeline
(goal: >= 500 frames/s on 2 CPU cores).

Engine-only: stage 1 + stage 2 back to back on one prepared frame. Pipeline: capture (test://,
unpaced), preprocess, engines and postprocessing overlapped on threads. The ratio is how much of
the engines' speed the live pipeline keeps. On a CPU-only host the engines (ONNX Runtime) use
every core, so whatever the other stages need comes out of the engines' time: the ratio is bounded
by engine / (engine + capture + preprocess + postprocess CPU time). On a Jetson the engines run
on the GPU and the CPU stages overlap with them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Dict

from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.app import DEFAULT_BENCH_SOURCE, bench, format_bench


SYNTHETIC_SOURCE = "test://?width=640&height=480&realtime=0"


def source_speed(uri: str = SYNTHETIC_SOURCE, frames: int = 500, runs: int = 5) -> Dict[str, Any]:
    """Frames/s of a source read alone, unpaced: each run opens it afresh and reads `frames` frames."""
    from edge_fpn.runtime.sources import OK, open_source

    rates = []
    for _ in range(runs):
        with open_source(uri) as source:
            started, count = time.perf_counter(), 0
            while count < frames:
                if source.read(timeout=1.0).status != OK:
                    break
                count += 1
            rates.append(count / (time.perf_counter() - started))
    return {"source": uri, "frames": frames, "runs": runs, "fps_min": round(min(rates), 1),
            "fps_median": round(statistics.median(rates), 1), "fps_max": round(max(rates), 1)}


def stand_in_engine_speed(bundle: str, engine_ms: float, frames: int = 200,
                          source: str = SYNTHETIC_SOURCE) -> Dict[str, Any]:
    """The pipeline (capture, the bundle's own preprocess and postprocess, threads) around a
    stand-in engine that waits `engine_ms` a call without using the host, as a GPU engine does:
    frames/s against the engine's 1000 / engine_ms. A CPU-only host cannot show the host's ceiling
    otherwise (its engine competes with the other stages for the cores); this found the lost
    wake-up that held a file source to 29 frames/s behind engines of 4 and 18 ms."""
    import numpy as np

    from edge_fpn import Detector
    from edge_fpn.runtime.app import _time_pipeline  # bench's own pipeline timing

    with Detector(bundle) as detector:
        inputs, letterbox = detector.layout.preprocess(np.zeros((480, 640, 3), np.uint8))
        outputs = detector.layout.infer(inputs, letterbox)

        def engine(inputs: Any, letterbox: Any) -> Any:
            time.sleep(engine_ms / 1000.0)  # releases the GIL, as ONNX Runtime's and TensorRT's calls do
            return outputs

        detector.layout.infer = engine  # type: ignore[method-assign]
        fps, _ = _time_pipeline(detector, source, frames, warmup=5)
    return {"engine_ms": engine_ms, "frames": frames, "pipeline_fps": round(fps, 1),
            "engine_fps": round(1000.0 / engine_ms, 1), "ratio": round(fps * engine_ms / 1000.0, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", help="bundle directory (none: only the test:// frames/s)")
    parser.add_argument("--source", default=DEFAULT_BENCH_SOURCE)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="*", default=[0], help="ONNX Runtime intra-op threads to try (0: default)")
    parser.add_argument("--source-frames", type=int, default=500, help="frames per run of the test:// section")
    parser.add_argument("--source-runs", type=int, default=5, help="runs of the test:// section")
    parser.add_argument("--stand-in-ms", type=float, nargs="*", default=[4.0, 18.0],
                        help="with a bundle: also the pipeline around stand-in engines of these ms a call "
                             "(the host's ceiling behind a GPU engine; default 4 18; none to skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if any(not 0 < ms <= 10000 for ms in args.stand_in_ms):
        parser.error("--stand-in-ms values must be more than 0 and at most 10000")
    reports = []
    camera = source_speed(SYNTHETIC_SOURCE, args.source_frames, args.source_runs)
    if not args.json:
        print(f"--- {camera['source']} alone ({camera['runs']} runs of {camera['frames']} frames): "
              f"{camera['fps_median']:.0f} frames/s median (min {camera['fps_min']:.0f}, max {camera['fps_max']:.0f})",
              flush=True)
    if not args.bundle:
        if args.json:
            print(json.dumps({"synthetic_source": camera}, indent=2))
        return 0
    try:
        for threads in args.threads:
            report = bench(args.bundle, source=args.source, frames=args.frames, warmup=args.warmup, threads=threads, quiet=True)
            report["threads"] = threads
            reports.append(report)
            if not args.json:
                print(f"--- ONNX Runtime threads: {threads or 'default'}")
                print(format_bench(report), flush=True)
        stand_ins = []
        for engine_ms in args.stand_in_ms:
            stand_ins.append(stand_in_engine_speed(args.bundle, engine_ms, max(args.frames, 100), args.source))
            if not args.json:
                row = stand_ins[-1]
                print(f"--- stand-in engine of {engine_ms:g} ms (host idle during the call, as on a GPU): pipeline "
                      f"{row['pipeline_fps']:.1f} frames/s of the engine's {row['engine_fps']:.1f} "
                      f"(ratio {row['ratio']:.3f})", flush=True)
    except EdgeFpnError as exc:
        print(f"pipeline_speed: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"synthetic_source": camera, "pipeline": reports, "stand_in_engines": stand_ins}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
