"""The association of a frame's detections with the predicted tracks (the Tracker's step 2).

Always within one class (a star never takes a ring's ID: a detector's class flip leaves that
detection without an ID; stage f keeps the track on it), each stage an optimal assignment
(``linear_assignment``: a Hungarian solver in numpy):

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
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import numpy as np

from .appearance import known, shared, unlike
from .assignment import linear_assignment
from .config import TIME_SLACK
from .costs import motion_distances, reid_distance, size_mismatch
from .geometry import iou_matrix, to_xyxy
from .table import TrackTable


class Association(TrackTable):
    """Stages a-f (the module doc) on the track table, and the checks they share."""

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
        other_class = self._other_class(slice(None), slice(None), det_labels)  # (every pair: views, no gathers)
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
        if np.count_nonzero(low):
            takers = ~matched_track & (confirmed | cfg.tentative_low)
            self._match_iou(takers.nonzero()[0], low.nonzero()[0], iou_cost, cfg.low_match_iou, track_of_det, matched_track)
        unmatched = track_of_det < 0
        if not np.count_nonzero(unmatched):  # (every box taken by IoU: stages c-f have none to match)
            return matched_track.copy()
        # c: high detections left x tentative tracks
        free_high = (high & unmatched).nonzero()[0]
        if free_high.shape[0]:
            self._match_iou((~confirmed & ~matched_track).nonzero()[0], free_high, iou_cost, cfg.tentative_match_iou,
                            track_of_det, matched_track)
        by_iou = matched_track.copy()
        # d: what is left, by motion (boxes that stopped overlapping); low detections only for tracked tracks
        free = (track_of_det < 0) & (high | cfg.low_motion)
        free_tracks = (~matched_track).nonzero()[0]
        if cfg.motion_gate > 0 and np.count_nonzero(free) and free_tracks.shape[0]:
            self._match_motion(free_tracks, free.nonzero()[0], z, det_labels, det_scores, hists, track_of_det,
                               matched_track)
        # e: lost tracks left x confident detections left, within reach of where the track was last seen
        if cfg.reid_reach > 0 and np.count_nonzero(self._lost):
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

    def _other_class(self, tracks: Union[np.ndarray, slice], dets: Union[np.ndarray, slice],
                     det_labels: np.ndarray) -> np.ndarray:
        """(T, D) True where a track and a detection have different labels (never matched: a star
        never takes a ring's ID); all False with ``per_class`` off. `tracks` and `dets`: rows, or
        slice(None) for all."""
        track_labels, labels = self._label[tracks], det_labels[dets]
        if not self.config.per_class:
            return np.zeros((track_labels.shape[0], labels.shape[0]), bool)
        return track_labels[:, None] != labels[None, :]

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
        if not (np.count_nonzero(mine) and np.count_nonzero(seen)):
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
        if tracks.shape[0] < iou_cost.shape[0]:
            iou_cost = iou_cost.take(tracks, 0)
        if dets.shape[0] < iou_cost.shape[1]:  # (rows and columns in order, each once: all of them is the whole)
            iou_cost = iou_cost.take(dets, 1)
        rows, cols = linear_assignment(iou_cost, 1.0 - min_iou + 1e-9)
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
        high = scores[dets] >= cfg.high_threshold
        # the pairs the rules allow: a low-score detection only continues a track being tracked (as in
        # stage b), a lost track is found again off its IoU only by a detection confident enough to
        # start a track, and never a box of another class
        tracked = ~(self._lost[tracks] | (self._ids[tracks] < 0))
        possible = (((tracked[:, None] | high[None, :]) & ~self._other_class(tracks, dets, det_labels))
                    & ~(self._lost[tracks][:, None] & (scores[dets] < cfg.new_track_threshold)[None, :]))
        if not np.count_nonzero(possible):
            return
        # only the tracks and detections with such a pair take part: with a real detector most boxes
        # left here are low-score clutter (the same matches: a row or column with no allowed pair is
        # never matched, and each pair's cost and colour checks are its own)
        keep_tracks, keep_dets = possible.any(axis=1), possible.any(axis=0)
        tracks, dets, high = tracks[keep_tracks], dets[keep_dets], high[keep_dets]
        zd = z[dets]
        by_filter, cost = self._motion_distances(tracks, zd, high)  # (by_filter >= cost: the turn reach only lowers a cost)
        cost[~possible[keep_tracks][:, keep_dets]] = np.inf
        self._refuse_near(cost, cfg.motion_gate,
                          lambda near: self._never_one(tracks, dets[near], zd[near], det_labels, hists, matched_track))
        passes = []
        if cfg.filter_first:
            # first the confirmed tracks matched lately, by their filters (and min_gate_size) alone:
            # a box where the filter put the object is that object, before a box the turn reach also
            # takes (a disc about the last centre, where clutter near it is cheaper than the object
            # on its curve); then the rest, turn reach included
            recent = (self._ids[tracks] >= 0) & self._seen_within(cfg.turn_seconds, tracks)
            if np.count_nonzero(recent):
                passes.append(np.where(recent[:, None] & np.isfinite(cost), by_filter, np.inf))
        passes.append(cost)
        if np.count_nonzero(high) < high.size:
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

    def _duplicates(self, det_boxes: np.ndarray, new: np.ndarray, identified: np.ndarray) -> np.ndarray:
        """Which of the `new` detections overlap, by ``duplicate_iou``, a detection of any class
        that a confirmed track took this frame: a second reading of an object that has an ID (a
        detector that calls one object a ring and a star at once, or in turns), not a new object."""
        if not identified.shape[0]:
            return np.zeros(new.shape[0], bool)
        return (iou_matrix(det_boxes[new], det_boxes[identified]) >= self.config.duplicate_iou).any(axis=1)
