"""Sources by URI: files, directories, globs, video, test://, live sources with reconnection,
the GStreamer pipeline strings, the gst-launch raw-frame reader, and bad URIs."""
from __future__ import annotations

import logging
import shutil
import socket
import sys
import threading

import cv2
import numpy as np
import pytest

from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.sources import gstreamer
from edge_fpn.runtime.sources import (END, OK, TIMEOUT, GstLaunchGrabber, Grabber, LiveSource, SyntheticSource,
                                      csi_pipeline, open_source, rtsp_pipeline)
from edge_fpn.runtime.synthetic import SyntheticCamera


def _write_images(directory, count, size=(48, 64)):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = np.full(size + (3,), 20 * i, np.uint8)
        path = directory / f"frame_{i:02d}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def test_read_unpacks_and_statuses(tmp_path):
    _write_images(tmp_path / "d", 2)
    with open_source(str(tmp_path / "d")) as source:
        status, frame, stamp, index = source.read()
        assert status == OK and frame.shape == (48, 64, 3) and index == 0 and stamp > 0
        assert source.read().ok
        assert source.read().status == END
        assert source.read().status == END


def test_directory_sorted_with_unreadable_image_warned_once(tmp_path, caplog):
    directory = tmp_path / "images"
    _write_images(directory, 3)
    (directory / "frame_00b.png").write_bytes(b"not a png")
    (directory / "frame_01b.jpg").write_bytes(b"")
    (directory / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="edge_fpn.runtime"):
        source = open_source(str(directory))
        reads = list(source)
    assert [r.name.rsplit("/", 1)[-1] for r in reads] == ["frame_00.png", "frame_01.png", "frame_02.png"]
    assert [int(r.frame[0, 0, 0]) for r in reads] == [0, 20, 40]
    assert source.skipped == 2
    assert sum("cannot read image" in r.message for r in caplog.records) == 1


def test_glob_and_single_image(tmp_path):
    paths = _write_images(tmp_path / "g", 3)
    reads = list(open_source(str(tmp_path / "g" / "frame_0[12].png")))
    assert [r.name for r in reads] == [str(p) for p in paths[1:]]
    single = list(open_source(str(paths[0])))
    assert len(single) == 1 and single[0].frame.shape == (48, 64, 3)
    assert len(list(open_source("file://" + str(paths[0])))) == 1


def test_video_file_ends_cleanly(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (64, 48))
    for i in range(7):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    source = open_source(path)
    assert not source.live and abs(source.fps - 12.0) < 0.01
    reads = list(source)
    assert [r.index for r in reads] == list(range(7))
    assert source.read().status == END
    source.close()


def test_test_source_deterministic_and_unpaced():
    camera = SyntheticCamera(160, 120, 30.0, 3)
    source = open_source("test://?width=160&height=120&seed=3&realtime=0&frames=4")
    reads = list(source)
    assert not source.live and [r.index for r in reads] == [0, 1, 2, 3]
    np.testing.assert_array_equal(reads[2].frame, camera.frame(2))


class FakeClock:
    """time.monotonic and time.sleep for a source under test: only sleeping moves the clock."""

    def __init__(self, now=1000.0):
        self.now = now

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_test_source_realtime_paces_and_drops(monkeypatch):
    """The realtime test:// source on a controlled clock: frame i exists at i / fps."""
    clock = FakeClock()
    monkeypatch.setattr(sys.modules[SyntheticSource.__module__], "time", clock)
    camera = SyntheticCamera(64, 48, 64.0, 1)
    source = open_source("test://?width=64&height=48&fps=64")  # a frame every 1/64 s, exact in binary
    assert isinstance(source, SyntheticSource) and source.live
    start = clock.now
    reads = [source.read(timeout=1.0) for _ in range(6)]
    assert [r.index for r in reads] == [0, 1, 2, 3, 4, 5] and all(r.ok for r in reads)
    # paced like a camera: each read waited until its frame existed, and no longer
    assert [r.timestamp - start for r in reads] == [i / 64 for i in range(6)] and clock.now == start + 5 / 64
    np.testing.assert_array_equal(reads[2].frame, camera.frame(2))
    assert source.dropped == 0
    clock.now += 16 / 64  # a slow reader: 16 frame periods pass
    late = source.read(timeout=1.0)
    # it gets the newest frame (21); the 15 it never read (6..20) are dropped
    assert late.index == 21 and source.dropped == 15 and clock.now == start + 21 / 64
    np.testing.assert_array_equal(late.frame, camera.frame(21))
    # the next frame is 1/64 s away: a shorter timeout waits the timeout, then says TIMEOUT
    assert source.read(timeout=0.0).status == TIMEOUT and clock.now == start + 21 / 64
    assert source.read(timeout=0.005).status == TIMEOUT and clock.now == pytest.approx(start + 21 / 64 + 0.005)
    nxt = source.read(timeout=1.0)
    assert nxt.index == 22 and clock.now == pytest.approx(start + 22 / 64) and source.dropped == 15


