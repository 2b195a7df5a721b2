"""Frame sources chosen by URI, one interface: ``read(timeout) -> FrameRead(status, frame, timestamp, index)``.

Like jetson-inference's ``videoSource``: normal events are status values, not exceptions.

==========================================  ======================================================
URI                                         source
==========================================  ======================================================
``image.jpg``, ``dir/``, ``"dir/*.png"``    image files, a directory or a glob, in sorted order
``video.mp4`` (``file://...``)              a video file (OpenCV)
``test://?width=640&height=480&fps=30``     the synthetic moving scene (``&seed=1&realtime=1&frames=N``;
                                            ``&motion=cross|occlude|exit|fast|hard``: tracker tests)
``/dev/video0``, ``v4l2:///dev/video0``     a USB/V4L2 camera (``?width=&height=&fps=&format=MJPG``)
``csi://0``                                 a Jetson CSI camera (``?width=&height=&fps=&flip=``)
``rtsp://host:port/path``                   an RTSP stream over TCP (OpenCV FFmpeg, or GStreamer)
==========================================  ======================================================

Statuses: ``OK`` (a frame), ``TIMEOUT`` (no frame within the timeout: a live source that is slow
or reconnecting), ``END`` (a file source is exhausted, or the source was closed). Live sources
(cameras, RTSP, realtime ``test://``) grab on their own thread and keep only the newest frame;
when their stream drops they reconnect with back-off and say so once. File sources never drop.

Where OpenCV was built without GStreamer (pip wheels), a GStreamer pipeline (CSI cameras, or
RTSP with ``backend="gst-launch"``) runs as a ``gst-launch-1.0`` subprocess writing raw BGR
frames into a pipe, which is read with ``readinto`` into each frame's array: one copy, no more.
"""
from __future__ import annotations

import functools
import glob
import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from ...errors import EdgeFpnError

logger = logging.getLogger("edge_fpn.runtime")

OK = "ok"
TIMEOUT = "timeout"
END = "end"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".h264", ".h265", ".mjpeg", ".mjpg", ".gif")


class FrameRead:
    """What ``Source.read`` returns; unpacks as ``status, frame, timestamp, index``.

    ``timestamp`` is ``time.monotonic()`` when the frame was captured (what latency is measured
    from); ``index`` numbers the frames the source produced (gaps are frames it dropped);
    ``name`` is the image file a frame came from ("" for streams).
    """
    __slots__ = ("status", "frame", "timestamp", "index", "name")

    def __init__(self, status: str, frame: Optional[np.ndarray] = None, timestamp: float = 0.0,
                 index: int = -1, name: str = ""):
        self.status, self.frame, self.timestamp, self.index, self.name = status, frame, timestamp, index, name

    @property
    def ok(self) -> bool:
        return self.status == OK

    def __iter__(self) -> Iterator[Any]:
        return iter((self.status, self.frame, self.timestamp, self.index))

    def __repr__(self) -> str:
        shape = None if self.frame is None else getattr(self.frame, "shape", "?")
        return f"FrameRead({self.status!r}, frame={shape}, index={self.index})"


class Source:
    """Base class: a context manager and an iterator of OK reads (until END)."""

    live = False  # a live source keeps only the newest frame; a file source drops nothing

    def __init__(self, uri: str):
        self.uri = uri
        self.fps: Optional[float] = None
        self.frames = 0  # frames handed out by read()
        self.dropped = 0  # frames the source produced that nobody read (live sources)
        self.skipped = 0  # unreadable files skipped (image sources)
        self.reconnects = 0

    def read(self, timeout: Optional[float] = None) -> FrameRead:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def input_files(self) -> List[str]:
        """The local files this source reads (none for cameras, streams and test://): what an
        output must never be (output_guard.py)."""
        return []

    def stats(self) -> Dict[str, Any]:
        return {"uri": self.uri, "live": self.live, "frames": self.frames, "dropped": self.dropped,
                "skipped": self.skipped, "reconnects": self.reconnects}

    def __iter__(self) -> Iterator[FrameRead]:
        while True:
            result = self.read(timeout=1.0)
            if result.status == END:
                return
            if result.status == OK:
                yield result

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


# ---------------------------------------------------------------- files

