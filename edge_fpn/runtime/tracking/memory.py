"""A memory of ended tracks, so that an object gone for seconds gets its ID back when it returns.

A confirmed track lost for longer than ``lost_seconds`` ends: its prediction has drifted off, and
motion alone cannot tell the object back from another of its class. But an object that left the
frame, or stood behind another for seconds, comes back where it was last seen, looking as it did
(on the "hard" scene, the objects gone for 1.5-5 s came back within 0.2-2.9 box sizes of where
they left). The memory keeps an ended track's ID, class, last measured box and colour histogram
(appearance.py) for ``recall_seconds``; a new track being confirmed of that class, born within
``recall_reach`` box sizes of that box and whose colours share at least ``recall_similarity`` with
it, takes the ID back. Unlike the appearance veto this is a positive match, so it needs the
colours: without frames nothing is remembered. An object of the class leaving one side of the
frame and a new one entering the other (the "exit" scene) are too far apart to be taken for one.
The tracker applies the same rule to its tracks lost now, not yet ended (a detector's second box of
an object confirmed in a lost track's place: track_life.py), through a TrackMemory of them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import numpy as np

from .appearance import BINS, known, shared
from .assignment import linear_assignment
from .geometry import box_size, sizes_apart

LIMIT = 1024  # ended tracks remembered at most (the oldest go first): bounded memory on a busy scene


class TrackMemory:
    """Ended tracks as arrays (one row each): ``ids``, ``label``, ``box`` (last measured cx, cy, w, h),
    ``time`` (when last seen) and ``hist`` (colours)."""

    FIELDS = ("ids", "label", "box", "time", "hist")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.ids = np.zeros((0,), np.int64)
        self.label = np.zeros((0,), np.int64)
        self.box = np.zeros((0, 4))
        self.time = np.zeros((0,))
        self.hist = np.zeros((0, BINS))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def expire(self, now: float, seconds: float) -> None:
        """Forget what was last seen more than `seconds` before `now`."""
        if not self.time.shape[0]:
            return
        fresh = now - self.time <= seconds
        if np.count_nonzero(fresh) < fresh.size:
            self._keep(fresh)

    def add(self, now: float, seconds: float, ids: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
            times: np.ndarray, hists: np.ndarray) -> None:
        """Remember the tracks given (those that ended this frame) whose colours are known and that
        were seen within `seconds` of `now`; the oldest go past LIMIT."""
        seen = known(hists) & (now - times <= seconds)
        if np.count_nonzero(seen):
            for name, new in zip(self.FIELDS, (ids, labels, boxes, times, hists)):
                setattr(self, name, np.concatenate([getattr(self, name), new[seen]])[-LIMIT:])

    def recall(self, labels: np.ndarray, centres: np.ndarray, hists: np.ndarray, reach: Union[float, np.ndarray],
               similarity: float, per_class: bool = True, sizes: Optional[np.ndarray] = None,
               max_size_ratio: float = np.inf) -> np.ndarray:
        """For each new track (its class, the centre where it was born and its colours), the ID of
        the remembered track it is (-1: none; of its class only if `per_class`), by an optimal
        assignment on distance; the IDs given back are forgotten. `reach` is in box sizes of the
        remembered track (one for all, or (remembered, new)); with `sizes` (the new tracks' box sizes)
        a pair whose sizes differ by more than `max_size_ratio` is never one object."""
        out = np.full(labels.shape[0], -1, np.int64)
        if not (len(self) and labels.shape[0]) or np.all(np.asarray(reach) <= 0):
            return out
        mine = box_size(self.box)
        scale = np.broadcast_to(mine[:, None] * reach, (len(self), labels.shape[0]))
        # (a pair of reach 0 is never one: inf, not a division by 0)
        cost = np.divide(np.hypot(self.box[:, None, 0] - centres[None, :, 0], self.box[:, None, 1] - centres[None, :, 1]),
                         scale, out=np.full(scale.shape, np.inf), where=scale > 0)
        cost[:, ~known(hists)] = np.inf
        if per_class:
            cost[self.label[:, None] != labels[None, :]] = np.inf
        if sizes is not None:
            cost[sizes_apart(mine, sizes, max_size_ratio)] = np.inf
        # the colours of the pairs within reach only (a (remembered x new x BINS) array could be large)
        g, n = np.nonzero(cost < 1.0)
        if not g.shape[0]:
            return out
        unlike = shared(self.hist[g], hists[n]) < similarity
        cost[g[unlike], n[unlike]] = np.inf
        rows, cols = linear_assignment(cost, 1.0)
        if rows.shape[0]:
            out[cols] = self.ids[rows]
            left = np.ones(len(self), bool)
            left[rows] = False
            self._keep(left)
        return out

    def _keep(self, rows: np.ndarray) -> None:
        """Keep only the remembered tracks of the mask `rows`."""
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name)[rows])

    def state(self) -> Dict[str, Any]:
        return {name: getattr(self, name).tolist() for name in self.FIELDS}

    def load(self, state: Dict[str, Any]) -> None:
        """Restore ``state()`` (checked: raises ValueError/KeyError/TypeError on a bad one)."""
        ids = np.asarray(state["ids"], np.int64).reshape(-1)
        n = ids.shape[0]
        arrays = {"ids": ids, "label": np.asarray(state["label"], np.int64).reshape(n),
                  "box": np.asarray(state["box"], np.float64).reshape(n, 4),
                  "time": np.asarray(state["time"], np.float64).reshape(n),
                  "hist": np.asarray(state["hist"], np.float64).reshape(n, BINS)}
        if not all(np.isfinite(arrays[name]).all() for name in ("box", "time", "hist")):
            raise ValueError("remembered tracks hold non-finite numbers")
        for name, value in arrays.items():
            setattr(self, name, value)
