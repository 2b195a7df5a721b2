"""The tracks as arrays, a row a track (``TrackTable``, the Tracker's base): the table's fields,
rows added and dropped, every row predicted at once, and matched rows taking their boxes.

Each matched track's filter then takes its box, made whole if it is a partial view
(``partial_ratio``, ``partial_edge``: much narrower or shorter than predicted, with the other
edge where the prediction put it; an object sliding behind another or out of the frame), so that
the side it still shows does not drag its centre and velocity; its size is held while it is cut,
for at most ``partial_seconds`` on end.

So a frame costs a fixed number of numpy operations, not a Python loop over boxes.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from .appearance import BINS, known
from .config import TIME_SLACK, TrackerConfig
from .geometry import cover_matrix, to_xyxy
from .kalman import correct, initial_state, learn_turn, predict

# a track's fields, each an array with a row a track (``_x``, ``_P``, ...): what get_state saves
TRACK_FIELDS = ("x", "P", "q", "turn", "born", "label", "score", "ids", "hits", "last_seen", "lost", "hist", "cut", "flip")
# added to the state after its first version (float arrays, a row each, of these trailing shapes): zeros where an
# older state lacks them
ADDED_FIELDS = {"hist": (BINS,), "cut": (2,), "flip": ()}
MOTION_FIELDS = ("x", "P", "q", "turn", "last_seen", "lost")  # what the other way of an ambiguity changes


class TrackTable:
    """The tracks' arrays and what every stage does to rows of them (the Tracker builds on it)."""

    config: TrackerConfig
    _time: Optional[float]

    def _clear(self) -> None:
        self._x = np.zeros((0, 8))
        self._P = np.zeros((0, 8, 8))
        self._label = np.zeros((0,), np.int64)
        self._q = np.zeros((0,))
        self._turn = np.zeros((0, 6))  # turn rate (rad/s), last measured centre, last chord velocity and its time span
        self._born = np.zeros((0, 3))  # the time and centre of a track's first detection
        self._score = np.zeros((0,))
        self._ids = np.zeros((0,), np.int64)
        self._hits = np.zeros((0,), np.int64)
        self._last_seen = np.zeros((0,))
        self._lost = np.zeros((0,), bool)
        self._hist = np.zeros((0, BINS))  # colour histograms (appearance.py); zeros: never seen in a frame
        self._cut = np.zeros((0, 2))  # seconds each axis's box has been read as a partial view on end (0: not)
        self._flip = np.zeros((0,))  # seconds a track has taken boxes of another class on end (stage f; 0: not)
        # which tracks are lost behind a seen one after the last frame, where update() had the frame's
        # colours to judge it (tracker.py); None: tracks() judges by the boxes alone when asked
        self._behind_rows: Optional[np.ndarray] = None

    def _take(self, keep: np.ndarray) -> None:
        """Only the tracks of the `keep` mask stay."""
        if np.count_nonzero(keep) == keep.size:  # (most frames: no track ends)
            return
        for name in TRACK_FIELDS:
            setattr(self, "_" + name, getattr(self, "_" + name)[keep])

    def _add(self, z: np.ndarray, scores: np.ndarray, labels: np.ndarray, ids: np.ndarray, now: float,
             hists: Optional[np.ndarray] = None) -> None:
        n = z.shape[0]
        x, P = initial_state(z, self.config)
        self._x = np.concatenate([self._x, x])
        self._P = np.concatenate([self._P, P])
        self._label = np.concatenate([self._label, labels])
        self._q = np.concatenate([self._q, np.ones(n)])
        self._turn = np.concatenate([self._turn, np.c_[np.zeros(n), z[:, :2], np.zeros((n, 3))]])
        self._born = np.concatenate([self._born, np.c_[np.full(n, now), z[:, :2]]])
        self._score = np.concatenate([self._score, scores])
        self._ids = np.concatenate([self._ids, ids])
        self._hits = np.concatenate([self._hits, np.ones(n, np.int64)])
        self._last_seen = np.concatenate([self._last_seen, np.full(n, now)])
        self._lost = np.concatenate([self._lost, np.zeros(n, bool)])
        self._hist = np.concatenate([self._hist, np.zeros((n, BINS)) if hists is None else hists])
        self._cut = np.concatenate([self._cut, np.zeros((n, 2))])
        self._flip = np.concatenate([self._flip, np.zeros(n)])

    def _predict(self, dt: float) -> None:
        """Every track predicted dt seconds on, in place."""
        predict(self._x, self._P, self._q, self._turn, dt, self.config)

    def _seen_within(self, seconds: float, rows: Any = slice(None)) -> np.ndarray:
        """Which tracks (of `rows`) were last matched at most `seconds` before this frame."""
        return self._time - self._last_seen[rows] <= seconds + TIME_SLACK

    def _hidden(self, rows: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Which tracks of `rows` are behind a track of the `seen` mask, by their boxes as they are now."""
        return self._behind(to_xyxy(self._x[rows, :4]), to_xyxy(self._x[seen, :4]))

    def _behind(self, boxes: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Which `boxes` (xyxy) are at least ``hidden_cover`` inside one of the `seen` boxes (xyxy)."""
        return self._covered_by(boxes, seen) >= 0

    def _covered_by(self, boxes: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """For each of `boxes` (xyxy), the index of the `seen` box (xyxy) it is most inside, where that
        is at least ``hidden_cover``; -1 where none is."""
        if self.config.hidden_cover <= 0 or not (boxes.shape[0] and seen.shape[0]):
            return np.full(boxes.shape[0], -1, np.intp)
        cover = cover_matrix(boxes, seen)
        best = cover.argmax(axis=1)
        return np.where(cover[np.arange(boxes.shape[0]), best] >= self.config.hidden_cover, best, -1)

    def _whole_boxes(self, rows: Union[np.ndarray, slice], z: np.ndarray, now: float) -> np.ndarray:
        """The measured boxes (cx, cy, w, h) with partial views made whole: where a confirmed-size
        track's box comes back narrower (or shorter) than ``partial_ratio`` x its predicted size while
        one of its two edges on that axis is within ``partial_edge`` x the size of where the prediction
        put it, the object is cut by an occluder or the frame's border on the other side, and the
        filter takes the box extended from the edge that agrees back to the predicted size. Without
        this, an object sliding behind another drags its centre and velocity towards the edge it still
        shows and is predicted off its path while hidden (half the ID losses behind an occluder).
        The track's size velocity on that axis is set to 0 (what is hidden keeps its size, as a lost
        box does): else the filter, fed its own predicted size, kept growing a box by the velocity it
        had, a frame's size rate a frame, to twice the object and more (12 tracks on the tuning seeds
        held a box 1.8x their detections' for 15 frames and more). A box read as cut for over
        ``partial_seconds`` on end is taken as it is: the object's size is what it shows (or the
        track took a wrong size once, from a detector's wide second box, and kept it as "whole")."""
        cfg = self.config
        if cfg.partial_edge <= 0 or cfg.partial_ratio <= 0:
            return z
        x = self._x[rows]
        sized = self._hits[rows] >= cfg.min_hits  # (a new track's size is its first box's)
        shrunk = sized[:, None] & (z[:, 2:4] < cfg.partial_ratio * x[:, 2:4])  # (K, 2): the only candidates
        if not np.count_nonzero(shrunk):  # (most frames: one check on the per-frame path)
            if np.count_nonzero(self._cut):
                self._cut[rows] = 0.0
            return z
        z = z.copy()
        if isinstance(rows, slice):  # (every track: x is a view, and the rows' numbers index the writes below)
            x, rows = x.copy(), np.arange(self._x.shape[0])
        step = now - self._last_seen[rows]
        cut = np.zeros((rows.shape[0], 2))
        for axis in shrunk.any(axis=0).nonzero()[0]:
            size, measured = x[:, 2 + axis], z[:, 2 + axis]
            low, high = x[:, axis] - size / 2, x[:, axis] + size / 2
            m_low, m_high = z[:, axis] - measured / 2, z[:, axis] + measured / 2
            low_cut = (m_low - low) > (high - m_high)  # the low edge moved in more: it is the cut one
            kept_off = np.where(low_cut, np.abs(m_high - high), np.abs(m_low - low))
            cut_for = self._cut[rows, axis] + step
            partial = (sized & (measured < cfg.partial_ratio * size) & (kept_off <= cfg.partial_edge * size)
                       & (cut_for <= cfg.partial_seconds + TIME_SLACK))
            if np.count_nonzero(partial):
                centre = np.where(low_cut, m_high - size / 2, m_low + size / 2)
                z[:, axis] = np.where(partial, centre, z[:, axis])
                z[:, 2 + axis] = np.where(partial, size, measured)
                self._x[rows[partial], 6 + axis] = 0.0
                cut[:, axis] = np.where(partial, cut_for, 0.0)
        self._cut[rows] = cut
        return z

    def _apply_matches(self, rows: np.ndarray, dets: np.ndarray, z: np.ndarray, scores: np.ndarray, now: float,
                       hists: Optional[np.ndarray] = None) -> None:
        """_apply of the tracks `rows` to the detections `dets` (rows of z, scores and hists): where
        every track takes one, in row order on the fields whole."""
        if rows.shape[0] == self._x.shape[0]:
            in_rows = np.empty_like(dets)
            in_rows[rows] = dets
            self._apply(slice(None), z[in_rows], scores[in_rows], now, None if hists is None else hists[in_rows])
        else:
            self._apply(rows, z[dets], scores[dets], now, None if hists is None else hists[dets])

    def _apply(self, rows: Union[np.ndarray, slice], z: np.ndarray, scores: np.ndarray, now: float,
               hists: Optional[np.ndarray] = None) -> None:
        """The matched tracks take their detections: the filter's update, a hit (a first-stage
        score only for a tentative track: clutter scoring low never confirms one), their score and,
        from a first-stage detection, its colours (``appearance_rate``: a running average). `rows`:
        the tracks' rows, or slice(None) with z, scores and hists in row order when every track
        takes one (most frames: the fields' views instead of a dozen gathers and scatters)."""
        cfg = self.config
        # the turn from the boxes as measured (before last_seen moves on): a partial view made whole
        # is a guess at the hidden edge, and a box jitter made short, read as cut, put its centre
        # 6 px off: a straight mover took a turn of 1.4 rad/s that bent its prediction out of the
        # frame while it was hidden (10 FPS, "occlude")
        whole = isinstance(rows, slice)
        turn = learn_turn(self._turn[rows], self._last_seen[rows], z, now, cfg)  # (whole: the table's own, in place)
        z = self._whole_boxes(rows, z, now)
        x, P, q = correct(self._x[rows], self._P[rows], self._q[rows], z, cfg)
        if whole:
            self._x, self._P, self._q = x, P, q
        else:
            self._turn[rows], self._x[rows], self._P[rows], self._q[rows] = turn, x, P, q
        hits = self._hits[rows] + ((self._ids[rows] >= 0) | (scores >= cfg.high_threshold))
        self._hits[rows] = hits
        self._last_seen[rows] = now
        self._lost[rows] = False
        if hists is not None:
            had = self._hist[rows]
            mixed = np.where(known(had)[:, None], (1.0 - cfg.appearance_rate) * had + cfg.appearance_rate * hists, hists)
            self._hist[rows] = np.where((scores >= cfg.high_threshold)[:, None], mixed, had)
        # the running score: the mean of the first 1/score_rate matches, then a running average
        score = self._score[rows]
        self._score[rows] = score + np.maximum(cfg.score_rate, 1.0 / np.maximum(hits, 1)) * (scores - score)