class ImageSource(Source):
    """Image files in the order given; an unreadable one is warned about once, counted and skipped."""

    def __init__(self, paths: List[str], uri: str):
        super().__init__(uri)
        self.paths = list(paths)
        self._next = 0

    def input_files(self) -> List[str]:
        return list(self.paths)

    def read(self, timeout: Optional[float] = None) -> FrameRead:
        import cv2
        while self._next < len(self.paths):
            path = self.paths[self._next]
            index = self._next
            self._next += 1
            frame = _imread(cv2, path)
            if frame is None:
                self.skipped += 1
                if self.skipped == 1:
                    logger.warning("cannot read image %s; skipping it (further unreadable images are only counted)", path)
                continue
            self.frames += 1
            return FrameRead(OK, frame, time.monotonic(), index, path)
        return FrameRead(END)


def _imread(cv2: Any, path: str) -> Optional[np.ndarray]:
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths too
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


class VideoFileSource(Source):
    """A video file through OpenCV; every frame in order, END at the end."""

    def __init__(self, path: str, uri: Optional[str] = None):
        import cv2
        super().__init__(uri or path)
        self.path = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            self._cap.release()
            raise EdgeFpnError(f"cannot open video {path!r}: OpenCV cannot decode it; check the file, or convert it to H.264 .mp4")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else None
        self._index = 0

    def input_files(self) -> List[str]:
        return [self.path]

    def read(self, timeout: Optional[float] = None) -> FrameRead:
        if self._cap is None:
            return FrameRead(END)
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return FrameRead(END)
        index = self._index
        self._index += 1
        self.frames += 1
        return FrameRead(OK, frame, time.monotonic(), index, self.path)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# ---------------------------------------------------------------- test://

class SyntheticSource(Source):
    """``test://``: the synthetic moving scene (edge_fpn.runtime.synthetic.SyntheticCamera).

    ``realtime=True`` behaves like a camera: frame i exists at time i / fps, a reader that is late
    gets the newest frame and the ones it missed are counted as dropped. ``realtime=False`` is a
    file-like source: every frame, as fast as it is read, nothing dropped (benchmarks, tests).
    """

    def __init__(self, uri: str = "test://", width: int = 640, height: int = 480, fps: float = 30.0,
                 seed: int = 1, realtime: bool = True, frames: Optional[int] = None, motion: str = "drift"):
        from ..synthetic import SyntheticCamera
        super().__init__(uri)
        try:
            self.camera = SyntheticCamera(width=int(width), height=int(height), fps=float(fps), seed=int(seed),
                                          motion=str(motion))
        except ValueError as exc:
            raise EdgeFpnError(f"bad test:// source {uri!r}: {exc}") from None
        self.fps = float(fps)
        self.live = bool(realtime)
        self.limit = None if frames is None else int(frames)
        self._start: Optional[float] = None
        self._last = -1

    def read(self, timeout: Optional[float] = None) -> FrameRead:
        index = self._last + 1
        if self.limit is not None and index >= self.limit:
            return FrameRead(END)
        if self.live:
            now = time.monotonic()
            if self._start is None:
                self._start = now
            newest = int((now - self._start) * self.fps)
            if newest < index:  # the next frame is not there yet: wait for it, within the timeout
                due = self._start + index / self.fps
                if timeout is not None and due - now > timeout:
                    time.sleep(max(0.0, timeout))
                    return FrameRead(TIMEOUT)
                time.sleep(max(0.0, due - now))
            elif newest > index:
                if self.limit is not None:
                    newest = min(newest, self.limit - 1)
                self.dropped += newest - index
                index = newest
        frame = self.camera.frame(index)
        self._last = index
        self.frames += 1
        return FrameRead(OK, frame, time.monotonic(), index)


# ---------------------------------------------------------------- live sources: a grabber thread

