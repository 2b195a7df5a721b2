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
2. **Associate** each detection with a track, always within one class, in six stages, each an
   optimal assignment: ByteTrack's two by IoU, then by the filter's motion (boxes that stopped
   overlapping), a lost track re-found within its speed's reach, and a detector's class flip
   (association.py, with the frame's colours as a veto). A motion match that could have gone
   another way waits a frame and the next frame's boxes settle it (lookahead.py). Each matched
   track's filter then takes its box, a partial view made whole (table.py).
3. **Track life**: tentative tracks confirmed after ``min_hits`` matches and a running score of
   ``confirm_score``, given a new ID or an object's own back (a lost track's or the memory's of
   ended tracks), lost, and ended after ``lost_seconds`` (track_life.py, memory.py).

IDs are 1, 2, 3, ... in order of confirmation, each for one object in the tracker's life (an ended
track's ID comes back only to a track the memory takes for that object; ``reset`` forgets them and
keeps counting unless told to restart). ``get_state`` / ``set_state`` carry a tracker across a
restart as plain JSON-able data (with the ambiguities waiting for the next frame; ``resume_after``
puts its times on the new process's clock, state_file.py keeps it in a file). Bad input (boxes of the wrong shape, out-of-order or non-finite
timestamps) raises EdgeFpnError with one sentence and leaves the tracker as it was; detections
with non-finite, empty or far-out boxes (inputs.MAX_COORDINATE) or a non-finite score are left out
of the matching (their ID is -1) and counted in ``skipped_detections``; a score over 1 is taken as 1. At most ``max_detections`` detections a frame (the best scores) take
part: the rest get -1.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...errors import EdgeFpnError
from .appearance import BINS, colour_histograms, still_in_sight
from .config import TrackerConfig
from .geometry import checked_frame_size, out_of_frame, to_cxcywh, to_xyxy
from .inputs import checked_detections, checked_timestamp
from .lookahead import Ambiguity, Lookahead
from .memory import TrackMemory
from .state import STATE_VERSION, parsed_state, state_of
from .track_life import TrackLife

__all__ = ["STATE_VERSION", "Tracker"]
# (on the per-frame path of every module here: index arrays from masks as mask.nonzero()[0], not
# np.flatnonzero, a fifth of its cost; a mask's test as np.count_nonzero(mask), not mask.any() or
# mask.all(), a quarter of theirs; rows of a matrix as m.take(rows, 0).take(cols, 1), not
# m[np.ix_(rows, cols)], whose Python wrapper cost 17 us a frame: each a dozen times a frame)


