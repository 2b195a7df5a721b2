"""The lookahead: a motion match that could have gone another way waits a frame for the next one's boxes.

A motion match (d, e) between confirmed tracks that could have gone another way (two tracks of
a class each within the other's gate, or the taker and a recently lost track of its class that
wanted the box about as much) waits a frame (``lookahead``): its IDs are -1 for this frame, and
the next frame's detections settle it, before they are associated: the other way is replayed
from the tracks' states before this frame, and if its predictions fit the new boxes better
(``lookahead_margin``) the tracks take its motion state. At 10 FPS two same-class objects passing
each other a box apart are a coin toss on one frame and plain on two.

A track lost for longer than ``reid_seconds`` that takes a box by motion alone is in doubt the same
way, its other way being that it stays lost; its ID is shown meanwhile (most such matches are an
object back from behind another). Its filter's gate has grown with the time lost, and a false
positive of its class inside it, seen once, took the track off its object for good; the next
frame's boxes fit the track that stayed lost better, and it goes back. (Tuning seeds: the model's
"hard" 0.859 -> 0.863 at 30 FPS, ID switches 6.8 -> 6.3, noisy "hard" with coasting 0.957 ->
0.961; at 10 FPS the model's "hard" 0.872 -> 0.870, nothing else by more than 0.0005.)
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from .assignment import linear_assignment
from .association import Association
from .table import MOTION_FIELDS, TRACK_FIELDS


class Ambiguity(NamedTuple):
    """Two confirmed tracks (by ID) whose motion matches this frame could have gone another way:
    their states before they took their boxes, and the other way (which box each would take, if any)."""
    ids: Tuple[int, int]
    before: Dict[str, np.ndarray]  # TRACK_FIELDS of the two tracks, predicted to `time`, not yet updated
    boxes: np.ndarray  # (2, 4) cx, cy, w, h: the box each track takes the other way
    scores: np.ndarray  # (2,)
    takes: np.ndarray  # (2,) bool: whether each track takes a box the other way (a lost track might)
    time: float


class Lookahead(Association):
    """Ambiguous motion matches remembered (``_pending``) and settled by the next frame."""

    _pending: List[Ambiguity]

    def _ambiguous(self, track_of_det: np.ndarray, matched_dets: np.ndarray, matched_track: np.ndarray, by_iou: np.ndarray,
                   z: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray, now: float,
                   hists: Optional[np.ndarray] = None) -> np.ndarray:
        """The detections whose motion match (stages d, e) between confirmed tracks could have gone
        another way, remembered in ``_pending`` for the next frame to settle (``_settle``); their IDs
        wait a frame. Another way is two tracks of a class each within the motion gate of the other's
        box (objects passing each other), or a box's taker and a track of its class lost at most
        ``reid_seconds`` whose cost for that box is within ``lookahead_reach`` of the taker's. On one
        frame both are a coin toss at low frame rates; on two, one way's predictions fit and the
        other's do not. A way the appearance veto refuses (a box that looks nothing like the other
        track) is no other way. A track lost beyond ``reid_seconds`` that took its box by motion is in
        doubt the same way, without waiting: the other way is its staying lost. Returns the detections
        whose IDs wait."""
        cfg = self.config
        if not np.count_nonzero(matched_track & ~by_iou):  # (most frames: every match by IoU)
            return np.zeros((0,), np.int64)
        rows = track_of_det[matched_dets]
        moved = (self._ids[rows] >= 0) & ~by_iou[rows]
        dets, rows = matched_dets[moved], rows[moved]
        if not rows.shape[0]:
            return np.zeros((0,), np.int64)
        cost = self._motion_distance(rows, z[dets])  # (taker, box)
        confirmed = self._ids >= 0  # (a box that looks like its taker far more than like another track is no other way)
        cost[self._refused(rows, dets, det_labels, hists, confirmed)] = np.inf
        waiting: List[int] = []
        paired = np.zeros(rows.shape[0], bool)
        swappable = ((det_labels[dets][:, None] == det_labels[dets][None, :]) & (cost < cfg.motion_gate)
                     & (cost.T < cfg.motion_gate))
        for a, b in zip(*np.nonzero(np.triu(swappable, 1))):
            if not (paired[a] or paired[b]):
                paired[a] = paired[b] = True
                self._remember(rows[[a, b]], z[dets[[b, a]]], det_scores[dets[[b, a]]], np.array([True, True]), now)
                waiting += [int(dets[a]), int(dets[b])]
        lost = ((self._ids >= 0) & ~matched_track & self._seen_within(cfg.reid_seconds)
                 & (self._score >= cfg.confirm_score)).nonzero()[0]
        alone = (~paired).nonzero()[0]
        if lost.shape[0] and alone.shape[0]:
            other = self._motion_distance(lost, z[dets[alone]])  # (lost, box)
            other[self._refused(lost, dets[alone], det_labels, hists, confirmed)] = np.inf
            other[(self._label[lost][:, None] != det_labels[dets[alone]][None, :])
                  | (other > cost[alone, alone][None, :] + cfg.lookahead_reach) | ~(other < cfg.motion_gate)] = np.inf
            used = np.zeros(lost.shape[0], bool)
            for f, k in zip(*np.nonzero(np.isfinite(other))):
                if not (used[f] or paired[alone[k]]):
                    used[f] = paired[alone[k]] = True
                    d = dets[alone[k]]
                    self._remember(np.array([rows[alone[k]], lost[f]]), z[[d, d]], det_scores[[d, d]],
                                   np.array([False, True]), now)
                    waiting.append(int(d))
        # a track lost beyond reid_seconds that took a box by motion alone (its filter's gate grown wide)
        # is in doubt too: the other way is its not taking the box, and the next frame settles it. Its
        # ID is shown meanwhile: an object back from behind another is most such matches, while a false
        # positive inside the gate is seen once (a track lost 1 s behind the occluder took one 300 px
        # from where its object came out, and the object got a new ID)
        doubtful = ~paired & self._lost[rows] & ~self._seen_within(cfg.reid_seconds, rows)
        for k in doubtful.nonzero()[0]:
            # (an ambiguity of the track with itself: both of its rows take the box one way, neither the other)
            self._remember(rows[[k, k]], z[dets[[k, k]]], det_scores[dets[[k, k]]], np.array([False, False]), now)
        return np.asarray(waiting, np.int64)

    def _remember(self, rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray, takes: np.ndarray, now: float) -> None:
        before = {name: getattr(self, "_" + name)[rows].copy() for name in TRACK_FIELDS}
        self._pending.append(Ambiguity((int(self._ids[rows[0]]), int(self._ids[rows[1]])), before, boxes.copy(),
                                        scores.copy(), takes, now))

    def _settle(self, z: np.ndarray, det_labels: np.ndarray, now: float) -> None:
        """Last frame's ambiguities, settled by this frame's detections (before the association):
        each one's other way is replayed from the two tracks' states before that frame and predicted
        to now; if its predictions fit this frame's boxes of their class better, by ``lookahead_margin``
        (an optimal assignment's cost, a box missed costing the gate), the two tracks take its motion
        state: each follows the box it should have taken. IDs stay with their tracks. A long-lost
        track's doubt is the track twice, taking its box one way and nothing the other."""
        cfg = self.config
        for ambiguity in self._pending:
            rows = [(self._ids == track_id).nonzero()[0] for track_id in ambiguity.ids]
            if not (rows[0].shape[0] and rows[1].shape[0]):
                continue  # (a track ended)
            rows = np.array([rows[0][0], rows[1][0]])
            boxes = (det_labels == self._label[rows[0]]).nonzero()[0]
            # (the other way is replayed on a bare table of the two tracks: no __init__ runs, neither a
            # Tracker's nor a subclass's own, and nothing is imported at run time, so a second copy of
            # the package loaded beside this one, as benchmarks/tracker_ab.py does, is never mixed in)
            other = Lookahead.__new__(Lookahead)
            other.config = cfg
            for name in TRACK_FIELDS:
                setattr(other, "_" + name, ambiguity.before[name].copy())
            other._time = ambiguity.time
            taking = ambiguity.takes.nonzero()[0]
            other._apply(taking, ambiguity.boxes[taking], ambiguity.scores[taking], ambiguity.time)
            other._lost = ~ambiguity.takes
            other._predict(now - ambiguity.time)
            other._time = now
            if other._fit(np.arange(2), z[boxes]) + cfg.lookahead_margin < self._fit(rows, z[boxes]):
                for name in MOTION_FIELDS:
                    getattr(self, "_" + name)[rows] = getattr(other, "_" + name)
        self._pending = []

    def _fit(self, rows: np.ndarray, boxes: np.ndarray) -> float:
        """How well the predictions of `rows` fit `boxes` (cx, cy, w, h): the cost of their optimal
        assignment by motion distance, each track left without a box costing the gate."""
        gate = self.config.motion_gate
        if not boxes.shape[0]:
            return gate * rows.shape[0]
        cost = self._motion_distance(rows, boxes)
        matched_rows, matched_cols = linear_assignment(cost, gate)
        return float(cost[matched_rows, matched_cols].sum()) + gate * (rows.shape[0] - matched_rows.shape[0])