class Grabber:
    """What a live source's thread drives: open (raise EdgeFpnError), grab (None = stream lost), release."""

    description = "stream"

    def open(self) -> None:
        raise NotImplementedError

    def grab(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Called from another thread on close: unblock a grab that may wait long (optional)."""

    @property
    def fps(self) -> Optional[float]:
        return None


class LiveSource(Source):
    """A grabber on its own thread, the newest frame in a one-frame slot; reconnects with back-off.

    The first open happens in the constructor (a camera that is not there is an EdgeFpnError);
    after that a lost stream is reopened with exponential back-off, and said once per outage.
    """

    live = True

    def __init__(self, uri: str, grabber: Grabber, reconnect: bool = True,
                 backoff: Tuple[float, float] = (0.25, 5.0)):
        super().__init__(uri)
        self.grabber = grabber
        self.reconnect = reconnect
        self.backoff = backoff
        grabber.open()  # raises EdgeFpnError with a sentence
        self.fps = grabber.fps
        self._cond = threading.Condition()
        self._slot: Optional[Tuple[np.ndarray, float, int]] = None
        self._ended = False
        self._stop = threading.Event()
        self._produced = 0
        self.outages = 0
        self._thread = threading.Thread(target=self._run, name=f"edge-fpn-grab {uri}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.grabber.grab()
                if frame is not None:
                    self._publish(frame)
                    continue
                if self._stop.is_set():
                    break
                if not self.reconnect or not self._reopen():
                    break
        except Exception:  # a grabber bug must not hang the reader: log it and end the stream
            logger.exception("%s: capture thread failed", self.uri)
        finally:
            self.grabber.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, frame: np.ndarray) -> None:
        with self._cond:
            if self._slot is not None:
                self.dropped += 1  # nobody read the previous frame in time: keep only the newest
            self._slot = (frame, time.monotonic(), self._produced)
            self._produced += 1
            self._cond.notify_all()

    def _reopen(self) -> bool:
        self.outages += 1
        lost_at = time.monotonic()
        logger.warning("%s: stream lost; reconnecting with back-off (said once)", self.uri)
        self.grabber.release()
        delay = self.backoff[0]
        while not self._stop.wait(delay):
            try:
                self.grabber.open()
            except EdgeFpnError:
                delay = min(delay * 2.0, self.backoff[1])
                continue
            self.reconnects += 1
            logger.warning("%s: reconnected after %.1f s", self.uri, time.monotonic() - lost_at)
            return True
        return False

    def read(self, timeout: Optional[float] = None) -> FrameRead:
        with self._cond:
            if self._slot is None and not self._ended:
                self._cond.wait_for(lambda: self._slot is not None or self._ended, timeout)
            if self._slot is None:
                return FrameRead(END if self._ended else TIMEOUT)
            frame, stamp, index = self._slot
            self._slot = None
        self.frames += 1
        return FrameRead(OK, frame, stamp, index)

    def close(self) -> None:
        self._stop.set()
        self.grabber.interrupt()
        self._thread.join(timeout=5.0)
        with self._cond:
            self._ended = True
            self._slot = None
            self._cond.notify_all()

    def stats(self) -> Dict[str, Any]:
        info = super().stats()
        info["outages"] = self.outages
        return info


class OpenCVGrabber(Grabber):
    """cv2.VideoCapture(target, api[, params]) plus properties set after opening (V4L2 options)."""

    def __init__(self, target: Any, api: int, description: str, failure: str,
                 params: Optional[List[int]] = None, properties: Optional[List[Tuple[int, float]]] = None,
                 env: Optional[Dict[str, str]] = None):
        self.target, self.api, self.description, self.failure = target, api, description, failure
        self.params = params or []
        self.properties = properties or []
        self.env = env or {}
        self._cap: Any = None
        self._fps: Optional[float] = None

    def open(self) -> None:
        import cv2
        with _environment(self.env):
            cap = cv2.VideoCapture(self.target, self.api, self.params) if self.params else cv2.VideoCapture(self.target, self.api)
        if not cap.isOpened():
            cap.release()
            raise EdgeFpnError(self.failure)
        for prop, value in self.properties:
            cap.set(prop, value)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = fps if 0.0 < fps < 1000.0 else None
        self._cap = cap

    def grab(self) -> Optional[np.ndarray]:
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        return frame if ok and frame is not None else None

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    @property
    def fps(self) -> Optional[float]:
        return self._fps


_ENV_LOCK = threading.Lock()


class _environment:
    """Set environment variables around a call (OpenCV's FFmpeg reads its options from there)."""

    def __init__(self, values: Dict[str, str]):
        self.values = values
        self.saved: Dict[str, Optional[str]] = {}

    def __enter__(self) -> None:
        if self.values:
            _ENV_LOCK.acquire()
            for key, value in self.values.items():
                self.saved[key] = os.environ.get(key)
                os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        if self.values:
            for key, value in self.saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _ENV_LOCK.release()


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


# ---------------------------------------------------------------- GStreamer pipelines (one function each)

APPSINK = "appsink drop=true max-buffers=1"


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30,
                 flip: int = 0, sink: Optional[str] = APPSINK) -> str:
    """The GStreamer pipeline of a Jetson CSI camera, ending in BGR frames (and ``sink`` if given).

    nvarguscamerasrc gives NV12 in NVMM (device) memory; nvvidconv flips and converts it to BGRx in
    system memory (it cannot output BGR), videoconvert drops the x.
    """
    rate = _fraction(fps)
    parts = [
        f"nvarguscamerasrc sensor-id={int(sensor_id)}",
        f"video/x-raw(memory:NVMM), width=(int){int(width)}, height=(int){int(height)}, framerate=(fraction){rate}, format=(string)NV12",
        f"nvvidconv flip-method={int(flip)}",
        f"video/x-raw, width=(int){int(width)}, height=(int){int(height)}, format=(string)BGRx",
        "videoconvert",
        "video/x-raw, format=(string)BGR",
    ]
    if sink:
        parts.append(sink)
    return " ! ".join(parts)


def rtsp_pipeline(url: str, latency_ms: int = 200, sink: Optional[str] = APPSINK) -> str:
    """The GStreamer pipeline of an RTSP stream over TCP, decoded by whatever decodebin finds
    (nvv4l2decoder on a Jetson), ending in BGR frames (and ``sink`` if given)."""
    parts = [
        f'rtspsrc location="{url}" protocols=tcp latency={int(latency_ms)}',
        "decodebin",
        "videoconvert",
        "video/x-raw, format=(string)BGR",
    ]
    if sink:
        parts.append(sink)
    return " ! ".join(parts)


def _fraction(fps: float) -> str:
    if float(fps).is_integer():
        return f"{int(fps)}/1"
    return f"{int(round(float(fps) * 1000))}/1000"


@functools.lru_cache(maxsize=None)
def opencv_video_backends() -> Dict[str, bool]:
    """Which video I/O backends this cv2 was built with (JetPack's has GStreamer, pip wheels do not)."""
    import cv2
    info = cv2.getBuildInformation()

    def has(name: str) -> bool:
        match = re.search(r"^\s*" + name + r":\s*(\S+)", info, re.MULTILINE | re.IGNORECASE)
        return bool(match) and match.group(1).upper().startswith("YES")
    return {"gstreamer": has("GStreamer"), "ffmpeg": has("FFMPEG"), "v4l2": has("v4l/v4l2") or has("V4L/V4L2")}


def gst_launch_available() -> bool:
    return shutil.which("gst-launch-1.0") is not None


# ---------------------------------------------------------------- URI parsing and open_source

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def _query(uri: str, allowed: Dict[str, Callable[[str], Any]], options: Dict[str, Any]) -> Dict[str, Any]:
    """URI query values converted by type, then explicit keyword options on top."""
    values: Dict[str, Any] = {}
    query = urlsplit(uri).query
    for key, text in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise EdgeFpnError(f"source {uri!r} has an unknown option {key!r}; known options: {', '.join(sorted(allowed))}")
        try:
            values[key] = allowed[key](text)
        except ValueError:
            raise EdgeFpnError(f"source {uri!r}: option {key}={text!r} is not a valid value") from None
    for key, value in options.items():
        if key not in allowed and value is not None:
            raise EdgeFpnError(f"source {uri!r} has no option {key!r}; known options: {', '.join(sorted(allowed))}")
        if value is not None:
            values[key] = value
    return values


def _bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on", ""):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _fourcc(text: str) -> str:
    if len(text) != 4:
        raise ValueError(text)
    return text.upper()


def open_source(uri: Any, **options: Any) -> Source:
    """Open a source by URI (or return a Source as is). Bad URIs and missing devices raise EdgeFpnError."""
    if isinstance(uri, Source):
        return uri
    if not isinstance(uri, str) or not uri:
        raise EdgeFpnError(f"source {uri!r} is not a URI or path; give an image, directory, glob, video file, test://, /dev/videoN, csi://N or rtsp://...")
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    if scheme == "test":
        values = _query(uri, {"width": int, "height": int, "fps": float, "seed": int, "realtime": _bool, "frames": int,
                              "motion": str}, options)
        return SyntheticSource(uri, **values)
    if scheme == "v4l2" or (not scheme and uri.startswith("/dev/video")):
        return _open_v4l2(uri, options)
    if scheme == "csi":
        return _open_csi(uri, options)
    if scheme in ("rtsp", "rtsps", "http", "https", "rtmp"):
        return _open_stream(uri, options)
    if scheme == "file":
        return _open_path(urlsplit(uri).path, uri, options)
    if scheme:
        raise EdgeFpnError(f"unknown source scheme {scheme + '://'!r} in {uri!r}; use test://, csi://N, v4l2:///dev/videoN, rtsp://, file:// or a path")
    return _open_path(uri, uri, options)


def _open_path(path: str, uri: str, options: Dict[str, Any]) -> Source:
    if options:
        raise EdgeFpnError(f"source {uri!r} takes no options (got {', '.join(sorted(options))})")
    if any(c in path for c in "*?["):
        paths = sorted(p for p in glob.glob(path) if os.path.isfile(p))
        if not paths:
            raise EdgeFpnError(f"no file matches {path!r}; check the pattern (quote it so that the shell does not expand it)")
        if all(p.lower().endswith(IMAGE_EXTENSIONS) for p in paths):
            return ImageSource(paths, uri)
        images = [p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            raise EdgeFpnError(f"{path!r} matches no image files; a glob source reads images (give a video file by its path)")
        return ImageSource(images, uri)
    if os.path.isdir(path):
        paths = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name)))
        if not paths:
            raise EdgeFpnError(f"directory {path!r} has no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...); give a directory of images")
        return ImageSource(paths, uri)
    if not os.path.exists(path):
        raise EdgeFpnError(f"source {path!r} does not exist; give an image, directory, glob, video file, or a URI (test://, csi://0, /dev/video0, rtsp://...)")
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return ImageSource([path], uri)
    return VideoFileSource(path, uri)


