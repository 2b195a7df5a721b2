"""Sinks chosen by string: where detections go.

=======================  ===========================================================
``out.jsonl``            one JSON object a frame: {"frame", "source", "detections"}
``out.mp4`` / ``.avi``   an annotated video (cv2.VideoWriter)
``annotated/``           a directory of annotated images (created if its parent exists)
``display://0``          an OpenCV window, where there is a display (``q`` or Esc stops)
``http://HOST:PORT``     an MJPEG web viewer with live statistics (127.0.0.1 unless a host is given)
=======================  ===========================================================

A sink has ``write(result)``, ``close()`` and ``abort()``; results are ``pipeline.Result`` objects
(frame, detections, index, source, ...). Boxes are drawn by one function, ``annotate``, used by all sinks.
With a tracker, the drawing sinks (video, images, window, web viewer) also draw each confirmed
track's trail, its last box centres: the pipeline keeps one history (``trails.py``) and sets
``Result.trails``, which ``Result.annotated()`` draws once for all sinks.

Making a sink object checks it (the directory exists, the kind is known) but creates nothing on
disk (``check_sinks`` relies on it). ``open_sinks`` then calls each file sink's ``prepare()``,
which creates its file or directory, so that a path that cannot be written fails before the first
frame, for all sinks at once. ``close()`` ends a run that went well (a JSON-lines file or an image
directory stays even if no frame came: the run's output is empty; an empty video is removed);
``abort()`` ends a failed one: what the sink wrote stays (for a look at what happened), but a sink
that wrote nothing removes whatever it created, so a run that fails before its first frame leaves
nothing behind. ``sink_path`` says which path a sink would write, for the checks that refuse an
output that is an input (output_guard.py).
"""
from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgeFpnError
from .sink_base import Sink
from .trails import TrailLines

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# distinct BGR colours, indexed by label
_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
            (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
            (200, 149, 255), (199, 55, 255)]


def label_color(label: int) -> Tuple[int, int, int]:
    return _PALETTE[int(label) % len(_PALETTE)]


