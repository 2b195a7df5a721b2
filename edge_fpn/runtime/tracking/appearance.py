"""What an object looks like, cheaply: a colour histogram of each detection's box, from the frame.

A box's histogram is taken from an 8 x 8 grid of its pixels, the 52 inside the box's inscribed
ellipse (every box at once: one gather and one bincount, no loop over boxes), each pixel's colour
in 4 x 4 x 4 levels of B, G and R (64 bins). Two histograms' intersection (the mass they share,
0-1) says how alike two boxes look: on the synthetic scenes (seeds 4-6, 10 FPS, ground-truth
boxes), the same object one frame later shares 0.92-1.00 at the median (0.62-0.85 at the 5th
percentile), another object of its class in the frame 0.00-0.19 at the median (0.19-0.54 at the
95th: "cross" pairs overlap); with all 64 cells 0.88-0.95 (0.56-0.80) and 0.02-0.25 (0.31-0.55):
a box's corners are its background's. The tracker uses it as a veto, never as a reason:
a motion match, or a lost track's IoU match (not that of a track seen in the last frame: a change
of light changes every box at once), whose boxes share less than ``appearance_veto`` is refused (a
false positive or another object of the class where the track was expected); boxes that look
alike are left to the motion rules. Hand-written because the runtime takes no re-ID network
and OpenCV's calcHist takes one region at a time.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import EdgeFpnError

GRID = 8  # samples a side of each box
LEVELS = 4  # levels of each colour channel
BINS = LEVELS ** 3
_CELLS = (np.arange(GRID) + 0.5) / GRID  # the cell centres, as a share of the box's side
# the cells inside the box's inscribed ellipse (52 of 64): the corners are the background's for a
# round or pointed object, and two objects of a class passing one spot share it (on noisy "occlude"
# at 10 FPS an object coming out of the occluder shared 0.58 of its box's colours with another
# that had just gone in there, 0.32 with its own track's, learned on the far side)
_ROWS, _COLS = (((_CELLS[:, None] - 0.5) ** 2 + (_CELLS[None, :] - 0.5) ** 2) <= 0.25).nonzero()
SAMPLES = int(_ROWS.shape[0])
_LEVEL_SHIFT = 6  # a channel's level: its value >> 6 (256 // LEVELS == 64); below 64, so the bin fits in uint8


def colour_histograms(image: Any, boxes: np.ndarray) -> np.ndarray:
    """(N, BINS) histograms (each sums to 1; all zeros for a box that is not finite) of `boxes`
    (N, 4 xyxy pixels) in `image` (H, W, 3 uint8, BGR), sampled on a GRID x GRID grid of cell centres."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or not (image.shape[0] and image.shape[1]):
        raise EdgeFpnError(f"the tracker's image must be the H x W x 3 uint8 frame the boxes came from (BGR, as OpenCV "
                           f"reads it), not {image.dtype} of shape {image.shape}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    every = np.count_nonzero(finite) == finite.size  # (most frames: no mask to apply, nothing to scatter back)
    b = boxes if every else boxes[finite]
    n = b.shape[0]
    if not n:
        return np.zeros((boxes.shape[0], BINS))
    corner = b[:, :2, None]
    points = corner + _CELLS * (b[:, 2:, None] - corner)  # (D, 2, GRID): x then y of the cells' centres
    height, width = image.shape[:2]
    np.clip(points, 0, [[width - 1], [height - 1]], out=points)
    points = points.astype(np.intp)
    # only the cells inside the ellipse are read (y from a cell's row, x from its column)
    levels = image[points[:, 1, _ROWS], points[:, 0, _COLS]] >> _LEVEL_SHIFT  # (D, SAMPLES, 3), uint8
    bins = ((levels[..., 0] * LEVELS + levels[..., 1]) * LEVELS + levels[..., 2]).astype(np.intp)
    if n > 1:
        bins += np.arange(n)[:, None] * BINS  # (each box its own BINS: one bincount for all)
    counts = np.bincount(bins.ravel(), minlength=n * BINS).reshape(n, BINS) / float(SAMPLES)
    if every:
        return counts
    out = np.zeros((boxes.shape[0], BINS))
    out[finite] = counts
    return out


def known(hists: np.ndarray) -> np.ndarray:
    """(N,) True where a histogram (N, BINS) was taken (all zeros: no frame was given then)."""
    return hists.sum(axis=-1) > 0


def shared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The mass two histograms share (their intersection, 0-1), over the last axis (broadcast)."""
    return np.minimum(a, b).sum(axis=-1)


def unlike(a: np.ndarray, b: np.ndarray, veto: float) -> np.ndarray:
    """(A, B) True where histograms of `a` (A, BINS) and `b` (B, BINS) share less than `veto` of their
    mass; False where either is unknown."""
    out = np.zeros((a.shape[0], b.shape[0]), bool)
    rows, cols = known(a).nonzero()[0], known(b).nonzero()[0]
    if rows.shape[0] and cols.shape[0]:  # (the known pairs only)
        out[rows[:, None], cols] = shared(a[rows][:, None, :], b[cols][None, :, :]) < veto
    return out


def still_in_sight(image: Any, boxes: np.ndarray, own: np.ndarray, cover: np.ndarray, share: float,
                   margin: float) -> np.ndarray:
    """(N,) True where the colours of `boxes` (N, 4 xyxy: lost tracks' predicted boxes, each inside
    another track's box) in `image` share at least `share` with their own tracks' histograms `own`
    (N, BINS) and `margin` more than with those of the tracks covering them, `cover` (N, BINS): the
    object is in front, only missed by the detector, not behind. False where `own` is unknown."""
    out = np.zeros(boxes.shape[0], bool)
    rows = known(own).nonzero()[0]
    if rows.shape[0]:
        sampled = colour_histograms(image, boxes[rows])
        mine, theirs = shared(sampled, own[rows]), shared(sampled, cover[rows])
        out[rows] = (mine >= share) & (mine >= theirs + margin)
    return out
