"""Trails: the recent box centres of each confirmed track, for the sinks to draw behind the boxes.

A ``Trails`` keeps, per source and track ID, the centres of the track's last ``length`` boxes in
fixed numpy arrays: ``capacity`` tracks a source at most, so a long run with thousands of track IDs
holds no more memory than a short one. A track not seen for ``max_age`` of its source's frames is
forgotten; when more tracks than ``capacity`` are alive, the one seen longest ago makes room.

``update(detections, source)`` records one frame and returns that frame's ``TrailLines``: one
polyline (oldest centre first) per confirmed track in the frame, ready for one ``cv2.polylines``
call per colour. Detections without track IDs (no tracker) or with IDs -1 (not confirmed yet) have
no trail. The work is numpy on arrays, not a Python loop over boxes; the sinks call it on their own
thread, in frame order, so a Trails is not locked.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class TrailLines:
    """One frame's trails: ``points`` (K, length, 2) int32 pixel centres, oldest first (a track
    with fewer centres repeats its oldest one), and each trail's class ``labels`` (K,)."""

    points: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


NO_LINES = TrailLines(np.zeros((0, 0, 2), np.int32), np.zeros(0, np.int64))


class _SourceTrails:
    """Fixed-size history of one source: slot i holds track ``ids[i]`` (-1: free)."""

    def __init__(self, length: int, capacity: int):
        self.ids = np.full(capacity, -1, np.int64)
        self.seen = np.zeros(capacity, np.int64)  # the source's frame number when last seen
        self.count = np.zeros(capacity, np.int64)  # centres written (the ring's next position, mod length)
        self.points = np.zeros((capacity, length, 2), np.float32)
        self.frame = 0

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The slot of each ID, -1 where it has none."""
        sorter = np.argsort(self.ids, kind="stable")
        held = self.ids[sorter]
        pos = np.minimum(np.searchsorted(held, ids), len(held) - 1)
        return np.where(held[pos] == ids, sorter[pos], -1)

    def allocate(self, slots: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Give the IDs without a slot one: free slots first, then those seen longest ago (not in
        this frame). Returns the slots, -1 for IDs beyond the capacity."""
        new = np.flatnonzero(slots < 0)
        free = np.flatnonzero(self.ids < 0)
        if len(free) < len(new):
            taken = np.zeros(len(self.ids), bool)
            taken[slots[slots >= 0]] = True
            candidates = np.flatnonzero(~taken & (self.ids >= 0))
            oldest = candidates[np.argsort(self.seen[candidates], kind="stable")]
            free = np.concatenate([free, oldest[:len(new) - len(free)]])
        new = new[:len(free)]
        free = free[:len(new)]
        slots = slots.copy()
        slots[new] = free
        self.ids[free] = ids[new]
        self.count[free] = 0
        return slots


class Trails:
    """Recent centres of confirmed tracks, keyed by (source index, track ID); see the module's text.

    length: centres per trail (20: two thirds of a second at 30 FPS). max_age: a track not seen
    for this many frames of its source is forgotten. capacity: tracks held per source."""

    def __init__(self, length: int = 20, max_age: int = 30, capacity: int = 256):
        if length < 2 or max_age < 1 or capacity < 1:
            raise ValueError(f"Trails needs length >= 2, max_age >= 1 and capacity >= 1, not "
                             f"length={length}, max_age={max_age}, capacity={capacity}")
        self.length, self.max_age, self.capacity = int(length), int(max_age), int(capacity)
        self._sources: Dict[int, _SourceTrails] = {}

    def __len__(self) -> int:
        """Tracks held, over all sources."""
        return sum(int(np.count_nonzero(state.ids >= 0)) for state in self._sources.values())

    def nbytes(self) -> int:
        """Memory held by the arrays (bounded: capacity x length per source)."""
        return sum(state.ids.nbytes + state.seen.nbytes + state.count.nbytes + state.points.nbytes
                   for state in self._sources.values())

    def update(self, detections: Any, source: int = 0) -> TrailLines:
        """Record one frame of `source` and return its trails (empty without confirmed tracks)."""
        track_ids = getattr(detections, "track_ids", None)
        if track_ids is None or not len(track_ids):
            return self._tick(source)
        ids, centres, labels = _confirmed(detections.boxes, track_ids, detections.labels)
        if not len(ids):
            return self._tick(source)
        state = self._state(source)
        state.frame += 1
        stale = (state.ids >= 0) & (state.frame - state.seen > self.max_age)
        state.ids[stale] = -1
        slots = state.allocate(state.lookup(ids), ids)
        kept = slots >= 0
        slots, centres, labels = slots[kept], centres[kept], labels[kept]
        state.points[slots, state.count[slots] % self.length] = centres
        state.count[slots] += 1
        state.seen[slots] = state.frame
        return self._lines(state, slots, labels)

    def _tick(self, source: int) -> TrailLines:
        """A frame without confirmed tracks still ages the source's tracks (if it has any)."""
        state = self._sources.get(source)
        if state is not None:
            state.frame += 1
        return NO_LINES

    def _state(self, source: int) -> _SourceTrails:
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _SourceTrails(self.length, self.capacity)
        return state

    def _lines(self, state: _SourceTrails, slots: np.ndarray, labels: np.ndarray) -> TrailLines:
        """The polylines of `slots`, oldest centre first; tracks with one centre have none yet."""
        count = state.count[slots]
        drawn = count >= 2
        slots, count, labels = slots[drawn], count[drawn], labels[drawn]
        if not len(slots):
            return NO_LINES
        length = self.length
        held = np.minimum(count, length)[:, None]
        order = np.maximum(np.arange(length)[None, :] - (length - held), 0)  # 0..held-1, oldest padded
        ring = (count[:, None] - held + order) % length
        points = np.rint(state.points[slots[:, None], ring]).astype(np.int32)
        return TrailLines(points, labels)


def _confirmed(boxes: np.ndarray, track_ids: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IDs, box centres, labels) of the confirmed tracks with finite boxes, each ID once."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    keep = (np.asarray(track_ids) >= 0) & np.isfinite(centres).all(axis=1)
    rows = np.flatnonzero(keep)
    ids, first = np.unique(np.asarray(track_ids, np.int64)[rows], return_index=True)
    rows = rows[first]
    return ids, centres[rows], np.asarray(labels, np.int64)[rows]