def annotate(frame: np.ndarray, detections: Any, thickness: Optional[int] = None) -> np.ndarray:
    """A copy of a BGR frame with each detection's box, class name and score drawn on it (and its
    track ID, "#7", where a tracker gave one)."""
    import cv2
    image = np.ascontiguousarray(frame).copy()
    if detections is None or len(detections) == 0:
        return image
    height, width = image.shape[:2]
    scale = max(0.35, min(width, height) / 900.0)
    thick = thickness or line_thickness(image)
    track_ids = getattr(detections, "track_ids", None)
    ids = track_ids.tolist() if track_ids is not None else [-1] * len(detections)
    for box, score, label, name, track_id in zip(detections.boxes, detections.scores, detections.labels,
                                                  detections.names, ids):
        color = label_color(int(label))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        text = f"{name} {float(score):.2f}" if track_id < 0 else f"#{track_id} {name} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(height - 1, y1 + th + base + 2)
        cv2.rectangle(image, (x1, ty - th - base), (x1 + tw + 2, ty + 1), color, -1)
        cv2.putText(image, text, (x1 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def line_thickness(image: np.ndarray) -> int:
    """The width of the lines drawn on a frame: 1 pixel up to 450 pixels, more on larger frames."""
    return max(1, int(round(min(image.shape[:2]) / 300.0)))


def draw_trails(image: np.ndarray, lines: TrailLines, thickness: Optional[int] = None) -> None:
    """Draw trails on `image` in place, in their class's colour (the colour of their boxes): one
    ``cv2.polylines`` call per colour."""
    import cv2
    if not len(lines):
        return
    thick = thickness or line_thickness(image)
    for label in np.unique(lines.labels).tolist():
        group = lines.points[lines.labels == label]
        cv2.polylines(image, list(group), False, label_color(label), thick, cv2.LINE_AA)


def _check_parent(path: str, spec: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isfile(parent):
        raise EdgeFpnError(f"{os.path.dirname(path) or parent!r} for sink {spec!r} is a file, not a directory; "
                           "choose a path in a directory")
    if not os.path.isdir(parent):
        raise EdgeFpnError(f"the directory {os.path.dirname(path) or parent!r} for sink {spec!r} does not exist; create it first")


def _check_writable_file(path: str) -> None:
    """Fail now, not at the first frame, for a file sink that could not be written."""
    if os.path.isdir(path):
        raise EdgeFpnError(f"sink {path!r} is a directory; give a file name")
    target = path if os.path.exists(path) else (os.path.dirname(os.path.abspath(path)))
    if not os.access(target, os.W_OK):
        raise EdgeFpnError(f"cannot write {path!r} (permission denied); choose a writable path")


class JsonlSink(Sink):
    """One JSON object a frame, a line each, flushed as it is written (``tail -f`` works).

    The file is created (replacing an old one) at the first frame, or at ``close()`` if none came."""

    def __init__(self, path: str):
        _check_parent(path, path)
        _check_writable_file(path)
        self.name = path
        self._file: Any = None
        self._ended = False
        self._created = False  # whether this sink made the file
        self.count = 0

    def prepare(self) -> None:
        if self._file is None:
            self._open()

    def _open(self) -> None:
        existed = os.path.exists(self.name)
        try:
            self._file = open(self.name, "w", encoding="utf-8")
        except OSError as exc:
            raise EdgeFpnError(f"cannot write {self.name!r} ({exc.strerror}); choose a writable path") from None
        self._created = not existed

    def write(self, result: Any) -> None:
        if self._file is None:
            self._open()
        record = {"frame": int(result.index), "source": result.source, "detections": result.detections.to_list()}
        source_index = getattr(result, "source_index", None)
        if source_index is not None:  # a pipeline's result: which of its sources (0, 1, ...)
            record["source_index"] = int(source_index)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        if self._file is None and not self._ended:
            self._open()  # a run without frames still leaves its (empty) output
        self._ended = True
        if self._file is not None and not self._file.closed:
            self._file.close()

    def abort(self) -> None:
        self._ended = True
        if self._file is not None and not self._file.closed:
            self._file.close()
        if not self.count and self._created:
            _remove_quietly(self.name)  # nothing written: nothing left

    def describe(self) -> str:
        return f"{self.name} ({self.count} lines)"


class VideoSink(Sink):
    """An annotated video; the writer opens on the first frame (its size); other sizes are resized."""

    def __init__(self, path: str, fps: Optional[float] = None):
        _check_parent(path, path)
        _check_writable_file(path)
        self.name = path
        self._existed = os.path.exists(path)
        self._created = False  # whether prepare() made the (empty) file
        ext = os.path.splitext(path)[1].lower()
        self.fourcc = VIDEO_FOURCC.get(ext, "mp4v")
        self.fps = fps
        self._writer: Any = None
        self._size: Optional[Tuple[int, int]] = None
        self.count = 0

    def write(self, result: Any) -> None:
        import cv2
        image = result.annotated()
        if self._writer is None:
            self._size = (int(image.shape[1]), int(image.shape[0]))
            fps = float(self.fps) if self.fps and self.fps > 0 else 30.0
            self._writer = cv2.VideoWriter(self.name, cv2.VideoWriter_fourcc(*self.fourcc), fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise EdgeFpnError(f"cannot write video {self.name!r} (codec {self.fourcc} unavailable in this OpenCV); use .avi (MJPG) or a directory of images")
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.count += 1

    def prepare(self) -> None:
        """Create the file now (OpenCV opens it only with the first frame's size), so that a path
        that cannot be written fails before any sink writes anything."""
        if self._existed or self._created:
            return
        try:
            open(self.name, "ab").close()
        except OSError as exc:
            raise EdgeFpnError(f"cannot write {self.name!r} ({exc.strerror}); choose a writable path") from None
        self._created = True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if not self.count and self._created:
            _remove_quietly(self.name)  # no frame: no (unplayable, empty) video

    def abort(self) -> None:
        self.close()
        # OpenCV may have created the file before failing on the first frame
        if not self.count and not self._existed:
            _remove_quietly(self.name)

    def describe(self) -> str:
        return f"{self.name} ({self.count} frames)"


class ImageDirSink(Sink):
    """Annotated images: named after the source image when there is one, else frame_000000.jpg.

    The directory is created at the first frame (or at ``close()`` if none came)."""

    def __init__(self, path: str, check_parent: bool = True):
        directory = path.rstrip("/\\") or path
        if check_parent:  # False: a per-source folder inside a checked directory that may not exist yet
            _check_parent(directory, path)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise EdgeFpnError(f"sink {path!r} is a file, not a directory; give a directory for annotated images")
        if check_parent and not os.access(directory if os.path.isdir(directory) else os.path.dirname(os.path.abspath(directory)), os.W_OK):
            raise EdgeFpnError(f"cannot write into {directory!r} (permission denied); choose a writable directory")
        self.name = directory
        self.count = 0
        self._used: Dict[str, int] = {}
        self._created = False  # whether this sink made the directory
        self._ended = False

    def _make_directory(self) -> None:
        if not os.path.isdir(self.name):
            try:
                os.makedirs(self.name, exist_ok=True)
            except OSError as exc:
                raise EdgeFpnError(f"cannot create {self.name!r} ({exc.strerror}); choose a writable directory") from None
            self._created = True

    def prepare(self) -> None:
        self._make_directory()

    def _filename(self, result: Any) -> str:
        base = os.path.basename(getattr(result, "name", "") or "")
        if base.lower().endswith(IMAGE_EXTENSIONS):
            stem, ext = os.path.splitext(base)
            seen = self._used.get(base, 0)
            self._used[base] = seen + 1
            return base if seen == 0 else f"{stem}_{seen}{ext}"
        return f"frame_{int(result.index):06d}.jpg"

    def write(self, result: Any) -> None:
        import cv2
        self._make_directory()
        path = os.path.join(self.name, self._filename(result))
        if not cv2.imwrite(path, result.annotated()):
            raise EdgeFpnError(f"cannot write {path!r}; check the disk and the directory's permissions")
        self.count += 1

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self._make_directory()  # a run without frames still leaves its (empty) output

    def abort(self) -> None:
        self._ended = True
        if not self.count and self._created:
            try:
                os.rmdir(self.name)  # only if empty: it never removes anything it did not write
            except OSError:
                pass

    def describe(self) -> str:
        return f"{self.name}/ ({self.count} images)"


def gui_available() -> bool:
    """True if this cv2 has a GUI backend (pip's opencv-python-headless has none)."""
    import cv2
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper() not in ("NONE", "NO")


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class DisplaySink(Sink):
    """An OpenCV window (created on the first frame, on the pipeline's sink thread); q or Esc stops."""

    def __init__(self, index: int = 0, title: Optional[str] = None):
        if not display_available():
            raise EdgeFpnError("display://: there is no display here (DISPLAY is not set); use a web viewer instead, e.g. http://0.0.0.0:8080")
        if not gui_available():
            raise EdgeFpnError("display://: this OpenCV has no GUI support (opencv-python-headless); install JetPack's or opencv-python, or use http://0.0.0.0:8080")
        self.name = f"display://{index}"
        self.title = title or f"edge-fpn {index}"
        self._opened = False

    def write(self, result: Any) -> None:
        import cv2
        if not self._opened:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            self._opened = True
        cv2.imshow(self.title, result.annotated())
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self.stop_requested = True
        elif cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.stop_requested = True

    def close(self) -> None:
        if self._opened:
            import cv2
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
            self._opened = False


def parse_http(spec: str) -> Tuple[str, int]:
    """``http://HOST:PORT`` -> (host, port); no host means 127.0.0.1, no port 8080."""
    match = re.match(r"^https?://(\[[^\]]*\]|[^/:]*)(?::(\d*))?/?$", spec)
    if not match:
        raise EdgeFpnError(f"web viewer sink {spec!r} is not http://HOST:PORT (e.g. http://127.0.0.1:8080 or http://0.0.0.0:8080)")
    host = match.group(1).strip("[]") or "127.0.0.1"
    port = int(match.group(2)) if match.group(2) else 8080
    if not 0 <= port <= 65535:
        raise EdgeFpnError(f"web viewer sink {spec!r}: port {port} is not 0..65535")
    return host, port


def open_sink(spec: Any, fps: Optional[float] = None) -> Sink:
    """A sink from its string (or a Sink as is); bad specs raise EdgeFpnError with one sentence."""
    if isinstance(spec, Sink) or (not isinstance(spec, str) and hasattr(spec, "write")):
        return spec
    if not isinstance(spec, str) or not spec:
        raise EdgeFpnError(f"sink {spec!r} is not a path or URI; use out.jsonl, out.mp4, a directory, display://0 or http://HOST:PORT")
    lowered = spec.lower()
    if lowered.startswith("display://"):
        index = spec[len("display://"):] or "0"
        if not index.isdigit():
            raise EdgeFpnError(f"display sink {spec!r} must be display://N, like display://0")
        return DisplaySink(int(index))
    if lowered.startswith(("http://", "https://")):
        from .web.server import WebViewerSink
        host, port = parse_http(spec)
        return WebViewerSink(host, port)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec):
        raise EdgeFpnError(f"unknown sink scheme in {spec!r}; use out.jsonl, out.mp4/.avi, a directory, display://0 or http://HOST:PORT")
    kind, _ = sink_path(spec)
    ext = os.path.splitext(spec.rstrip("/\\"))[1].lower()
    if kind == "file":
        return JsonlSink(spec) if ext == ".jsonl" else VideoSink(spec, fps=fps)
    if kind == "dir":
        return ImageDirSink(spec)
    raise EdgeFpnError(f"cannot tell what kind of sink {spec!r} is from its extension {ext!r}; use out.jsonl, out.mp4/.avi, a directory, display://0 or http://HOST:PORT")


SOURCE_PLACEHOLDER = "{source}"


class PerSourceSink(Sink):
    """One sink per source of a multi-source pipeline: each result goes to its source's sink
    (``result.source_index``). Made by ``open_sinks`` from ``out_{source}.mp4`` (the placeholder
    becomes the source's index), a directory (one folder per source: ``dir/0``, ``dir/1``, ...) or
    ``display://N`` (one window per source)."""

    def __init__(self, spec: str, sinks: Sequence[Sink]):
        self.name = spec
        self.sinks = list(sinks)

    def prepare(self) -> None:
        for sink in self.sinks:
            prepare = getattr(sink, "prepare", None)
            if prepare is not None:
                prepare()

    def write(self, result: Any) -> None:
        sink = self.sinks[getattr(result, "source_index", None) or 0]
        sink.write(result)
        if sink.stop_requested:
            self.stop_requested = True

    def close(self) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close them all; report the first problem
                errors.append(exc)
        if errors:
            raise errors[0]

    def abort(self) -> None:
        abort_sinks(self.sinks)

    def describe(self) -> str:
        return ", ".join(sink.describe() for sink in self.sinks)


def per_source_specs(spec: Any, sources: int) -> Optional[List[str]]:
    """The per-source sink strings `spec` stands for with several sources, or None for one sink
    over all sources (JSON lines without a placeholder: records carry ``source_index``; the web
    viewer shows every source). A video file without the placeholder is refused: one video
    cannot hold several cameras."""
    if sources <= 1 or not isinstance(spec, str):
        return None
    if SOURCE_PLACEHOLDER in spec:
        return [spec.replace(SOURCE_PLACEHOLDER, str(index)) for index in range(sources)]
    lowered = spec.lower()
    if lowered.startswith("display://"):
        base = spec[len("display://"):] or "0"
        return [f"display://{int(base) + index}" if base.isdigit() else spec for index in range(sources)]
    kind, path = sink_path(spec)
    if kind == "dir" and path:
        return [os.path.join(path, str(index)) + os.sep for index in range(sources)]
    if kind == "file" and os.path.splitext(spec)[1].lower() in VIDEO_FOURCC:
        stem, ext = os.path.splitext(spec)
        raise EdgeFpnError(f"sink {spec!r} would mix {sources} sources in one video; put {SOURCE_PLACEHOLDER} in "
                           f"its name for one video per source, e.g. {stem}_{SOURCE_PLACEHOLDER}{ext}")
    return None


def apply_source_fps(sinks: Sequence[Any], fps: Sequence[Optional[float]]) -> None:
    """Give each video sink that has no frame rate its source's (the first source's for a shared sink)."""
    for sink in sinks:
        parts = sink.sinks if isinstance(sink, PerSourceSink) else [sink]
        for index, part in enumerate(parts):
            rate = fps[index] if isinstance(sink, PerSourceSink) and index < len(fps) else (fps[0] if fps else None)
            if getattr(part, "fps", "absent") is None and rate:
                part.fps = rate


def open_sinks(specs: Sequence[Any], fps: Optional[float] = None, sources: int = 1) -> List[Sink]:
    """Open all sinks and create their files, aborting those already open if one fails (nothing is
    left on disk): `a.jsonl a.mp4 /proc/x.jsonl` fails here, before a.jsonl gets a line.

    sources: how many sources the pipeline has; with several, a spec may stand for one sink per
    source (``per_source_specs``)."""
    sinks: List[Sink] = []
    try:
        for spec in specs:
            parts = per_source_specs(spec, sources)
            if parts is None:
                sinks.append(open_sink(spec, fps=fps))
                continue
            opened: List[Sink] = []
            try:
                base_kind, base = sink_path(spec)
                if base_kind == "dir" and SOURCE_PLACEHOLDER not in spec:  # one folder per source inside it
                    ImageDirSink(spec)  # checks the directory itself (creates nothing)
                    opened.extend(ImageDirSink(part, check_parent=False) for part in parts)
                for part in parts[len(opened):]:
                    opened.append(open_sink(part, fps=fps))
            except BaseException:
                abort_sinks(opened)
                raise
            sinks.append(PerSourceSink(spec, opened))
        for sink in sinks:
            prepare = getattr(sink, "prepare", None)
            if prepare is not None:
                prepare()
    except BaseException:
        abort_sinks(sinks)
        raise
    return sinks


def sink_path(spec: Any) -> Tuple[Optional[str], Optional[str]]:
    """("file" | "dir", the path) a sink would write, or (None, None) for a window or a web viewer
    (and for what open_sink would refuse: it says why)."""
    if isinstance(spec, (JsonlSink, VideoSink)):
        return "file", spec.name
    if isinstance(spec, ImageDirSink):
        return "dir", spec.name
    if not isinstance(spec, str) or not spec or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec):
        return None, None
    ext = os.path.splitext(spec.rstrip("/\\"))[1].lower()
    if ext == ".jsonl" or ext in VIDEO_FOURCC:
        return "file", spec
    if spec.endswith(("/", os.sep)) or os.path.isdir(spec) or not ext:
        return "dir", spec.rstrip("/\\") or spec
    return None, None


def _remove_quietly(path: str) -> None:
    try:
        if os.path.isfile(path):
            os.remove(path)
    except OSError:
        pass


def check_sinks(specs: Sequence[Any]) -> None:
    """Check sink strings as ``open_sink`` would (EdgeFpnError with one sentence), opening nothing:
    no file, directory, window or port. Sink objects are not checked."""
    for spec in specs:
        if isinstance(spec, str) and spec.lower().startswith(("http://", "https://")):
            parse_http(spec)  # the port is bound when the sink opens
        elif isinstance(spec, str) or not spec:
            open_sink(spec).abort()  # file sinks create nothing before their first frame


def abort_sinks(sinks: Sequence[Any]) -> None:
    """Abort sinks after a failure (each leaves nothing behind if it wrote nothing); never raises."""
    for sink in sinks:
        try:
            abort = getattr(sink, "abort", None)
            (abort or sink.close)()
        except Exception:
            pass


StatsProvider = Callable[[], Dict[str, Any]]
