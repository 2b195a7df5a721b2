"""SourceSlots between two stage threads: a frame is taken only where the next stage has room."""
from __future__ import annotations

import threading

from edge_fpn.runtime.scheduling import SourceEnd, SourceSlots


def test_a_source_whose_next_queue_is_full_is_not_served_and_an_end_comes_through():
    # the deadlock this guards against: the preprocess thread took source 0's third frame while
    # source 0's batch queue was full, blocked on it, and the batch waited for source 1 behind it
    stop = threading.Event()
    upstream, downstream = SourceSlots([False, False], capacity=4), SourceSlots([False, False], capacity=2)
    for frame in ("a1", "a2", "a3"):
        upstream.put(0, frame, stop)
    for frame in ("a1", "a2"):
        downstream.put(0, upstream.get(stop, accept=downstream.has_room), stop)
    assert not downstream.has_room(0) and downstream.has_room(1)
    assert upstream.get(stop, timeout=0.01, accept=downstream.has_room) is None  # a3 waits: no room
    upstream.put(1, "b1", stop)
    assert upstream.get(stop, timeout=0.01, accept=downstream.has_room) == "b1"  # the other source goes on
    upstream.close(1)
    end = upstream.get(stop, timeout=0.01, accept=downstream.has_room)  # source 1's end is not held back
    assert isinstance(end, SourceEnd) and end.source == 1
    downstream.put(1, "b1", stop)
    assert downstream.get_batch(stop, wait=0.0) == ["a1", "b1"]  # one frame of each source in one call
    assert upstream.get(stop, timeout=0.01, accept=downstream.has_room) == "a3"  # room again
