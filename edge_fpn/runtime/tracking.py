"""Persistent object IDs: a ByteTrack-style tracker in numpy (no scipy, lap or filterpy).

::

    tracker = Tracker(TrackerConfig(min_hits=3, lost_seconds=1.5))
    for frame, timestamp in camera:
        detections = tracker.track(detector(frame), timestamp)   # detections.track_ids: -1 = not yet confirmed

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
2. **Associate**, always within one class (a star never takes a ring's ID: a detector's one-frame
   class flip leaves that detection without an ID, and the track, lost for that frame, takes the
   next one), each stage an optimal assignment (``linear_assignment``: a Hungarian solver in numpy):

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
   the side it still shows does not drag its centre and velocity.
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
   8% of the gaps).
   A confirmed track whose running score falls under ``report_score`` keeps its ID but gives it
   to no detection until the score is back (clutter that once scored high).

IDs are 1, 2, 3, ... in order of confirmation and never reused in the tracker's life (``reset``
keeps counting unless told to restart). ``get_state`` / ``set_state`` carry a tracker across a
restart as plain JSON-able data (with the ambiguities waiting for the next frame). Bad input (boxes of the wrong shape, out-of-order or non-finite
timestamps) raises EdgeFpnError with one sentence and leaves the tracker as it was; detections
with non-finite or empty boxes are left out of the matching (their ID is -1) and counted in
``skipped_detections``. At most ``max_detections`` detections a frame (the best scores) take
part: the rest get -1.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import EdgeFpnError

STATE_VERSION = 1
# times are compared with this slack: timestamps differ in floating point (0.8 - 0.7 > 0.1), and a
# limit of N frames' time must not drop a track at random
TIME_SLACK = 1e-6


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters; times are in seconds, noises are fractions of the box size.

    The defaults past ByteTrack's own were tuned on the synthetic camera's seeds 11-13 (noisy
    ground truth and the shipped model's detections), not on the seeds 1-3 that the tests, the
    benchmark and ``edge-fpn eval --track`` score: see benchmarks/tracking.py."""
    high_threshold: float = 0.5  # first-stage detections (ByteTrack's track_thresh)
    low_threshold: float = 0.1  # below this a detection is ignored (second stage from here)
    new_track_threshold: float = 0.6  # a new track starts only from a detection this confident
    match_iou: float = 0.2  # stage a: IoU with the predicted box (ByteTrack: 1 - 0.8)
    low_match_iou: float = 0.5  # stage b (ByteTrack: 1 - 0.5)
    tentative_match_iou: float = 0.3  # stage c (ByteTrack: 1 - 0.7)
    motion_gate: float = 9.21  # stage d: squared Mahalanobis distance of the centre (chi2, 2 dof, 99%); 0 turns it off
    motion_spread_cost: float = 4.0  # stage d: added x ln(centre std / box size) where that is > 0 (a vague prediction)
    min_gate_size: float = 1.5  # stage d: a centre this close (x the track's box size) always passes
    turn_reach: float = 1.2  # stage d: ... and one within this x speed x time since the last match of the last centre
    turn_seconds: float = 0.29  # ... for a track matched less than 0.3 s ago (a bounce, a sharp turn; 8 frames at 30 FPS, 2 at 10)
    filter_first: bool = True  # stage d matches those tracks' filter predictions before anything by turn reach
    reid_reach: float = 1.2  # stage e: a lost track takes a confident detection of its class within this x speed x time lost of its last centre
    reid_seconds: float = 0.45  # ... for a track lost at most this long
    inherit: bool = True  # a track being confirmed takes the ID of a lost one that stage e would have given its first detection
    inherit_hits: int = 2  # ... and one that would take a lost track's ID takes it at this many hits (an object known, back)
    turn_gain: float = 0.5  # weight of each measured turn rate in a track's turn rate (0: constant velocity only)
    max_turn_angle: float = 1.0  # radians between two successive chords; more is a bounce, not a turn (the rate is reset)
    min_turn_chord: float = 1.0  # chords shorter than this x box size say nothing about a turn (jitter)
    max_size_ratio: float = 2.0  # stage d: sqrt-area ratio of detection and track at most this
    low_motion: bool = True  # stage d also takes low-score detections, for the tracks matched last frame
    lookahead: bool = True  # a motion match that could have gone another way is settled by the next frame (its IDs wait)
    lookahead_margin: float = 1.0  # ... the other way is taken if it fits the next frame better by this (squared Mahalanobis)
    lookahead_reach: float = 3.0  # ... a lost track of the class is another way if its cost is within this of the taker's
    partial_ratio: float = 0.65  # a box this much narrower or shorter than a track's prediction ...
    partial_edge: float = 0.25  # ... with its other edge within this x size of the predicted one is a partial view (0: off)
    min_hits: int = 3  # first-stage matches before a track gets an ID (1: at once)
    confirm_score: float = 0.7  # ... and its running score at least this (clutter scores lower)
    early_confirm_score: float = 0.85  # ... or min_hits - 1 matches with a running score this high (1: never) ...
    early_confirm_seconds: float = 0.09  # ... spanning at least this (by default 2 at 10 FPS; 30 FPS keeps min_hits)
    score_rate: float = 0.2  # weight of each match's score in the running score (after the first 1/score_rate)
    report_score: float = 0.5  # a confirmed track gives its ID only while its running score is at least this
    tentative_seconds: float = 0.09  # a tentative track survives misses this long (0: dropped at its first miss; 0.09: two frames at 30 FPS, none at 10)
    tentative_low: bool = True  # low-score detections also continue tentative tracks (stage b; no hit counted)
    lost_seconds: float = 1.5  # a confirmed track is kept this long after its last match (ByteTrack: 1 s; see below)
    per_class: bool = True  # match only detections and tracks of the same label
    duplicate_iou: float = 0.5  # no new track from a detection this close to one a confirmed track took (any class)
    hidden_cover: float = 0.8  # a lost track this much inside the box of one seen now is hidden: not coasted, not re-found by stage e (0: never)
    max_detections: int = 300  # detections a frame that take part (the best scores)
    measurement_noise: float = 0.05  # std of a measured box coordinate, x box size (ByteTrack's 1/20)
    position_noise: float = 0.075  # variance of the position random walk, x size^2 per second
    acceleration_noise: float = 30.0  # variance of the centre's velocity random walk, x size^2 per second^3
    manoeuvre: float = 0.5  # how fast a track's own acceleration noise follows its surprises (0: fixed)
    max_manoeuvre: float = 100.0  # ... up to this many times acceleration_noise
    size_acceleration_noise: float = 2.0  # the same for the width/height velocity (a box grows slower than it moves)
    initial_velocity: float = 40.0  # std of a new track's centre velocity, box sizes per second
    initial_size_velocity: float = 1.0  # std of a new track's width/height velocity, box sizes per second

    def __post_init__(self) -> None:
        for name in ("high_threshold", "low_threshold", "new_track_threshold", "match_iou", "low_match_iou",
                     "tentative_match_iou", "duplicate_iou", "hidden_cover", "confirm_score", "early_confirm_score", "score_rate",
                     "report_score", "partial_ratio"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise EdgeFpnError(f"tracker {name} must be between 0 and 1, not {value!r}")
        for name in ("filter_first", "inherit", "low_motion", "lookahead", "tentative_low", "per_class"):
            if not isinstance(getattr(self, name), bool):
                raise EdgeFpnError(f"tracker {name} must be true or false, not {getattr(self, name)!r}")
        if self.low_threshold > self.high_threshold:
            raise EdgeFpnError(f"tracker low_threshold ({self.low_threshold}) must not exceed high_threshold ({self.high_threshold})")
        if self.new_track_threshold < self.high_threshold:
            raise EdgeFpnError(f"tracker new_track_threshold ({self.new_track_threshold}) must be at least high_threshold "
                               f"({self.high_threshold}): new tracks start from first-stage detections")
        if not (isinstance(self.min_hits, int) and self.min_hits >= 1):
            raise EdgeFpnError(f"tracker min_hits must be an integer >= 1, not {self.min_hits!r}")
        if not (isinstance(self.inherit_hits, int) and self.inherit_hits >= 1):
            raise EdgeFpnError(f"tracker inherit_hits must be an integer >= 1, not {self.inherit_hits!r}")
        if not (isinstance(self.max_detections, int) and self.max_detections >= 1):
            raise EdgeFpnError(f"tracker max_detections must be an integer >= 1, not {self.max_detections!r}")
        for name in ("lost_seconds", "motion_gate", "min_gate_size", "position_noise", "acceleration_noise", "initial_velocity",
                     "initial_size_velocity", "size_acceleration_noise", "tentative_seconds", "manoeuvre",
                     "motion_spread_cost", "turn_reach", "turn_seconds", "reid_reach", "reid_seconds", "turn_gain", "max_turn_angle",
                     "min_turn_chord", "partial_edge", "lookahead_margin", "lookahead_reach", "early_confirm_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise EdgeFpnError(f"tracker {name} must be a finite number >= 0, not {value!r}")
        if not (isinstance(self.measurement_noise, (int, float)) and 0 < self.measurement_noise < 10):
            raise EdgeFpnError(f"tracker measurement_noise must be in (0, 10), not {self.measurement_noise!r}")
        if not (isinstance(self.max_manoeuvre, (int, float)) and 1 <= self.max_manoeuvre < math.inf):
            raise EdgeFpnError(f"tracker max_manoeuvre must be a finite number >= 1, not {self.max_manoeuvre!r}")
        if not (isinstance(self.max_size_ratio, (int, float)) and self.max_size_ratio >= 1):
            raise EdgeFpnError(f"tracker max_size_ratio must be >= 1, not {self.max_size_ratio!r}")


# ---------------------------------------------------------------- assignment

def linear_assignment(cost: np.ndarray, limit: float) -> Tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pairs of a minimum-cost assignment where only pairs costing less
    than `limit` may be matched and leaving a row or column unmatched costs ``limit / 2``
    (lap.lapjv's ``extend_cost=True, cost_limit=limit``, which ByteTrack uses).

    Pairs that are each other's only candidate are matched at once (vectorized); the rest, where
    candidates compete, go to a Hungarian solver (shortest augmenting paths with potentials; a
    Python loop over rows, numpy over columns). Clipping every cost at `limit` and matching all
    rows of the smaller side gives the same optimum as the extended square problem.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, not of shape {cost.shape}")
    empty = np.zeros((0,), np.int64)
    if cost.size == 0:
        return empty, empty.copy()
    feasible = cost < limit  # NaN compares False: never matched
    row_degree = feasible.sum(axis=1)
    col_degree = feasible.sum(axis=0)
    first = feasible.argmax(axis=1)
    alone = (row_degree == 1) & (col_degree[first] == 1)
    rows = np.flatnonzero(alone)
    cols = first[alone]
    rest_rows = np.flatnonzero((row_degree > 0) & ~alone)
    if rest_rows.shape[0]:
        taken = np.zeros(cost.shape[1], bool)
        taken[cols] = True
        rest_cols = np.flatnonzero((col_degree > 0) & ~taken)
        sub = np.minimum(np.where(np.isnan(cost[np.ix_(rest_rows, rest_cols)]), limit, cost[np.ix_(rest_rows, rest_cols)]), limit)
        if sub.shape[0] <= sub.shape[1]:
            r, c = np.arange(sub.shape[0]), _hungarian(sub)
        else:
            c, r = np.arange(sub.shape[1]), _hungarian(sub.T)
        good = sub[r, c] < limit
        rows = np.concatenate([rows, rest_rows[r[good]]])
        cols = np.concatenate([cols, rest_cols[c[good]]])
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def _hungarian(a: np.ndarray) -> np.ndarray:
    """Column of each row of the minimum-cost assignment of an (n, m) matrix with n <= m, finite."""
    n, m = a.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, np.int64)  # p[j]: the row (1-based) on column j (1-based); 0: free
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            current = a[i0 - 1] - u[i0] - v[1:]
            better = ~used[1:] & (current < minv[1:])
            minv[1:][better] = current[better]
            way[1:][better] = j0
            masked = np.where(used[1:], np.inf, minv[1:])
            j1 = int(masked.argmin()) + 1
            delta = masked[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    assignment = np.zeros(n, np.int64)
    assignment[p[1:][p[1:] > 0] - 1] = np.flatnonzero(p[1:] > 0)
    return assignment


# ---------------------------------------------------------------- boxes

def _intersections(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, M) intersection areas of the boxes of `a` (N,4 xyxy) and `b` (M,4), and their areas."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None), area_a, area_b


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N,4 xyxy) with every box of `b` (M,4)."""
    inter, area_a, area_b = _intersections(a, b)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def cover_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The share of every box of `a` (N,4 xyxy) that lies inside every box of `b` (M,4)."""
    inter, area_a, _ = _intersections(a, b)
    return inter / np.maximum(area_a[:, None], 1e-9)


def _frame_size(frame_size: Any) -> Tuple[float, float]:
    """(width, height) as two positive finite floats, or one sentence saying what is wrong."""
    try:
        width, height = (float(v) for v in frame_size)
    except (TypeError, ValueError):
        raise EdgeFpnError(f"frame_size must be (width, height) in pixels, not {frame_size!r}") from None
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise EdgeFpnError(f"frame_size must be two positive numbers of pixels, not {frame_size!r}")
    return width, height


def _to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes)
    out[:, 0] = (boxes[:, 0] + boxes[:, 2]) * 0.5
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) * 0.5
    out[:, 2] = boxes[:, 2] - boxes[:, 0]
    out[:, 3] = boxes[:, 3] - boxes[:, 1]
    return out


