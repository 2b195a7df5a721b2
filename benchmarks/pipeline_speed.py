#!/usr/bin/env python3
"""Pipeline FPS against engine-only FPS (what `edge-fpn bench` prints), for a bundle.

    python3 benchmarks/pipeline_speed.py engines/shapes --frames 100
    python3 benchmarks/pipeline_speed.py engines/shapes --threads 1 2 --json

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
import sys

from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.app import DEFAULT_BENCH_SOURCE, bench, format_bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--source", default=DEFAULT_BENCH_SOURCE)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="*", default=[0], help="ONNX Runtime intra-op threads to try (0: default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    reports = []
    try:
        for threads in args.threads:
            report = bench(args.bundle, source=args.source, frames=args.frames, warmup=args.warmup, threads=threads, quiet=True)
            report["threads"] = threads
            reports.append(report)
            if not args.json:
                print(f"--- ONNX Runtime threads: {threads or 'default'}")
                print(format_bench(report), flush=True)
    except EdgeFpnError as exc:
        print(f"pipeline_speed: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
