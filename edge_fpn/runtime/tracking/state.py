"""A tracker's state as JSON-able data (``Tracker.get_state``), and such data read back, every
number checked (``Tracker.set_state``): a state that is not one this version wrote is refused with
one sentence before the tracker changes. state_file.py keeps it in a file.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np

from ...errors import EdgeFpnError
from .inputs import MAX_TIMESTAMP
from .lookahead import Ambiguity
from .memory import TrackMemory
from .table import ADDED_FIELDS, TRACK_FIELDS

STATE_VERSION = 1
# the largest magnitudes in a state: of any number, of the filters' boxes and velocities (a
# tracker's own stay under 1e7 px, its variances under 1e25 but for extreme configs) and of their
# covariances; past them an edited state put inf and NaN into the tracks on the next frames
MAX_STATE_NUMBER = 1e50
MAX_STATE_BOX = 1e15
MAX_STATE_VARIANCE = 1e40


class ParsedState(NamedTuple):
    """A checked state, ready to be set: a track table's arrays by field, the counters, the waiting
    ambiguities and the memory."""
    arrays: Dict[str, np.ndarray]
    next_id: int
    time: Optional[float]
    frames: int
    skipped: int
    waiting: List[Ambiguity]
    memory: TrackMemory


def state_of(tracker: Any) -> Dict[str, Any]:
    """Everything `tracker` knows, as JSON-able data (lists and numbers)."""
    return {"version": STATE_VERSION, "config": dataclasses.asdict(tracker.config), "next_id": tracker.next_id,
            "time": tracker._time, "frames": tracker.frames, "skipped_detections": tracker.skipped_detections,
            "tracks": {name: getattr(tracker, "_" + name).tolist() for name in TRACK_FIELDS},
            "waiting": [{"ids": list(a.ids), "before": {name: a.before[name].tolist() for name in TRACK_FIELDS},
                         "boxes": a.boxes.tolist(), "scores": a.scores.tolist(), "takes": a.takes.tolist(),
                         "time": a.time} for a in tracker._pending],
            "remembered": tracker._memory.state()}


def parsed_state(state: Any) -> ParsedState:
    """What ``state_of`` returned, read back and checked (one sentence if it is not)."""
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
                     for name, shape in ADDED_FIELDS.items()}}
        next_id = int(state["next_id"])
        time_ = None if state["time"] is None else float(state["time"])
        frames = int(state.get("frames", 0))
        skipped = int(state.get("skipped_detections", 0))
        waiting = [Ambiguity((int(a["ids"][0]), int(a["ids"][1])),
                              {name: np.asarray(a["before"].get(name, np.zeros((2,) + arrays[name].shape[1:]))
                                                if name in ADDED_FIELDS else a["before"][name],
                                                arrays[name].dtype).reshape((2,) + arrays[name].shape[1:])
                               for name in TRACK_FIELDS},
                              np.asarray(a["boxes"], np.float64).reshape(2, 4), np.asarray(a["scores"], np.float64).reshape(2),
                              np.asarray(a["takes"], bool).reshape(2), float(a["time"]))
                   for a in state.get("waiting", [])]
        memory = TrackMemory()
        if "remembered" in state:  # (states saved before the memory have none)
            memory.load(state["remembered"])
    except EdgeFpnError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, OverflowError) as exc:  # (OverflowError: an int past 64 bits)
        raise EdgeFpnError(f"not a tracker state ({type(exc).__name__}: {exc}); pass what Tracker.get_state() returned") from None
    # (every number, not only the filter's: a NaN score withholds every ID for good, a time of
    # inf refuses every frame)
    floats = [arrays[name] for name in TRACK_FIELDS if arrays[name].dtype == np.float64]
    floats.append(np.array([a.time for a in waiting] + ([] if time_ is None else [time_]), np.float64))
    floats += [value for a in waiting for value in (a.before["x"], a.before["P"], a.boxes, a.scores)]
    if not all(np.isfinite(value).all() for value in floats):
        raise EdgeFpnError("tracker state holds non-finite numbers; pass what Tracker.get_state() returned")
    floats += [memory.box, memory.hist]
    if any(np.abs(value).max(initial=0.0) > MAX_STATE_NUMBER for value in floats):
        raise EdgeFpnError(f"tracker state holds numbers beyond {MAX_STATE_NUMBER:.0e}; pass what Tracker.get_state() returned")
    boxes = [arrays["x"]] + [a.before["x"] for a in waiting]
    variances = [arrays["P"]] + [a.before["P"] for a in waiting]
    if (any(np.abs(x).max(initial=0.0) > MAX_STATE_BOX for x in boxes)
            or any(np.abs(P).max(initial=0.0) > MAX_STATE_VARIANCE for P in variances)):
        raise EdgeFpnError(f"tracker state holds boxes beyond {MAX_STATE_BOX:.0e} px or variances beyond "
                           f"{MAX_STATE_VARIANCE:.0e}; pass what Tracker.get_state() returned")
    if not all(_positive_semi_definite(P) for P in variances):
        raise EdgeFpnError("tracker state holds a covariance that is not positive semi-definite; pass what Tracker.get_state() returned")
    times = [arrays["last_seen"], arrays["born"][:, 0], memory.time] + ([] if time_ is None else [np.array([time_])])
    if any(np.abs(value).max(initial=0.0) > MAX_TIMESTAMP for value in times):
        raise EdgeFpnError(f"tracker state holds times beyond {MAX_TIMESTAMP:.0e} s; pass what Tracker.get_state() returned")
    if not ((arrays["q"] > 0).all() and ((arrays["score"] >= 0) & (arrays["score"] <= 1)).all()):
        raise EdgeFpnError("tracker state holds scores outside 0-1 or noise scales <= 0; pass what Tracker.get_state() returned")
    largest = int(np.concatenate([arrays["ids"], memory.ids, [0]]).max())
    if next_id <= largest:
        raise EdgeFpnError(f"tracker state's next_id {next_id} is not above its largest track ID {largest}")
    return ParsedState(arrays, next_id, time_, frames, skipped, waiting, memory)


def _positive_semi_definite(P: np.ndarray) -> bool:
    """Whether every covariance of P (N, 8, 8) is symmetric positive semi-definite, up to rounding
    (a filter's own P can be off by its last bits): an edited one made variances negative on the
    next frames."""
    if not P.shape[0]:
        return True
    if not np.allclose(P, P.transpose(0, 2, 1), rtol=1e-9, atol=0.0):
        return False
    eigenvalues = np.linalg.eigvalsh(P)
    # (semi-definite: a config's initial velocity so small that its variance underflows to 0 is the filter's own)
    return bool((eigenvalues[:, 0] >= -1e-9 * np.abs(eigenvalues).max(axis=1)).all()
                and (np.diagonal(P, axis1=1, axis2=2) >= 0).all())
