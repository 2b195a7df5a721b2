"""The Tracker: persistent object IDs, ByteTrack-style, in numpy (the package doc shows its use).

What it does each frame (``update``), after ByteTrack (Zhang et al., 2022) with changes that
matter on a robot (timestamps, classes, boxes that stop overlapping, a detector's clutter):

1. **Predict** every track to the frame's timestamp with a constant-velocity Kalman filter on
   (cx, cy, w, h). The step is the frame's timestamp minus the last one, in seconds: a live
   source drops frames, so the tracker never assumes 1/fps. Noise scales with the box size, and
   each track's acceleration noise follows its own surprises (``manoeuvre``: an adaptive filter):
   an object that circles or bounces gets the wide gate it needs, a smoothly moving one keeps a
   tight gate that clutter cannot get into. A track that turns at a steady rate (measured from the
   angle between its successive chords, ``turn_gain``) is predicted along the arc (a coordinated
   turn): at 10 FPS a circling object turns ~0.5 rad a frame, and a straight prediction is off by
   more than the box size; a chord that turns by over ``max_turn_angle`` more than the track's own
   rate foresees is a bounce and resets it (a circling object seen again after a missed frame turned
   past max_turn_angle by its rate alone).
2. **Associate**, always within one class (a star never takes a ring's ID: a detector's class
   flip leaves that detection without an ID; stage f keeps the track on it), each stage an optimal
   assignment (``linear_assignment``: a Hungarian solver in numpy):

   a. detections scoring >= ``high_threshold`` with the confirmed tracks (tracked and lost), by
      IoU with the predicted box (>= ``match_iou``);
   b. detections in [``low_threshold``, ``high_threshold``) with the tracks still unmatched,
      lost and tentative ones too (>= ``low_match_iou``): ByteTrack's second stage, which keeps
      a half-hidden object;
   c. the high detections left with the tentative tracks (>= ``tentative_match_iou``);
   d. what is left, by the Mahalanobis distance of the box centre under the filter's own
      uncertainty (<= ``motion_gate``, chi-square with 2 degrees of freedom), plus a charge for a
      vague prediction (``motion_spread_cost``: a track lost for long is weak evidence, so a
      detection far off is rather a new object). A centre within ``min_gate_size`` box sizes of
      the prediction always passes, and so does one within ``turn_reach`` x the track's speed x
      the time since its last match of where it was last seen (a bounce or a sharp turn, for
      ``turn_seconds``), uncharged; the speed is the filter's or its last chord's, the higher (a
      bounce inside a frame interval at 10 FPS slows the filter's velocity, not the object). Sizes must agree within ``max_size_ratio``. Low-score detections take
      part for tracked tracks only, and a lost track takes only a detection confident enough to
      start one. This finds a fast object whose boxes do not overlap from one frame to the next
      (low frame rates), or an object back from an occlusion off its predicted path. The confirmed
      tracks matched within ``turn_seconds`` are matched first by their filters (and
      ``min_gate_size``) alone, then what is left with the turn reach too (``filter_first``): the
      turn reach is a disc about the last centre, where clutter near a fast track's last centre
      costs less than the object on its curve, which the filter foresaw. High detections are
      matched before low ones, as in stages a and b.
   e. a track lost at most ``reid_seconds`` whose running score is still ``confirm_score`` takes a
      confident detection of its class (>= ``new_track_threshold``) left over, if its centre is
      within ``reid_reach`` x the track's speed x the time lost (plus ``min_gate_size`` box sizes)
      of where it was last seen: at low frame rates a missed frame or two leaves the prediction
      far off a curved path, but no object goes farther than its speed allows. Not a track
      predicted at least ``hidden_cover`` inside the box of a confirmed track matched this frame:
      that one is out of sight behind it (or unseen in front), not off its path, and a box of its
      class elsewhere is another object (the twin that comes out of the far side of an occluder).
   f. a confirmed track seen within ``reid_seconds`` and still without a box takes a confident box
      of another class overlapping its prediction by ``class_flip_iou``, if no track of that class
      overlaps the box, for ``reid_seconds`` on end at most (longer, the object is that class, or
      another object): the detector read the object as another class (on the tuning seeds 310 of
      the model's 408 ID switches at 30 FPS were between two tracks of two classes on one object).
      The track keeps its object and its filter, no track of the other class starts on the box,
      and the box is shown without an ID.

   Given the frame (``update(..., image=)``; the pipeline gives it), the motion stages d and e,
   inheriting an ID (below) and the lookahead's other way also refuse a pair whose colours share
   less than ``appearance_veto`` (appearance.py: a 64-bin colour histogram of each first-stage box,
   a running average per track): motion reaches far at low frame rates, and a false positive or
   another object of the class inside that reach looks nothing like the track. A veto only: boxes
   that look alike are left to the motion rules, and a low-score box's colours are not taken. IoU
   matches (stages a-c) of tracks seen in the last frame are not checked: a sudden change of light
   changes every box's colours at once, and a track on its predicted box is still taken by IoU while
   its average catches up. A lost track's IoU match is (stage a): two objects of a class that cross
   behind an occluder come out where either one's prediction overlaps. And where the colours do
   more than refuse: a box that shares at least ``rival_similarity`` of its colours with another
   confirmed track of its class that has not taken a box this frame, and ``rival_margin`` more than
   with the track it is nearer, is that other track's object, never the nearer one's (two squares of
   a class, half their colours alike, crossed behind an occluder and each came out nearer the other's
   prediction); nor is that nearer track the lookahead's other way. Without the frame the
   tracker runs on motion alone.

   A motion match (d, e) between confirmed tracks that could have gone another way (two tracks of
   a class each within the other's gate, or the taker and a recently lost track of its class that
   wanted the box about as much) waits a frame (``lookahead``): its IDs are -1 for this frame, and
   the next frame's detections settle it, before they are associated: the other way is replayed
   from the tracks' states before this frame, and if its predictions fit the new boxes better
   (``lookahead_margin``) the tracks take its motion state. At 10 FPS two same-class objects passing
   each other a box apart are a coin toss on one frame and plain on two.

   Each matched track's filter then takes its box, made whole if it is a partial view
   (``partial_ratio``, ``partial_edge``: much narrower or shorter than predicted, with the other
   edge where the prediction put it; an object sliding behind another or out of the frame), so that
   the side it still shows does not drag its centre and velocity; its size is held while it is cut,
   for at most ``partial_seconds`` on end.
3. **Track life**: a new track starts from a high detection scoring >= ``new_track_threshold``
   and is tentative until ``min_hits`` first-stage matches (jetson-inference's ``minFrames``)
   *and* a running score (the mean of its detections' scores, then a running average) of at
   least ``confirm_score``: a detector's clutter is often found again and again, but scores
   lower than real objects. One whose running score is ``early_confirm_score`` is confirmed a
   match sooner (2 by default), once its matches span ``early_confirm_seconds`` (at 10 FPS min_hits
   is 0.2 s of an object in view with no ID; at 30 FPS two matches span too little, and min_hits
   holds). A track being confirmed that was born where stage e would have found
   a lost track of its class (``inherit``) takes that track's ID instead of a new one (not a lost
   track hidden as in stage e): the object came back off its path and its first box started a
   new track; such a track takes the ID at
   ``inherit_hits`` matches already (an object known, back). A tentative track is dropped
   once it has missed for more than ``tentative_seconds``. A confirmed track that misses frames
   is lost, still predicted and matched, and removed ``lost_seconds`` after its last match (1.5 s:
   an object that passes behind another is out of sight from half hidden to half shown again,
   longer than it is fully behind; in the "occlude" scene 0.77 s at the median and over 1 s for
   8% of the gaps). Given the frames, an ended track's ID, class, last box and colours are
   remembered ``recall_seconds`` (memory.py): a track being confirmed of that class, born within
   ``recall_reach`` box sizes of where it was last seen and sharing ``recall_similarity`` of its
   colours, takes its ID back (an object that left the frame or stood behind another for seconds
   comes back where it left, looking as it did). The same rule, with sizes within
   ``max_size_ratio`` too, holds for the confirmed tracks lost now: a detector that reads one object as two boxes of
   a class starts a tentative track on the second, which takes its box by IoU (stage c) once the
   track misses the first, and is confirmed in the track's place; it takes the lost track's ID. Two
   tracks seen at once are one object only so, near each other: for them the reach is
   ``min_gate_size`` box sizes.
   A confirmed track whose running score falls under ``report_score`` keeps its ID but gives it
   to no detection until the score is back (clutter that once scored high).

IDs are 1, 2, 3, ... in order of confirmation, each for one object in the tracker's life (an ended
track's ID comes back only to a track the memory takes for that object; ``reset`` forgets them and
keeps counting unless told to restart). ``get_state`` / ``set_state`` carry a tracker across a
restart as plain JSON-able data (with the ambiguities waiting for the next frame; ``resume_after``
puts its times on the new process's clock, state_file.py keeps it in a file). Bad input (boxes of the wrong shape, out-of-order or non-finite
timestamps) raises EdgeFpnError with one sentence and leaves the tracker as it was; detections
with non-finite or empty boxes are left out of the matching (their ID is -1) and counted in
``skipped_detections``. At most ``max_detections`` detections a frame (the best scores) take
part: the rest get -1.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ...errors import EdgeFpnError
from .appearance import BINS, colour_histograms, known, shared, unlike
from .assignment import linear_assignment
from .config import TIME_SLACK, TrackerConfig
from .costs import motion_distances, reid_distance, size_mismatch
from .geometry import box_size, checked_frame_size, cover_matrix, iou_matrix, out_of_frame, to_cxcywh, to_xyxy
from .kalman import correct, initial_state, learn_turn, predict
from .memory import TrackMemory

STATE_VERSION = 1
# the largest timestamp taken, in seconds (3000 years; the Unix time now is 1.8e9): a larger one is
# milli- or nanoseconds, and a gap of more than 1e102 s would overflow the filter's dt ** 3
MAX_TIMESTAMP = 1e11
# (index arrays from masks as mask.nonzero()[0], not np.flatnonzero: a fifth of its cost, a dozen
# times a frame on the per-frame path)


# ---------------------------------------------------------------- the tracker

_TRACK_FIELDS = ("x", "P", "q", "turn", "born", "label", "score", "ids", "hits", "last_seen", "lost", "hist", "cut", "flip")
# added to the state after its first version (float arrays, a row each, of these trailing shapes): zeros where an
# older state lacks them
_ADDED_FIELDS = {"hist": (BINS,), "cut": (2,), "flip": ()}
_MOTION_FIELDS = ("x", "P", "q", "turn", "last_seen", "lost")  # what the other way of an ambiguity changes


class _Ambiguity(NamedTuple):
    """Two confirmed tracks (by ID) whose motion matches this frame could have gone another way:
    their states before they took their boxes, and the other way (which box each would take, if any)."""
    ids: Tuple[int, int]
    before: Dict[str, np.ndarray]  # _TRACK_FIELDS of the two tracks, predicted to `time`, not yet updated
    boxes: np.ndarray  # (2, 4) cx, cy, w, h: the box each track takes the other way
    scores: np.ndarray  # (2,)
    takes: np.ndarray  # (2,) bool: whether each track takes a box the other way (a lost track might)
    time: float


class Tracker:
    """ByteTrack-style multi-object tracker with a Kalman filter on timestamps (see the module doc).

    ``update(boxes, scores, labels, timestamp, image=None) -> track_ids`` (one per detection, -1
    where it is not (yet) a confirmed track; `image`: the frame, for the appearance veto);
    ``track(detections, timestamp, image=None)`` returns the Detections with ``track_ids`` set. Tracks are held as arrays (one row a track), so a frame costs a fixed
    number of numpy operations, not a Python loop over boxes.
    """

    def __init__(self, config: Optional[TrackerConfig] = None):
        if config is None:
            config = TrackerConfig()
        if not isinstance(config, TrackerConfig):
            raise EdgeFpnError(f"tracker config must be a TrackerConfig, not {type(config).__name__}")
        self.config = config
        self.next_id = 1
        self.skipped_detections = 0  # non-finite or empty boxes left out of the matching
        self.frames = 0
        self._time: Optional[float] = None
        self._pending: List[_Ambiguity] = []  # this frame's motion matches that the next frame settles
        self._memory = TrackMemory()  # ended tracks, for an object back after seconds (recall_seconds)
        self._resume_after: Optional[float] = None  # set_state's: the next frame starts a new clock
        self._clear()

    # ------------------------------------------------------------ public API
    def reset(self, restart_ids: bool = False) -> None:
        """Forget every track (a new video, a reconnected camera). IDs keep counting, so that an ID
        is never given twice in this tracker's life, unless `restart_ids` (the next ID is then 1)."""
        self._clear()
        self._pending = []
        self._memory.clear()
        self._time = None
        self._resume_after = None
        self.frames = 0
        if restart_ids:
            self.next_id = 1

    @property
    def active_tracks(self) -> int:
        """Confirmed tracks matched in the last frame."""
        return int(np.count_nonzero((self._ids >= 0) & ~self._lost))

    @property
    def lost_tracks(self) -> int:
        return int(np.count_nonzero((self._ids >= 0) & self._lost))

    def tracks(self, frame_size: Optional[Tuple[int, int]] = None) -> Dict[str, np.ndarray]:
        """The confirmed tracks now: ``ids``, ``labels``, ``boxes`` (xyxy, as of the last frame),
        ``velocities`` (centre, pixels per second), ``lost``, ``last_seen`` (timestamp), ``scores``
        (the running score of its detections; under ``report_score`` the ID is withheld) and
        ``hidden``: lost tracks whose predicted box is at least ``hidden_cover`` inside the box of a
        track seen in the last frame (behind that object, or in front of it and unseen: either way
        not a box to show) or, given `frame_size` (width, height), more than half out of the frame or
        leaving it (poking out, under LEAVING_COVER inside, through an edge it moves towards: geometry.out_of_frame);
        ``guessed``: lost tracks predicted to have moved more than ``coast_reach`` box sizes since
        their last match (a fast object at a low frame rate: where it is now is a guess).
        A program that shows lost tracks' predicted boxes (coasting through a detector's misses)
        shows the lost ones neither hidden nor guessed: on noisy ground truth of the "occlude" scene,
        3 of 4 coasted boxes that cover no object are hidden ones, and 1 in 18 of those that do; 1 in
        5 guessed boxes covers its object (1 in 7 on the "fast" scene at 10 FPS)."""
        frame = None if frame_size is None else checked_frame_size(frame_size)
        keep = self._ids >= 0
        boxes = to_xyxy(self._x[keep, :4])
        lost = self._lost[keep].copy()
        hidden = lost.copy()
        if hidden.any():
            covered = self._behind(boxes[hidden], boxes[~lost])
            if frame is not None:
                covered |= out_of_frame(boxes[hidden], self._x[keep, 4:6][hidden], *frame)
            hidden[hidden] = covered
        guessed = lost & (self.config.coast_reach > 0)
        if guessed.any():
            rows = keep.nonzero()[0][guessed]
            x = self._x[rows]
            moved = np.hypot(x[:, 4], x[:, 5]) * (self._time - self._last_seen[rows])
            guessed[guessed] = moved > self.config.coast_reach * np.sqrt(x[:, 2] * x[:, 3])
        return {"ids": self._ids[keep].copy(), "labels": self._label[keep].copy(), "boxes": boxes.astype(np.float32),
                "velocities": self._x[keep, 4:6].astype(np.float32), "lost": lost, "hidden": hidden, "guessed": guessed,
                "last_seen": self._last_seen[keep].copy(), "scores": self._score[keep].astype(np.float32)}

    def track(self, detections: Any, timestamp: float, image: Any = None) -> Any:
        """The same Detections with ``track_ids`` filled (`image`: the frame they came from, for appearance)."""
        ids = self.update(detections.boxes, detections.scores, detections.labels, timestamp, image)
        return dataclasses.replace(detections, track_ids=ids)

    def update(self, boxes: Any, scores: Any, labels: Any = None, timestamp: Optional[float] = None,
               image: Any = None) -> np.ndarray:
        """One frame: detections (N,4 xyxy pixels; N scores; N integer labels or None for one class)
        at `timestamp` (seconds, not before the last frame's), and optionally the frame they came from
        (`image`, H x W x 3 uint8: each box's colours, for ``appearance_veto``). Returns N int64 track
        IDs (-1: none)."""
        boxes, scores, labels, usable = self._check(boxes, scores, labels)
        now = self._check_time(timestamp)
        cfg = self.config
        # the detections that take part: finite, above the low threshold, the best max_detections
        chosen = (usable & (scores >= cfg.low_threshold)).nonzero()[0]
        if chosen.shape[0] > cfg.max_detections:
            best = np.argsort(-scores[chosen], kind="stable")[:cfg.max_detections]
            chosen = np.sort(chosen[best])
        det_boxes, det_scores, det_labels = boxes[chosen], scores[chosen], labels[chosen]
        # (before anything changes: a bad image leaves the tracker as it was)
        hists = None
        if image is not None and cfg.appearance_veto > 0:
            # (first-stage detections only: the ones a track's colours learn from and new tracks start
            # from; a low-score box's colours stay unknown, never a veto, and cost nothing)
            hists = np.zeros((chosen.shape[0], BINS))
            high = det_scores >= cfg.high_threshold
            hists[high] = colour_histograms(image, det_boxes[high])
        result = np.full(scores.shape[0], -1, np.int64)
        self.frames += 1
        z = to_cxcywh(det_boxes)
        dt = 0.0 if self._time is None else now - self._time
        self._time = now
        if self._x.shape[0]:
            self._predict(dt)
        if self._pending:
            self._settle(z, det_labels, now)
        track_of_det = np.full(chosen.shape[0], -1, np.int64)
        flipped = np.zeros(chosen.shape[0], bool)  # (stage f's: taken by a track of another class, shown without an ID)
        matched_track = np.zeros(self._x.shape[0], bool)
        by_iou = matched_track.copy()
        if self._x.shape[0] and chosen.shape[0]:
            by_iou = self._associate(det_boxes, det_scores, det_labels, z, hists, track_of_det, matched_track, flipped)
        matched_dets = (track_of_det >= 0).nonzero()[0]
        waiting = np.zeros((0,), np.int64)
        if cfg.lookahead and matched_dets.shape[0]:  # (before the matched tracks take their boxes)
            waiting = self._ambiguous(track_of_det, matched_dets, matched_track, by_iou, z, det_scores, det_labels, now,
                                      hists)
        if matched_dets.shape[0]:
            rows = track_of_det[matched_dets]
            self._flip[rows] = np.where(flipped[matched_dets], self._flip[rows] + (now - self._last_seen[rows]), 0.0)
            self._apply(rows, z[matched_dets], det_scores[matched_dets], now,
                        None if hists is None else hists[matched_dets])
        self._track_life(matched_track)
        if matched_dets.shape[0]:  # (rows: the matched tracks, as above; nothing has moved them)
            result[chosen[matched_dets]] = np.where(self._score[rows] >= cfg.report_score, self._ids[rows], -1)
            result[chosen[waiting]] = -1
            result[chosen[flipped]] = -1
        identified = matched_dets[self._ids[track_of_det[matched_dets]] >= 0]  # (before the rows move)
        keep = self._keep(matched_track, now)
        if cfg.recall_seconds > 0:
            self._remember_ended(keep, now)
        self._take(keep)
        # new tentative tracks from the confident detections nobody took
        new = ((track_of_det < 0) & (det_scores >= cfg.new_track_threshold)).nonzero()[0]
        if new.shape[0] and cfg.duplicate_iou < 1:
            new = new[~self._duplicates(det_boxes, new, identified)]
        if new.shape[0]:
            ids = np.full(new.shape[0], -1, np.int64)
            if cfg.min_hits <= 1:
                ids = np.arange(self.next_id, self.next_id + new.shape[0])
                self.next_id += int(new.shape[0])
                result[chosen[new]] = ids
            self._add(z[new], det_scores[new], det_labels[new], ids, now, None if hists is None else hists[new])
        return result

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
        track) is no other way. Returns the detections whose IDs wait."""
        cfg = self.config
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
        return np.asarray(waiting, np.int64)

    def _remember(self, rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray, takes: np.ndarray, now: float) -> None:
        before = {name: getattr(self, "_" + name)[rows].copy() for name in _TRACK_FIELDS}
        self._pending.append(_Ambiguity((int(self._ids[rows[0]]), int(self._ids[rows[1]])), before, boxes.copy(),
                                        scores.copy(), takes, now))

    def _settle(self, z: np.ndarray, det_labels: np.ndarray, now: float) -> None:
        """Last frame's ambiguities, settled by this frame's detections (before the association):
        each one's other way is replayed from the two tracks' states before that frame and predicted
        to now; if its predictions fit this frame's boxes of their class better, by ``lookahead_margin``
        (an optimal assignment's cost, a box missed costing the gate), the two tracks take its motion
        state: each follows the box it should have taken. IDs stay with their tracks."""
        cfg = self.config
        for ambiguity in self._pending:
            rows = [(self._ids == track_id).nonzero()[0] for track_id in ambiguity.ids]
            if not (rows[0].shape[0] and rows[1].shape[0]):
                continue  # (a track ended)
            rows = np.array([rows[0][0], rows[1][0]])
            boxes = (det_labels == self._label[rows[0]]).nonzero()[0]
            other = Tracker(cfg)
            for name in _TRACK_FIELDS:
                setattr(other, "_" + name, ambiguity.before[name].copy())
            other._time = ambiguity.time
            taking = ambiguity.takes.nonzero()[0]
            other._apply(taking, ambiguity.boxes[taking], ambiguity.scores[taking], ambiguity.time)
            other._lost = ~ambiguity.takes
            other._predict(now - ambiguity.time)
            other._time = now
            if other._fit(np.arange(2), z[boxes]) + cfg.lookahead_margin < self._fit(rows, z[boxes]):
                for name in _MOTION_FIELDS:
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

    def _seen_within(self, seconds: float, rows: Any = slice(None)) -> np.ndarray:
        """Which tracks (of `rows`) were last matched at most `seconds` before this frame."""
        return self._time - self._last_seen[rows] <= seconds + TIME_SLACK

    def _hidden(self, rows: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Which tracks of `rows` are behind a track of the `seen` mask, by their boxes as they are now."""
        return self._behind(to_xyxy(self._x[rows, :4]), to_xyxy(self._x[seen, :4]))

    def _behind(self, boxes: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Which `boxes` (xyxy) are at least ``hidden_cover`` inside one of the `seen` boxes (xyxy)."""
        if self.config.hidden_cover <= 0 or not (boxes.shape[0] and seen.shape[0]):
            return np.zeros(boxes.shape[0], bool)
        return (cover_matrix(boxes, seen) >= self.config.hidden_cover).any(axis=1)

    def _duplicates(self, det_boxes: np.ndarray, new: np.ndarray, identified: np.ndarray) -> np.ndarray:
        """Which of the `new` detections overlap, by ``duplicate_iou``, a detection of any class
        that a confirmed track took this frame: a second reading of an object that has an ID (a
        detector that calls one object a ring and a star at once, or in turns), not a new object."""
        if not identified.shape[0]:
            return np.zeros(new.shape[0], bool)
        return (iou_matrix(det_boxes[new], det_boxes[identified]) >= self.config.duplicate_iou).any(axis=1)

    def _whole_boxes(self, rows: np.ndarray, z: np.ndarray, now: float) -> np.ndarray:
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
        if not shrunk.any():  # (most frames: one check on the per-frame path)
            if self._cut.any():
                self._cut[rows] = 0.0
            return z
        z = z.copy()
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
            if partial.any():
                centre = np.where(low_cut, m_high - size / 2, m_low + size / 2)
                z[:, axis] = np.where(partial, centre, z[:, axis])
                z[:, 2 + axis] = np.where(partial, size, measured)
                self._x[rows[partial], 6 + axis] = 0.0
                cut[:, axis] = np.where(partial, cut_for, 0.0)
        self._cut[rows] = cut
        return z

    def _apply(self, rows: np.ndarray, z: np.ndarray, scores: np.ndarray, now: float,
               hists: Optional[np.ndarray] = None) -> None:
        """The matched tracks take their detections: the filter's update, a hit (a first-stage
        score only for a tentative track: clutter scoring low never confirms one), their score and,
        from a first-stage detection, its colours (``appearance_rate``: a running average)."""
        cfg = self.config
        z = self._whole_boxes(rows, z, now)
        self._turn[rows] = learn_turn(self._turn[rows], self._last_seen[rows], z, now, cfg)  # (before last_seen moves on)
        self._x[rows], self._P[rows], self._q[rows] = correct(self._x[rows], self._P[rows], self._q[rows], z, cfg)
        counts = (self._ids[rows] >= 0) | (scores >= cfg.high_threshold)
        self._hits[rows] += counts.astype(np.int64)
        self._last_seen[rows] = now
        self._lost[rows] = False
        if hists is not None:
            had = self._hist[rows]
            mixed = np.where(known(had)[:, None], (1.0 - cfg.appearance_rate) * had + cfg.appearance_rate * hists, hists)
            self._hist[rows] = np.where((scores >= cfg.high_threshold)[:, None], mixed, had)
        # the running score: the mean of the first 1/score_rate matches, then a running average
        self._score[rows] += np.maximum(cfg.score_rate, 1.0 / np.maximum(self._hits[rows], 1)) * (scores - self._score[rows])

    def _track_life(self, matched_track: np.ndarray) -> None:
        """Confirmed tracks that missed this frame are lost; tentative ones with enough hits get IDs
        (in track order: deterministic IDs)."""
        newly_lost = ~matched_track & (self._ids >= 0) & ~self._lost
        if newly_lost.any():
            self._x[newly_lost, 6:] = 0.0  # a lost box keeps its size (ByteTrack stops its height velocity)
            self._lost |= newly_lost
        cfg = self.config
        inheriting = cfg.inherit and cfg.reid_reach > 0
        ready = matched_track & (self._ids < 0) & (self._score >= cfg.confirm_score)
        confirm = ready & (self._hits >= cfg.min_hits)
        if cfg.early_confirm_score < 1:
            # (at 10 FPS min_hits is 0.2 s of an object in view with no ID; a confident pair of hits
            # that far apart is no flicker of clutter)
            confirm |= (ready & (self._hits >= max(cfg.min_hits - 1, 1)) & (self._score >= cfg.early_confirm_score)
                        & (self._time - self._born[:, 0] >= cfg.early_confirm_seconds - TIME_SLACK))
        if confirm.any():
            order = confirm.nonzero()[0]
            if inheriting:
                order = self._inherit(order, matched_track)
            if cfg.recall_seconds > 0 and order.shape[0]:
                order = self._recall(order, matched_track)
            self._ids[order] = np.arange(self.next_id, self.next_id + order.shape[0])
            self.next_id += int(order.shape[0])
        # an object known, back: a track that a lost one would hand its ID to takes it sooner (the
        # rest wait for min_hits; at 10 FPS a frame sooner is 0.1 s of an object in view with no ID)
        early = ready & ~confirm & (self._hits >= cfg.inherit_hits)
        if inheriting and early.any():
            self._inherit(early.nonzero()[0], matched_track)

    def _inherit(self, new: np.ndarray, matched_track: np.ndarray) -> np.ndarray:
        """A track about to be confirmed that was born at most ``reid_seconds`` after a lost track
        of its class was last seen, within ``reid_reach`` x that track's speed x the time between
        (plus ``min_gate_size`` box sizes) of where it was last seen, is that object back (stage e,
        late: its first detection went to a new track, as after a bounce at 10 FPS, where a
        tentative track takes the next box by IoU before stage e can): it takes the lost track's ID,
        and the lost track ends. Returns the rows of `new` that still need an ID."""
        cfg = self.config
        lost = (self._lost & ~matched_track & (self._ids >= 0)).nonzero()[0]
        lost = lost[~self._hidden(lost, matched_track & (self._ids >= 0))]
        if not lost.shape[0]:
            return new
        gap = self._born[new, 0][None, :] - self._last_seen[lost][:, None]  # (L, N)
        cost = self._reid_distance(lost, self._born[new, 1:3], gap)
        cost[(gap <= 0) | (gap > cfg.reid_seconds + TIME_SLACK) | self._other_class(lost, new, self._label)] = np.inf
        cost[self._unlike(lost, self._hist, new)] = np.inf
        rows, cols = linear_assignment(cost, 1.0)
        if not rows.shape[0]:
            return new
        self._hand_over(lost[rows], new[cols])
        return np.delete(new, cols)

    def _hand_over(self, lost: np.ndarray, new: np.ndarray) -> None:
        """The `lost` tracks' IDs go to the `new` ones (the same objects), and the lost tracks end:
        each is left a tentative row unmatched this frame (dropped by _keep), its last_seen -inf
        (not remembered by _remember_ended)."""
        self._ids[new] = self._ids[lost]
        self._ids[lost] = -1
        self._last_seen[lost] = -np.inf

    def _remember_ended(self, keep: np.ndarray, now: float) -> None:
        """The confirmed tracks that end this frame go to the memory (memory.py), by their last
        measured centre and size (a lost track's prediction has drifted on) and colours."""
        seconds = self.config.recall_seconds + TIME_SLACK
        self._memory.expire(now, seconds)
        if keep.all():  # (most frames: no track ends)
            return
        # (an inherited lost track has handed its ID on: its last_seen is -inf)
        ending = (~keep & (self._ids >= 0) & np.isfinite(self._last_seen)).nonzero()[0]
        self._memory.add(now, seconds, *self._as_remembered(ending))

    def _as_remembered(self, rows: np.ndarray) -> Tuple[np.ndarray, ...]:
        """What TrackMemory.add takes of tracks `rows`: IDs, labels, last measured box (the last
        centre and the filter's size: a lost track's prediction has drifted on), times and colours."""
        return (self._ids[rows], self._label[rows], np.c_[self._turn[rows, 1:3], self._x[rows, 2:4]],
                self._last_seen[rows], self._hist[rows])

    def _recall(self, new: np.ndarray, matched_track: np.ndarray) -> np.ndarray:
        """Tracks being confirmed that a lost track, or else an ended track of the memory, would give
        its ID to (its class, born near where it was last seen, its colours): they take it. Returns
        the rows still needing an ID."""
        new = self._recall_lost(new, matched_track)
        if not new.shape[0]:
            return new
        cfg = self.config
        ids = self._memory.recall(self._label[new], self._born[new, 1:3], self._hist[new], cfg.recall_reach,
                                  cfg.recall_similarity, cfg.per_class)
        back = ids >= 0
        self._ids[new[back]] = ids[back]
        return new[~back]

    def _recall_lost(self, new: np.ndarray, matched_track: np.ndarray) -> np.ndarray:
        """The memory's rule (memory.py) for the confirmed tracks lost now, not yet ended: a track
        being confirmed takes the ID of one of its class and size (within ``max_size_ratio``), born
        within ``recall_reach`` box sizes of where it was last seen and sharing ``recall_similarity``
        of its colours; the lost track ends. The detector often reads one object as two boxes of a
        class, the track follows one and a tentative track the other, and when the first is missed the
        second is confirmed with a new ID (stage e and inheriting take only a track born after the
        lost one was last seen). Two tracks seen at once are one object only that way, so for them
        the reach is ``min_gate_size`` box sizes: seen at once farther apart, they are two objects.
        Returns the rows still needing an ID."""
        cfg = self.config
        lost = (self._lost & ~matched_track & (self._ids >= 0) & known(self._hist)).nonzero()[0]
        if not lost.shape[0]:
            return new
        seen_together = self._last_seen[lost][:, None] >= self._born[new, 0][None, :] - TIME_SLACK
        reach = np.where(seen_together, cfg.min_gate_size, cfg.recall_reach)
        # (sizes checked, unlike the memory's recall, where a check cost "hard" 0.003 on the tuning
        # seeds: a large object's reach covers much of the frame, and a small one of its class there,
        # seen while the large one is missed for a frame, is another object)
        candidates = TrackMemory()
        candidates.add(self._time, np.inf, *self._as_remembered(lost))
        ids = candidates.recall(self._label[new], self._born[new, 1:3], self._hist[new], reach, cfg.recall_similarity,
                                cfg.per_class, box_size(self._x[new]), cfg.max_size_ratio)
        back = ids >= 0
        if not back.any():
            return new
        self._hand_over(lost[np.argmax(self._ids[lost][None, :] == ids[back][:, None], axis=1)], new[back])
        return new[~back]

    def _keep(self, matched_track: np.ndarray, now: float) -> np.ndarray:
        """The tracks that live on: a tentative one missed for at most tentative_seconds (by default
        none: ByteTrack drops it at its first miss), a confirmed one lost for at most lost_seconds."""
        cfg = self.config
        age = now - self._last_seen
        tentative = self._ids < 0
        return np.where(tentative, matched_track | (age <= cfg.tentative_seconds + TIME_SLACK), age <= cfg.lost_seconds + TIME_SLACK)

    def _associate(self, det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray, z: np.ndarray,
                   hists: Optional[np.ndarray], track_of_det: np.ndarray, matched_track: np.ndarray,
                   flipped: np.ndarray) -> np.ndarray:
        """ByteTrack's association of this frame's detections with the predicted tracks, in six
        passes; fills ``track_of_det`` (a track row per detection, -1: none), ``matched_track`` and
        ``flipped`` (stage f's detections), and returns which tracks were matched by IoU (stages a-c
        and f; the rest of the matches are by motion)."""
        cfg = self.config
        # IoU of every predicted track box and detection, once for stages a-c (as 1 - IoU, never across
        # classes) and f (across classes); nothing moves the tracks while they are matched
        overlap = iou_matrix(to_xyxy(self._x[:, :4]), det_boxes)
        other_class = self._other_class(np.arange(self._x.shape[0]), np.arange(det_boxes.shape[0]), det_labels)
        iou_cost = np.where(other_class, np.inf, 1.0 - overlap)
        high = det_scores >= cfg.high_threshold
        confirmed = self._ids >= 0
        # a lost track re-found by IoU must not look unlike the box (the veto, as for motion matches):
        # two objects of a class crossing behind an occluder come out where either could be predicted
        lost_rows = self._lost.nonzero()[0]
        if hists is not None and lost_rows.shape[0]:
            lost_cost = iou_cost[lost_rows]  # (under the IoU stages' lowest gate: what a lost track could take)
            self._refuse_near(lost_cost, 1.0 - min(cfg.match_iou, cfg.low_match_iou) + 1e-9,
                              lambda near: self._refused(lost_rows, near, det_labels, hists, self._lost & confirmed))
            iou_cost[lost_rows] = lost_cost
        # a: high detections x confirmed tracks (tracked and lost)
        self._match_iou(confirmed.nonzero()[0], high.nonzero()[0], iou_cost, cfg.match_iou, track_of_det, matched_track)
        # b: low detections x the tracks still unmatched, lost ones too (ByteTrack: tracked ones only; a
        #    track that missed one frame and is half hidden in the next is found by IoU with its prediction)
        low = ~high
        if low.any():
            takers = ~matched_track & (confirmed | cfg.tentative_low)
            self._match_iou(takers.nonzero()[0], low.nonzero()[0], iou_cost, cfg.low_match_iou, track_of_det, matched_track)
        # c: high detections left x tentative tracks
        free_high = (high & (track_of_det < 0)).nonzero()[0]
        if free_high.shape[0]:
            self._match_iou((~confirmed & ~matched_track).nonzero()[0], free_high, iou_cost, cfg.tentative_match_iou,
                            track_of_det, matched_track)
        by_iou = matched_track.copy()
        # d: what is left, by motion (boxes that stopped overlapping); low detections only for tracked tracks
        free = (track_of_det < 0) & (high | cfg.low_motion)
        free_tracks = (~matched_track).nonzero()[0]
        if cfg.motion_gate > 0 and free.any() and free_tracks.shape[0]:
            self._match_motion(free_tracks, free.nonzero()[0], z, det_labels, det_scores, hists, track_of_det,
                               matched_track)
        # e: lost tracks left x confident detections left, within reach of where the track was last seen
        if cfg.reid_reach > 0 and self._lost.any():
            # (tracks whose running score is still a real object's: a lost clutter track is let go)
            lost = (self._lost & ~matched_track & self._seen_within(cfg.reid_seconds)
                     & (self._score >= cfg.confirm_score)).nonzero()[0]
            confident = ((track_of_det < 0) & (det_scores >= cfg.new_track_threshold)).nonzero()[0]
            if lost.shape[0] and confident.shape[0]:
                # (not one predicted behind an object seen now: it is out of sight, not off its path,
                # and a box elsewhere is another object; an object that went behind the occluder
                # before its twin came out the other side took the twin's box)
                self._match_reid(lost[~self._hidden(lost, matched_track & confirmed)], confident, z, det_labels, hists,
                                 track_of_det, matched_track)
        # f: a confirmed track left without a box x high detections of another class left (a class flip)
        flips = (high & (track_of_det < 0)).nonzero()[0] if cfg.per_class and cfg.class_flip_iou > 0 else ()
        if len(flips):  # (most frames: every confident box taken)
            # (for reid_seconds on end at most: an object read as another class for longer is that class)
            flipping_for = self._flip + (self._time - self._last_seen)
            takers = (confirmed & ~matched_track & (flipping_for <= cfg.reid_seconds + TIME_SLACK)).nonzero()[0]
            if takers.shape[0]:
                self._match_flipped(takers, flips, overlap[:, flips], det_labels, track_of_det, matched_track, by_iou,
                                    flipped)
        return by_iou

    def _match_flipped(self, tracks: np.ndarray, dets: np.ndarray, overlap: np.ndarray, det_labels: np.ndarray,
                       track_of_det: np.ndarray, matched_track: np.ndarray, by_iou: np.ndarray,
                       flipped: np.ndarray) -> None:
        """Stage f: the detector read a track's object as another class. The `tracks` (confirmed,
        seen within ``reid_seconds``, taking such boxes for at most that long on end, left without a
        box) take first-stage `dets` of another class overlapping their prediction by
        ``class_flip_iou``, where no track of the box's class overlaps the box (by ``match_iou``:
        then it is that object's); an optimal assignment by IoU. The track stays on its object and
        no track of the other class starts on it, but the box is shown without an ID: a star never
        takes a ring's ID. On the tuning seeds 310 of the model's 408 ID switches at 30 FPS were
        between tracks of two classes on one object. `overlap`: (every track, `dets`) IoU."""
        cfg = self.config
        # (boxes a track of their own class overlaps; so a taker of the box's class, refused it in
        # stages a-e, is refused here too: stage f pairs two classes only)
        owned = ((overlap >= cfg.match_iou) & (self._label[:, None] == det_labels[dets][None, :])).any(axis=0)
        cost = np.where((overlap[tracks] >= cfg.class_flip_iou) & ~owned[None, :], 1.0 - overlap[tracks], np.inf)
        rows, cols = linear_assignment(cost, 1.0 - cfg.class_flip_iou + 1e-9)
        if rows.shape[0]:
            track_of_det[dets[cols]] = tracks[rows]
            matched_track[tracks[rows]] = True
            by_iou[tracks[rows]] = True  # (an IoU match: the lookahead leaves it alone)
            flipped[dets[cols]] = True

    def get_state(self) -> Dict[str, Any]:
        """Everything the tracker knows, as JSON-able data (lists and numbers), for ``set_state``."""
        return {"version": STATE_VERSION, "config": dataclasses.asdict(self.config), "next_id": self.next_id,
                "time": self._time, "frames": self.frames, "skipped_detections": self.skipped_detections,
                "tracks": {name: getattr(self, "_" + name).tolist() for name in _TRACK_FIELDS},
                "waiting": [{"ids": list(a.ids), "before": {name: a.before[name].tolist() for name in _TRACK_FIELDS},
                             "boxes": a.boxes.tolist(), "scores": a.scores.tolist(), "takes": a.takes.tolist(),
                             "time": a.time} for a in self._pending],
                "remembered": self._memory.state()}

    def set_state(self, state: Dict[str, Any], resume_after: Optional[float] = None) -> None:
        """Restore what ``get_state`` returned (IDs go on from where they were). The tracker's own
        config is kept; a state is refused with one sentence if it is not one this version wrote.

        resume_after: seconds between the state's last frame and the next one, for a restart where
        the frames' clock starts anew (a video from 0, a camera's clock after a reboot): the next
        frame is taken as that long after the saved one, whatever its timestamp, and every time the
        tracker holds moves with it (an object lost longer than ``lost_seconds`` by then is let
        go). Without it the next timestamp must not be before the saved last one."""
        if resume_after is not None:
            try:
                resume_after = float(resume_after)
            except (TypeError, ValueError):
                raise EdgeFpnError(f"resume_after must be a number of seconds, not {resume_after!r}") from None
            if not (math.isfinite(resume_after) and resume_after >= 0):
                raise EdgeFpnError(f"resume_after must be finite seconds >= 0, not {resume_after!r}")
        if not isinstance(state, dict):
            hint = " (json.loads a saved file first)" if isinstance(state, (str, bytes)) else ""
            raise EdgeFpnError(f"a tracker state is the dict Tracker.get_state() returned, not {type(state).__name__}{hint}")
        try:
            if int(state["version"]) != STATE_VERSION:
                raise EdgeFpnError(f"tracker state version {state['version']} is not {STATE_VERSION}; "
                                   "it was saved by another edge-fpn: start with a fresh tracker")
            tracks = state["tracks"]
            x = np.asarray(tracks["x"], np.float64).reshape(-1, 8)
            n = x.shape[0]
            arrays = {"x": x,
                      "P": np.asarray(tracks["P"], np.float64).reshape(n, 8, 8),
                      "label": np.asarray(tracks["label"], np.int64).reshape(n),
                      "q": np.asarray(tracks.get("q", [1.0] * n), np.float64).reshape(n),
                      "score": np.asarray(tracks.get("score", [1.0] * n), np.float64).reshape(n),
                      "turn": np.asarray(tracks.get("turn", np.c_[np.zeros(n), x[:, :2], np.zeros((n, 3))]), np.float64).reshape(n, 6),
                      "born": np.asarray(tracks.get("born", np.c_[np.asarray(tracks["last_seen"], np.float64).reshape(n), x[:, :2]]),
                                         np.float64).reshape(n, 3),
                      "ids": np.asarray(tracks["ids"], np.int64).reshape(n),
                      "hits": np.asarray(tracks["hits"], np.int64).reshape(n),
                      "last_seen": np.asarray(tracks["last_seen"], np.float64).reshape(n),
                      "lost": np.asarray(tracks["lost"], bool).reshape(n),
                      **{name: np.asarray(tracks.get(name, np.zeros((n,) + shape)), np.float64).reshape((n,) + shape)
                         for name, shape in _ADDED_FIELDS.items()}}
            next_id = int(state["next_id"])
            time_ = None if state["time"] is None else float(state["time"])
            frames = int(state.get("frames", 0))
            skipped = int(state.get("skipped_detections", 0))
            waiting = [_Ambiguity((int(a["ids"][0]), int(a["ids"][1])),
                                  {name: np.asarray(a["before"].get(name, np.zeros((2,) + arrays[name].shape[1:]))
                                                    if name in _ADDED_FIELDS else a["before"][name],
                                                    arrays[name].dtype).reshape((2,) + arrays[name].shape[1:])
                                   for name in _TRACK_FIELDS},
                                  np.asarray(a["boxes"], np.float64).reshape(2, 4), np.asarray(a["scores"], np.float64).reshape(2),
                                  np.asarray(a["takes"], bool).reshape(2), float(a["time"]))
                       for a in state.get("waiting", [])]
            memory = TrackMemory()
            if "remembered" in state:  # (states saved before the memory have none)
                memory.load(state["remembered"])
        except EdgeFpnError:
            raise
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EdgeFpnError(f"not a tracker state ({type(exc).__name__}: {exc}); pass what Tracker.get_state() returned") from None
        # (every number, not only the filter's: a NaN score withholds every ID for good, a time of
        # inf refuses every frame)
        floats = [arrays[name] for name in _TRACK_FIELDS if arrays[name].dtype == np.float64]
        floats.append(np.array([a.time for a in waiting] + ([] if time_ is None else [time_]), np.float64))
        floats += [value for a in waiting for value in (a.before["x"], a.before["P"], a.boxes, a.scores)]
        if not all(np.isfinite(value).all() for value in floats):
            raise EdgeFpnError("tracker state holds non-finite numbers; pass what Tracker.get_state() returned")
        times = [arrays["last_seen"], arrays["born"][:, 0], memory.time] + ([] if time_ is None else [np.array([time_])])
        if any(np.abs(value).max(initial=0.0) > MAX_TIMESTAMP for value in times):
            raise EdgeFpnError(f"tracker state holds times beyond {MAX_TIMESTAMP:.0e} s; pass what Tracker.get_state() returned")
        if not ((arrays["q"] > 0).all() and ((arrays["score"] >= 0) & (arrays["score"] <= 1)).all()):
            raise EdgeFpnError("tracker state holds scores outside 0-1 or noise scales <= 0; pass what Tracker.get_state() returned")
        largest = int(np.concatenate([arrays["ids"], memory.ids, [0]]).max())
        if next_id <= largest:
            raise EdgeFpnError(f"tracker state's next_id {next_id} is not above its largest track ID {largest}")
        for name, value in arrays.items():
            setattr(self, "_" + name, value)
        self._pending = waiting
        self._memory = memory
        self.next_id, self._time, self.frames, self.skipped_detections = next_id, time_, frames, skipped
        self._resume_after = resume_after if time_ is not None else None

    # ------------------------------------------------------------ checks
    def _check(self, boxes: Any, scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
        usable = (np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
                  & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        skipped = scores.shape[0] - int(np.count_nonzero(usable))
        if skipped:
            self.skipped_detections += skipped
            boxes = np.where(usable[:, None], boxes, 0.0)
            scores = np.where(usable, scores, 0.0)
        return boxes, scores, labels, usable

    def _check_time(self, timestamp: Optional[float]) -> float:
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
        if self._resume_after is not None and self._time is not None:
            self._shift_times(now - self._resume_after - self._time)
        if self._time is not None and now < self._time:
            raise EdgeFpnError(f"timestamp {now:.6f} s is before the last frame's ({self._time:.6f} s); give frames in "
                               "time order, or reset() the tracker for a new stream")
        return now

    def _shift_times(self, seconds: float) -> None:
        """Every time the tracker holds moved by `seconds` (set_state's resume_after, on the first
        frame after it: a new clock)."""
        self._time += seconds
        self._last_seen = self._last_seen + seconds
        self._born = self._born + [seconds, 0.0, 0.0]  # (time, centre x, centre y)
        self._pending = [a._replace(time=a.time + seconds, before={**a.before, "last_seen": a.before["last_seen"] + seconds,
                                                                   "born": a.before["born"] + [seconds, 0.0, 0.0]})
                         for a in self._pending]
        self._memory.time = self._memory.time + seconds
        self._resume_after = None

    # ------------------------------------------------------------ tracks as arrays
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

    def _take(self, keep: np.ndarray) -> None:
        """Only the tracks of the `keep` mask stay."""
        if keep.all():  # (most frames: no track ends)
            return
        for name in _TRACK_FIELDS:
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

    # ------------------------------------------------------------ motion (kalman.py)
    def _predict(self, dt: float) -> None:
        """Every track predicted dt seconds on, in place."""
        predict(self._x, self._P, self._q, self._turn, dt, self.config)

    # ------------------------------------------------------------ association
    def _other_class(self, tracks: np.ndarray, dets: np.ndarray, det_labels: np.ndarray) -> np.ndarray:
        """(T, D) True where a track and a detection have different labels (never matched: a star
        never takes a ring's ID); all False with ``per_class`` off."""
        if not self.config.per_class:
            return np.zeros((tracks.shape[0], dets.shape[0]), bool)
        return self._label[tracks][:, None] != det_labels[dets][None, :]

    def _unlike(self, tracks: np.ndarray, hists: Optional[np.ndarray], dets: np.ndarray) -> np.ndarray:
        """(T, D) True where a track's colours and those of `hists`[dets] share less than
        ``appearance_veto`` (appearance.unlike); none without the frame's colours (`hists` None)."""
        if hists is None or self.config.appearance_veto <= 0:
            return np.zeros((tracks.shape[0], dets.shape[0]), bool)
        return unlike(self._hist[tracks], hists[dets], self.config.appearance_veto)

    def _never_one(self, tracks: np.ndarray, dets: np.ndarray, zd: np.ndarray, det_labels: np.ndarray,
                   hists: Optional[np.ndarray], matched_track: np.ndarray) -> np.ndarray:
        """(T, D) pairs that are never one object, for the motion stages d and e: sizes apart by
        more than ``max_size_ratio``, other classes, colours that look nothing alike, or a box that
        is another unmatched track's object by its colours (``_refused``)."""
        return (size_mismatch(self._x[tracks], zd, self.config) | self._other_class(tracks, dets, det_labels)
                | self._refused(tracks, dets, det_labels, hists, (self._ids >= 0) & ~matched_track))

    @staticmethod
    def _refuse_near(cost: np.ndarray, limit: float, refused: Callable[[np.ndarray], np.ndarray]) -> None:
        """(T, D) costs made inf, in place, for the pairs `refused(columns)` refuses ((T, len(columns))
        mask), asked only for the columns some pair could match (a cost under `limit`): the colour
        checks are the stages' dearest part, and a pair at or over the limit is never matched anyway."""
        near = (cost < limit).any(axis=0).nonzero()[0]
        if near.shape[0]:
            cost[:, near] = np.where(refused(near), np.inf, cost[:, near])

    def _refused(self, tracks: np.ndarray, dets: np.ndarray, det_labels: np.ndarray, hists: Optional[np.ndarray],
                 rival: np.ndarray) -> np.ndarray:
        """(T, D) pairs the frame's colours refuse: the veto (sharing less than ``appearance_veto``,
        as ``_unlike``), or box D looking like another track of the `rival` mask (confirmed tracks
        that could take it) of its class, sharing at least ``rival_similarity`` of its colours, by
        ``rival_margin`` more than like track T: two objects of a class that crossed behind an
        occluder come out where either could be predicted, and the colours tell them apart where
        the veto alone does not. Each pair's shared colours are computed once, for both."""
        cfg = self.config
        out = np.zeros((tracks.shape[0], dets.shape[0]), bool)
        if hists is None or cfg.appearance_veto <= 0:
            return out
        mine, seen = known(self._hist[tracks]), known(hists[dets])
        if not (mine.any() and seen.any()):
            return out
        own = shared(self._hist[tracks][:, None, :], hists[dets][None, :, :])  # (T, D)
        out = mine[:, None] & seen[None, :] & (own < cfg.appearance_veto)
        rivals = (rival & known(self._hist)).nonzero()[0]
        if cfg.rival_margin <= 0 or not rivals.shape[0]:
            return out
        alike = shared(self._hist[rivals][:, None, :], hists[dets][None, :, :])  # (R, D)
        alike[(self._label[rivals][:, None] != det_labels[dets][None, :]) | ~seen[None, :]] = 0.0
        # each track's strongest rival for each box: the best rival, or the second best where the
        # best is the track itself
        order = np.argsort(-alike, axis=0, kind="stable")[:2]  # (<=2, D)
        top = alike[order[0], np.arange(dets.shape[0])]
        second = alike[order[1], np.arange(dets.shape[0])] if rivals.shape[0] > 1 else np.zeros(dets.shape[0])
        best = np.where(tracks[:, None] == rivals[order[0]][None, :], second[None, :], top[None, :])  # (T, D)
        return out | (mine[:, None] & (best >= cfg.rival_similarity) & (own < best - cfg.rival_margin))

    def _match_iou(self, tracks: np.ndarray, dets: np.ndarray, iou_cost: np.ndarray, min_iou: float,
                   track_of_det: np.ndarray, matched_track: np.ndarray) -> None:
        """Stages a-c: `tracks` and `dets` matched by IoU (>= `min_iou`; `iou_cost`: 1 - IoU of all, inf across classes)."""
        if not tracks.shape[0] or not dets.shape[0]:
            return
        rows, cols = linear_assignment(iou_cost[np.ix_(tracks, dets)], 1.0 - min_iou + 1e-9)
        track_of_det[dets[cols]] = tracks[rows]
        matched_track[tracks[rows]] = True

    def _motion_distances(self, tracks: np.ndarray, zd: np.ndarray,
                          high: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Stage d's costs of `tracks` (rows) and detection boxes zd (costs.motion_distances): without the turn reach and with it."""
        return motion_distances(self._x[tracks], self._P[tracks], self._turn[tracks], self._time - self._last_seen[tracks],
                                zd, self.config, high)

    def _motion_distance(self, tracks: np.ndarray, zd: np.ndarray, high: Optional[np.ndarray] = None) -> np.ndarray:
        """Stage d's cost of each (track, detection centre), the turn reach in."""
        return self._motion_distances(tracks, zd, high)[1]

    def _reid_distance(self, tracks: np.ndarray, centres: np.ndarray, elapsed: np.ndarray) -> np.ndarray:
        """Stage e's distance of `tracks` (rows) from detection centres, in units of their reach (costs.reid_distance)."""
        return reid_distance(self._x[tracks], self._turn[tracks], centres, elapsed, self.config)

    def _match_reid(self, tracks: np.ndarray, dets: np.ndarray, z: np.ndarray, det_labels: np.ndarray,
                    hists: Optional[np.ndarray], track_of_det: np.ndarray, matched_track: np.ndarray) -> None:
        """Stage e: a lost track is found again by a confident detection of its class whose centre is
        within ``reid_reach`` x its speed x the time since its last match (plus ``min_gate_size`` box
        sizes) of its last measured centre: wherever a turning or bouncing object went, it went no
        farther than its speed allows (at low frame rates a missed frame leaves a constant-velocity
        prediction many box sizes off a curved path). Nearer, in units of that reach, is cheaper."""
        cfg = self.config
        zd = z[dets]
        elapsed = (self._time - self._last_seen[tracks])[:, None]
        cost = self._reid_distance(tracks, zd[:, :2], elapsed) * cfg.motion_gate
        self._refuse_near(cost, cfg.motion_gate,
                          lambda near: self._never_one(tracks, dets[near], zd[near], det_labels, hists, matched_track))
        rows, cols = linear_assignment(cost, cfg.motion_gate)
        track_of_det[dets[cols]] = tracks[rows]
        matched_track[tracks[rows]] = True

    def _match_motion(self, tracks: np.ndarray, dets: np.ndarray, z: np.ndarray, det_labels: np.ndarray,
                      scores: np.ndarray, hists: Optional[np.ndarray], track_of_det: np.ndarray,
                      matched_track: np.ndarray) -> None:
        cfg = self.config
        zd = z[dets]
        high = scores[dets] >= cfg.high_threshold
        by_filter, cost = self._motion_distances(tracks, zd, high)  # (by_filter >= cost: the turn reach only lowers a cost)
        self._refuse_near(cost, cfg.motion_gate,
                          lambda near: self._never_one(tracks, dets[near], zd[near], det_labels, hists, matched_track))
        # a low-score detection only continues a track being tracked (as in stage b)
        cost[(self._lost[tracks] | (self._ids[tracks] < 0))[:, None] & ~high[None, :]] = np.inf
        # a lost track is found again off its IoU only by a detection confident enough to start a track
        cost[self._lost[tracks][:, None] & (scores[dets] < cfg.new_track_threshold)[None, :]] = np.inf
        passes = []
        if cfg.filter_first:
            # first the confirmed tracks matched lately, by their filters (and min_gate_size) alone:
            # a box where the filter put the object is that object, before a box the turn reach also
            # takes (a disc about the last centre, where clutter near it is cheaper than the object
            # on its curve); then the rest, turn reach included
            recent = (self._ids[tracks] >= 0) & self._seen_within(cfg.turn_seconds, tracks)
            if recent.any():
                passes.append(np.where(recent[:, None] & np.isfinite(cost), by_filter, np.inf))
        passes.append(cost)
        if not high.all():
            # the high detections before the low ones, as in stages a and b (a detector's low-score
            # second box of an object, nearer the prediction than its real box, took the track)
            passes = [np.where(high[None, :], step, np.inf) for step in passes] + [cost]
        free_tracks = np.ones(tracks.shape[0], bool)
        free_dets = np.ones(dets.shape[0], bool)
        for index, step in enumerate(passes):
            if index:
                step = np.where(free_tracks[:, None] & free_dets[None, :], step, np.inf)
            rows, cols = linear_assignment(step, cfg.motion_gate)
            track_of_det[dets[cols]] = tracks[rows]
            matched_track[tracks[rows]] = True
            free_tracks[rows] = False
            free_dets[cols] = False
