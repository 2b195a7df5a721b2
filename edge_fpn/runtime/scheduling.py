"""Several sources into one engine: per-source slots read round-robin, or gathered into a batch.

Between two stage threads of a pipeline with several sources, ``SourceSlots`` holds one small
channel per source: a one-frame slot that keeps only the newest frame for a live source (a robot
wants the present), a small blocking FIFO for a file source (nothing dropped, order kept).

- ``get`` (batch-1 engines) serves the sources round-robin: of the sources that have a frame, the
  one served least so far, ties broken in rotation after the one served last. With equal sources
  every source gets the same share; a source with nothing ready is skipped, so the engine never
  waits for one, and is served first when it has a frame again (up to ``max_lag`` frames behind:
  a camera back from an outage does not starve the others while it catches up). Waiting for the
  source "in turn" instead would deadlock bounded queues (the one thread before may be blocked
  putting another source's frame).
- ``get_batch`` (batch-N engines, DeepStream's nvstreammux idea) takes the newest frame of every
  source into one call: once one frame is ready it waits at most ``wait`` seconds for the other
  open live sources, then returns what it has (the caller pads the missing slots); open file
  sources are always waited for (their frames arrive in order, every one used).

A source that ends (its capture thread calls ``close(source)``) is reported once, as a
``SourceEnd`` item, after its queued frames; ``_END``-like ``ENDED`` comes when every source has
ended and was drained. No timing is part of the contract except the bounded batch wait.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Deque, List, Optional, Sequence


class SourceEnd:
    """The source with this index has ended (returned once, after its last frame)."""

    __slots__ = ("source",)

    def __init__(self, source: int):
        self.source = source

    def __repr__(self) -> str:
        return f"SourceEnd({self.source})"


ENDED = object()  # every source ended and drained (or the pipeline stops)


class SourceSlots:
    """One channel per source, read round-robin (``get``) or one frame per source (``get_batch``)."""

    def __init__(self, live: Sequence[bool], capacity: int = 2, condition: Optional[threading.Condition] = None):
        """`condition`: share the lock of the slots whose readers wait for room in these (``get``'s
        `accept`): a frame taken from here makes that room, and only a shared condition wakes
        them (with two, the reader slept its whole timeout, 0.1 s, once every few frames)."""
        self.count = len(live)
        self.live = [bool(flag) for flag in live]
        self.capacity = max(1, int(capacity))
        self._items: List[Deque[Any]] = [collections.deque() for _ in live]
        self._closed = [False] * self.count
        self._reported = [False] * self.count
        self._next = 0  # the source looked at first by the next get
        # frames served per source: a source skipped while it had nothing ready is served first when
        # it has (no starvation from thread timing), at most max_lag frames behind the most served
        self._served = [0] * self.count
        self.max_lag = 2 * self.count
        self._cond = condition if condition is not None else threading.Condition()

    @property
    def condition(self) -> threading.Condition:
        """The lock and condition of these slots (to share with slots whose room is waited for here)."""
        return self._cond

    # ------------------------------------------------------------ producer side
    def put(self, source: int, item: Any, stop: threading.Event) -> int:
        """Queue (file) or replace (live) `source`'s item: the number replaced, -1 if stopped."""
        items = self._items[source]
        with self._cond:
            if self.live[source]:
                replaced = len(items)
                items.clear()
                items.append(item)
                self._cond.notify_all()
                return replaced
            while len(items) >= self.capacity:
                if stop.is_set():
                    return -1
                self._cond.wait(0.1)
            items.append(item)
            self._cond.notify_all()
            return 0

    def close(self, source: Optional[int] = None) -> None:
        """`source` has no more frames (None: all of them)."""
        with self._cond:
            for index in range(self.count) if source is None else (source,):
                self._closed[index] = True
            self._cond.notify_all()

    # ------------------------------------------------------------ consumer side
    def open_sources(self) -> List[int]:
        """The sources that may still deliver a frame."""
        with self._cond:
            return [i for i in range(self.count) if not self._closed[i] or self._items[i]]

    def _ended_notice(self) -> Any:
        for index in range(self.count):
            if self._closed[index] and not self._items[index] and not self._reported[index]:
                self._reported[index] = True
                return SourceEnd(index)
        if all(self._reported):
            return ENDED
        return None

    def has_room(self, source: int) -> bool:
        """Whether a put for `source` would not block (a live slot always has room)."""
        with self._cond:
            return self.live[source] or len(self._items[source]) < self.capacity

    def _pop_next(self, accept: Optional[Callable[[int], bool]] = None) -> Any:
        """The ready source served least (ties: the first after the last one served, round-robin),
        among those `accept` takes."""
        best = -1
        for step in range(self.count):
            index = (self._next + step) % self.count
            if not self._items[index] or (accept is not None and not accept(index)):
                continue
            if best < 0 or self._served[index] < self._served[best]:
                best = index
        if best < 0:
            return None
        self._next = (best + 1) % self.count
        served = self._served
        served[best] += 1
        floor = max(served) - self.max_lag  # a source back after a pause catches up by max_lag, no more
        for index in range(self.count):
            if served[index] < floor:
                served[index] = floor
        item = self._items[best].popleft()
        self._cond.notify_all()
        return item

    def _wait_for(self, stop: threading.Event, timeout: float, ready: Callable[[], Any]) -> Any:
        """(Called holding the lock.) ENDED once stopped; else what `ready()` finds; else a source's
        end or ENDED; else one wait of at most `timeout` and the same again (None if still nothing)."""
        if stop.is_set():
            return ENDED
        found = ready()
        if found is not None:
            return found
        notice = self._ended_notice()
        if notice is not None:
            return notice
        self._cond.wait(timeout)
        if stop.is_set():
            return ENDED
        found = ready()
        return found if found is not None else self._ended_notice()

    def get(self, stop: threading.Event, timeout: float = 0.1, accept: Optional[Callable[[int], bool]] = None) -> Any:
        """The next frame round-robin; a ``SourceEnd``; ``ENDED``; or None on timeout. `accept`:
        the sources that may be served now (the next stage's has_room: a thread that takes a
        frame it cannot pass on would block on it while the batch waits for another source); the
        next stage's slots must share this condition, or room made there does not wake it."""
        with self._cond:
            return self._wait_for(stop, timeout, lambda: self._pop_next(accept))

    def get_batch(self, stop: threading.Event, wait: float, timeout: float = 0.1) -> Any:
        """One item per source that has one, as a list indexed by source (None where a source has
        none), once every open source has one or `wait` s after the first was ready; a
        ``SourceEnd``; ``ENDED``; or None when nothing came within `timeout`."""
        with self._cond:
            first = self._wait_for(stop, timeout, lambda: True if any(self._items) else None)
            if first is not True:  # stopped, a source's end, or nothing within `timeout`
                return first
            deadline = time.monotonic() + max(0.0, wait)
            while not stop.is_set():
                missing = [i for i in range(self.count) if not self._items[i] and not self._closed[i]]
                left = deadline - time.monotonic()
                if not missing or (left <= 0 and all(self.live[i] for i in missing)):
                    break  # a file source is waited for: its frames are all used, in full batches
                if left <= 0:
                    left = 0.1
                self._cond.wait(left)
            if stop.is_set():
                return ENDED
            batch = [items.popleft() if items else None for items in self._items]
            self._cond.notify_all()
            return batch