def _to_xyxy(state: np.ndarray) -> np.ndarray:
    half_w = np.maximum(state[:, 2], 1e-3) * 0.5
    half_h = np.maximum(state[:, 3], 1e-3) * 0.5
    return np.stack([state[:, 0] - half_w, state[:, 1] - half_h, state[:, 0] + half_w, state[:, 1] + half_h], axis=1)


# ---------------------------------------------------------------- the tracker

_TRACK_FIELDS = ("x", "P", "q", "turn", "born", "label", "score", "ids", "hits", "last_seen", "lost")
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

    ``update(boxes, scores, labels, timestamp) -> track_ids`` (one per detection, -1 where it is
    not (yet) a confirmed track); ``track(detections, timestamp)`` returns the Detections with
    ``track_ids`` set. Tracks are held as arrays (one row a track), so a frame costs a fixed
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
        self._clear()

    # ------------------------------------------------------------ public API
    def reset(self, restart_ids: bool = False) -> None:
        """Forget every track (a new video, a reconnected camera). IDs keep counting, so that an ID
        is never given twice in this tracker's life, unless `restart_ids` (the next ID is then 1)."""
        self._clear()
        self._pending = []
        self._time = None
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
        not a box to show) or, given `frame_size` (width, height), more than half out of the frame.
        A program that shows lost tracks' predicted boxes (coasting through a detector's misses)
        shows the lost and not hidden ones: on noisy ground truth of the "occlude" scene, 3 of 4
        coasted boxes that cover no object are hidden ones, and 1 in 18 of those that do."""
        frame = None if frame_size is None else np.array([[0.0, 0.0, *_frame_size(frame_size)]])
        keep = self._ids >= 0
        boxes = _to_xyxy(self._x[keep, :4])
        lost = self._lost[keep].copy()
        hidden = lost.copy()
        if hidden.any():
            covered = self._behind(boxes[hidden], boxes[~lost])
            if frame is not None:
                covered |= cover_matrix(boxes[hidden], frame)[:, 0] < 0.5
            hidden[hidden] = covered
        return {"ids": self._ids[keep].copy(), "labels": self._label[keep].copy(), "boxes": boxes.astype(np.float32),
                "velocities": self._x[keep, 4:6].astype(np.float32), "lost": lost, "hidden": hidden,
                "last_seen": self._last_seen[keep].copy(), "scores": self._score[keep].astype(np.float32)}

    def track(self, detections: Any, timestamp: float) -> Any:
        """The same Detections with ``track_ids`` filled."""
        ids = self.update(detections.boxes, detections.scores, detections.labels, timestamp)
        return dataclasses.replace(detections, track_ids=ids)

    def update(self, boxes: Any, scores: Any, labels: Any = None, timestamp: Optional[float] = None) -> np.ndarray:
        """One frame: detections (N,4 xyxy pixels; N scores; N integer labels or None for one class)
        at `timestamp` (seconds, not before the last frame's). Returns N int64 track IDs (-1: none)."""
        boxes, scores, labels, usable = self._check(boxes, scores, labels)
        now = self._check_time(timestamp)
        cfg = self.config
        result = np.full(scores.shape[0], -1, np.int64)
        self.frames += 1
        # the detections that take part: finite, above the low threshold, the best max_detections
        chosen = np.flatnonzero(usable & (scores >= cfg.low_threshold))
        if chosen.shape[0] > cfg.max_detections:
            best = np.argsort(-scores[chosen], kind="stable")[:cfg.max_detections]
            chosen = np.sort(chosen[best])
        det_boxes, det_scores, det_labels = boxes[chosen], scores[chosen], labels[chosen]
        z = _to_cxcywh(det_boxes)
        dt = 0.0 if self._time is None else now - self._time
        self._time = now
        if self._x.shape[0]:
            self._predict(dt)
        if self._pending:
            self._settle(z, det_labels, now)
        track_of_det = np.full(chosen.shape[0], -1, np.int64)
        matched_track = np.zeros(self._x.shape[0], bool)
        by_iou = matched_track.copy()
        if self._x.shape[0] and chosen.shape[0]:
            by_iou = self._associate(det_boxes, det_scores, det_labels, z, track_of_det, matched_track)
        matched_dets = np.flatnonzero(track_of_det >= 0)
        waiting = np.zeros((0,), np.int64)
        if cfg.lookahead and matched_dets.shape[0]:  # (before the matched tracks take their boxes)
            waiting = self._ambiguous(track_of_det, matched_dets, matched_track, by_iou, z, det_scores, det_labels, now)
        if matched_dets.shape[0]:
            self._apply(track_of_det[matched_dets], z[matched_dets], det_scores[matched_dets], now)
        self._track_life(matched_track)
        if matched_dets.shape[0]:
            rows = track_of_det[matched_dets]
            result[chosen[matched_dets]] = np.where(self._score[rows] >= cfg.report_score, self._ids[rows], -1)
            result[chosen[waiting]] = -1
        identified = matched_dets[self._ids[track_of_det[matched_dets]] >= 0]  # (before the rows move)
        self._take(self._keep(matched_track, now))
        # new tentative tracks from the confident detections nobody took
        new = np.flatnonzero((track_of_det < 0) & (det_scores >= cfg.new_track_threshold))
        if new.shape[0] and cfg.duplicate_iou < 1:
            new = new[~self._duplicates(det_boxes, new, identified)]
        if new.shape[0]:
            ids = np.full(new.shape[0], -1, np.int64)
            if cfg.min_hits <= 1:
                ids = np.arange(self.next_id, self.next_id + new.shape[0])
                self.next_id += int(new.shape[0])
                result[chosen[new]] = ids
            self._add(z[new], det_scores[new], det_labels[new], ids, now)
        return result

    def _ambiguous(self, track_of_det: np.ndarray, matched_dets: np.ndarray, matched_track: np.ndarray, by_iou: np.ndarray,
                   z: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray, now: float) -> np.ndarray:
        """The detections whose motion match (stages d, e) between confirmed tracks could have gone
        another way, remembered in ``_pending`` for the next frame to settle (``_settle``); their IDs
        wait a frame. Another way is two tracks of a class each within the motion gate of the other's
        box (objects passing each other), or a box's taker and a track of its class lost at most
        ``reid_seconds`` whose cost for that box is within ``lookahead_reach`` of the taker's. On one
        frame both are a coin toss at low frame rates; on two, one way's predictions fit and the
        other's do not. Returns the detections whose IDs wait."""
        cfg = self.config
        rows = track_of_det[matched_dets]
        moved = (self._ids[rows] >= 0) & ~by_iou[rows]
        dets, rows = matched_dets[moved], rows[moved]
        if not rows.shape[0]:
            return np.zeros((0,), np.int64)
        cost = self._motion_distance(rows, z[dets])  # (taker, box)
        waiting: List[int] = []
        paired = np.zeros(rows.shape[0], bool)
        swappable = ((det_labels[dets][:, None] == det_labels[dets][None, :]) & (cost < cfg.motion_gate)
                     & (cost.T < cfg.motion_gate))
        for a, b in zip(*np.nonzero(np.triu(swappable, 1))):
            if not (paired[a] or paired[b]):
                paired[a] = paired[b] = True
                self._remember(rows[[a, b]], z[dets[[b, a]]], det_scores[dets[[b, a]]], np.array([True, True]), now)
                waiting += [int(dets[a]), int(dets[b])]
        lost = np.flatnonzero((self._ids >= 0) & ~matched_track & self._seen_within(cfg.reid_seconds)
                              & (self._score >= cfg.confirm_score))
        alone = np.flatnonzero(~paired)
        if lost.shape[0] and alone.shape[0]:
            other = self._motion_distance(lost, z[dets[alone]])  # (lost, box)
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
            rows = [np.flatnonzero(self._ids == track_id) for track_id in ambiguity.ids]
            if not (rows[0].shape[0] and rows[1].shape[0]):
                continue  # (a track ended)
            rows = np.array([rows[0][0], rows[1][0]])
            boxes = np.flatnonzero(det_labels == self._label[rows[0]])
            other = Tracker(cfg)
            for name in _TRACK_FIELDS:
                setattr(other, "_" + name, ambiguity.before[name].copy())
            other._time = ambiguity.time
            taking = np.flatnonzero(ambiguity.takes)
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
        return self._behind(_to_xyxy(self._x[rows, :4]), _to_xyxy(self._x[seen, :4]))

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

    def _whole_boxes(self, rows: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The measured boxes (cx, cy, w, h) with partial views made whole: where a confirmed-size
        track's box comes back narrower (or shorter) than ``partial_ratio`` x its predicted size while
        one of its two edges on that axis is within ``partial_edge`` x the size of where the prediction
        put it, the object is cut by an occluder or the frame's border on the other side, and the
        filter takes the box extended from the edge that agrees back to the predicted size. Without
        this, an object sliding behind another drags its centre and velocity towards the edge it still
        shows and is predicted off its path while hidden (half the ID losses behind an occluder)."""
        cfg = self.config
        if cfg.partial_edge <= 0 or cfg.partial_ratio <= 0:
            return z
        x = self._x[rows]
        sized = self._hits[rows] >= cfg.min_hits  # (a new track's size is its first box's)
        shrunk = sized[:, None] & (z[:, 2:4] < cfg.partial_ratio * x[:, 2:4])  # (K, 2): the only candidates
        if not shrunk.any():  # (most frames: one check on the per-frame path)
            return z
        z = z.copy()
        for axis in np.flatnonzero(shrunk.any(axis=0)):
            size, measured = x[:, 2 + axis], z[:, 2 + axis]
            low, high = x[:, axis] - size / 2, x[:, axis] + size / 2
            m_low, m_high = z[:, axis] - measured / 2, z[:, axis] + measured / 2
            low_cut = (m_low - low) > (high - m_high)  # the low edge moved in more: it is the cut one
            kept_off = np.where(low_cut, np.abs(m_high - high), np.abs(m_low - low))
            partial = sized & (measured < cfg.partial_ratio * size) & (kept_off <= cfg.partial_edge * size)
            if partial.any():
                centre = np.where(low_cut, m_high - size / 2, m_low + size / 2)
                z[:, axis] = np.where(partial, centre, z[:, axis])
                z[:, 2 + axis] = np.where(partial, size, measured)
        return z

    def _apply(self, rows: np.ndarray, z: np.ndarray, scores: np.ndarray, now: float) -> None:
        """The matched tracks take their detections: the filter's update, a hit (a first-stage
        score only for a tentative track: clutter scoring low never confirms one) and their score."""
        cfg = self.config
        z = self._whole_boxes(rows, z)
        self._learn_turn(rows, z, now)  # (before last_seen moves on)
        self._correct(rows, z)
        counts = (self._ids[rows] >= 0) | (scores >= cfg.high_threshold)
        self._hits[rows] += counts.astype(np.int64)
        self._last_seen[rows] = now
        self._lost[rows] = False
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
            order = np.flatnonzero(confirm)
            if inheriting:
                order = self._inherit(order, matched_track)
            self._ids[order] = np.arange(self.next_id, self.next_id + order.shape[0])
            self.next_id += int(order.shape[0])
        # an object known, back: a track that a lost one would hand its ID to takes it sooner (the
        # rest wait for min_hits; at 10 FPS a frame sooner is 0.1 s of an object in view with no ID)
        early = ready & ~confirm & (self._hits >= cfg.inherit_hits)
        if inheriting and early.any():
            self._inherit(np.flatnonzero(early), matched_track)

    def _inherit(self, new: np.ndarray, matched_track: np.ndarray) -> np.ndarray:
        """A track about to be confirmed that was born at most ``reid_seconds`` after a lost track
        of its class was last seen, within ``reid_reach`` x that track's speed x the time between
        (plus ``min_gate_size`` box sizes) of where it was last seen, is that object back (stage e,
        late: its first detection went to a new track, as after a bounce at 10 FPS, where a
        tentative track takes the next box by IoU before stage e can): it takes the lost track's ID,
        and the lost track ends. Returns the rows of `new` that still need an ID."""
        cfg = self.config
        lost = np.flatnonzero(self._lost & ~matched_track & (self._ids >= 0))
        lost = lost[~self._hidden(lost, matched_track & (self._ids >= 0))]
        if not lost.shape[0]:
            return new
        gap = self._born[new, 0][None, :] - self._last_seen[lost][:, None]  # (L, N)
        cost = self._reid_distance(lost, self._born[new, 1:3], gap)
        cost[(gap <= 0) | (gap > cfg.reid_seconds + TIME_SLACK) | (self._label[lost][:, None] != self._label[new][None, :])] = np.inf
        rows, cols = linear_assignment(cost, 1.0)
        if not rows.shape[0]:
            return new
        self._ids[new[cols]] = self._ids[lost[rows]]
        self._ids[lost[rows]] = -1  # (a tentative track unmatched this frame: dropped by _keep)
        self._last_seen[lost[rows]] = -np.inf
        return np.delete(new, cols)

    def _keep(self, matched_track: np.ndarray, now: float) -> np.ndarray:
        """The tracks that live on: a tentative one missed for at most tentative_seconds (by default
        none: ByteTrack drops it at its first miss), a confirmed one lost for at most lost_seconds."""
        cfg = self.config
        age = now - self._last_seen
        tentative = self._ids < 0
        return np.where(tentative, matched_track | (age <= cfg.tentative_seconds + TIME_SLACK), age <= cfg.lost_seconds + TIME_SLACK)

    def _associate(self, det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray, z: np.ndarray,
                   track_of_det: np.ndarray, matched_track: np.ndarray) -> np.ndarray:
        """ByteTrack's association of this frame's detections with the predicted tracks, in five
        passes; fills ``track_of_det`` (a track row per detection, -1: none) and ``matched_track``, and
        returns which tracks were matched by IoU (stages a-c; the rest of the matches are by motion)."""
        cfg = self.config
        pred = _to_xyxy(self._x[:, :4])
        high = det_scores >= cfg.high_threshold
        confirmed = self._ids >= 0
        # a: high detections x confirmed tracks (tracked and lost)
        self._match_iou(np.flatnonzero(confirmed), np.flatnonzero(high), pred, det_boxes, det_labels,
                        cfg.match_iou, track_of_det, matched_track)
        # b: low detections x the tracks still unmatched, lost ones too (ByteTrack: tracked ones only; a
        #    track that missed one frame and is half hidden in the next is found by IoU with its prediction)
        low = ~high
        if low.any():
            takers = ~matched_track & (confirmed | cfg.tentative_low)
            self._match_iou(np.flatnonzero(takers), np.flatnonzero(low),
                            pred, det_boxes, det_labels, cfg.low_match_iou, track_of_det, matched_track)
        # c: high detections left x tentative tracks
        free_high = np.flatnonzero(high & (track_of_det < 0))
        if free_high.shape[0]:
            self._match_iou(np.flatnonzero(~confirmed & ~matched_track), free_high, pred, det_boxes, det_labels,
                            cfg.tentative_match_iou, track_of_det, matched_track)
        by_iou = matched_track.copy()
        # d: what is left, by motion (boxes that stopped overlapping); low detections only for tracked tracks
        free = (track_of_det < 0) & (high | cfg.low_motion)
        free_tracks = np.flatnonzero(~matched_track)
        if cfg.motion_gate > 0 and free.any() and free_tracks.shape[0]:
            self._match_motion(free_tracks, np.flatnonzero(free), z, det_labels, det_scores, track_of_det, matched_track)
        # e: lost tracks left x confident detections left, within reach of where the track was last seen
        if cfg.reid_reach > 0:
            # (tracks whose running score is still a real object's: a lost clutter track is let go)
            lost = np.flatnonzero(self._lost & ~matched_track & self._seen_within(cfg.reid_seconds)
                                  & (self._score >= cfg.confirm_score))
            confident = np.flatnonzero((track_of_det < 0) & (det_scores >= cfg.new_track_threshold))
            if lost.shape[0] and confident.shape[0]:
                # (not one predicted behind an object seen now: it is out of sight, not off its path,
                # and a box elsewhere is another object; an object that went behind the occluder
                # before its twin came out the other side took the twin's box)
                self._match_reid(lost[~self._hidden(lost, matched_track & confirmed)], confident, z, det_labels,
                                 track_of_det, matched_track)
        return by_iou

    def get_state(self) -> Dict[str, Any]:
        """Everything the tracker knows, as JSON-able data (lists and numbers), for ``set_state``."""
        return {"version": STATE_VERSION, "config": dataclasses.asdict(self.config), "next_id": self.next_id,
                "time": self._time, "frames": self.frames, "skipped_detections": self.skipped_detections,
                "tracks": {name: getattr(self, "_" + name).tolist() for name in _TRACK_FIELDS},
                "waiting": [{"ids": list(a.ids), "before": {name: a.before[name].tolist() for name in _TRACK_FIELDS},
                             "boxes": a.boxes.tolist(), "scores": a.scores.tolist(), "takes": a.takes.tolist(),
                             "time": a.time} for a in self._pending]}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore what ``get_state`` returned (IDs go on from where they were). The tracker's own
        config is kept; a state is refused with one sentence if it is not one this version wrote."""
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
                      "lost": np.asarray(tracks["lost"], bool).reshape(n)}
            next_id = int(state["next_id"])
            time_ = None if state["time"] is None else float(state["time"])
            frames = int(state.get("frames", 0))
            skipped = int(state.get("skipped_detections", 0))
            waiting = [_Ambiguity((int(a["ids"][0]), int(a["ids"][1])),
                                  {name: np.asarray(a["before"][name], arrays[name].dtype).reshape((2,) + arrays[name].shape[1:])
                                   for name in _TRACK_FIELDS},
                                  np.asarray(a["boxes"], np.float64).reshape(2, 4), np.asarray(a["scores"], np.float64).reshape(2),
                                  np.asarray(a["takes"], bool).reshape(2), float(a["time"]))
                       for a in state.get("waiting", [])]
        except EdgeFpnError:
            raise
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EdgeFpnError(f"not a tracker state ({type(exc).__name__}: {exc}); pass what Tracker.get_state() returned") from None
        if not (np.isfinite(arrays["x"]).all() and np.isfinite(arrays["P"]).all()
                and all(np.isfinite(a.before["x"]).all() and np.isfinite(a.before["P"]).all() and np.isfinite(a.boxes).all()
                        for a in waiting)):
            raise EdgeFpnError("tracker state holds non-finite numbers; pass what Tracker.get_state() returned")
        if n and next_id <= int(arrays["ids"].max()):
            raise EdgeFpnError(f"tracker state's next_id {next_id} is not above its largest track ID {int(arrays['ids'].max())}")
        for name, value in arrays.items():
            setattr(self, "_" + name, value)
        self._pending = waiting
        self.next_id, self._time, self.frames, self.skipped_detections = next_id, time_, frames, skipped

    # ------------------------------------------------------------ checks
    def _check(self, boxes: Any, scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
        if labels.dtype.kind not in "iub":
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
            now = float(timestamp)
        except (TypeError, ValueError):
            raise EdgeFpnError(f"timestamp {timestamp!r} is not a number of seconds") from None
        if not math.isfinite(now):
            raise EdgeFpnError(f"timestamp {timestamp!r} is not finite; give the frame's capture time in seconds")
        if self._time is not None and now < self._time:
            raise EdgeFpnError(f"timestamp {now:.6f} s is before the last frame's ({self._time:.6f} s); give frames in "
                               "time order, or reset() the tracker for a new stream")
        return now

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

    def _take(self, keep: np.ndarray) -> None:
        for name in _TRACK_FIELDS:
            setattr(self, "_" + name, getattr(self, "_" + name)[keep])

    def _add(self, z: np.ndarray, scores: np.ndarray, labels: np.ndarray, ids: np.ndarray, now: float) -> None:
        cfg = self.config
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

    # ------------------------------------------------------------ Kalman filter
    def _predict(self, dt: float) -> None:
        """x <- F x, P <- F P F' + Q for a step of dt seconds (constant velocity; white-noise
        acceleration plus a position random walk, both scaled by each track's box size)."""
        if dt <= 0.0:
            return
        cfg = self.config
        x, P = self._x, self._P
        turning = np.flatnonzero(self._turn[:, 0] != 0.0)
        straight = np.flatnonzero(self._turn[:, 0] == 0.0)
        if turning.shape[0]:
            self._predict_turn(turning, dt)
        xs, Ps = x[straight], P[straight]
        xs[:, :4] += dt * xs[:, 4:]
        # F P F' with F = [[I, dt I], [0, I]], by blocks
        pp, pv, vp, vv = Ps[:, :4, :4], Ps[:, :4, 4:], Ps[:, 4:, :4], Ps[:, 4:, 4:]
        new_pp = pp + dt * (pv + vp) + (dt * dt) * vv
        new_pv = pv + dt * vv
        Ps[:, :4, :4] = new_pp
        Ps[:, :4, 4:] = new_pv
        Ps[:, 4:, :4] = np.swapaxes(new_pv, 1, 2)
        x[straight], P[straight] = xs, Ps
        x[:, 2:4] = np.maximum(x[:, 2:4], 1.0)
        scale = np.maximum(np.concatenate([x[:, 2:4], x[:, 2:4]], axis=1), 1.0)  # (N,4): w, h, w, h
        scale2 = scale * scale
        q = np.array([cfg.acceleration_noise] * 2 + [cfg.size_acceleration_noise] * 2)[None, :]
        q = np.concatenate([q[:, :2] * self._q[:, None], np.repeat(q[:, 2:], x.shape[0], 0)], axis=1)  # (N, 4)
        diag = np.arange(4)
        P[:, diag, diag] += (cfg.position_noise * dt + q * dt ** 3 / 3.0) * scale2
        P[:, diag, diag + 4] += (q * dt * dt / 2.0) * scale2
        P[:, diag + 4, diag] += (q * dt * dt / 2.0) * scale2
        P[:, diag + 4, diag + 4] += (q * dt) * scale2

    def _predict_turn(self, rows: np.ndarray, dt: float) -> None:
        """The prediction of tracks that turn at a known rate w (a coordinated turn: the velocity
        rotates by w dt and the centre moves along the arc), x <- F x, P <- F P F'."""
        w = self._turn[rows, 0]
        a = w * dt
        c, s = np.cos(a), np.sin(a)
        F = np.tile(np.eye(8), (rows.shape[0], 1, 1))
        F[:, 0, 4] = F[:, 1, 5] = s / w
        F[:, 1, 4] = (1.0 - c) / w
        F[:, 0, 5] = -F[:, 1, 4]
        F[:, 2, 6] = F[:, 3, 7] = dt
        F[:, 4, 4] = F[:, 5, 5] = c
        F[:, 5, 4] = s
        F[:, 4, 5] = -s
        self._x[rows] = np.einsum("nij,nj->ni", F, self._x[rows])
        self._P[rows] = F @ self._P[rows] @ np.swapaxes(F, 1, 2)

    def _learn_turn(self, rows: np.ndarray, z: np.ndarray, now: float) -> None:
        """Each match's chord (from the last measured centre to this one) against the one before:
        the angle between them over the time between their midpoints is a measured turn rate, which
        the track's rate follows (``turn_gain``). Short chords (jitter) teach nothing; an angle over
        ``max_turn_angle`` is a bounce, and the rate goes back to 0."""
        cfg = self.config
        memo = self._turn[rows]
        span = np.maximum(now - self._last_seen[rows], 1e-9)
        chord = (z[:, :2] - memo[:, 1:3]) / span[:, None]
        size = np.sqrt(np.maximum(z[:, 2] * z[:, 3], 1.0))
        usable = np.hypot(chord[:, 0], chord[:, 1]) * span >= cfg.min_turn_chord * size
        before = memo[:, 3:5]
        known = usable & (memo[:, 5] > 0)
        angle = np.arctan2(before[:, 0] * chord[:, 1] - before[:, 1] * chord[:, 0], (before * chord).sum(axis=1))
        between = np.maximum(0.5 * (span + memo[:, 5]), 1e-9)
        rate = angle / between
        turn = np.where(known, memo[:, 0] + cfg.turn_gain * (rate - memo[:, 0]), memo[:, 0])
        # a bounce turns more than the track's own rate foresees over the time between the chords
        # (a circling object seen after a missed frame at 10 FPS turns past max_turn_angle by its rate)
        surprise = np.abs(np.remainder(angle - memo[:, 0] * between + np.pi, 2 * np.pi) - np.pi)  # (wrapped to [-pi, pi))
        turn = np.where(known & (surprise > cfg.max_turn_angle), 0.0, turn)
        memo[:, 0] = np.where(np.abs(turn) < 1e-3, 0.0, turn)
        memo[:, 1:3] = z[:, :2]
        memo[:, 3:5] = np.where(usable[:, None], chord, memo[:, 3:5])
        memo[:, 5] = np.where(usable, span, np.where(memo[:, 5] > 0, memo[:, 5] + span, 0.0))
        self._turn[rows] = memo

    def _measurement_std(self, sizes: np.ndarray) -> np.ndarray:
        """Std of a measured coordinate: a share of the box size."""
        return self.config.measurement_noise * np.maximum(sizes, 1.0)

    def _manoeuvre(self, rows: np.ndarray, innovation: np.ndarray, S: np.ndarray) -> None:
        """Each track's acceleration noise follows its own surprises: the centre's normalized
        innovation (chi-square, 2 degrees of freedom: 2 on average when the filter is right) scales
        it up for a track that turns or bounces and down again for one that moves smoothly, between
        1 and max_manoeuvre times acceleration_noise (an adaptive filter: a fast circling object
        gets the wide gate it needs, a slow one keeps a tight gate that clutter cannot get into)."""
        cfg = self.config
        sxx, syy, sxy = S[:, 0, 0], S[:, 1, 1], S[:, 0, 1]
        dx, dy = innovation[:, 0], innovation[:, 1]
        nis = (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / np.maximum(sxx * syy - sxy * sxy, 1e-12)
        factor = np.clip(nis / 2.0, 0.1, 10.0) ** cfg.manoeuvre
        self._q[rows] = np.clip(self._q[rows] * factor, 1.0, cfg.max_manoeuvre)

    def _correct(self, rows: np.ndarray, z: np.ndarray) -> None:
        """The Kalman update of tracks `rows` with measured boxes z (cx, cy, w, h)."""
        x, P = self._x[rows], self._P[rows]
        r = self._measurement_std(np.concatenate([z[:, 2:4], z[:, 2:4]], axis=1))
        S = P[:, :4, :4].copy()
        diag = np.arange(4)
        S[:, diag, diag] += r * r
        PHt = P[:, :, :4]  # (K, 8, 4)
        # K = P H' S^-1, by solving S K' = H P (S is symmetric)
        gain = np.swapaxes(np.linalg.solve(S, np.swapaxes(PHt, 1, 2)), 1, 2)
        innovation = z - x[:, :4]
        if self.config.manoeuvre > 0:
            self._manoeuvre(rows, innovation[:, :2], S[:, :2, :2])
        x = x + np.einsum("kij,kj->ki", gain, innovation)
        P = P - gain @ np.swapaxes(PHt, 1, 2)
        x[:, 2:4] = np.maximum(x[:, 2:4], 1.0)
        self._x[rows] = x
        self._P[rows] = 0.5 * (P + np.swapaxes(P, 1, 2))

    # ------------------------------------------------------------ association
    def _other_class(self, tracks: np.ndarray, dets: np.ndarray, det_labels: np.ndarray) -> np.ndarray:
        """(T, D) True where a track and a detection have different labels (never matched: a star
        never takes a ring's ID); all False with ``per_class`` off."""
        if not self.config.per_class:
            return np.zeros((tracks.shape[0], dets.shape[0]), bool)
        return self._label[tracks][:, None] != det_labels[dets][None, :]

    def _match_iou(self, tracks: np.ndarray, dets: np.ndarray, pred: np.ndarray, det_boxes: np.ndarray,
                   det_labels: np.ndarray, min_iou: float, track_of_det: np.ndarray, matched_track: np.ndarray) -> None:
        if not tracks.shape[0] or not dets.shape[0]:
            return
        cost = 1.0 - iou_matrix(pred[tracks], det_boxes[dets])
        cost[self._other_class(tracks, dets, det_labels)] = np.inf
        rows, cols = linear_assignment(cost, 1.0 - min_iou + 1e-9)
        track_of_det[dets[cols]] = tracks[rows]
        matched_track[tracks[rows]] = True

    def _motion_distance(self, tracks: np.ndarray, zd: np.ndarray, high: Optional[np.ndarray] = None) -> np.ndarray:
        """Stage d's cost of each (track, detection centre) (``_motion_distances``, the turn reach in)."""
        return self._motion_distances(tracks, zd, high)[1]

    def _motion_distances(self, tracks: np.ndarray, zd: np.ndarray,
                          high: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Stage d's cost of each (track, detection centre): the squared Mahalanobis distance under
        the filter's own uncertainty, or less where the centre is within plain reach, plus a charge
        for a vague prediction. Plain reach is ``min_gate_size`` box sizes of the prediction (what
        the filter did not foresee) or ``turn_reach`` x the track's speed x the time since its last
        match of its last measured centre (an object that turned, or bounced, at its own speed: the
        filter's or its last chord's, the higher);
        plain reach is for `high` detections only (a low score far off the filter is clutter; None:
        every detection is high). Returns the (T, D) costs without the turn reach and with it (one
        computation for stage d's two passes)."""
        cfg = self.config
        x, P = self._x[tracks], self._P[tracks]
        r = self._measurement_std(zd[None, :, 2:4])  # (1, D, 2)
        # innovation covariance of the centre, per (track, detection): P_cc + R (2x2, closed-form inverse)
        sxx = P[:, 0, 0][:, None] + r[..., 0] ** 2
        syy = P[:, 1, 1][:, None] + r[..., 1] ** 2
        sxy = P[:, 0, 1][:, None]
        dx = zd[None, :, 0] - x[:, 0][:, None]
        dy = zd[None, :, 1] - x[:, 1][:, None]
        det = np.maximum(sxx * syy - sxy * sxy, 1e-12)
        mahalanobis = (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det
        size_t = np.sqrt(np.maximum(x[:, 2] * x[:, 3], 1.0))[:, None]
        distance = mahalanobis
        if cfg.motion_spread_cost > 0:  # a vague prediction is weak evidence: a detection is then more likely a new object
            spread = 0.25 * np.log(det) - np.log(size_t)  # ln(centre std / box size)
            distance = distance + cfg.motion_spread_cost * np.maximum(spread, 0.0)
        # plain reach is not charged: it is bounded by the box size or the track's own speed (charged,
        # a fast object missed for one frame at 10 FPS was lost for good)
        if cfg.min_gate_size > 0:
            distance = np.minimum(distance, (dx * dx + dy * dy) / (cfg.min_gate_size * size_t) ** 2 * cfg.motion_gate)
        by_filter = distance
        if cfg.turn_reach > 0:
            elapsed = (self._time - self._last_seen[tracks])[:, None]
            speed = np.maximum(np.hypot(x[:, 4], x[:, 5]), np.hypot(self._turn[tracks, 3], self._turn[tracks, 4]))[:, None]
            reach = np.where(elapsed <= cfg.turn_seconds + TIME_SLACK, cfg.turn_reach * speed * elapsed, 0.0)
            reach = np.maximum(reach, 1e-6)
            last = self._turn[tracks, 1:3]  # the last measured centre
            ex, ey = zd[None, :, 0] - last[:, 0][:, None], zd[None, :, 1] - last[:, 1][:, None]
            distance = np.minimum(distance, (ex * ex + ey * ey) / (reach * reach) * cfg.motion_gate)
        if high is not None:
            by_filter = np.where(high[None, :], by_filter, mahalanobis)
            distance = np.where(high[None, :], distance, mahalanobis)
        return by_filter, distance

    def _reid_distance(self, tracks: np.ndarray, centres: np.ndarray, elapsed: np.ndarray) -> np.ndarray:
        """(T, D) squared distance of each centre from each track's last measured centre, in units
        of its reach: ``reid_reach`` x the track's speed x `elapsed` ((T, 1) or (T, D) seconds) plus
        ``min_gate_size`` box sizes; 1 is the edge of the reach (stage e and ``_inherit``)."""
        cfg = self.config
        x = self._x[tracks]
        size_t = np.sqrt(np.maximum(x[:, 2] * x[:, 3], 1.0))[:, None]
        reach = cfg.reid_reach * np.hypot(x[:, 4], x[:, 5])[:, None] * np.maximum(elapsed, 0.0) + cfg.min_gate_size * size_t
        last = self._turn[tracks, 1:3]  # the last measured centre
        ex, ey = centres[None, :, 0] - last[:, 0][:, None], centres[None, :, 1] - last[:, 1][:, None]
        return (ex * ex + ey * ey) / (reach * reach)

    def _match_reid(self, tracks: np.ndarray, dets: np.ndarray, z: np.ndarray, det_labels: np.ndarray,
                    track_of_det: np.ndarray, matched_track: np.ndarray) -> None:
        """Stage e: a lost track is found again by a confident detection of its class whose centre is
        within ``reid_reach`` x its speed x the time since its last match (plus ``min_gate_size`` box
        sizes) of its last measured centre: wherever a turning or bouncing object went, it went no
        farther than its speed allows (at low frame rates a missed frame leaves a constant-velocity
        prediction many box sizes off a curved path). Nearer, in units of that reach, is cheaper."""
        cfg = self.config
        x = self._x[tracks]
        zd = z[dets]
        elapsed = (self._time - self._last_seen[tracks])[:, None]
        size_t = np.sqrt(np.maximum(x[:, 2] * x[:, 3], 1.0))[:, None]
        size_d = np.sqrt(np.maximum(zd[:, 2] * zd[:, 3], 1.0))[None, :]
        cost = self._reid_distance(tracks, zd[:, :2], elapsed) * cfg.motion_gate
        cost[np.maximum(size_t / size_d, size_d / size_t) > cfg.max_size_ratio] = np.inf
        cost[self._other_class(tracks, dets, det_labels)] = np.inf
        rows, cols = linear_assignment(cost, cfg.motion_gate)
        track_of_det[dets[cols]] = tracks[rows]
        matched_track[tracks[rows]] = True

    def _match_motion(self, tracks: np.ndarray, dets: np.ndarray, z: np.ndarray, det_labels: np.ndarray,
                      scores: np.ndarray, track_of_det: np.ndarray, matched_track: np.ndarray) -> None:
        cfg = self.config
        x = self._x[tracks]
        zd = z[dets]
        high = scores[dets] >= cfg.high_threshold
        by_filter, cost = self._motion_distances(tracks, zd, high)
        size_t = np.sqrt(np.maximum(x[:, 2] * x[:, 3], 1.0))[:, None]
        size_d = np.sqrt(np.maximum(zd[:, 2] * zd[:, 3], 1.0))[None, :]
        cost[np.maximum(size_t / size_d, size_d / size_t) > cfg.max_size_ratio] = np.inf
        cost[self._other_class(tracks, dets, det_labels)] = np.inf
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
