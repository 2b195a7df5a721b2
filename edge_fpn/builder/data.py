"""Image sources for calibration and evaluation: a directory, a glob, a video file or `synthetic:N`.

A source is a list of entries read lazily, one frame at a time, so that memory does not grow with
the number of images. An entry that cannot be decoded yields ``None`` (the caller skips and counts
it). Everything is deterministic: files are taken in sorted order, video frames at fixed indices,
synthetic scenes by (seed, index).
"""
from __future__ import annotations

import glob
import hashlib
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgeFpnError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
# Synthetic calibration scenes have their own seed: training uses seeds below 1000 and evaluation
# edge_fpn.evaluate.DEFAULT_EVAL_SEED (12345), so calibration never sees a training or test image.
CALIBRATION_SEED = 1000
# A video given without --num is sampled at this many evenly spaced frames, not read whole.
DEFAULT_VIDEO_FRAMES = 300

Entry = Tuple[str, Optional[np.ndarray]]  # (name, BGR uint8 frame, or None where it cannot be read)


class ImageSource:
    """Entries of one data spec: ``len(source)`` entries, iterated as (name, frame or None)."""

    def __init__(self, spec: str, kind: str, names: Sequence[str], description: str,
                 seed: Optional[int] = None, size: Optional[Tuple[int, int]] = None,
                 frame_indices: Optional[Sequence[int]] = None):
        self.spec = spec
        self.kind = kind  # "images" | "video" | "synthetic"
        self.names = list(names)
        self.description = description
        self.seed = seed
        self.size = size  # (height, width) of synthetic scenes
        self.frame_indices = list(frame_indices) if frame_indices is not None else None

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Entry]:
        if self.kind == "synthetic":
            from ..runtime.synthetic import make_scene
            height, width = self.size  # type: ignore[misc]
            for index, name in enumerate(self.names):
                yield name, make_scene(int(self.seed), index, width, height)[0]  # type: ignore[arg-type]
        elif self.kind == "images":
            for path in self.names:
                yield path, read_image(path)
        else:
            yield from self._video_frames()

    def _video_frames(self) -> Iterator[Entry]:
        import cv2

        capture = cv2.VideoCapture(self.spec)
        position, ended = 0, False
        try:
            for index, name in zip(self.frame_indices or [], self.names):
                frame = None
                while not ended and position <= index:
                    ok, image = capture.read()
                    if not ok:
                        ended = True  # the stream ended early: every later frame is missing too
                        break
                    if position == index:
                        frame = image
                    position += 1
                yield name, frame if frame is not None and frame.size else None
        finally:
            capture.release()


def read_image(path: str) -> Optional[np.ndarray]:
    """A BGR uint8 image, or None when the file is not a readable image."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return image


def parse_synthetic(spec: str) -> Optional[Tuple[int, Optional[int]]]:
    """'synthetic:N' or 'synthetic:N:SEED' -> (N, SEED or None); None for any other spec."""
    if not spec.lower().startswith("synthetic:"):
        return None
    parts = spec.split(":")[1:]
    try:
        count = int(parts[0])
        seed = int(parts[1]) if len(parts) > 1 else None
        if len(parts) > 2:
            raise ValueError
    except (ValueError, IndexError):
        raise EdgeFpnError(f"{spec!r} is not synthetic:N or synthetic:N:SEED (e.g. synthetic:100)") from None
    if count < 1:
        raise EdgeFpnError(f"{spec!r} asks for {count} synthetic images; give at least 1 (e.g. synthetic:100)")
    return count, seed


def source_paths(spec: Optional[str]) -> List[str]:
    """The files and folders a data spec reads (none for synthetic:N), for the check that an output
    never replaces its input."""
    if not spec or parse_synthetic(spec) is not None:
        return []
    if os.path.exists(spec):
        return [spec]
    return glob.glob(spec) if any(ch in spec for ch in "*?[") else []


def open_source(spec: str, input_size: Tuple[int, int], num: Optional[int] = None) -> ImageSource:
    """Resolve a data spec into an ImageSource of at most `num` entries.

    Synthetic scenes are rendered at the engine's input size, of the calibration seed by default.
    """
    if num is not None and num < 1:
        raise EdgeFpnError(f"--num must be at least 1, not {num}")
    synthetic = parse_synthetic(spec)
    if synthetic is not None:
        count, seed = synthetic
        if num is not None:
            count = min(count, num)
        seed = seed if seed is not None else CALIBRATION_SEED
        names = [f"synthetic:{seed}:{i}" for i in range(count)]
        return ImageSource(spec, "synthetic", names, f"{count} synthetic scenes (seed {seed})",
                           seed=seed, size=(int(input_size[0]), int(input_size[1])))
    if os.path.isdir(spec):
        paths = sorted(p for p in (os.path.join(spec, f) for f in os.listdir(spec))
                       if os.path.isfile(p) and p.lower().endswith(IMAGE_SUFFIXES))
        if not paths:
            raise EdgeFpnError(f"the directory {spec!r} holds no image files ({', '.join(IMAGE_SUFFIXES[:4])}, ...); "
                               "give a directory of images, a glob, a video file or synthetic:N")
        paths = paths[:num] if num is not None else paths
        return ImageSource(spec, "images", paths, f"{len(paths)} images from {spec}")
    if os.path.isfile(spec):
        if spec.lower().endswith(IMAGE_SUFFIXES):
            return ImageSource(spec, "images", [spec], f"1 image ({spec})")
        return _video_source(spec, num)
    if any(ch in spec for ch in "*?["):
        paths = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
        if not paths:
            raise EdgeFpnError(f"the glob {spec!r} matches no file; check the pattern (quote it so that the shell does not expand it)")
        paths = paths[:num] if num is not None else paths
        return ImageSource(spec, "images", paths, f"{len(paths)} files matching {spec}")
    raise EdgeFpnError(f"data {spec!r} does not exist; give an image directory, a glob, a video file or synthetic:N")


def _video_source(path: str, num: Optional[int]) -> ImageSource:
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise EdgeFpnError(f"{path!r} is neither an image nor a video OpenCV can open; give an image directory, "
                               "a glob, a video file or synthetic:N")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()
    wanted = num if num is not None else DEFAULT_VIDEO_FRAMES
    if total > 0:
        count = min(wanted, total)
        # evenly spaced over the whole video: more variety than the first seconds
        indices = sorted({int(i * total // count) for i in range(count)})
    else:  # unknown length (some containers): the first frames
        indices = list(range(wanted))
    names = [f"{os.path.basename(path)}#{i}" for i in indices]
    return ImageSource(path, "video", names, f"{len(names)} frames of {path}", frame_indices=indices)


class ContentHash:
    """sha256 over the decoded pixels of the frames used, in order (what the statistics depend on)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def update(self, frame: np.ndarray) -> None:
        self._digest.update(repr(tuple(frame.shape)).encode())
        self._digest.update(np.ascontiguousarray(frame).tobytes())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def require_enough(readable: int, skipped: int, source: ImageSource, num: Optional[int]) -> None:
    """The bad-data rules: no readable image is an error, and so is fewer than half of what was asked."""
    if readable == 0:
        raise EdgeFpnError(f"none of the {len(source)} entries of {source.spec!r} is a readable image; "
                           "give images OpenCV can decode (jpg, png, ...) or synthetic:N")
    wanted = num if num is not None else len(source)
    if readable < wanted // 2:
        raise EdgeFpnError(f"only {readable} readable images in {source.spec!r} ({skipped} unreadable skipped), fewer "
                           f"than half of the {wanted} asked for; add readable images or lower --num")
