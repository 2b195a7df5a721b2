"""A frame's input to the tracker, checked: detections as arrays, and a timestamp in seconds.

Bad input raises EdgeFpnError with one sentence, before the tracker changes anything; detections
with non-finite, empty or far-out boxes (a coordinate beyond MAX_COORDINATE) or a non-finite score
are not errors (a detector's odd box must not stop a pipeline): they are marked unusable, and the
tracker leaves them out and counts them. Scores are probabilities: one over 1 is taken as 1 (a
detector's rounding past it; the tracker's running score must stay a probability).
"""
from __future__ import annotations

import math
from typing import Any, Tuple

import numpy as np

from ...errors import EdgeFpnError

# the largest timestamp taken, in seconds (3000 years; the Unix time now is 1.8e9): a larger one is
# milli- or nanoseconds, and a gap of more than 1e102 s would overflow the filter's dt ** 3
MAX_TIMESTAMP = 1e11
# the largest box coordinate taken, in pixels (50 times the widest camera sensor): a box beyond it
# is a detector's garbage, and from about 1e154 its area overflows, which put inf and NaN into the
# filter of the track it started (a state get_state wrote and set_state refused)
MAX_COORDINATE = 1e6


def checked_detections(boxes: Any, scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4) float64, scores (N,) float64 (at most 1), labels (N,) int64 (None: all 0) and which
    detections are usable (non-empty boxes with finite coordinates within MAX_COORDINATE, and
    finite scores; the others' box and score are zeros)."""
    if boxes is None or scores is None:
        raise EdgeFpnError("the tracker needs boxes (N,4) and scores (N,) for each frame; pass empty arrays for a frame with none")
    try:
        boxes = np.asarray(boxes, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.zeros(scores.shape, np.int64) if labels is None else np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise EdgeFpnError(f"tracker input is not numeric arrays ({exc}); pass boxes (N,4), scores (N,) and labels (N,)") from None
    if boxes.size == 0 and scores.size == 0:
        boxes = boxes.reshape(0, 4)
        scores = scores.reshape(0)
        labels = np.zeros((0,), np.int64)
    if scores.ndim != 1 or boxes.shape != (scores.shape[0], 4) or labels.shape != scores.shape:
        raise EdgeFpnError(f"tracker input shapes do not agree: boxes {boxes.shape}, scores {scores.shape}, "
                           f"labels {labels.shape}; expected (N, 4), (N,), (N,)")
    if labels.dtype.kind == "b":  # (a mask passed where the classes go: every box class 0 or 1)
        raise EdgeFpnError("tracker labels must be integer class indices, not bool; pass the detections' labels")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
            labels = labels.astype(np.int64)
        else:
            raise EdgeFpnError(f"tracker labels must be integers, not {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    # (NaN compares False and inf is beyond the bound: one test for finite and within it)
    usable = ((np.abs(boxes) <= MAX_COORDINATE).all(axis=1) & np.isfinite(scores)
              & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    # (a new array: the caller's scores are never written; NaN stays NaN; a score under 0 is under
    # low_threshold, never taken, and stays)
    scores = np.minimum(scores, 1.0)
    if np.count_nonzero(usable) < usable.size:
        boxes = np.where(usable[:, None], boxes, 0.0)
        scores = np.where(usable, scores, 0.0)
    return boxes, scores, labels, usable


def checked_timestamp(timestamp: Any) -> float:
    """A frame's timestamp as float seconds (whether it follows the last frame's is the tracker's check)."""
    if timestamp is None:
        raise EdgeFpnError("the tracker needs each frame's timestamp in seconds (e.g. the capture time)")
    try:
        if isinstance(timestamp, (str, bytes)):  # (float() would take "1.0": a caller's mix-up, not a time)
            raise TypeError
        now = float(timestamp)
    except (TypeError, ValueError):
        raise EdgeFpnError(f"timestamp {timestamp!r} is not a number of seconds") from None
    if not math.isfinite(now):
        raise EdgeFpnError(f"timestamp {timestamp!r} is not finite; give the frame's capture time in seconds")
    if abs(now) > MAX_TIMESTAMP:
        raise EdgeFpnError(f"timestamp {now:.4g} s is beyond {MAX_TIMESTAMP:.0e} s (3000 years): timestamps are seconds; "
                           "divide milliseconds by 1e3 and nanoseconds by 1e9")
    return now
