#!/usr/bin/env python3
"""Embedding edge-fpn in a robot: detection runs in the background, the control loop asks for the
newest detections at its own rate, and callbacks fire for every new frame.

    python3 samples/robot_embed.py --bundle engines/shapes --source csi://0 --target circle --rate 20

The control loop never waits for the detector: it takes whatever is newest (and ignores results
older than --max-age), so a slow frame never stalls the robot. This sample follows one object: it
locks on the best detection of --target and keeps steering towards that same object, by its track
ID, while the tracker keeps seeing it (another circle crossing in front does not steal the lock;
a few steps without it hold the lock, and so does the whole time the tracker says it is hidden,
behind an object seen now or leaving the view: `Result.tracks`); a turn command in [-1, 1] from its horizontal offset.
--no-track steers to the best box each step.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Callable, List, Optional, Tuple

import numpy as np

from edge_fpn import Detector
from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.pipeline import Pipeline, Result


class DetectionService:
    """A callback API on top of the pipeline: ``on_detections(fn)``, ``newest()``, ``start()``, ``stop()``."""

    def __init__(self, bundle: str, source: str, score_threshold: float = 0.5, sinks=(), classes=None,
                 track: bool = True):
        self.detector = Detector(bundle, score_threshold=score_threshold, classes=classes)
        self.pipeline = Pipeline(self.detector, source, sinks, quiet=True, tracker=True if track else None)
        self._callbacks: List[Callable[[Result], None]] = []
        self._lock = threading.Lock()
        self.frames = 0

    def on_detections(self, callback: Callable[[Result], None]) -> Callable[[Result], None]:
        """Register `callback(result)`, called on the pipeline's thread for each frame (keep it short)."""
        with self._lock:
            self._callbacks.append(callback)
        return callback

    def _dispatch(self, result: Result) -> None:
        self.frames += 1
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(result)

    def start(self) -> "DetectionService":
        self.pipeline.add_callback(self._dispatch)
        self.pipeline.start()
        return self

    def newest(self, max_age: Optional[float] = None) -> Optional[Result]:
        """The newest result, or None if there is none yet (or it is older than max_age seconds)."""
        result = self.pipeline.latest()
        if result is None or (max_age is not None and time.monotonic() - result.timestamp > max_age):
            return None
        return result

    def stop(self) -> None:
        self.pipeline.close()
        self.detector.close()

    def __enter__(self) -> "DetectionService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def steer(result: Optional[Result], target: Optional[str], locked: Optional[int] = None, missed: int = 0,
          patience: int = 3) -> Tuple[str, Optional[int], int]:
    """The control law of this sample: (command, the track ID it follows, steps it has not been
    seen). Keep following the locked object while it is seen; where its track took a box this frame
    that shows no ID (the detector read the object as another class for a moment, or the ID waits a
    frame while two objects pass each other), steer by the track's box. Hold for up to `patience`
    steps when it is not seen (a missed frame): locking on another object at once would jump to the
    neighbour. While the tracker says the object is hidden (behind an object seen now, or out of or
    leaving the view), hold as long as its track lives (it may come back where it went); once its
    track has ended, let go at once. Else lock on the best confirmed detection of the target class.
    Without the tracker's view (``result.tracks``), an ID not seen is held for `patience` steps."""
    if result is None:
        return "hold (no fresh detections)", locked, missed
    d = result.detections
    ids = d.track_ids if d.track_ids is not None else np.full(len(d), -1)
    wanted = np.array([target is None or name == target for name in d.names], dtype=bool)
    tracks = getattr(result, "tracks", None)  # (None without a tracker, or on a frame it refused)
    mine = tracks["ids"] == locked if tracks is not None and locked is not None else None
    alive = mine is not None and bool(mine.any())
    if locked is not None and np.any(ids == locked):
        index = int(np.nonzero(ids == locked)[0][0])
    elif alive and not bool(tracks["lost"][mine].any()) and "boxes" in tracks:
        offset = _offset(tracks["boxes"][mine][0], result.frame.shape[1])
        return f"turn {offset:+.2f} towards #{locked} (its track's box: the detection shows no ID)", locked, 0
    elif alive and bool(tracks["hidden"][mine].any()):
        return f"hold (#{locked} hidden: behind an object or leaving the view)", locked, missed + 1
    elif locked is not None and missed < patience and (tracks is None or alive):
        return f"hold (#{locked} not seen)", locked, missed + 1
    elif wanted.any():
        confirmed = wanted & (ids >= 0) if d.track_ids is not None else wanted
        pool = confirmed if confirmed.any() else wanted
        index = int(np.argmax(np.where(pool, d.scores, -1.0)))
        locked = int(ids[index]) if ids[index] >= 0 else None
    else:
        return "search (target not seen)", None, 0
    offset = _offset(d.boxes[index], result.frame.shape[1])
    who = f"#{locked} " if locked is not None else ""
    return f"turn {offset:+.2f} towards {who}{d.names[index]} {d.scores[index]:.2f}", locked, 0


def _offset(box: np.ndarray, width: int) -> float:
    """Where a box's centre is across the frame: -1 at the left edge, +1 at the right."""
    return float(((box[0] + box[2]) / 2.0 - width / 2.0) / (width / 2.0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--bundle", default="engines/shapes", help="bundle directory (default engines/shapes)")
    parser.add_argument("--source", default="csi://0", help="camera or stream URI (default csi://0)")
    parser.add_argument("--target", default=None, help="class to steer towards (default: any)")
    parser.add_argument("--rate", type=float, default=10.0, help="control loop rate in Hz (default 10)")
    parser.add_argument("--steps", type=int, default=0, help="control steps to run (default 0: until Ctrl-C)")
    parser.add_argument("--max-age", type=float, default=1.0, help="ignore detections older than this (s)")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--no-track", action="store_true", help="no tracker: steer to the best box each step")
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error(f"--rate must be above 0 Hz, not {args.rate}")
    if not args.max_age > 0:
        parser.error(f"--max-age must be above 0 s, not {args.max_age}")
    if args.steps < 0:  # (a negative count ran until Ctrl-C, as 0 does)
        parser.error(f"--steps must be 0 (until Ctrl-C) or more, not {args.steps}")
    try:
        with DetectionService(args.bundle, args.source, args.score_threshold, track=not args.no_track) as service:
            names = service.detector.class_names[1:]  # (0 is the background)
            if args.target is not None and args.target not in names:
                raise EdgeFpnError(f"--target {args.target!r} is not a class of this bundle; it knows {', '.join(names)}")
            seen = []
            service.on_detections(lambda result: seen.append(len(result.detections)) if len(seen) < 1000 else None)
            period = 1.0 / args.rate
            step, locked, missed = 0, None, 0
            while args.steps <= 0 or step < args.steps:
                started = time.monotonic()
                command, locked, missed = steer(service.newest(max_age=args.max_age), args.target, locked, missed)
                print(f"step {step}: {command}", flush=True)
                step += 1
                time.sleep(max(0.0, period - (time.monotonic() - started)))
            print(f"done: {step} control steps, {service.frames} detector frames (callbacks: {len(seen)})", flush=True)
    except EdgeFpnError as exc:
        print(f"robot_embed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