def _open_v4l2(uri: str, options: Dict[str, Any]) -> Source:
    import cv2
    values = _query(uri, {"width": int, "height": int, "fps": float, "format": _fourcc, "reconnect": _bool}, options)
    device = urlsplit(uri).path if uri.startswith("v4l2://") else uri.split("?", 1)[0]
    if not re.match(r"^/dev/video\d+$", device):
        raise EdgeFpnError(f"V4L2 source {uri!r} does not name a device like /dev/video0")
    if not os.path.exists(device):
        raise EdgeFpnError(f"camera {device} does not exist; plug it in, or list cameras with `v4l2-ctl --list-devices`")
    properties: List[Tuple[int, float]] = []
    if "format" in values:
        properties.append((cv2.CAP_PROP_FOURCC, float(cv2.VideoWriter_fourcc(*values["format"]))))
    if "width" in values:
        properties.append((cv2.CAP_PROP_FRAME_WIDTH, float(values["width"])))
    if "height" in values:
        properties.append((cv2.CAP_PROP_FRAME_HEIGHT, float(values["height"])))
    if "fps" in values:
        properties.append((cv2.CAP_PROP_FPS, float(values["fps"])))
    index = int(device[len("/dev/video"):])
    grabber = OpenCVGrabber(index, cv2.CAP_V4L2, device,
                            f"cannot open camera {device} with V4L2; check that no other program uses it and that you may read it (group 'video')",
                            properties=properties)
    return LiveSource(uri, grabber, reconnect=values.get("reconnect", True))


