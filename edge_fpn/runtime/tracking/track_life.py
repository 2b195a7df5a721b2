"""Track life: tentative tracks confirmed and given IDs (new, or an object's own back), lost, ended.

A new track starts from a high detection scoring >= ``new_track_threshold``
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
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .appearance import known
from .assignment import linear_assignment
from .association import Association
from .config import TIME_SLACK
from .geometry import box_size
from .memory import TrackMemory


class TrackLife(Association):
    """Confirmation, the IDs handed on (inherit, recall), lost and ended tracks."""

    _memory: TrackMemory
    next_id: int

    def _track_life(self, matched_track: np.ndarray, every_matched: bool) -> None:
        """Confirmed tracks that missed this frame are lost; tentative ones with enough hits get IDs
        (in track order: deterministic IDs). `every_matched`: no track missed."""
        if not every_matched:  # (most frames: every track matched, none lost now)
            newly_lost = ~matched_track & (self._ids >= 0) & ~self._lost
            if np.count_nonzero(newly_lost):
                self._x[newly_lost, 6:] = 0.0  # a lost box keeps its size (ByteTrack stops its height velocity)
                self._lost |= newly_lost
        cfg = self.config
        inheriting = cfg.inherit and cfg.reid_reach > 0
        ready = matched_track & (self._ids < 0) & (self._score >= cfg.confirm_score)
        if not np.count_nonzero(ready):  # (most frames: every matched track has its ID)
            return
        confirm = ready & (self._hits >= cfg.min_hits)
        if cfg.early_confirm_score < 1:
            # (at 10 FPS min_hits is 0.2 s of an object in view with no ID; a confident pair of hits
            # that far apart is no flicker of clutter)
            confirm |= (ready & (self._hits >= max(cfg.min_hits - 1, 1)) & (self._score >= cfg.early_confirm_score)
                        & (self._time - self._born[:, 0] >= cfg.early_confirm_seconds - TIME_SLACK))
        if np.count_nonzero(confirm):
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
        if inheriting and np.count_nonzero(early):
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
        if np.count_nonzero(keep) == keep.size:  # (most frames: no track ends)
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
        if not np.count_nonzero(back):
            return new
        self._hand_over(lost[np.argmax(self._ids[lost][None, :] == ids[back][:, None], axis=1)], new[back])
        return new[~back]

    def _keep(self, matched_track: np.ndarray, now: float, every_matched: bool) -> np.ndarray:
        """The tracks that live on: a tentative one missed for at most tentative_seconds (by default
        none: ByteTrack drops it at its first miss), a confirmed one lost for at most lost_seconds.
        `every_matched`: no track missed (then all live on)."""
        if every_matched:
            return matched_track  # (all True; only read)
        cfg = self.config
        age = now - self._last_seen
        tentative = self._ids < 0
        if not np.count_nonzero(tentative):  # (most frames: every track has its ID)
            return age <= cfg.lost_seconds + TIME_SLACK
        return np.where(tentative, matched_track | (age <= cfg.tentative_seconds + TIME_SLACK), age <= cfg.lost_seconds + TIME_SLACK)
