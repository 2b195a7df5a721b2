"""Several sources, one engine: round-robin shares, per-source statistics, trackers and sinks, a
failing source that leaves the others running, the CLI's repeated --source and .streams files.

Fairness is tested by events, not clocks: the scheduler (SourceSlots) driven step by step, and
pipelines whose sources produce frames on a counter (a source makes a new frame only when the
engine has run), so the shares do not depend on how fast this machine is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.pipeline import Pipeline
from edge_fpn.runtime.scheduling import ENDED, SourceEnd, SourceSlots
from edge_fpn.runtime.sources import OK, FrameRead, Source

from test_pipeline import ListSource, fast_detector

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fast(tiny_bundle):
    detector = fast_detector(tiny_bundle)
    yield detector
    detector.close()


def frames(count, seed=0, size=(120, 160)):
    from conftest import textured_image
    frame = textured_image(seed, *size)
    return [frame] * count


# ---------------------------------------------------------------- the scheduler, step by step

def test_round_robin_gives_equal_shares_and_skips_empty_sources():
    never = threading.Event()
    slots = SourceSlots([True] * 4)
    served = []
    for tick in range(400):
        for source in range(4):  # every source has a newer frame at every tick
            slots.put(source, (source, tick), never)
        served.append(slots.get(never)[0])
    shares = np.bincount(served, minlength=4) / len(served)
    assert shares.tolist() == [0.25] * 4
    # a source with nothing ready is skipped: the engine never waits for it
    slots = SourceSlots([True] * 3)
    slots.put(2, "c", never)
    assert slots.get(never) == "c"


def test_live_slots_keep_the_newest_frame_and_count_replacements():
    never = threading.Event()
    slots = SourceSlots([True, False])
    assert slots.put(0, "a0", never) == 0 and slots.put(0, "a1", never) == 1  # a0 replaced
    assert slots.put(1, "b0", never) == 0 and slots.put(1, "b1", never) == 0  # a file source queues
    assert [slots.get(never) for _ in range(3)] == ["a1", "b0", "b1"]


def test_a_slow_source_does_not_starve_the_others():
    never = threading.Event()
    slots = SourceSlots([True] * 4)
    served = []
    for tick in range(400):
        for source in range(3):
            slots.put(source, source, never)
        if tick % 4 == 0:  # source 3 makes a frame every fourth tick only
            slots.put(3, 3, never)
        served.append(slots.get(never))
    counts = np.bincount(served, minlength=4)
    assert counts[3] == 100  # each of its frames is served
    assert all(abs(c - 100) <= 1 for c in counts[:3] - counts[:3].min() + 100)
    assert counts[:3].min() >= 99


def test_ends_are_reported_once_per_source_then_all():
    never = threading.Event()
    slots = SourceSlots([False, False])
    slots.put(0, "a", never)
    slots.close(0)
    slots.close(1)
    got = [slots.get(never, timeout=0.01) for _ in range(4)]
    assert got[0] == "a"
    assert sorted(item.source for item in got[1:3] if isinstance(item, SourceEnd)) == [0, 1]
    assert got[3] is ENDED


def test_batch_takes_one_frame_of_every_source():
    never = threading.Event()
    slots = SourceSlots([True, True, True])
    for source in range(3):
        slots.put(source, f"s{source}-old", never)
        slots.put(source, f"s{source}", never)
    assert slots.get_batch(never, wait=0.0) == ["s0", "s1", "s2"]
    slots.put(1, "late", never)
    slots.close(2)  # an ended source is not waited for
    assert slots.get_batch(never, wait=0.0) == [None, "late", None]


# ---------------------------------------------------------------- pipelines with several sources

class CounterClock:
    """Frames on a counter: a source makes its next frame only after the engine ran once more."""

    def __init__(self):
        self.ticks = 0
        self.cond = threading.Condition()

    def tick(self):
        with self.cond:
            self.ticks += 1
            self.cond.notify_all()

    def wait_after(self, seen, timeout):
        with self.cond:
            self.cond.wait_for(lambda: self.ticks > seen, timeout)
            return self.ticks


class ClockedLiveSource(Source):
    """A live camera whose frame i exists once the engine ran i times: a counter, not a clock."""

    live = True

    def __init__(self, name, clock, frame):
        super().__init__(name)
        self.clock, self.frame, self.seen = clock, frame, -1

    def read(self, timeout=None):
        ticks = self.clock.wait_after(self.seen, timeout or 0.1)
        if ticks <= self.seen:
            return FrameRead("timeout")
        with self.clock.cond:
            self.seen = ticks
            self.clock.cond.notify_all()
        self.frames += 1
        return FrameRead(OK, self.frame, time.monotonic(), ticks)


class TickingEngine:
    """Wraps the replayed engine: every call advances the clock (the cameras' next frames) and
    returns once every camera has read its frame of that tick."""

    def __init__(self, engine, clock, sources):
        self.engine, self.clock, self.sources = engine, clock, sources
        self.input_names, self.output_names = engine.input_names, engine.output_names

    def __call__(self, inputs):
        outputs = self.engine(inputs)
        self.clock.tick()
        with self.clock.cond:
            self.clock.cond.wait_for(lambda: all(s.seen >= self.clock.ticks for s in self.sources), 1.0)
        return outputs

    def close(self):
        pass


def test_four_live_sources_share_a_batch1_engine_fairly(tiny_bundle):
    detector = fast_detector(tiny_bundle)
    clock = CounterClock()
    frame = frames(1)[0]
    sources = [ClockedLiveSource(f"cam{i}", clock, frame) for i in range(4)]
    detector.layout.engine = TickingEngine(detector.layout.engine, clock, sources)
    clock.tick()  # the first frames
    try:
        with Pipeline(detector, sources, max_frames=400, quiet=True) as pipeline:
            order = [result.source_index for result in pipeline]
        snap = pipeline.stats.snapshot()
    finally:
        detector.close()
    assert len(order) == 400
    shares = np.bincount(order, minlength=4) / len(order)
    # measured: 0.25 each (+-0.005) on this machine; the bound is 22-28%
    assert all(0.22 <= share <= 0.28 for share in shares), shares
    per_source = snap["sources"]
    assert [item["uri"] for item in per_source] == ["cam0", "cam1", "cam2", "cam3"]
    assert [item["frames"] for item in per_source] == np.bincount(order, minlength=4).tolist()
    assert all(item["age"]["count"] == item["frames"] and item["age"]["p95_ms"] >= item["age"]["median_ms"] > 0
               for item in per_source)


def test_file_sources_round_robin_in_order_without_drops(fast):
    sources = [ListSource(frames(60, seed=i)) for i in range(4)]
    for index, source in enumerate(sources):
        source.uri = f"list://{index}"
    with Pipeline(fast, sources, max_frames=160, quiet=True) as pipeline:
        results = [(r.source_index, r.index, r.source) for r in pipeline]
    order = np.array([r[0] for r in results])
    assert len(results) == 160
    shares = np.bincount(order, minlength=4) / len(order)
    assert all(0.22 <= share <= 0.28 for share in shares), shares
    for index in range(4):  # each source's own frames in order, none dropped
        seen = [r[1] for r in results if r[0] == index]
        assert seen == list(range(len(seen)))
        assert all(r[2] == f"list://{index}" for r in results if r[0] == index)
    assert pipeline.stats.snapshot()["dropped"] == 0


class FailingSource(ListSource):
    def read(self, timeout=None):
        if self.position >= 3:
            raise RuntimeError("camera unplugged")
        return super().read(timeout)


def test_a_failing_or_ending_source_leaves_the_others_running(fast, caplog):
    good = ListSource(frames(40))
    short = ListSource(frames(2))
    bad = FailingSource(frames(50))
    for name, source in (("good", good), ("short", short), ("bad", bad)):
        source.uri = name
    with caplog.at_level("WARNING", logger="edge_fpn.runtime"):
        with Pipeline(fast, [good, short, bad], quiet=True) as pipeline:
            results = [r.source_index for r in pipeline]
    counts = np.bincount(results, minlength=3).tolist()
    assert counts == [40, 2, 3]  # every frame of the others, although one source failed
    snap = pipeline.stats.snapshot()["sources"]
    assert snap[2]["error"] == "camera unplugged" and snap[2]["ended"]
    assert snap[1]["ended"] and not snap[1]["error"]
    assert "source 2 (bad) failed: camera unplugged" in caplog.text


def test_an_unreachable_stream_at_start_is_reported_and_the_others_run(fast, caplog):
    # nothing listens on port 9 (discard) of loopback: the stream cannot open now
    with caplog.at_level("WARNING", logger="edge_fpn.runtime"):
        with Pipeline(fast, ["rtsp://127.0.0.1:9/cam", "test://?frames=12"], quiet=True, max_frames=12) as pipeline:
            results = [r.source_index for r in pipeline]
    assert results == [1] * 12
    snap = pipeline.stats.snapshot()["sources"]
    assert snap[0]["frames"] == 0 and snap[1]["frames"] == 12
    assert "rtsp://127.0.0.1:9/cam: cannot open stream" in caplog.text and "retried" in caplog.text


def test_one_unreachable_stream_alone_is_still_an_error_up_front(fast):
    with pytest.raises(EdgeFpnError, match="cannot open stream rtsp://127.0.0.1:9/cam"):
        Pipeline(fast, "rtsp://127.0.0.1:9/cam", quiet=True)


def test_a_missing_file_in_a_source_list_is_an_error_up_front(fast, tmp_path):
    with pytest.raises(EdgeFpnError, match="missing.mp4"):
        Pipeline(fast, [str(tmp_path / "missing.mp4"), "test://?frames=2"], quiet=True)


def test_a_pending_source_opens_when_the_camera_comes_and_then_delivers(fast, caplog):
    from edge_fpn.runtime.sources.pending import PendingSource

    attempts = []

    def opener():
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise EdgeFpnError("camera not there yet")
        source = ListSource(frames(6))
        source.uri = "cam"
        return source

    with caplog.at_level("WARNING", logger="edge_fpn.runtime"):
        pending = PendingSource("v4l2:///dev/video7", opener, "camera not there yet", backoff=(0.01, 0.02))
        with Pipeline(fast, [pending, ListSource(frames(4))], quiet=True) as pipeline:
            results = [r.source_index for r in pipeline]
    assert len(attempts) == 3
    # the late camera delivers (a live source: its newest frames, so some of its 6 may be replaced)
    assert results.count(1) == 4 and 1 <= results.count(0) <= 6
    assert "opened after" in caplog.text
    assert pipeline.stats.snapshot()["sources"][0]["ended"]


def test_a_pending_source_that_never_opens_reads_timeouts_and_closes_promptly():
    from edge_fpn.runtime.sources import TIMEOUT
    from edge_fpn.runtime.sources.pending import PendingSource, is_live_uri

    def never():
        raise EdgeFpnError("no camera")

    pending = PendingSource("csi://3", never, "no camera", backoff=(0.01, 0.05))
    assert pending.read(timeout=0.05).status == TIMEOUT
    assert pending.stats()["waiting"] and pending.stats()["outages"] == 1
    started = time.monotonic()
    pending.close()
    assert time.monotonic() - started < 1.0
    assert [is_live_uri(u) for u in ("rtsp://h/x", "csi://0", "/dev/video0", "v4l2:///dev/video1",
                                     "test://", "clip.mp4", "images/")] == [True] * 4 + [False] * 3


def test_every_source_failing_is_the_pipelines_error(fast):
    sources = [FailingSource(frames(5)), FailingSource(frames(5))]
    sources[1].uri = "other"
    with pytest.raises(RuntimeError, match="camera unplugged"):
        with Pipeline(fast, sources, quiet=True) as pipeline:
            list(pipeline)


def test_duplicate_sources_and_one_tracker_for_several_are_refused(fast):
    with pytest.raises(EdgeFpnError, match="given twice"):
        Pipeline(fast, ["test://?frames=2", "test://?frames=2"])
    from edge_fpn.runtime.tracking import Tracker
    with pytest.raises(EdgeFpnError, match="each source gets its own Tracker"):
        Pipeline(fast, ["test://?frames=2", "test://?frames=2&seed=2"], tracker=Tracker())


def test_each_source_has_its_own_tracker(fast):
    sources = ["test://?width=160&height=120&realtime=0&frames=12&seed=3",
               "test://?width=160&height=120&realtime=0&frames=12&seed=4"]
    with Pipeline(fast, sources, tracker=True, quiet=True, score_threshold=0.0) as pipeline:
        results = list(pipeline)
    trackers = [feed.tracker for feed in pipeline.feeds]
    assert trackers[0] is not trackers[1]
    assert all(r.detections.track_ids is not None for r in results)
    assert sorted(np.bincount([r.source_index for r in results]).tolist()) == [12, 12]


def test_the_pipeline_records_trails_once_for_every_drawing_sink(fast, tmp_path):
    import cv2
    sources = [f"test://?width=160&height=120&realtime=0&frames=15&seed={seed}" for seed in (3, 4)]
    sinks = [str(tmp_path / "a") + "/", str(tmp_path / "b") + "/"]
    with Pipeline(fast, sources, sinks, tracker=True, quiet=True, score_threshold=0.0) as pipeline:
        results = list(pipeline)
    assert all(r.trails is not None for r in results)
    assert sum(len(r.trails) for r in results) > 0  # confirmed tracks left trails
    # one drawing shared by both sinks: the same pictures, trails included
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b")) and names
    for folder in names:
        for name in sorted(os.listdir(tmp_path / "a" / folder)):
            first, second = (cv2.imread(str(tmp_path / side / folder / name)) for side in ("a", "b"))
            assert np.array_equal(first, second)
    with Pipeline(fast, sources[0], quiet=True) as pipeline:
        assert all(r.trails is None for r in pipeline)  # no tracker: no trail history at all


class ReconnectingSource(ListSource):
    """A file-like source that reports a reconnect when it hands out frame `at` (as a live stream
    that came back after an outage does)."""

    def __init__(self, items, at):
        super().__init__(items)
        self.at = at

    def read(self, timeout=None):
        read = super().read(timeout)
        if read.status == OK and read.index == self.at:
            self.reconnects += 1
        return read


@pytest.mark.parametrize("keep", [False, True])
def test_a_reconnect_starts_fresh_tracks_unless_asked_to_keep_them(fast, keep):
    source = ReconnectingSource(frames(60), at=30)
    with Pipeline(fast, source, tracker=True, quiet=True, score_threshold=0.0,
                  reset_tracker_on_reconnect=not keep) as pipeline:
        results = list(pipeline)
    # the tracker sees the reconnect when it tracks a frame read after it (capture runs a few frames ahead)
    before = {int(i) for r in results[10:20] for i in r.detections.track_ids if i >= 0}
    after = {int(i) for r in results[45:] for i in r.detections.track_ids if i >= 0}
    assert before and after
    if keep:
        assert after == before  # the same (replayed) objects keep their IDs
    else:
        assert min(after) > max(before)  # fresh tracks, and IDs never repeat


def test_per_source_sinks_and_tagged_records(fast, tmp_path):
    sources = [f"test://?width=160&height=120&realtime=0&frames=5&seed={i}" for i in range(3)]
    sinks = [str(tmp_path / "all.jsonl"), str(tmp_path / "cam_{source}.jsonl"), str(tmp_path / "video_{source}.avi"),
             str(tmp_path / "annotated") + "/"]
    with Pipeline(fast, sources, sinks, quiet=True) as pipeline:
        pipeline.run()
    records = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert sorted(np.bincount([r["source_index"] for r in records]).tolist()) == [5, 5, 5]
    assert {r["source"] for r in records} == set(sources)
    for index in range(3):
        own = [json.loads(line) for line in (tmp_path / f"cam_{index}.jsonl").read_text().splitlines()]
        assert [r["frame"] for r in own] == list(range(5)) and {r["source_index"] for r in own} == {index}
        assert (tmp_path / f"video_{index}.avi").stat().st_size > 0
        assert len(os.listdir(tmp_path / "annotated" / str(index))) == 5


def test_one_video_for_several_sources_is_refused(fast, tmp_path):
    with pytest.raises(EdgeFpnError, match=r"out_\{source\}\.mp4"):
        Pipeline(fast, ["test://?frames=2", "test://?frames=2&seed=2"], [str(tmp_path / "out.mp4")])
    assert not (tmp_path / "out.mp4").exists()


def test_web_viewer_serves_each_source(fast):
    sources = [f"test://?width=160&height=120&fps=30&seed={i}" for i in range(2)]
    with Pipeline(fast, sources, ["http://127.0.0.1:0"], quiet=True) as pipeline:
        pipeline.start()
        url = pipeline.sinks[0].url
        pipeline.latest(timeout=10)
        with urllib.request.urlopen(url + "snapshot.jpg?source=1", timeout=10) as response:
            assert response.read(2) == b"\xff\xd8"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = json.loads(urllib.request.urlopen(url + "stats.json", timeout=10).read())
            if all(item["frames"] >= 3 for item in stats["sources"]):
                break
            time.sleep(0.2)
        page = urllib.request.urlopen(url, timeout=10).read()
    assert [item["uri"] for item in stats["sources"]] == sources
    assert all(item["fps"] > 0 and item["frames"] >= 3 for item in stats["sources"])
    assert b"stream.mjpg?source=" in page


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edge_fpn.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd or ROOT)


def test_cli_repeated_sources_and_streams_file(tiny_bundle, tmp_path):
    streams = tmp_path / "cams.streams"
    streams.write_text("# two synthetic cameras\ntest://?width=160&height=120&realtime=0&frames=4\n\n"
                       "test://?width=160&height=120&realtime=0&frames=4&seed=7\n")
    out = tmp_path / "out_{source}.jsonl"
    run = _cli("detect", tiny_bundle, str(streams), str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    for index in range(2):
        lines = (tmp_path / f"out_{index}.jsonl").read_text().splitlines()
        assert len(lines) == 4 and all(json.loads(line)["source_index"] == index for line in lines)
    run = _cli("detect", tiny_bundle, "--source", "test://?width=160&height=120&realtime=0&frames=3",
               "--source", "test://?width=160&height=120&realtime=0&frames=3&seed=2", str(tmp_path / "both.jsonl"),
               "--quiet")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (tmp_path / "both.jsonl").read_text().splitlines()]
    assert sorted(r["source_index"] for r in records) == [0, 0, 0, 1, 1, 1]
    run = _cli("detect", tiny_bundle, "--source", "test://?frames=2", "--source", "test://?frames=2", "--quiet")
    assert run.returncode == 2 and "given twice" in run.stderr and "Traceback" not in run.stderr
    run = _cli("detect", tiny_bundle, "--source", "test://?frames=2", "--source", str(tmp_path / "missing.mp4"),
               "--quiet")
    assert run.returncode == 2 and "does not exist" in run.stderr
