#!/usr/bin/env python3
"""A detector's confident boxes on no object, over many synthetic camera backgrounds.

    python3 benchmarks/false_boxes.py                              # the shipped model (PyTorch)
    python3 benchmarks/false_boxes.py shapes new.pt --seeds 1000-1059
    python3 benchmarks/false_boxes.py engines/shapes               # a bundle, through the runtime

The tracking sequences keep one background for all their frames, so a box the detector sees in
the background's texture stays put and is confirmed like any still object (docs/tracking.md, "What
is left"); AP on the 320x320 evaluation scenes does not show it. This counts, per checkpoint and
side by side on the same frames (``edge_fpn.evaluate.camera_false_boxes``): boxes scoring >= --score with IoU < 0.1 against every object
("false boxes" a frame), the objects found (a box of their class at IoU >= 0.5) and those found
only as another class, and the share of backgrounds with any false box, the worst named. Frames:
the synthetic camera (640x480, ``test://``) of each seed in --seeds, each motion in --motions, at
each index in --frames. The seeds must not be training seeds: ``edge-fpn train`` takes its camera
frames from seeds above 2**30.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List, Sequence

import numpy as np


def parse_seeds(text: str) -> List[int]:
    """'1000-1039' or '1,2,3' -> the seeds."""
    if "-" in text:
        low, high = (int(v) for v in text.split("-", 1))
        return list(range(low, high + 1))
    return [int(v) for v in text.split(",")]


def detect_fn(what: str):
    """'shapes', a shapes checkpoint file, or a bundle directory -> a detect function."""
    import os

    from edge_fpn.evaluate import bundle_detect_fn, torch_detect_fn

    if what != "shapes" and not os.path.exists(what):
        from edge_fpn.errors import EdgeFpnError
        raise EdgeFpnError(f"{what!r} does not exist; give 'shapes', a checkpoint from edge-fpn train or a bundle directory")
    if os.path.isdir(what):
        return bundle_detect_fn(what, device="cpu")[0]
    from edge_fpn.model.loading import load_shipped_model

    # a file that is not a shapes checkpoint is its one-line error, not torch's traceback
    model, meta = load_shipped_model("shapes", None if what == "shapes" else what)
    return torch_detect_fn(model, tuple(meta["input_size"]))


def count(what: str, seeds: Sequence[int], motions: Sequence[str], frames: Sequence[int], min_score: float) -> Dict[str, Any]:
    from edge_fpn.evaluate import camera_false_boxes

    start = time.perf_counter()
    result = camera_false_boxes(detect_fn(what), seeds, motions, frames, min_score)
    by_seed = result["false_boxes_by_seed"]
    result.update(name=what, seconds=time.perf_counter() - start,
                  backgrounds_with_false_boxes=float(np.mean([n > 0 for n in by_seed.values()])),
                  worst=[f"seed {s}: {n}" for s, n in sorted(by_seed.items(), key=lambda item: -item[1])[:3]])
    return result


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["shapes"],
                        help="'shapes' (the shipped model), shapes checkpoint files or bundle directories (default shapes)")
    parser.add_argument("--seeds", default="1000-1039", help="camera seeds: 'A-B' or 'a,b,c' (default 1000-1039)")
    parser.add_argument("--motions", default="drift,occlude", help="comma-separated motions (default drift,occlude)")
    parser.add_argument("--frames", default="0,150", help="comma-separated frame indices (default 0,150)")
    parser.add_argument("--score", type=float, default=0.5, help="a confident box scores at least this (default 0.5)")
    args = parser.parse_args(argv)
    from edge_fpn.errors import EdgeFpnError
    from edge_fpn.runtime.synthetic import MOTIONS

    try:
        seeds, frames = parse_seeds(args.seeds), [int(v) for v in args.frames.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r} / --frames {args.frames!r}: give whole numbers, 'A-B' or 'a,b,c'")
    motions = args.motions.split(",")
    if set(motions) - set(MOTIONS):
        parser.error(f"unknown motion in {args.motions!r}; use {', '.join(MOTIONS)}")
    import torch

    torch.set_num_threads(2)
    try:
        results = [count(m, seeds, motions, frames, args.score) for m in args.models]
    except EdgeFpnError as exc:
        parser.error(str(exc))
    print(f"{len(seeds)} backgrounds x {len(motions)} motions x {len(frames)} frames, boxes scoring >= {args.score:g}")
    for r in results:
        print(f"{r['name']}: false boxes a frame {r['false_boxes_per_frame']:.3f}, objects found {r['found']:.3f}, "
              f"found only as another class {r['other_class_only']:.3f}, backgrounds with false boxes "
              f"{r['backgrounds_with_false_boxes']:.2f} (worst: {', '.join(r['worst'])}; {r['seconds']:.0f} s)")
    if len(results) > 1:
        base = results[0]["false_boxes_per_frame"]
        for r in results[1:]:
            ratio = r["false_boxes_per_frame"] / base if base else float("inf")
            print(f"{r['name']} / {results[0]['name']}: false boxes x{ratio:.2f}, "
                  f"found {r['found'] - results[0]['found']:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
