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


def test_room_made_downstream_wakes_a_reader_waiting_for_it():
    """A reader waiting for room in the next slots (get's `accept`) wakes when a frame is taken
    there, not at the end of its timeout: with two conditions it slept its whole 0.1 s once every
    few frames, and a file source ran at 29 frames/s behind a 4 ms engine (found on a GPU)."""
    stop = threading.Event()
    upstream = SourceSlots([False], capacity=1)
    downstream = SourceSlots([False], capacity=1, condition=upstream.condition)
    upstream.put(0, "a2", stop)
    downstream.put(0, "a1", stop)
    got = []
    reader = threading.Thread(target=lambda: got.append(upstream.get(stop, timeout=30.0, accept=downstream.has_room)))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive() and not got  # no room downstream: it waits
    assert downstream.get(stop) == "a1"  # the room...
    reader.join(10.0)  # ...wakes it (a bound on a hang, not a speed figure: without the wake-up, 30 s)
    assert got == ["a2"]


def test_the_pipeline_wakes_preprocessing_when_inference_takes_a_frame(tiny_bundle, monkeypatch):
    """The pipeline's own slots, with the readers' timeouts made 10 s: a lost wake-up would stall
    a file source for 10 s; 12 frames through a fast engine must not wait for any timeout."""
    import time

    import numpy as np

    from edge_fpn import Detector
    from edge_fpn.runtime.pipeline import Pipeline

    real_get = SourceSlots.get

    def get(self, stop, timeout=0.1, accept=None):
        return real_get(self, stop, 10.0 if accept is not None else timeout, accept)

    monkeypatch.setattr(SourceSlots, "get", get)
    detector = Detector(tiny_bundle)
    inputs, letterbox = detector.layout.preprocess(np.zeros((480, 640, 3), np.uint8))
    ready = detector.layout.infer(inputs, letterbox)

    def engine(inputs, letterbox):
        time.sleep(0.002)  # releases the GIL, as ONNX Runtime's run does
        return ready

    monkeypatch.setattr(detector.layout, "infer", engine)
    started = time.monotonic()
    snapshot = Pipeline(detector, "test://?width=640&height=480&realtime=0", max_frames=12, quiet=True).run()
    assert snapshot["frames"] == 12
    assert time.monotonic() - started < 8.0  # a hang bound: one lost wake-up costs 10 s
