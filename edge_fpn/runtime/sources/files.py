"""Image files, directories and globs (sorted), and the path dispatch: an image, a folder or glob of
images, or a video file."""
from __future__ import annotations

import glob
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ...errors import EdgeFpnError
from .base import END, OK, FrameRead, Source, logger
from .video import VideoFileSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2")


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


def open_path(path: str, uri: str, options: Dict[str, Any]) -> Source:
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
