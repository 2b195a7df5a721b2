"""Sources by URI: files, directories, globs, video, test://, live sources with reconnection,
the GStreamer pipeline strings, the gst-launch raw-frame reader, and bad URIs."""
from __future__ import annotations

import logging
import shutil
import socket
import time

import cv2
import numpy as np
import pytest

from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime import sources
from edge_fpn.runtime.sources import (END, OK, TIMEOUT, GstLaunchGrabber, Grabber, LiveSource, csi_pipeline,
                                      open_source, rtsp_pipeline)
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


def test_test_source_realtime_paces_and_drops():
    source = open_source("test://?width=64&height=48&fps=50")
    assert source.live
    start = time.monotonic()
    first = source.read(timeout=1.0)
    for _ in range(5):
        source.read(timeout=1.0)
    assert time.monotonic() - start >= 4 / 50.0  # paced like a camera
    time.sleep(0.2)  # a slow reader misses frames: it gets the newest, the others are dropped
    late = source.read(timeout=1.0)
    assert late.index - first.index >= 10 and source.dropped >= 5
    assert source.read(timeout=0.0).status in (OK, TIMEOUT)


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
    ("test://?width=10", "width, height >= 32"),
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


def test_rtsp_connection_refused_and_never_answering():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(EdgeFpnError, match="cannot open stream"):
        open_source(f"rtsp://127.0.0.1:{free_port}/x", open_timeout=2)
    assert time.monotonic() - started < 10
    # a server that accepts the connection and never says anything: the open timeout, then an error
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        started = time.monotonic()
        with pytest.raises(EdgeFpnError, match=r"cannot open stream rtsp://user:\*\*\*@127.0.0.1:\d+/x within 2 s"):
            open_source(f"rtsp://user:secret@127.0.0.1:{silent.getsockname()[1]}/x", open_timeout=2)
        assert 1.5 < time.monotonic() - started < 15
    finally:
        silent.close()


def test_rtsp_unknown_option():
    with pytest.raises(EdgeFpnError, match="no option 'width'"):
        open_source("rtsp://127.0.0.1:1/x", width=3)


# ---------------------------------------------------------------- live sources with a scripted grabber

class ScriptedGrabber(Grabber):
    """Gives `burst` frames per connection; the first `failures` reopen attempts fail."""

    def __init__(self, burst=5, failures=2, connections=3):
        self.burst, self.failures, self.connections = burst, failures, connections
        self.opened = 0
        self.attempts = 0
        self.left = 0

    def open(self):
        self.attempts += 1
        if self.opened and self.failures > 0:
            self.failures -= 1
            raise EdgeFpnError("not yet")
        if self.opened >= self.connections:
            raise EdgeFpnError("gone")
        self.opened += 1
        self.left = self.burst

    def grab(self):
        time.sleep(0.005)
        if self.left <= 0:
            return None
        self.left -= 1
        return np.full((8, 8, 3), self.opened, np.uint8)

    def release(self):
        self.left = 0


def test_live_source_reconnects_with_backoff_and_says_so_once(caplog):
    grabber = ScriptedGrabber(burst=5, failures=2, connections=2)
    with caplog.at_level(logging.WARNING, logger="edge_fpn.runtime"):
        source = LiveSource("scripted://", grabber, backoff=(0.01, 0.05))
        values = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(values) < 10:
            read = source.read(timeout=0.5)
            if read.ok:
                values.append(int(read.frame[0, 0, 0]))
        source.close()
    assert values.count(1) >= 1 and values.count(2) >= 1  # frames from both connections
    assert source.reconnects == 1 and grabber.attempts == 4  # first open, 2 failures, 1 success
    assert sum("stream lost" in r.message for r in caplog.records) == 1
    assert sum("reconnected" in r.message for r in caplog.records) == 1


def test_live_source_keeps_newest_and_ends_without_reconnect():
    grabber = ScriptedGrabber(burst=30, failures=0, connections=1)
    source = LiveSource("scripted://", grabber, reconnect=False)
    time.sleep(0.3)  # nobody reads: the slot keeps only the newest frame
    read = source.read(timeout=1.0)
    assert read.ok and source.dropped >= 10
    while source.read(timeout=1.0).status != END:
        pass
    source.close()


def test_live_source_open_failure_is_an_error():
    grabber = ScriptedGrabber(connections=0)
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
    monkeypatch.setattr(sources, "opencv_video_backends", lambda: {"gstreamer": False, "ffmpeg": True, "v4l2": True})
    monkeypatch.setattr(sources, "gst_launch_available", lambda: False)
    with pytest.raises(EdgeFpnError, match="needs GStreamer"):
        open_source("csi://0")
