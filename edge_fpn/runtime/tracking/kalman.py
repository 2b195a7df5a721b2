"""The tracker's motion model: a Kalman filter on (cx, cy, w, h) and their velocities, on timestamps.

Functions on arrays of tracks (one row a track): a state x (N, 8), its covariance P (N, 8, 8), each
track's manoeuvre factor q (N,) and its turn memo (N, 6: turn rate in rad/s, last measured centre,
last chord velocity and that chord's time span). Noise scales with the box size, so one config
fits small and large objects. Hand-written because the runtime takes no filterpy, and a batch of
tracks is a fixed number of numpy operations rather than a Python loop over filters.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .config import TrackerConfig


_WHWH = np.array([0, 1, 0, 1])
_CENTRE = np.array([True, True, False, False])


def initial_state(z: np.ndarray, cfg: TrackerConfig) -> Tuple[np.ndarray, np.ndarray]:
    """New tracks' x and P from their first boxes z (cx, cy, w, h): still, with a velocity
    uncertain by ``initial_velocity`` box sizes per second."""
    n = z.shape[0]
    x = np.zeros((n, 8))
    x[:, :4] = z
    w, h = np.maximum(z[:, 2], 1.0), np.maximum(z[:, 3], 1.0)
    std = np.stack([2 * cfg.measurement_noise * w, 2 * cfg.measurement_noise * h,
                    2 * cfg.measurement_noise * w, 2 * cfg.measurement_noise * h,
                    cfg.initial_velocity * w, cfg.initial_velocity * h,
                    cfg.initial_size_velocity * w, cfg.initial_size_velocity * h], axis=1)
    P = np.zeros((n, 8, 8))
    P[:, np.arange(8), np.arange(8)] = std * std
    return x, P


def predict(x: np.ndarray, P: np.ndarray, q: np.ndarray, turn: np.ndarray, dt: float, cfg: TrackerConfig) -> None:
    """x <- F x, P <- F P F' + Q for a step of dt seconds, in place (constant velocity, or a
    coordinated turn for tracks with a turn rate; white-noise acceleration plus a position random
    walk, both scaled by each track's box size, the acceleration also by its manoeuvre factor q)."""
    if dt <= 0.0:
        return
    F = _transition(turn[:, 0], dt)
    x[:] = (F @ x[:, :, None])[:, :, 0]
    P[:] = F @ P @ F.transpose(0, 2, 1)
    np.maximum(x[:, 2:4], 1.0, out=x[:, 2:4])
    size2 = x[:, 2:4] * x[:, 2:4]
    scale2 = size2[:, _WHWH]  # (N, 4): w, h, w, h, squared
    # the acceleration noise of the centre (x each track's manoeuvre factor) and of the size
    noise = scale2 * np.where(_CENTRE, cfg.acceleration_noise * q[:, None], cfg.size_acceleration_noise)
    # Q's four diagonals (position, position-velocity twice, velocity), each a strided view of the
    # flat P (every 9th entry of an 8 x 8 is on a diagonal; a fancy-index scatter costs more)
    flat = P.reshape(x.shape[0], 64)  # (a view of a C-ordered P, as the table's is)
    flat[:, 0:28:9] += noise * (dt ** 3 / 3.0) + cfg.position_noise * dt * scale2
    cross = noise * (dt * dt / 2.0)
    flat[:, 4:32:9] += cross
    flat[:, 32:64:9] += cross
    flat[:, 36:64:9] += noise * dt
    if not P.flags.c_contiguous:  # (then reshape made a copy: put it back)
        P[:] = flat.reshape(P.shape)


# where a turn's entries go in F: the centre's along and across the velocity (twice each) and the
# velocity's rotation
_TURN_ROWS = np.array([0, 1, 1, 0, 4, 5, 5, 4])
_TURN_COLS = np.array([4, 5, 4, 5, 4, 5, 4, 5])
_EYE, _VELOCITY = np.eye(8), np.eye(8, k=4)  # F = _EYE + dt _VELOCITY: constant velocity


def _transition(rate: np.ndarray, dt: float) -> np.ndarray:
    """Each track's F (N, 8, 8) for a step of dt seconds: constant velocity, or a coordinated turn
    where the track has a turn rate (rad/s: the velocity rotates by rate dt and the centre moves
    along the arc). One batched F P F' for every track costs half of a straight pass by blocks plus
    a turning one."""
    F = np.empty((rate.shape[0], 8, 8))
    F[:] = _EYE + dt * _VELOCITY  # (not np.broadcast_to(...).copy(): its Python wrapper costs six times as much)
    turning = (rate != 0.0).nonzero()[0]
    if turning.shape[0]:
        w = rate[turning]
        c, s = np.cos(w * dt), np.sin(w * dt)
        along, across = s / w, (1.0 - c) / w
        F[turning[:, None], _TURN_ROWS, _TURN_COLS] = np.stack([along, along, across, -across, c, c, s, -s], axis=1)
    return F


