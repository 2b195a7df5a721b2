#!/usr/bin/env python3
"""Tracking quality (MOTA, IDF1, ID switches; py-motmetrics) and tracker speed.

    python3 benchmarks/tracking.py                       # noisy ground truth + update() timings
    python3 benchmarks/tracking.py engines/shapes        # also the bundle's real detections
    python3 benchmarks/tracking.py engines/shapes --frames 300 --json

Runs, each on the synthetic camera's sequences (test://?motion=drift|cross|occlude|exit|fast|hard,
640x480, 30 FPS), at 30 FPS and on every third frame only (a 10 FPS camera):

1. ground truth with controlled noise: 2 px jitter, 10% misses, 5% false positives, 10% of the
   true detections with a low score (ours, ours with 0.15 s of coasting, and the reference);
2. with a bundle: its real detections (everything it keeps, down to its own score threshold);
3. speed: ``Tracker.update`` with 50 tracks and 50 detections a frame (objects on smooth paths
   with 2 px jitter), median and p99 over --updates frames after a warm-up, against the
   reference ByteTrack's update on the same detections.

The reference is a published ByteTrack from PyPI (cjm-byte-track: the official update ported to
numpy + scipy), class-agnostic as the original.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List

import numpy as np

from edge_fpn.tracking_eval import (TRACK_SEQUENCES, compare, evaluate_bundle_tracking, format_scores,
                                    ground_truth_sequence, noisy_detections)


def noisy_runs(frames: int, steps: List[int], progress: bool) -> Dict[str, Any]:
    report: Dict[str, Any] = {}
    for motion in TRACK_SEQUENCES:
        truth, _ = ground_truth_sequence(motion, frames)
        detections = noisy_detections(truth, seed=1)
        for step in steps:
            key = f"{motion}@{30 // step}fps"
            report[key] = compare(truth, detections, step, coast_seconds=0.15)
            if progress:
                for name, scores in report[key].items():
                    print(format_scores(f"noisy {key} {name}", scores), flush=True)
    return report


def crowd(frames: int, objects: int = 50, seed: int = 0) -> List[Any]:
    """`objects` boxes on smooth paths over a 1920x1080 frame with 2 px jitter, five classes."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform([100, 100], [1820, 980], (objects, 2))
    velocity = rng.uniform(-60, 60, (objects, 2))
    size = rng.uniform(30, 90, (objects, 2))
    labels = rng.integers(1, 6, objects)
    out = []
    for i in range(frames):
        t = i / 30.0
        c = centre + velocity * t + 20 * np.sin(t + np.arange(objects))[:, None]
        boxes = np.concatenate([c - size / 2, c + size / 2], axis=1) + rng.normal(0, 2, (objects, 4))
        scores = rng.uniform(0.6, 1.0, objects)
        out.append((t, boxes.astype(np.float32), scores.astype(np.float32), labels.copy()))
    return out


def speed(updates: int, warmup: int = 50) -> Dict[str, Any]:
    from edge_fpn.runtime.tracking import Tracker
    frames = crowd(warmup + updates)
    tracker = Tracker()
    times = []
    for i, (t, boxes, scores, labels) in enumerate(frames):
        t0 = time.perf_counter()
        tracker.update(boxes, scores, labels, t)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    ours = np.asarray(times) * 1000
    report: Dict[str, Any] = {"tracks": tracker.active_tracks, "detections": 50,
                              "ours_ms": {"median": round(float(np.median(ours)), 4),
                                          "p99": round(float(np.percentile(ours, 99)), 4)}}
    try:
        from cjm_byte_track.byte_tracker import BYTETracker
    except ImportError:
        return report
    reference = BYTETracker(track_thresh=0.5, track_buffer=30, match_thresh=0.8, frame_rate=30)
    times = []
    for i, (t, boxes, scores, labels) in enumerate(frames):
        results = np.concatenate([boxes, scores[:, None]], axis=1).astype(np.float64)
        t0 = time.perf_counter()
        reference.update(results, (1, 1), (1, 1))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    ref = np.asarray(times) * 1000
    report["reference_ms"] = {"median": round(float(np.median(ref)), 4), "p99": round(float(np.percentile(ref, 99)), 4)}
    return report


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", help="a bundle: also score its real detections")
    parser.add_argument("--frames", type=int, default=300, help="frames a sequence (default 300: 10 s at 30 FPS)")
    parser.add_argument("--updates", type=int, default=2000, help="timed update() calls (default 2000)")
    parser.add_argument("--device", default="cpu", help="where the bundle runs (default cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)
    progress = not args.json
    report: Dict[str, Any] = {"noisy_ground_truth": noisy_runs(args.frames, [1, 3], progress)}
    if args.bundle:
        report["model_detections"] = evaluate_bundle_tracking(
            args.bundle, frames=args.frames, device=args.device,
            progress=(lambda line: print("model " + line, flush=True)) if progress else None)
    report["speed"] = speed(args.updates)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        s = report["speed"]
        line = f"update() with {s['tracks']} tracks, 50 detections: median {s['ours_ms']['median']:.3f} ms, p99 {s['ours_ms']['p99']:.3f} ms"
        if "reference_ms" in s:
            line += f"  (reference ByteTrack: median {s['reference_ms']['median']:.3f} ms, p99 {s['reference_ms']['p99']:.3f} ms)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
