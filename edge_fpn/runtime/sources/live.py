"""The live-source base: a grabber on its own thread, the newest frame in a one-frame slot,
reconnects with back-off; and the OpenCV ``VideoCapture`` grabber (V4L2, FFmpeg, GStreamer)."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...errors import EdgeFpnError
from .base import END, OK, TIMEOUT, FrameRead, Source, logger


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