def _open_csi(uri: str, options: Dict[str, Any]) -> Source:
    values = _query(uri, {"width": int, "height": int, "fps": float, "flip": int, "backend": str, "reconnect": _bool}, options)
    sensor = urlsplit(uri).netloc or "0"
    if not sensor.isdigit():
        raise EdgeFpnError(f"CSI source {uri!r} must name a sensor number, like csi://0")
    width, height, fps = values.get("width", 1280), values.get("height", 720), values.get("fps", 30.0)
    flip = values.get("flip", 0)
    if not 0 <= flip <= 7:
        raise EdgeFpnError(f"csi:// flip must be 0..7 (nvvidconv flip-method), not {flip}")
    failure = (f"cannot open CSI camera {sensor} (nvarguscamerasrc sensor-id={sensor}); check that it is connected "
               f"and that nvargus-daemon runs (`sudo systemctl restart nvargus-daemon`)")
    backend = _choose_gstreamer_backend(values.get("backend", "auto"), uri)
    if backend == "gstreamer":
        import cv2
        grabber: Grabber = OpenCVGrabber(csi_pipeline(int(sensor), width, height, fps, flip), cv2.CAP_GSTREAMER,
                                         f"csi://{sensor}", failure)
    else:
        grabber = GstLaunchGrabber(csi_pipeline(int(sensor), width, height, fps, flip, sink=None), f"csi://{sensor}",
                                   failure, width=width, height=height, fps=fps)
    return LiveSource(uri, grabber, reconnect=values.get("reconnect", True))


