"""The runtime's extra subcommands (``edge-fpn bench``); imports nothing heavy until one runs."""
from __future__ import annotations

import argparse
from typing import Any

from .options import add_cuda_argument, add_device_argument


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench", help="pipeline FPS against engine-only FPS (stages alone), their ratio, per-stage latency",
        description="Run the full pipeline on a source and the two engine stages alone on pre-made inputs; "
                    "print both FPS, their ratio and per-stage latencies.")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--source", default=None,
                   help="source URI (default: test://?width=640&height=480&realtime=0, the synthetic camera unpaced)")
    p.add_argument("--frames", type=int, default=100, help="frames to time, for each of the two runs (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="frames run before timing (default 5)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: its own choice)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_device_argument(p)
    add_cuda_argument(p)
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from .app import DEFAULT_BENCH_SOURCE, bench

    bench(args.bundle, source=args.source or DEFAULT_BENCH_SOURCE, frames=args.frames, json=args.json,
          warmup=args.warmup, threads=args.threads, device=args.device, cuda=args.cuda)
    return 0
