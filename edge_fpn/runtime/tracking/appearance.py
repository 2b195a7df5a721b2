"""What an object looks like, cheaply: a colour histogram of each detection's box, from the frame.

A box's histogram is taken from an 8 x 8 grid of its pixels, the 52 inside the box's inscribed
ellipse (every box at once: one gather and one bincount, no loop over boxes), each pixel's colour
in 4 x 4 x 4 levels of B, G and R (64 bins), less the colours of its background: those that a ring
of 32 samples around the box shows as much as the box does (colour_histograms). Two histograms'
intersection (the mass they share, 0-1) says how alike two boxes look: on the synthetic scenes
(seeds 4-6, 10 FPS, ground-truth boxes), the same object one frame later shares 0.97-1.00 at the
median (0.64-0.85 at the 5th percentile), another object of its class in the frame 0.00 at the
median (0.06-0.40 at the 95th: "cross" pairs overlap); with the background's colours left in
0.92-1.00 (0.62-0.85) and 0.00-0.19 (0.19-0.54), and with all 64 cells of the grid 0.88-0.95
(0.56-0.80) and 0.02-0.25 (0.31-0.55). The tracker uses it as a veto, never as a reason:
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
# the ring around a box, RING_MARGIN of its size out (8 samples a side, 32): what is behind the
# object there. 0.35, not nearer: a box 2 px short of a 22 px object put a nearer ring on the
# object itself
RING_MARGIN = 0.35
_NEAR, _FAR = np.full(GRID, -RING_MARGIN), np.full(GRID, 1.0 + RING_MARGIN)
RING = 4 * GRID
# every sample of a box as a share of its width (row 0) and height (row 1) from its top-left
# corner: SAMPLES inside the ellipse, then the RING (left, right, top and bottom sides, each at
# the cell centres along it)
_SAMPLE_XY = np.stack([np.concatenate([_CELLS[_COLS], _NEAR, _FAR, _CELLS, _CELLS]),
                       np.concatenate([_CELLS[_ROWS], _CELLS, _CELLS, _NEAR, _FAR])])
_IN_RING = (np.arange(SAMPLES + RING) >= SAMPLES).astype(np.intp)
_CHANNEL_WEIGHTS = np.array([LEVELS * LEVELS, LEVELS, 1])  # a pixel's bin from its B, G and R levels
BACKGROUND_SHARE = 0.1  # a colour on this much of the ring, and on as much of it as of the box, is the background's ...
MIN_OBJECT_SHARE = 0.2  # ... unless that leaves less than this of the box: then the box's colours are kept whole
_LEVEL_SHIFT = 6  # a channel's level: its value >> 6 (256 // LEVELS == 64); below 64, so the bin fits in uint8


def colour_histograms(image: Any, boxes: np.ndarray) -> np.ndarray:
    """(N, BINS) histograms (each sums to 1; all zeros for a box that is not finite) of the objects
    in `boxes` (N, 4 xyxy pixels) in `image` (H, W, 3 uint8, BGR): each box's colours sampled in its
    inscribed ellipse, less its background's.

    The background is what a ring around the box shows (RING samples, those inside the frame): a
    colour on at least BACKGROUND_SHARE of the ring and on as much of the ring as of the box is
    taken out (Comaniciu, Ramesh and Meer's background-weighted histogram, 2003, cut to 0 or 1),
    unless less than MIN_OBJECT_SHARE of the box would be left (an object the colour of what is
    behind it keeps its box's colours). What the ellipse still holds of the background (a ring's
    hole, a star's points, an occluder behind a partial view) would otherwise make two objects of
    a class that pass one spot look alike: on noisy ground truth at 10 FPS (fresh seeds 300-339)
    mean IDF1 0.902 -> 0.906 and ID switches 0.89 -> 0.70 a sequence; a colour on more of the box
    than of the ring is the object's, seen past its box (a partial view's box is short of it)."""
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
    height, width = image.shape[:2]
    corner = b[:, :2, None]
    points = corner + _SAMPLE_XY * (b[:, 2:, None] - corner)  # (D, 2, SAMPLES + RING): x then y
    # the box's samples off the frame are read on its edge; the ring's count for nothing
    clipped = np.minimum(np.maximum(points, 0.0), np.array([[width - 1.0], [height - 1.0]]))
    moved = clipped[:, :, SAMPLES:] != points[:, :, SAMPLES:]
    ring_out = moved[:, 0] | moved[:, 1]  # (D, RING)
    xy = clipped.astype(np.intp)
    if image.flags.c_contiguous:  # (one take from the flat frame: a quarter of the time of image[y, x])
        levels = image.reshape(-1, 3).take(xy[:, 1] * width + xy[:, 0], axis=0) >> _LEVEL_SHIFT
    else:
        levels = image[xy[:, 1], xy[:, 0]] >> _LEVEL_SHIFT  # (D, SAMPLES + RING, 3), uint8
    bins = levels.astype(np.intp) @ _CHANNEL_WEIGHTS
    # one bincount for all: box d's colours in bins [d BINS, (d+1) BINS), its ring's from n BINS
    # on, the ring's samples off the frame in one bin past them all
    bins += np.arange(n)[:, None] * BINS + _IN_RING * (n * BINS)
    bins[:, SAMPLES:][ring_out] = 2 * n * BINS
    inside, ring = np.bincount(bins.ravel(), minlength=2 * n * BINS + 1)[:2 * n * BINS].reshape(2, n, BINS)
    seen = RING - ring_out.sum(axis=1, keepdims=True)  # (in counts: ring / seen >= inside / SAMPLES, exactly)
    background = ring * SAMPLES >= seen * np.maximum(inside, BACKGROUND_SHARE * SAMPLES)  # (both at once)
    kept = np.where(background, 0, inside)
    hists = np.where(kept.sum(axis=1, keepdims=True) >= MIN_OBJECT_SHARE * SAMPLES, kept, inside)
    hists = hists / hists.sum(axis=1, keepdims=True)  # (SAMPLES, or what is kept: at least a fifth of them)
    if every:
        return hists
    out = np.zeros((boxes.shape[0], BINS))
    out[finite] = hists
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
