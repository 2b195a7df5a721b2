#!/usr/bin/env python3
"""The tracker of two versions of edge-fpn, frame by frame on the same detections and frames.

    python3 benchmarks/tracker_ab.py deac67b HEAD                        # noisy ground truth
    python3 benchmarks/tracker_ab.py deac67b HEAD --bundle engines/shapes # the model's detections
    python3 benchmarks/tracker_ab.py /tmp/old-tree . --rounds 6 --seed 4

Each side is a git revision of this repository (its ``edge_fpn`` extracted with ``git archive``)
or a folder that holds an ``edge_fpn`` package. Both are loaded into this process, each as its
own whole package (loading only ``edge_fpn.runtime.tracking`` under an ``edge_fpn`` imported from
elsewhere would time one version twice), and their ``update()`` + ``tracks()`` run interleaved
frame by frame on the six synthetic scenes of --seed, with the frames (the appearance veto and
the memory) unless --boxes-only. The side that runs first in a pair alternates each round
(whichever runs second is a few percent faster here). Prints each round's medians and means,
the ratio B/A, and whether both gave the same IDs on every frame.
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, NoReturn, Tuple

import numpy as np


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2 (bad input: a side, a bundle)."""
    print(f"tracker_ab: {message}", file=sys.stderr)
    sys.exit(2)


def package_root(side: str, scratch: str) -> str:
    """A folder holding the `side`'s edge_fpn: the folder itself, or a git revision extracted."""
    if os.path.isdir(os.path.join(side, "edge_fpn")):
        return os.path.abspath(side)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # (a folder of its own: the same revision on both sides, to see the order effect, is a fair question)
    target = tempfile.mkdtemp(prefix=side.replace("/", "_") + "-", dir=scratch)
    try:
        archive = subprocess.run(["git", "-C", repo, "archive", side, "edge_fpn"], check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as exc:
        fail(f"{side!r} is neither a folder with an edge_fpn package nor a git revision "
             f"({exc.stderr.decode().strip()})")
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return target


def load_tracker(root: str) -> Tuple[Any, Dict[str, Any]]:
    """The Tracker class of the edge_fpn package under `root`, the whole package loaded afresh, and
    that package's modules (put back in sys.modules before each of its calls: a version that imports
    one of its own modules at run time must find its own, not the other side's)."""
    for name in _own_modules():
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        module = importlib.import_module("edge_fpn.runtime.tracking")
    finally:
        sys.path.pop(0)
    if not os.path.abspath(module.__file__).startswith(root):
        fail(f"loaded {module.__file__}, not the one under {root}")
    return module.Tracker, {name: sys.modules[name] for name in _own_modules()}


def _own_modules() -> List[str]:
    return [name for name in sys.modules if name == "edge_fpn" or name.startswith("edge_fpn.")]


def sequences(seed: int, frames: int, bundle: str) -> List[Tuple[list, list]]:
    """(detections, frames) of each synthetic scene: noisy ground truth, or the bundle's detections."""
    from edge_fpn.tracking_eval import TRACK_SEQUENCES, ground_truth_sequence, model_detections, noisy_detections
    out = []
    for motion in TRACK_SEQUENCES:
        truth, images = ground_truth_sequence(motion, frames, seed=seed, images=True)
        detections = model_detections(bundle, truth, images) if bundle else noisy_detections(truth, seed=seed)
        out.append((detections, images))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="side A: a git revision or a folder holding edge_fpn")
    parser.add_argument("b", help="side B: the same")
    parser.add_argument("--bundle", default=None, help="track this bundle's detections (default: noisy ground truth)")
    parser.add_argument("--seed", type=int, default=1, help="the synthetic scenes' seed (default 1)")
    parser.add_argument("--frames", type=int, default=300, help="frames a scene (default 300)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--boxes-only", action="store_true", help="without the frames (no colours)")
    args = parser.parse_args()
    for name in ("frames", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, not {getattr(args, name)}")
    from edge_fpn.errors import EdgeFpnError
    try:
        data = sequences(args.seed, args.frames, args.bundle)  # (with the edge_fpn installed here)
    except EdgeFpnError as exc:
        fail(str(exc))
    with tempfile.TemporaryDirectory() as scratch:
        sides = [load_tracker(package_root(side, scratch)) for side in (args.a, args.b)]
    same = True
    for round_index in range(args.rounds):
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        times: List[List[float]] = [[], []]
        for detections, images in data:
            trackers = [sides[0][0](), sides[1][0]()]
            for (t, boxes, scores, labels), image in zip(detections, images):
                ids = [None, None]
                for side in order:
                    sys.modules.update(sides[side][1])  # (outside the timing)
                    start = time.perf_counter()
                    if args.boxes_only:
                        ids[side] = trackers[side].update(boxes, scores, labels, t)
                        trackers[side].tracks()
                    else:
                        ids[side] = trackers[side].update(boxes, scores, labels, t, image)
                        trackers[side].tracks(image.shape[1::-1])
                    times[side].append(time.perf_counter() - start)
                same = same and ids[0].tolist() == ids[1].tolist()
        a, b = (np.asarray(side) * 1000 for side in times)
        print(f"round {round_index} ({'AB'[order[0]]} first): A median {np.median(a):.3f} mean {a.mean():.3f} ms, "
              f"B median {np.median(b):.3f} mean {b.mean():.3f} ms, B/A median {np.median(b) / np.median(a):.3f} "
              f"mean {b.mean() / a.mean():.3f}", flush=True)
    print(f"IDs on every frame: {'the same' if same else 'DIFFERENT'} ({len(data)} scenes, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