class Tracker(Lookahead, TrackLife):
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
        self.skipped_detections = 0  # non-finite, empty or far-out boxes left out of the matching
        self.frames = 0
        self._time: Optional[float] = None
        self._pending: List[Ambiguity] = []  # this frame's motion matches that the next frame settles
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
        track seen in the last frame (behind that object: not a box to show), unless the last frame
        given to ``update`` showed the track's own colours there (``in_sight_share``: it is in front,
        only missed by the detector), or, given `frame_size` (width, height), more than half out of the frame or
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
        if np.count_nonzero(hidden):
            if self._behind_rows is None:  # (no frame's colours this time: by the boxes alone, once)
                self._behind_rows = self._lost_behind()
            covered = self._behind_rows[keep][hidden]
            if frame is not None:
                covered |= out_of_frame(boxes[hidden], self._x[keep, 4:6][hidden], *frame)
            hidden[hidden] = covered
        guessed = lost & (self.config.coast_reach > 0)
        if np.count_nonzero(guessed):
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
        boxes, scores, labels, usable = checked_detections(boxes, scores, labels)
        now = self._next_time(timestamp)
        self.skipped_detections += int(usable.shape[0] - np.count_nonzero(usable))
        cfg = self.config
        # the detections that take part: finite, above the low threshold, the best max_detections
        chosen = (usable & (scores >= cfg.low_threshold)).nonzero()[0]
        if chosen.shape[0] > cfg.max_detections:
            best = np.argsort(-scores[chosen], kind="stable")[:cfg.max_detections]
            chosen = np.sort(chosen[best])
        det_boxes, det_scores, det_labels = boxes[chosen], scores[chosen], labels[chosen]
        hists = self._colours(image, det_boxes, det_scores)  # (before anything changes: a bad image leaves all as it was)
        result = np.full(scores.shape[0], -1, np.int64)
        self.frames += 1
        self._behind_rows = None  # (the rows change below; an update that raises midway leaves None too)
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
        if self._x.shape[0] and chosen.shape[0]:
            by_iou = self._associate(det_boxes, det_scores, det_labels, z, hists, track_of_det, matched_track, flipped)
        else:
            by_iou = matched_track.copy()
        matched_dets = (track_of_det >= 0).nonzero()[0]
        waiting = np.zeros((0,), np.int64)
        if cfg.lookahead and matched_dets.shape[0]:  # (before the matched tracks take their boxes)
            waiting = self._ambiguous(track_of_det, matched_dets, matched_track, by_iou, z, det_scores, det_labels, now,
                                      hists)
        any_flipped = np.count_nonzero(flipped)  # (most frames: none; each check below skips two numpy calls)
        if matched_dets.shape[0]:
            rows = track_of_det[matched_dets]
            self._flip[rows] = (np.where(flipped[matched_dets], self._flip[rows] + (now - self._last_seen[rows]), 0.0)
                                if any_flipped else 0.0)
            self._apply_matches(rows, matched_dets, z, det_scores, now, hists)
        every_matched = matched_dets.shape[0] == matched_track.shape[0]  # (each match one track and one box)
        self._track_life(matched_track, every_matched)
        if matched_dets.shape[0]:  # (rows: the matched tracks, as above; nothing has moved them)
            result[chosen[matched_dets]] = np.where(self._score[rows] >= cfg.report_score, self._ids[rows], -1)
            if waiting.shape[0]:
                result[chosen[waiting]] = -1
            if any_flipped:
                result[chosen[flipped]] = -1
        # new tentative tracks from the confident detections nobody took
        new = ((track_of_det < 0) & (det_scores >= cfg.new_track_threshold)).nonzero()[0]
        checking_duplicates = new.shape[0] and cfg.duplicate_iou < 1
        if checking_duplicates:
            identified = matched_dets[self._ids[track_of_det[matched_dets]] >= 0]  # (before the rows move)
        keep = self._keep(matched_track, now, every_matched)
        if cfg.recall_seconds > 0:
            self._remember_ended(keep, now)
        self._take(keep)
        if checking_duplicates:
            new = new[~self._duplicates(det_boxes, new, identified)]
        if new.shape[0]:
            ids = np.full(new.shape[0], -1, np.int64)
            if cfg.min_hits <= 1:
                ids = np.arange(self.next_id, self.next_id + new.shape[0])
                self.next_id += int(new.shape[0])
                result[chosen[new]] = ids
            self._add(z[new], det_scores[new], det_labels[new], ids, now, None if hists is None else hists[new])
        if hists is not None and cfg.in_sight_share > 0:  # (the colours need this frame; else tracks() asks the boxes)
            self._behind_rows = self._lost_behind(image)
        return result

    def _colours(self, image: Any, boxes: np.ndarray, scores: np.ndarray) -> Optional[np.ndarray]:
        """The detections' colour histograms in `image` (None without a frame or the appearance veto):
        of the first-stage detections only, the ones a track's colours learn from and new tracks
        start from; a low-score box's colours stay unknown (zeros), never a veto, and cost nothing."""
        if image is None or self.config.appearance_veto <= 0:
            return None
        hists = np.zeros((boxes.shape[0], BINS))
        high = scores >= self.config.high_threshold
        hists[high] = colour_histograms(image, boxes[high])
        return hists

    def _lost_behind(self, image: Any = None) -> np.ndarray:
        """Which tracks (a mask over the rows) are confirmed, lost, and predicted at least
        ``hidden_cover`` inside the box of a confirmed track seen now (tracks()' ``hidden``), less
        those seen within ``reid_seconds`` whose predicted box in `image` still shows their own
        colours (appearance.still_in_sight): in front of that object and missed by the detector. Of
        the boxes hidden by the boxes alone on noisy ground truth of the "hard" scene (tuning seeds
        4-9, 30 FPS, lost at most 0.15 s), 167 of 544 covered their object; the colours show 161 of
        them and 6 of the 377 others."""
        cfg = self.config
        confirmed = self._ids >= 0
        lost, seen = confirmed & self._lost, confirmed & ~self._lost
        out = np.zeros(confirmed.shape[0], bool)
        if not (np.count_nonzero(lost) and np.count_nonzero(seen)):
            return out
        lost, seen = lost.nonzero()[0], seen.nonzero()[0]
        boxes = to_xyxy(self._x[lost, :4])
        covering = self._covered_by(boxes, to_xyxy(self._x[seen, :4]))
        behind = covering >= 0
        # (only where its prediction is still trusted, seen within reid_seconds: past that the colours
        # are looked for where it may not be, and the colours cost a frame ~0.1 ms)
        if image is not None and np.count_nonzero(behind):
            recent = behind & self._seen_within(cfg.reid_seconds, lost)
            rows, coverers = lost[recent], seen[covering[recent]]
            behind[recent] = ~still_in_sight(image, boxes[recent], self._hist[rows], self._hist[coverers],
                                             cfg.in_sight_share, cfg.in_sight_margin)
        out[lost] = behind
        return out

    def get_state(self) -> Dict[str, Any]:
        """Everything the tracker knows, as JSON-able data (lists and numbers), for ``set_state``."""
        return state_of(self)

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
        parsed = parsed_state(state)
        for name, value in parsed.arrays.items():
            setattr(self, "_" + name, value)
        self._pending = parsed.waiting
        self._memory = parsed.memory
        self.next_id, self._time, self.frames, self.skipped_detections = (parsed.next_id, parsed.time, parsed.frames,
                                                                          parsed.skipped)
        self._resume_after = resume_after if parsed.time is not None else None
        self._behind_rows = None  # (tracks() judges by the boxes alone: the colours are the next frame's)

    def _next_time(self, timestamp: Any) -> float:
        """This frame's timestamp, checked (inputs.py) and not before the last frame's (after
        set_state's resume_after, the last frame's time is moved onto the new clock first)."""
        now = checked_timestamp(timestamp)
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
