"""The GStreamer subprocess grabber: a pipeline run by ``gst-launch-1.0`` writing raw BGR frames
into a pipe (where OpenCV was built without GStreamer, as pip wheels are)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from typing import Any, List, Optional, Tuple

import numpy as np

from ...errors import EdgeFpnError
from .live import Grabber


class GstLaunchGrabber(Grabber):
    """A GStreamer pipeline run by ``gst-launch-1.0``, raw BGR frames read from a pipe.

    The pipeline must end in BGR video (``... ! video/x-raw,format=BGR``); an ``fdsink`` writing
    to our pipe is appended. When the size is not given it is read from the negotiated caps that
    ``gst-launch-1.0 -v`` prints on stdout (they are waited for anyway: they say the pipeline runs). Each frame is ``readinto`` its own preallocated array:
    the only copy between GStreamer and the detector.
    """

    SINK_NAME = "edgefpnsink"

    def __init__(self, pipeline: str, description: str, failure: str, width: Optional[int] = None,
                 height: Optional[int] = None, open_timeout: float = 10.0, fps: Optional[float] = None,
                 executable: Optional[str] = None):
        self.pipeline, self.description, self.failure = pipeline, description, failure
        self.size = (int(width), int(height)) if width and height else None
        self.open_timeout = open_timeout
        self._fps = fps
        self.executable = executable or shutil.which("gst-launch-1.0") or "gst-launch-1.0"
        self._process: Optional[subprocess.Popen] = None
        self._pipe: Any = None
        self._frame_size: Optional[Tuple[int, int]] = None
        self._messages: List[str] = []

    def command(self, fd: int) -> List[str]:
        # gst-launch quotes each argument it is given, so the description goes in as shell words
        description = f"{self.pipeline} ! fdsink name={self.SINK_NAME} fd={fd} sync=false"
        return [self.executable, "-v", "-e"] + shlex.split(description)

    def open(self) -> None:
        read_fd, write_fd = os.pipe()
        try:
            # its own session: a Ctrl-C in the terminal is ours to handle (we stop it on close)
            process = subprocess.Popen(self.command(write_fd), pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                       start_new_session=True)
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            raise EdgeFpnError(f"{self.failure} ({exc})") from None
        os.close(write_fd)  # the child holds the write end: EOF on our side when it exits
        self._process = process
        self._pipe = os.fdopen(read_fd, "rb", buffering=0)
        # wait for the sink's negotiated caps even when the size is known: they say the pipeline
        # started (a missing camera or element makes gst-launch exit instead)
        caps_found = threading.Event()
        self._messages = []
        self._frame_size = None
        threading.Thread(target=self._read_messages, args=(process, caps_found), daemon=True,
                         name="edge-fpn gst-launch messages").start()
        # wait until the caps are known (or the process dies, or the time is up)
        deadline = time.monotonic() + self.open_timeout
        while not caps_found.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                break
        if self._frame_size is None or process.poll() is not None:
            detail = _last_error(self._messages)
            self.release()
            raise EdgeFpnError(f"{self.failure}{' (' + detail + ')' if detail else ''}")

    def _read_messages(self, process: subprocess.Popen, caps_found: threading.Event) -> None:
        pattern = re.compile(re.escape(self.SINK_NAME) + r"\.GstPad:sink: caps = .*?width=\(int\)(\d+), height=\(int\)(\d+)")
        fps_pattern = re.compile(r"framerate=\(fraction\)(\d+)/(\d+)")
        assert process.stdout is not None
        for line in process.stdout:
            if len(self._messages) < 200:
                self._messages.append(line.rstrip())
            if not caps_found.is_set():
                match = pattern.search(line)
                if match:
                    self._frame_size = (int(match.group(1)), int(match.group(2)))
                    rate = fps_pattern.search(line)
                    if rate and int(rate.group(2)) and self._fps is None:
                        self._fps = int(rate.group(1)) / int(rate.group(2))
                    caps_found.set()

    def grab(self) -> Optional[np.ndarray]:
        if self._pipe is None or self._frame_size is None:
            return None
        width, height = self._frame_size
        stride = (width * 3 + 3) & ~3  # GStreamer rounds raw RGB/BGR rows up to 4 bytes
        buffer = np.empty((height, stride), dtype=np.uint8)
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            try:
                count = self._pipe.readinto(view[filled:])
            except (OSError, ValueError):
                return None
            if not count:
                return None  # EOF: gst-launch ended (stream lost, or end of stream)
            filled += count
        frame = buffer[:, : width * 3].reshape(height, width, 3)
        return frame

    def interrupt(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def release(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=3.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=3.0)
            if process.stdout is not None:
                try:
                    process.stdout.close()
                except OSError:
                    pass
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()

    @property
    def fps(self) -> Optional[float]:
        return self._fps


def _last_error(lines: List[str]) -> str:
    for line in reversed(lines):
        if line.startswith("ERROR") or "error" in line.lower():
            return line.strip()[:200]
    return ""


def gst_launch_available() -> bool:
    return shutil.which("gst-launch-1.0") is not None