def test_csi_pipeline_string():
    assert csi_pipeline(1, 1920, 1080, 30, 2) == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM), width=(int)1920, height=(int)1080, framerate=(fraction)30/1, format=(string)NV12 ! "
        "nvvidconv flip-method=2 ! "
        "video/x-raw, width=(int)1920, height=(int)1080, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=true max-buffers=1")
    assert csi_pipeline(0, 1280, 720, 59.94, 0, sink=None).endswith("video/x-raw, format=(string)BGR")
    assert "framerate=(fraction)59940/1000" in csi_pipeline(fps=59.94)


def test_rtsp_pipeline_string():
    text = rtsp_pipeline("rtsp://cam/stream", 100)
    assert text.startswith('rtspsrc location="rtsp://cam/stream" protocols=tcp latency=100 ! decodebin ! ')
    assert text.endswith("video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1")


@pytest.mark.parametrize("uri, message", [
    ("foo://bar", "unknown source scheme"),
    ("/no/such/file.mp4", "does not exist"),
    ("test://?width=10", "width and height from 32 to 8192"),
    # (found by trying random options: a traceback, and a MemoryError for terabytes of background)
    ("test://?fps=inf", "fps above 0, at most 1000"),
    ("test://?fps=nan", "fps above 0"),
    ("test://?height=99999999999", "width and height from 32 to 8192"),
    ("test://?colour=red", "unknown option 'colour'"),
    ("test://?fps=fast", "not a valid value"),
    ("/dev/video97", "camera /dev/video97 does not exist"),
    ("v4l2:///dev/video97?width=640", "camera /dev/video97 does not exist"),
    ("v4l2:///dev/sda", "does not name a device"),
    ("csi://0?flip=9", "flip must be 0..7"),
    ("csi://zero", "must name a sensor number"),
])
def test_bad_uris_are_one_sentence(uri, message):
    with pytest.raises(EdgeFpnError, match=message) as info:
        open_source(uri)
    assert "\n" not in str(info.value)


def test_empty_directory_and_glob(tmp_path):
    with pytest.raises(EdgeFpnError, match="no image files"):
        open_source(str(tmp_path))
    with pytest.raises(EdgeFpnError, match="no file matches"):
        open_source(str(tmp_path / "*.png"))


