"""The MJPEG web viewer: its HTTP endpoints, and the page in headless Chromium showing frames
arriving and statistics changing (read from the page through the DevTools protocol over a pipe)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edge_fpn.runtime.pipeline import Pipeline
from test_pipeline import fast_detector

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def viewer(tiny_bundle):
    """A live pipeline on test:// serving the web viewer on a free port of 127.0.0.1."""
    detector = fast_detector(tiny_bundle, delay=0.03)
    pipeline = Pipeline(detector, "test://?width=320&height=240&fps=20", ["http://127.0.0.1:0"], quiet=True).start()
    try:
        yield pipeline.sinks[0].url, pipeline
    finally:
        pipeline.close()


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def test_endpoints(viewer):
    url, pipeline = viewer
    status, kind, body = _get(url)
    assert status == 200 and kind.startswith("text/html") and b'id="stream"' in body
    status, kind, body = _get(url + "snapshot.jpg")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert kind == "image/jpeg" and image.shape == (240, 320, 3)
    first = json.loads(_get(url + "stats.json")[2])
    # wait for a result newer than the newest now (the timeouts bound a hang only): counted after `first`
    pipeline.latest(timeout=10.0, after=pipeline.latest(timeout=10.0))
    second = json.loads(_get(url + "stats.json")[2])
    assert second["frames"] > first["frames"] > 0
    assert second["stages"]["engine"]["count"] > 0 and second["source"]["uri"].startswith("test://")
    assert sum(second["detections_per_class"].values()) > 0
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(url + "nothing-here")
    assert info.value.code == 404


def test_mjpeg_stream_sends_successive_frames(viewer):
    url, _ = viewer
    with urllib.request.urlopen(url + "stream.mjpg", timeout=10) as response:
        assert response.headers.get("Content-Type").startswith("multipart/x-mixed-replace")
        data = b""
        deadline = time.monotonic() + 10  # waits for 3 frames; the deadline bounds a hang only
        while data.count(b"\xff\xd9") < 3 and time.monotonic() < deadline:
            data += response.read1(65536)
    parts = [p for p in data.split(b"--edgefpnframe") if b"\xff\xd8" in p]
    assert len(parts) >= 3
    jpeg = parts[0][parts[0].index(b"\xff\xd8"):]
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, profile):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def plumb():
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4, to_browser_r, from_browser_w), preexec_fn=plumb,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0

    def call(self, method, params=None, session=None, timeout=30.0):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer to {method}")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise EOFError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply["result"]

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


PAGE_STATE = """JSON.stringify({
  frames: Number(document.getElementById('frames').textContent),
  fps: Number(document.getElementById('fps').textContent),
  seen: Number(document.getElementById('seen').textContent),
  updates: Number(document.body.dataset.updates || 0),
  width: Number(document.body.dataset.imageWidth || 0),
  stages: document.querySelectorAll('#stages tbody tr').length,
  classes: document.querySelectorAll('#classes tbody tr').length,
  status: document.getElementById('status').textContent
})"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_page_in_headless_chromium_shows_frames_and_changing_stats(viewer):
    url, pipeline = viewer
    # preprocess, the engine step(s), postprocess, sinks (and proposals in the host layout)
    stages = 3 + len(pipeline.detector.engine_steps) + ("stage1" in pipeline.detector.engine_steps)
    profile = tempfile.mkdtemp(prefix="edge-fpn-chromium-")
    browser = DevTools(profile)
    try:
        target = browser.call("Target.createTarget", {"url": url})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        states = []
        deadline = time.monotonic() + 45  # waits for the page to show 3 frames; the deadline bounds a hang only
        while time.monotonic() < deadline:
            result = browser.call("Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True}, session)
            if "value" not in result["result"]:  # the page is still loading
                time.sleep(0.5)
                continue
            state = json.loads(result["result"]["value"])
            states.append(state)
            if len(states) >= 3 and state["seen"] >= 3 and state["frames"] > states[0]["frames"] > 0:
                break
            time.sleep(1.0)
        assert states, "the page never loaded"
        first = next(s for s in states if s["frames"] > 0)
        last = states[-1]
        assert last["width"] == 320  # the MJPEG stream decoded in the page
        assert last["seen"] >= 3  # and its picture changed: frames arrive
        assert last["frames"] > first["frames"]  # the statistics change over time
        assert last["updates"] > first["updates"] and last["fps"] > 0
        assert last["stages"] >= stages and last["classes"] >= 1 and last["status"].startswith("live")
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


# ------------------------------------------------------------------ active tracks

@pytest.fixture(scope="module")
def tracked_viewer(tiny_bundle):
    """Two live test:// sources with a tracker each, serving the web viewer."""
    detector = fast_detector(tiny_bundle, delay=0.02)
    sources = [f"test://?width=320&height=240&fps=20&seed={seed}" for seed in (1, 2)]
    pipeline = Pipeline(detector, sources, ["http://127.0.0.1:0"], quiet=True, tracker=True).start()
    try:
        yield pipeline.sinks[0].url, pipeline
    finally:
        pipeline.close()