def _choose_gstreamer_backend(requested: str, uri: str) -> str:
    if requested not in ("auto", "gstreamer", "gst-launch"):
        raise EdgeFpnError(f"source {uri!r}: backend must be auto, gstreamer or gst-launch, not {requested!r}")
    if requested in ("auto", "gstreamer") and opencv_video_backends()["gstreamer"]:
        return "gstreamer"
    if requested == "gstreamer":
        raise EdgeFpnError(f"source {uri!r} asks for OpenCV's GStreamer backend but this OpenCV was built without it; use JetPack's OpenCV or backend=gst-launch")
    if gst_launch_available():
        return "gst-launch"
    raise EdgeFpnError(f"source {uri!r} needs GStreamer: this OpenCV has no GStreamer support and gst-launch-1.0 is not installed (apt-get install gstreamer1.0-tools)")


def _open_stream(uri: str, options: Dict[str, Any]) -> Source:
    """rtsp:// (and http(s):// video streams): OpenCV FFmpeg over TCP, or GStreamer."""
    # options come only as keyword arguments: the URL's own query belongs to the server
    allowed = {"backend", "open_timeout", "read_timeout", "latency", "reconnect", "backoff"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise EdgeFpnError(f"source {uri!r} has no option {unknown[0]!r}; known options: {', '.join(sorted(allowed))}")
    backend = options.get("backend") or "auto"
    open_timeout = float(options.get("open_timeout") or 10.0)
    read_timeout = float(options.get("read_timeout") or 5.0)
    reconnect = options.get("reconnect", True)
    backoff = options.get("backoff") or (0.25, 5.0)
    shown = _hide_password(uri)
    failure = (f"cannot open stream {shown} within {open_timeout:g} s; check the URL, that the server runs and "
               f"that this machine can reach it")
    rtsp = uri.lower().startswith("rtsp")
    available = opencv_video_backends()
    if backend == "auto":
        if available["ffmpeg"]:
            backend = "ffmpeg"
        elif available["gstreamer"] and rtsp:
            backend = "gstreamer"
        elif gst_launch_available() and rtsp:
            backend = "gst-launch"
        else:
            raise EdgeFpnError(f"cannot read {shown}: this OpenCV has neither FFmpeg nor GStreamer, and gst-launch-1.0 is not installed")
    if backend == "ffmpeg":
        import cv2
        env: Dict[str, str] = {}
        params: List[int] = []
        if rtsp:
            ffmpeg_options = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS") or "rtsp_transport;tcp"
            if not hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):  # OpenCV < 4.6: FFmpeg's own socket timeout
                ffmpeg_options += f"|stimeout;{int(open_timeout * 1e6)}"
            env["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = ffmpeg_options
        if hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000)]
        grabber: Grabber = OpenCVGrabber(uri, cv2.CAP_FFMPEG, shown, failure, params=params, env=env)
    elif backend == "gstreamer":
        import cv2
        if not available["gstreamer"]:
            raise EdgeFpnError(f"backend 'gstreamer' for {shown}: this OpenCV was built without GStreamer; use backend='gst-launch' or 'ffmpeg'")
        grabber = OpenCVGrabber(rtsp_pipeline(uri, int(options.get("latency") or 200)), cv2.CAP_GSTREAMER, shown, failure)
    elif backend == "gst-launch":
        if not gst_launch_available():
            raise EdgeFpnError(f"backend 'gst-launch' for {shown}: gst-launch-1.0 is not installed (apt-get install gstreamer1.0-tools)")
        grabber = GstLaunchGrabber(rtsp_pipeline(uri, int(options.get("latency") or 200), sink=None), shown, failure,
                                   open_timeout=open_timeout)
    else:
        raise EdgeFpnError(f"source {shown}: backend must be auto, ffmpeg, gstreamer or gst-launch, not {backend!r}")
    return LiveSource(uri, grabber, reconnect=bool(reconnect), backoff=tuple(backoff))  # type: ignore[arg-type]


def _hide_password(uri: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)