def test_rtsp_connection_refused_and_never_answering(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with pytest.raises(EdgeFpnError, match="cannot open stream"):
        open_source(f"rtsp://127.0.0.1:{free_port}/x", open_timeout=2)
    # a server that accepts the connection and never says anything: the open timeout, then an error
    asked = []
    real_capture = cv2.VideoCapture

    def capture(*args):  # the real one, recording what OpenCV was asked for
        asked.append(args)
        return real_capture(*args)

    monkeypatch.setattr(cv2, "VideoCapture", capture)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        with pytest.raises(EdgeFpnError, match=r"cannot open stream rtsp://user:\*\*\*@127.0.0.1:\d+/x within 2 s"):
            open_source(f"rtsp://user:secret@127.0.0.1:{silent.getsockname()[1]}/x", open_timeout=2)
        silent.settimeout(10)  # bounds a hang only: the connection was made before the error came
        silent.accept()[0].close()
    finally:
        silent.close()
    # the 2 s reached FFmpeg as OpenCV's open timeout (no clock is read here: the wait is OpenCV's)
    (target, api, params), = asked
    assert target.endswith("/x") and api == cv2.CAP_FFMPEG
    if hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
        assert dict(zip(params[::2], params[1::2]))[cv2.CAP_PROP_OPEN_TIMEOUT_MSEC] == 2000


def test_rtsp_unknown_option():
    with pytest.raises(EdgeFpnError, match="no option 'width'"):
        open_source("rtsp://127.0.0.1:1/x", width=3)


# ---------------------------------------------------------------- live sources with a scripted grabber

class ScriptedGrabber(Grabber):
    """Gives bursts[i] frames (all of value i + 1) on its i-th connection; the first `failures`
    reopen attempts fail. No clock: with `handshake`, a frame is grabbed only once the reader has
    read the previous one (`read_done()`), so nothing can be dropped; without, it grabs as fast as
    the source's thread runs."""

    def __init__(self, bursts=(5,), failures=2, handshake=False):
        self.bursts, self.failures = list(bursts), failures
        self.opened = 0
        self.attempts = 0
        self.opened_at = []  # the attempt number of each successful open
        self.left = 0
        self.exhausted = threading.Event()  # the last connection gave all its frames
        self._may_grab = threading.Semaphore(1) if handshake else None
        self._interrupted = threading.Event()

    def open(self):
        self.attempts += 1
        if self.opened and self.failures > 0:
            self.failures -= 1
            raise EdgeFpnError("not yet")
        if self.opened >= len(self.bursts):
            raise EdgeFpnError("gone")
        self.opened += 1
        self.opened_at.append(self.attempts)
        self.left = self.bursts[self.opened - 1]

    def grab(self):
        if self.left <= 0:
            if self.opened == len(self.bursts):
                self.exhausted.set()
            return None
        if self._may_grab is not None:
            while not self._may_grab.acquire(timeout=0.1):
                if self._interrupted.is_set():
                    return None
        self.left -= 1
        return np.full((8, 8, 3), self.opened, np.uint8)

    def read_done(self):
        if self._may_grab is not None:
            self._may_grab.release()

    def interrupt(self):
        self._interrupted.set()

    def release(self):
        self.left = 0


def test_live_source_reconnects_with_backoff_and_says_so_once(caplog):
    # 5 frames, the stream is lost, 2 reopen attempts fail, the third succeeds; the second
    # connection outlasts the test (an end there would be a second outage)
    grabber = ScriptedGrabber(bursts=(5, 100), failures=2, handshake=True)
    with caplog.at_level(logging.WARNING, logger="edge_fpn.runtime"):
        source = LiveSource("scripted://", grabber, backoff=(0.01, 0.05))
        values = []
        while len(values) < 10:
            read = source.read(timeout=10.0)  # the timeout bounds a hang only
            assert read.ok, read
            values.append(int(read.frame[0, 0, 0]))
            grabber.read_done()
        source.close()
    assert values == [1] * 5 + [2] * 5  # every frame of both connections, in order
    assert source.dropped == 0 and read.index == 9  # frames 0..9, numbered across connections
    assert source.reconnects == 1 and grabber.opened_at == [1, 4]  # first open, 2 failures, 1 success
    assert sum("stream lost" in r.message for r in caplog.records) == 1
    assert sum("reconnected" in r.message for r in caplog.records) == 1


def test_live_source_keeps_newest_and_ends_without_reconnect():
    grabber = ScriptedGrabber(bursts=(30,), failures=0)
    source = LiveSource("scripted://", grabber, reconnect=False)
    assert grabber.exhausted.wait(10.0)  # nobody reads while all 30 are grabbed (the timeout bounds a hang only)
    read = source.read(timeout=10.0)
    # the slot kept only the newest frame: the 29 before it were dropped
    assert read.ok and read.index == 29 and source.dropped == 29
    assert source.read(timeout=10.0).status == END  # and no reconnect: the stream ends
    assert grabber.attempts == 1
    source.close()


def test_live_source_open_failure_is_an_error():
    grabber = ScriptedGrabber(bursts=())
    with pytest.raises(EdgeFpnError, match="gone"):
        LiveSource("scripted://", grabber)


# ---------------------------------------------------------------- gst-launch-1.0 as a frame source

needs_gst = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="needs gst-launch-1.0 (gstreamer1.0-tools)")


@needs_gst
def test_gst_launch_grabber_reads_raw_frames_with_padded_rows():
    # 158 px: BGR rows of 474 bytes, which GStreamer pads to 476
    pipeline = ("videotestsrc num-buffers=6 pattern=solid-color foreground-color=0xff0000ff ! "
                "video/x-raw,width=158,height=90,framerate=30/1 ! videoconvert ! video/x-raw,format=BGR")
    grabber = GstLaunchGrabber(pipeline, "videotestsrc", "cannot start videotestsrc")
    grabber.open()
    try:
        assert grabber._frame_size == (158, 90) and abs(grabber.fps - 30.0) < 1e-6
        frames = []
        while True:
            frame = grabber.grab()
            if frame is None:
                break
            frames.append(frame)
    finally:
        grabber.release()
    assert len(frames) == 6
    assert frames[0].shape == (90, 158, 3)
    assert (frames[0] == np.array([255, 0, 0], np.uint8)).all()  # blue everywhere: no row shift


@needs_gst
def test_gst_launch_csi_without_argus_is_a_clear_error():
    with pytest.raises(EdgeFpnError, match="cannot open CSI camera 0 .*nvargus") as info:
        open_source("csi://0?width=640&height=480", backend="gst-launch")
    assert "\n" not in str(info.value)


def test_csi_without_any_gstreamer(monkeypatch):
    # the choice between OpenCV's GStreamer and gst-launch is made in sources/gstreamer.py
    monkeypatch.setattr(gstreamer, "opencv_video_backends", lambda: {"gstreamer": False, "ffmpeg": True, "v4l2": True})
    monkeypatch.setattr(gstreamer, "gst_launch_available", lambda: False)
    with pytest.raises(EdgeFpnError, match="needs GStreamer"):
        open_source("csi://0")
