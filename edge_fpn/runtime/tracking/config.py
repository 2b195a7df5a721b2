"""The tracker's parameters (TrackerConfig), checked when made, and the slack on its time limits."""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Dict, Sequence

from ...errors import EdgeFpnError
from ..sources.uri import parse_bool  # (the same words as a URI's options: true/false, yes/no, on/off, 1/0)

# times are compared with this slack: timestamps differ in floating point (0.8 - 0.7 > 0.1), and a
# limit of N frames' time must not drop a track at random
TIME_SLACK = 1e-6
# the largest noise or speed scale taken: 1e308 made the filter's variances inf and NaN, silently
_FILTER_SCALES = ("position_noise", "acceleration_noise", "size_acceleration_noise", "initial_velocity",
                  "initial_size_velocity", "max_manoeuvre")
MAX_FILTER_SCALE = 1e6
# the largest time, reach, gate or count of box sizes taken (a million: 11 days, a million box
# sizes); 1e300 overflowed the costs they scale, and a manoeuvre exponent over 10 the factor it raises
MAX_SETTING = 1e6
MAX_MANOEUVRE_EXPONENT = 10.0
MIN_MEASUREMENT_NOISE = 1e-3  # (1e-9 left the filter's covariances to rounding: not positive definite)


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters; times are in seconds, noises are fractions of the box size.

    The defaults past ByteTrack's own were tuned on the synthetic camera's seeds 4-16 (noisy
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
    appearance_veto: float = 0.3  # given the frame, a motion match whose colours share less than this is refused (0: off)
    rival_margin: float = 0.2  # given the frame, a motion match or a lost track's IoU match is refused where the box shares this much more with another unmatched confirmed track of its class (0: off) ...
    rival_similarity: float = 0.5  # ... that shares at least this with it (the box is that track's object)
    appearance_rate: float = 0.3  # weight of each first-stage match's colours in its track's (a running average)
    filter_first: bool = True  # stage d matches those tracks' filter predictions before anything by turn reach
    reid_reach: float = 1.2  # stage e: a lost track takes a confident detection of its class within this x speed x time lost of its last centre
    reid_seconds: float = 0.45  # ... for a track lost at most this long (lost longer, its motion match is in doubt until the next frame: lookahead.py)
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
    partial_seconds: float = 2.0  # ... for at most this long on end; a box cut for longer is taken as it is
    min_hits: int = 3  # first-stage matches before a track gets an ID (1: at once)
    confirm_score: float = 0.7  # ... and its running score at least this (clutter scores lower)
    early_confirm_score: float = 0.85  # ... or min_hits - 1 matches with a running score this high (1: never) ...
    early_confirm_seconds: float = 0.09  # ... spanning at least this (by default 2 at 10 FPS; 30 FPS keeps min_hits)
    score_rate: float = 0.2  # weight of each match's score in the running score (after the first 1/score_rate)
    report_score: float = 0.5  # a confirmed track gives its ID only while its running score is at least this
    tentative_seconds: float = 0.09  # a tentative track survives misses this long (0: dropped at its first miss; 0.09: two frames at 30 FPS, none at 10)
    tentative_low: bool = True  # low-score detections also continue tentative tracks (stage b; no hit counted)
    lost_seconds: float = 1.5  # a confirmed track is kept this long after its last match (ByteTrack: 1 s; see below)
    recall_seconds: float = 6.0  # given the frames, an ended track's ID is remembered this long (memory.py; 0: off, a lost track's recall too) ...
    recall_reach: float = 3.0  # ... for a new track of its class born within this x its box size of where it was last seen ...
    recall_similarity: float = 0.5  # ... whose colours share at least this with it (a match, not a veto)
    per_class: bool = True  # match, re-find, inherit and recall only detections and tracks of the same label
    class_flip_iou: float = 0.5  # stage f: a confirmed track seen within reid_seconds that took no box takes one of another class at this IoU with its prediction, where no track of that class overlaps it; the box gets no ID (0: off)
    duplicate_iou: float = 0.5  # no new track from a detection this close to one a confirmed track took (any class)
    coast_reach: float = 2.0  # tracks() marks "guessed" a lost track predicted to have moved more than this x its box size since its last match (0: none)
    hidden_cover: float = 0.8  # a lost track this much inside the box of one seen now is hidden: not coasted, not re-found by stage e (0: never) ...
    in_sight_share: float = 0.6  # ... but, given the frame, tracks() does not call it hidden where its predicted box's colours share this much with its own (the object is in front, only missed; 0: off) ...
    in_sight_margin: float = 0.1  # ... and this much more than with the colours of the track that covers it
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
                     "tentative_match_iou", "duplicate_iou", "hidden_cover", "in_sight_share", "in_sight_margin", "appearance_veto", "appearance_rate", "rival_margin", "rival_similarity", "recall_similarity", "confirm_score", "early_confirm_score", "score_rate",
                     "report_score", "partial_ratio", "class_flip_iou"):
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
                     "min_turn_chord", "partial_edge", "partial_seconds", "lookahead_margin", "lookahead_reach", "early_confirm_seconds",
                     "recall_seconds", "recall_reach", "coast_reach"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise EdgeFpnError(f"tracker {name} must be a finite number >= 0, not {value!r}")
            if value > MAX_SETTING:
                raise EdgeFpnError(f"tracker {name} must be at most {MAX_SETTING:g}, not {value!r}")
        if self.manoeuvre > MAX_MANOEUVRE_EXPONENT:
            raise EdgeFpnError(f"tracker manoeuvre must be at most {MAX_MANOEUVRE_EXPONENT:g}, not {self.manoeuvre!r}: "
                               "an exponent on the surprise, 0.5 by default")
        if self.turn_gain > 1:
            raise EdgeFpnError(f"tracker turn_gain must be between 0 and 1, not {self.turn_gain!r}: the share of a "
                               "measured turn a track's rate takes")
        if not (isinstance(self.measurement_noise, (int, float)) and MIN_MEASUREMENT_NOISE <= self.measurement_noise < 10):
            raise EdgeFpnError(f"tracker measurement_noise must be from {MIN_MEASUREMENT_NOISE:g} to under 10 (a share "
                               f"of the box size), not {self.measurement_noise!r}")
        if not (isinstance(self.max_manoeuvre, (int, float)) and 1 <= self.max_manoeuvre < math.inf):
            raise EdgeFpnError(f"tracker max_manoeuvre must be a finite number >= 1, not {self.max_manoeuvre!r}")
        # (after the checks of kind: each of these is a number by now)
        for name in _FILTER_SCALES:
            if getattr(self, name) > MAX_FILTER_SCALE:
                raise EdgeFpnError(f"tracker {name} must be at most {MAX_FILTER_SCALE:g}, not {getattr(self, name)!r}: "
                                   "larger overflows the motion filter (no track would ever be confirmed)")
        if not (isinstance(self.max_size_ratio, (int, float)) and 1 <= self.max_size_ratio <= MAX_SETTING):
            raise EdgeFpnError(f"tracker max_size_ratio must be from 1 to {MAX_SETTING:g}, not {self.max_size_ratio!r}")




def tracker_config_from_options(options: Sequence[str]) -> TrackerConfig:
    """A TrackerConfig from ``KEY=VALUE`` strings (the CLI's ``--track-option``; a key is any
    TrackerConfig field, ``-`` or ``_``), every value checked: one sentence for an unknown key
    (with the nearest one), a value of the wrong kind, or one out of range."""
    fields = {field.name: field.type for field in dataclasses.fields(TrackerConfig)}
    values: Dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        key, text = key.strip().replace("-", "_"), text.strip()
        if not sep or not key or not text:
            raise EdgeFpnError(f"tracker option {option!r} is not KEY=VALUE (e.g. --track-option lost_seconds=2)")
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise EdgeFpnError(f"no tracker option {key!r}; {hint}the options are TrackerConfig's fields "
                               "(edge_fpn.runtime.tracking.TrackerConfig)")
        kind = fields[key] if isinstance(fields[key], str) else fields[key].__name__
        convert, wanted = {"bool": (parse_bool, "is true or false"), "int": (int, "takes an integer")}.get(
            kind, (float, "takes a number"))
        try:
            values[key] = convert(text)
        except ValueError:
            raise EdgeFpnError(f"tracker option {key} {wanted}, not {text!r}") from None
    return TrackerConfig(**values)
