"""Persistent object IDs: a ByteTrack-style tracker in numpy (no scipy, lap or filterpy).

::

    tracker = Tracker(TrackerConfig(min_hits=3, lost_seconds=1.5))
    for frame, timestamp in camera:
        detections = tracker.track(detector(frame), timestamp, frame)   # track_ids: -1 = not yet confirmed

One job a module: ``tracker`` (the Tracker; its doc says what a frame does), ``table`` (the tracks
as arrays), ``association`` (stages a-f), ``lookahead`` (ambiguous matches settled by the next
frame), ``track_life`` (confirmation, IDs handed on, lost and ended tracks), ``inputs`` (a frame's
input checked), ``state`` (get_state/set_state data), ``config`` (TrackerConfig), ``kalman`` (the motion model),
``costs`` (motion costs of track-detection pairs), ``appearance`` (colour histograms of boxes,
the veto), ``memory`` (ended tracks, for an object back after seconds), ``assignment``
(minimum-cost matching) and ``geometry`` (IoU and box forms).
"""
from .assignment import linear_assignment
from .config import TIME_SLACK, TrackerConfig
from .geometry import cover_matrix, iou_matrix
from .tracker import STATE_VERSION, Tracker

__all__ = ["STATE_VERSION", "TIME_SLACK", "Tracker", "TrackerConfig", "cover_matrix", "iou_matrix", "linear_assignment"]
