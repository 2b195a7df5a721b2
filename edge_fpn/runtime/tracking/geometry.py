"""Box geometry for the tracker: IoU and cover matrices, xyxy <-> (cx, cy, w, h), a frame's size."""
from __future__ import annotations

import math
from typing import Any, Tuple

import numpy as np

from ...errors import EdgeFpnError


def intersections(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, M) intersection areas of the boxes of `a` (N,4 xyxy) and `b` (M,4), and their areas."""
    at, bt = np.asarray(a, np.float64).T, np.asarray(b, np.float64).T
    area_a = (at[2] - at[0]) * (at[3] - at[1])
    area_b = (bt[2] - bt[0]) * (bt[3] - bt[1])
    # (in place where it can be: on the tracker's per-frame path with 50 x 50 boxes each temporary counts)
    w = np.minimum(at[2][:, None], bt[2])
    w -= np.maximum(at[0][:, None], bt[0])
    h = np.minimum(at[3][:, None], bt[3])
    h -= np.maximum(at[1][:, None], bt[1])
    np.maximum(w, 0.0, out=w)
    np.maximum(h, 0.0, out=h)
    w *= h
    return w, area_a, area_b


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N,4 xyxy) with every box of `b` (M,4)."""
    inter, area_a, area_b = intersections(a, b)
    union = area_a[:, None] + area_b
    union -= inter
    np.maximum(union, 1e-9, out=union)
    inter /= union
    return inter


def cover_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The share of every box of `a` (N,4 xyxy) that lies inside every box of `b` (M,4)."""
    inter, area_a, _ = intersections(a, b)
    return inter / np.maximum(area_a[:, None], 1e-9)


# a lost track's predicted box poking out of the frame through an edge it moves towards, with less
# than this share of it inside, is an object leaving: an object is gone from view (and from the
# ground truth) once under half of it shows, while its track, measured cut by the edge as it went,
# is predicted smaller than the object and still mostly inside (on the "exit" scene, noisy ground
# truth, 427 of the 455 coasted boxes that covered no object were at an edge)
LEAVING_COVER = 0.9


def out_of_frame(boxes: np.ndarray, velocities: np.ndarray, width: float, height: float) -> np.ndarray:
    """(N,) True where an xyxy box (N, 4) is more than half out of a `width` x `height` frame, or
    pokes out of it (under LEAVING_COVER inside) through an edge its velocity (N, 2: pixels per
    second) points out of."""
    inside = cover_matrix(boxes, np.array([[0.0, 0.0, width, height]]))[:, 0]
    vx, vy = velocities[:, 0], velocities[:, 1]
    outward = (((boxes[:, 0] < 0) & (vx < 0)) | ((boxes[:, 2] > width) & (vx > 0))
               | ((boxes[:, 1] < 0) & (vy < 0)) | ((boxes[:, 3] > height) & (vy > 0)))
    return (inside < 0.5) | ((inside < LEAVING_COVER) & outward)


def checked_frame_size(frame_size: Any) -> Tuple[float, float]:
    """(width, height) as two positive finite floats, or one sentence saying what is wrong."""
    try:
        width, height = (float(v) for v in frame_size)
    except (TypeError, ValueError):
        raise EdgeFpnError(f"frame_size must be (width, height) in pixels, not {frame_size!r}") from None
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise EdgeFpnError(f"frame_size must be two positive numbers of pixels, not {frame_size!r}")
    return width, height


def box_size(boxes: np.ndarray) -> np.ndarray:
    """sqrt(w h) of (N, >= 4) cx, cy, w, h rows, at least 1 (the unit of the tracker's reaches)."""
    return np.sqrt(np.maximum(boxes[:, 2] * boxes[:, 3], 1.0))


def sizes_apart(sizes_a: np.ndarray, sizes_b: np.ndarray, max_ratio: float) -> np.ndarray:
    """(A, B) True where box sizes (box_size) of `sizes_a` (A,) and `sizes_b` (B,) differ by more
    than `max_ratio` either way: never one object."""
    a, b = sizes_a[:, None], sizes_b[None, :]
    return np.maximum(a / b, b / a) > max_ratio


def to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy boxes as centre, width and height: the filter's measurement."""
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:4]) * 0.5, boxes[:, 2:4] - boxes[:, :2]], axis=1)


def to_xyxy(state: np.ndarray) -> np.ndarray:
    """The (cx, cy, w, h) of filter states (N, >= 4) as xyxy boxes, at least 1e-3 px wide and high."""
    half = np.maximum(state[:, 2:4], 1e-3) * 0.5
    return np.concatenate([state[:, :2] - half, state[:, :2] + half], axis=1)