def learn_turn(memo: np.ndarray, last_seen: np.ndarray, z: np.ndarray, now: float, cfg: TrackerConfig) -> np.ndarray:
    """The turn memos `memo` (K, 6; updated in place and returned: the caller's rows, gathered, or
    the table's own when every track takes a box) of tracks last matched at `last_seen` that take
    boxes z now: each match's chord (from the last measured centre to this one) against the one
    before; the angle between them over the time between their midpoints is a measured turn rate,
    which the track's rate follows (``turn_gain``). Short chords (jitter) teach nothing; an angle
    over ``max_turn_angle`` beyond what the rate foresees is a bounce, and the rate goes back to 0."""
    span = np.maximum(now - last_seen, 1e-9)
    chord = (z[:, :2] - memo[:, 1:3]) / span[:, None]
    size = np.sqrt(np.maximum(z[:, 2] * z[:, 3], 1.0))
    usable = np.hypot(chord[:, 0], chord[:, 1]) * span >= cfg.min_turn_chord * size
    chorded = memo[:, 5] > 0  # (a chord before this one)
    memo[:, 1:3] = z[:, :2]
    if not np.count_nonzero(usable):  # (at 30 FPS most frames: every chord jitter-short, nothing to learn)
        memo[:, 5] = np.where(chorded, memo[:, 5] + span, 0.0)
        return memo
    known = usable & chorded
    if np.count_nonzero(known):
        before = memo[:, 3:5]
        angle = np.arctan2(before[:, 0] * chord[:, 1] - before[:, 1] * chord[:, 0], (before * chord).sum(axis=1))
        between = np.maximum(0.5 * (span + memo[:, 5]), 1e-9)
        rate = angle / between
        turn = np.where(known, memo[:, 0] + cfg.turn_gain * (rate - memo[:, 0]), memo[:, 0])
        # a bounce turns more than the track's own rate foresees over the time between the chords
        # (a circling object seen after a missed frame at 10 FPS turns past max_turn_angle by its rate)
        surprise = np.abs(np.remainder(angle - memo[:, 0] * between + np.pi, 2 * np.pi) - np.pi)  # (wrapped to [-pi, pi))
        turn = np.where(known & (surprise > cfg.max_turn_angle), 0.0, turn)
        memo[:, 0] = np.where(np.abs(turn) < 1e-3, 0.0, turn)
    memo[:, 3:5] = np.where(usable[:, None], chord, memo[:, 3:5])
    memo[:, 5] = np.where(usable, span, np.where(chorded, memo[:, 5] + span, 0.0))
    return memo


def measurement_std(sizes: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    """Std of a measured coordinate: a share of the box size."""
    return cfg.measurement_noise * np.maximum(sizes, 1.0)


def centre_distance(dx: np.ndarray, dy: np.ndarray, sxx: np.ndarray, syy: np.ndarray,
                    sxy: np.ndarray, det: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The squared Mahalanobis distance of centre offsets (dx, dy) under the 2x2 covariance
    [[sxx, sxy], [sxy, syy]] (its closed-form inverse), and that covariance's determinant, floored
    at 1e-12 (the filter's surprise and stage d's costs; `det`: that, where the caller has it)."""
    if det is None:
        det = np.maximum(sxx * syy - sxy * sxy, 1e-12)
    return (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det, det


def _manoeuvre(q: np.ndarray, innovation: np.ndarray, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray,
               det: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    """Each track's acceleration noise follows its own surprises: the centre's normalized
    innovation (chi-square, 2 degrees of freedom: 2 on average when the filter is right; S's centre
    block is [[sxx, sxy], [sxy, syy]], `det` its determinant floored at 1e-12) scales it up for a
    track that turns or bounces and down again for one that moves smoothly, between 1 and
    max_manoeuvre times acceleration_noise (an adaptive filter: a fast circling object gets the
    wide gate it needs, a slow one keeps a tight gate that clutter cannot get into)."""
    nis, _ = centre_distance(innovation[:, 0], innovation[:, 1], sxx, syy, sxy, det)
    factor = (nis / 2.0).clip(0.1, 10.0) ** cfg.manoeuvre  # (the method: np.clip's wrapper costs as much again)
    return (q * factor).clip(1.0, cfg.max_manoeuvre)


def correct(x: np.ndarray, P: np.ndarray, q: np.ndarray, z: np.ndarray,
            cfg: TrackerConfig) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Kalman update of tracks (x, P, manoeuvre factors q) with measured boxes z (cx, cy, w, h):
    their new x, P and q."""
    # S = H P H' + R inverted by its blocks: the filter never couples a box's centre with its size
    # (F, Q and the turn act within (cx, cy, vx, vy), (w, vw) and (h, vh)), so S is a 2x2 centre
    # block and two sizes (a 2x2 and two divisions cost half of a batched 4x4 solve)
    r2 = measurement_std(z[:, 2:4], cfg) ** 2
    sxx, syy, sxy = P[:, 0, 0] + r2[:, 0], P[:, 1, 1] + r2[:, 1], P[:, 0, 1]
    det = sxx * syy - sxy * sxy
    s_inv = np.zeros((x.shape[0], 4, 4))
    s_inv[:, 0, 0] = syy / det
    s_inv[:, 1, 1] = sxx / det
    s_inv[:, 0, 1] = s_inv[:, 1, 0] = -sxy / det
    s_inv[:, 2, 2] = 1.0 / (P[:, 2, 2] + r2[:, 0])
    s_inv[:, 3, 3] = 1.0 / (P[:, 3, 3] + r2[:, 1])
    HP = P[:, :4, :]  # (K, 4, 8); P is symmetric, so P H' is its transpose
    gain = HP.transpose(0, 2, 1) @ s_inv  # K = P H' S^-1
    innovation = z - x[:, :4]
    if cfg.manoeuvre > 0:
        q = _manoeuvre(q, innovation[:, :2], sxx, syy, sxy, np.maximum(det, 1e-12), cfg)
    x = x + (gain @ innovation[:, :, None])[:, :, 0]
    P = P - gain @ HP
    np.maximum(x[:, 2:4], 1.0, out=x[:, 2:4])
    return x, 0.5 * (P + P.transpose(0, 2, 1)), q
