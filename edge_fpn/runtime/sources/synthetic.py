"""``test://``: the synthetic moving scene as a source, live (realtime) or file-like."""
from __future__ import annotations

import time
from typing import Optional

from ...errors import EdgeFpnError
from .base import END, OK, TIMEOUT, FrameRead, Source


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


