"""RTSP: a GStreamer RTSP server on 127.0.0.1 (started by the test, Debian's python3 + GstRtspServer)
is read as a source; stopped and restarted mid-run, the pipeline reconnects and goes on."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from edge_fpn.runtime.pipeline import Pipeline
from edge_fpn.runtime.sources import open_source
from test_pipeline import fast_detector

SYSTEM_PYTHON = "/usr/bin/python3"  # python3-gst-1.0 installs for Debian's python, not for a pyenv one

SERVER = r'''
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
# MJPEG over RTP: encoders from gst-plugins-good only (no x264 needed); rtpjpegpay wants 4:2:0
factory.set_launch("( videotestsrc is-live=true pattern=ball ! "
                   "video/x-raw,format=I420,width=320,height=240,framerate=15/1 ! "
                   "jpegenc quality=70 ! rtpjpegpay name=pay0 pt=26 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/test", factory)
if server.attach(None) == 0:
    print("attach failed", flush=True)
    sys.exit(1)
print("ready", flush=True)
GLib.timeout_add_seconds(120, lambda: sys.exit(0))  # never outlive a test run
GLib.MainLoop().run()
'''


def _server_available():
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True, timeout=30)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _server_available(),
                                reason="needs Debian's python3-gst-1.0 and gir1.2-gst-rtsp-server-1.0")


class RtspServer:
    def __init__(self, script, port):
        self.script, self.port, self.process = script, port, None

    def start(self):
        deadline = time.monotonic() + 15  # bounds a hang only
        while True:  # the port may still be held for a moment after a stop
            self.process = subprocess.Popen([SYSTEM_PYTHON, self.script, str(self.port)], stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True)
            line = self.process.stdout.readline().strip()
            if line == "ready":
                return
            self.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP test server did not start: {line!r}")
            time.sleep(0.5)

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()
            self.process = None

    @property
    def url(self):
        return f"rtsp://127.0.0.1:{self.port}/test"


@pytest.fixture()
def server(tmp_path):
    script = tmp_path / "rtsp_server.py"
    script.write_text(SERVER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = RtspServer(str(script), port)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _wait(predicate, timeout):
    """Wait for an event (polled); the timeout bounds a hang only."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_pipeline_reconnects_when_the_server_restarts(server, tiny_bundle, caplog):
    detector = fast_detector(tiny_bundle)
    pipeline = Pipeline(detector, server.url, quiet=True, source_options={"open_timeout": 10, "read_timeout": 3})
    assert pipeline.live
    pipeline.start()
    try:
        assert _wait(lambda: pipeline.stats.frames >= 5, 20), "no frames from the RTSP server"
        first = pipeline.latest()
        assert first.frame.shape == (240, 320, 3)
        server.stop()
        assert _wait(lambda: pipeline.source.stats()["outages"] >= 1, 15), "the drop was not noticed"
        before = pipeline.stats.frames
        server.start()
        assert _wait(lambda: pipeline.stats.frames >= before + 5, 30), "the pipeline did not reconnect"
        assert pipeline.running
        assert pipeline.source.reconnects == 1
        assert pipeline.latest().index > first.index
    finally:
        pipeline.close()
    lost = [r.message for r in caplog.records if "stream lost" in r.message]
    assert len(lost) == 1  # said once
    assert any("reconnected" in r.message for r in caplog.records)


def test_rtsp_through_gst_launch(server):
    """Where OpenCV has no usable backend: gst-launch-1.0 decodes, raw BGR frames come through a pipe."""
    source = open_source(server.url, backend="gst-launch", open_timeout=15)
    try:
        reads = []
        deadline = time.monotonic() + 20  # waits for 5 frames; the deadline bounds a hang only
        while len(reads) < 5 and time.monotonic() < deadline:
            read = source.read(timeout=1.0)
            if read.ok:
                reads.append(read)
        assert len(reads) == 5 and reads[0].frame.shape == (240, 320, 3)
        assert reads[-1].index > reads[0].index
    finally:
        source.close()
