"""Motion costs of (track, detection) pairs for the association's stages d and e, and the lookahead.

Functions of the tracks' arrays (x (T, 8), P (T, 8, 8), turn memos (T, 6): see kalman.py) and of
the detections' boxes zd (D, 4: cx, cy, w, h). A cost is a squared distance in units where
``motion_gate`` is the edge of what may match.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .config import TIME_SLACK, TrackerConfig
from .geometry import box_size, sizes_apart
from .kalman import centre_distance, measurement_std


def size_mismatch(x: np.ndarray, zd: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    """(T, D) True where a track's box and a detection's differ in size (sqrt of area) by more than
    ``max_size_ratio``: never one object."""
    return sizes_apart(box_size(x), box_size(zd), cfg.max_size_ratio)


def motion_distances(x: np.ndarray, P: np.ndarray, turn: np.ndarray, elapsed: np.ndarray, zd: np.ndarray,
                     cfg: TrackerConfig, high: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Stage d's cost of each (track, detection centre): the squared Mahalanobis distance under
    the filter's own uncertainty, or less where the centre is within plain reach, plus a charge
    for a vague prediction. Plain reach is ``min_gate_size`` box sizes of the prediction (what
    the filter did not foresee) or ``turn_reach`` x the track's speed x the time since its last
    match (`elapsed`, (T,) seconds) of its last measured centre (an object that turned, or
    bounced, at its own speed: the filter's or its last chord's, the higher);
    plain reach is for `high` detections only (a low score far off the filter is clutter; None:
    every detection is high). Returns the (T, D) costs without the turn reach and with it (one
    computation for stage d's two passes)."""
    r = measurement_std(zd[None, :, 2:4], cfg)  # (1, D, 2)
    # innovation covariance of the centre, per (track, detection): P_cc + R (2x2, closed-form inverse)
    sxx = P[:, 0, 0][:, None] + r[..., 0] ** 2
    syy = P[:, 1, 1][:, None] + r[..., 1] ** 2
    sxy = P[:, 0, 1][:, None]
    dx = zd[None, :, 0] - x[:, 0][:, None]
    dy = zd[None, :, 1] - x[:, 1][:, None]
    mahalanobis, det = centre_distance(dx, dy, sxx, syy, sxy)
    size_t = box_size(x)[:, None]
    distance = mahalanobis
    if cfg.motion_spread_cost > 0:  # a vague prediction is weak evidence: a detection is then more likely a new object
        spread = 0.25 * np.log(det) - np.log(size_t)  # ln(centre std / box size)
        distance = distance + cfg.motion_spread_cost * np.maximum(spread, 0.0)
    # plain reach is not charged: it is bounded by the box size or the track's own speed (charged,
    # a fast object missed for one frame at 10 FPS was lost for good)
    if cfg.min_gate_size > 0:
        # (floored: a min_gate_size of 1e-300, squared, is 0)
        gate = np.maximum((cfg.min_gate_size * size_t) ** 2, 1e-12)
        distance = np.minimum(distance, (dx * dx + dy * dy) / gate * cfg.motion_gate)
    by_filter = distance
    if cfg.turn_reach > 0:
        elapsed = elapsed[:, None]
        speed = np.maximum(np.hypot(x[:, 4], x[:, 5]), np.hypot(turn[:, 3], turn[:, 4]))[:, None]
        reach = np.where(elapsed <= cfg.turn_seconds + TIME_SLACK, cfg.turn_reach * speed * elapsed, 0.0)
        reach = np.maximum(reach, 1e-6)
        last = turn[:, 1:3]  # the last measured centre
        ex, ey = zd[None, :, 0] - last[:, 0][:, None], zd[None, :, 1] - last[:, 1][:, None]
        distance = np.minimum(distance, (ex * ex + ey * ey) / (reach * reach) * cfg.motion_gate)
    if high is not None:
        by_filter = np.where(high[None, :], by_filter, mahalanobis)
        distance = np.where(high[None, :], distance, mahalanobis)
    return by_filter, distance


def reid_distance(x: np.ndarray, turn: np.ndarray, centres: np.ndarray, elapsed: np.ndarray,
                  cfg: TrackerConfig) -> np.ndarray:
    """(T, D) squared distance of each centre from each track's last measured centre, in units
    of its reach: ``reid_reach`` x the track's speed x `elapsed` ((T, 1) or (T, D) seconds) plus
    ``min_gate_size`` box sizes; 1 is the edge of the reach (stage e and inheriting an ID)."""
    size_t = box_size(x)[:, None]
    reach = cfg.reid_reach * np.hypot(x[:, 4], x[:, 5])[:, None] * np.maximum(elapsed, 0.0) + cfg.min_gate_size * size_t
    reach = np.maximum(reach, 1e-6)  # (reid_reach and min_gate_size 0, or a still track: no reach, not a division by 0)
    last = turn[:, 1:3]  # the last measured centre
    ex, ey = centres[None, :, 0] - last[:, 0][:, None], centres[None, :, 1] - last[:, 1][:, None]
    return (ex * ex + ey * ey) / (reach * reach)
