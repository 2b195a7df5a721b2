"""A video file through OpenCV: every frame in order, END at the end."""
from __future__ import annotations

import time
from typing import List, Optional

from ...errors import EdgeFpnError
from .base import END, OK, FrameRead, Source

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".h264", ".h265", ".mjpeg", ".mjpg", ".gif")


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