def _stats_when(url, ready, seconds=20.0):
    """stats.json once `ready(stats)` holds (the deadline bounds a hang only)."""
    deadline = time.monotonic() + seconds
    while True:
        stats = json.loads(_get(url + "stats.json")[2])
        if ready(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def test_stats_count_active_tracks_per_source_and_in_total(tracked_viewer):
    url, _ = tracked_viewer
    # the replayed engine finds the same objects in every frame: the tracker confirms them all
    stats = _stats_when(url, lambda s: all((e.get("active_tracks") or 0) > 0 for e in s["sources"]))
    per_source = [entry["active_tracks"] for entry in stats["sources"]]
    assert len(per_source) == 2 and min(per_source) > 0
    assert stats["active_tracks"] == sum(per_source)


def test_no_track_count_without_a_tracker(viewer):
    url, _ = viewer
    stats = _stats_when(url, lambda s: s["frames"] > 0)
    assert stats["active_tracks"] is None and stats["sources"][0]["active_tracks"] is None


def test_active_tracks_are_those_of_each_sources_newest_frame():
    """Confirmed IDs (not -1) in the newest frame of each source; 0 for a source that ended."""
    from edge_fpn.runtime.detector import Detections
    from edge_fpn.runtime.pipeline import Result
    from edge_fpn.runtime.web.server import WebViewerSink

    def result(source, ids):
        boxes = np.tile(np.array([[10, 10, 30, 30]], np.float32), (len(ids), 1))
        detections = Detections(boxes, np.full(len(ids), 0.9, np.float32), np.ones(len(ids), np.int64),
                                ["circle"] * len(ids), np.asarray(ids, np.int64))
        return Result(np.zeros((60, 80, 3), np.uint8), detections, 0, 0.0, "test://", "", {}, 0.0, 0.0,
                      source_index=source)

    sources = [{"index": 0, "ended": False}, {"index": 1, "ended": False}, {"index": 2, "ended": True}]
    sink = WebViewerSink("127.0.0.1", 0, stats=lambda: {"sources": [dict(s) for s in sources]})
    try:
        sink.write(result(0, [1, 2, 3]))
        sink.write(result(0, [1, 2, -1, 4]))  # the newest frame counts, its unconfirmed detection does not
        sink.write(result(1, [-1]))
        sink.write(result(2, [7, 8]))
        stats = json.loads(_get(sink.url + "stats.json")[2])
        assert [s["active_tracks"] for s in stats["sources"]] == [3, 0, 0] and stats["active_tracks"] == 3
    finally:
        sink.close()


TRACKS_STATE = """JSON.stringify({
  tracks: document.getElementById('tracks').textContent,
  shown: !document.getElementById('tracks-box').classList.contains('hidden'),
  columns: Array.from(document.querySelectorAll('#sources tbody tr')).map((tr) => tr.lastChild.textContent)
})"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_page_shows_active_tracks(tracked_viewer):
    url, _ = tracked_viewer
    profile = tempfile.mkdtemp(prefix="edge-fpn-chromium-")
    browser = DevTools(profile)
    try:
        target = browser.call("Target.createTarget", {"url": url})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        state = {}
        deadline = time.monotonic() + 45  # waits for the page to show the counts; bounds a hang only
        while time.monotonic() < deadline:
            result = browser.call("Runtime.evaluate", {"expression": TRACKS_STATE, "returnByValue": True}, session)
            state = json.loads(result["result"]["value"]) if "value" in result["result"] else {}
            if state.get("shown") and state["tracks"].isdigit() and int(state["tracks"]) > 0 and len(state["columns"]) == 2:
                break
            time.sleep(0.5)
        assert state.get("shown") and int(state["tracks"]) > 0, state
        assert all(column.isdigit() and int(column) > 0 for column in state["columns"]), state
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
