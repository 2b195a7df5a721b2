"""Pipeline statistics: per-stage latency (median, p95), capture-to-detection latency, FPS, drops.

Samples are kept in bounded windows (the last ``window`` frames), so a pipeline that runs for
days keeps constant memory; counters are plain integers. Thread-safe: stage threads record, the
printer and the web viewer take snapshots.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Deque, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

# the order in which stages are shown
STAGES = ("capture", "preprocess", "engine", "postprocess", "sinks")


def stages_for(engine_steps: Sequence[str]) -> Tuple[str, ...]:
    """The stages a pipeline shows: its detector's engine step(s) between pre- and postprocessing
    ("engine"; or "stage1", "proposals", "stage2" for a host-layout bundle)."""
    middle = ("stage1", "proposals", "stage2") if "stage1" in engine_steps else tuple(engine_steps)
    return ("capture", "preprocess") + middle + ("postprocess", "sinks")


def _summary(values: Iterable[float]) -> Dict[str, float]:
    data = np.fromiter(values, dtype=np.float64)
    if data.size == 0:
        return {"median_ms": 0.0, "p95_ms": 0.0, "count": 0}
    return {"median_ms": round(float(np.median(data)) * 1000.0, 3),
            "p95_ms": round(float(np.percentile(data, 95)) * 1000.0, 3),
            "count": int(data.size)}


class SourceStats:
    """One source's share of a pipeline: results, frame age (capture -> result), FPS, drops, bad
    frames, and the source's own counters; the pipeline's lock guards it."""

    def __init__(self, index: int, window: int):
        self.index = index
        self.frames = 0
        self.dropped = 0  # frames replaced in the pipeline's newest-frame slots for this source
        self.bad_frames = 0
        self.error = ""  # why the source stopped, if it failed
        self.ended = False
        self.source: Dict[str, Any] = {}
        self._age: Deque[float] = collections.deque(maxlen=window)
        self._done: Deque[float] = collections.deque(maxlen=window)

    def add(self, age: float, now: float) -> None:
        self.frames += 1
        self._age.append(age)
        self._done.append(now)

    def snapshot(self, total: int) -> Dict[str, Any]:
        done = self._done
        fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) >= 2 and done[-1] > done[0] else 0.0
        recent = [t for t in done if done and t >= done[-1] - 3.0]
        fps_recent = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else fps
        source_dropped = int(self.source.get("dropped", 0))
        return {"index": self.index, "uri": self.source.get("uri", ""), "frames": self.frames,
                "share": round(self.frames / total, 4) if total else 0.0,
                "fps": round(fps, 3), "fps_recent": round(fps_recent, 3),
                "age": _summary(self._age), "dropped": self.dropped + source_dropped,
                "dropped_pipeline": self.dropped, "dropped_source": source_dropped,
                "bad_frames": self.bad_frames, "ended": self.ended, "error": self.error,
                "source": dict(self.source)}


class PipelineStats:
    def __init__(self, stages: Sequence[str] = STAGES, window: int = 1000, class_names: Optional[List[str]] = None):
        self._lock = threading.Lock()
        self.window = int(window)
        self._stages: Dict[str, Deque[float]] = {name: collections.deque(maxlen=self.window) for name in stages}
        self._latency: Deque[float] = collections.deque(maxlen=self.window)
        self._done_times: Deque[float] = collections.deque(maxlen=self.window)
        self.class_names = list(class_names or [])
        self.started = time.monotonic()
        self.first_result: Optional[float] = None
        self.last_result: Optional[float] = None
        self.frames = 0
        self.dropped = 0  # frames replaced in the pipeline's newest-frame slot (live sources)
        self.bad_frames = 0  # frames that could not be used (None, empty, wrong dtype/shape): skipped
        self.converted_frames = 0  # grayscale or 4-channel frames converted to BGR
        self.detections = 0
        self._per_class: Dict[str, int] = collections.OrderedDict()
        self._last_frame_classes: Dict[str, int] = {}
        self.source: Dict[str, Any] = {}
        self.extra: Dict[str, Any] = {}
        self.sources: List[SourceStats] = [SourceStats(0, self.window)]

    # ------------------------------------------------------------ recording
    def add_stage(self, name: str, seconds: float) -> None:
        with self._lock:
            self._stages.setdefault(name, collections.deque(maxlen=self.window)).append(seconds)

    def set_source_count(self, count: int) -> None:
        with self._lock:
            self.sources = [SourceStats(index, self.window) for index in range(max(1, int(count)))]

    def count_source(self, source: int, field: str, amount: int = 1) -> None:
        """A per-source counter ("dropped", "bad_frames") and the pipeline's total."""
        with self._lock:
            setattr(self, field, getattr(self, field) + amount)
            entry = self.sources[source]
            setattr(entry, field, getattr(entry, field) + amount)

    def source_state(self, source: int, info: Optional[Dict[str, Any]] = None, ended: Optional[bool] = None,
                     error: Optional[str] = None) -> None:
        with self._lock:
            entry = self.sources[source]
            if info is not None:
                entry.source = dict(info)
                if source == 0:
                    self.source = dict(info)
            if ended is not None:
                entry.ended = ended
            if error is not None:
                entry.error = error

    def add_result(self, latency: float, names: Sequence[str], now: Optional[float] = None,
                   source: int = 0) -> None:
        now = time.monotonic() if now is None else now
        counts: Dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        with self._lock:
            self.frames += 1
            if self.first_result is None:
                self.first_result = now
            self.last_result = now
            self._latency.append(latency)
            self._done_times.append(now)
            self.sources[source].add(latency, now)
            self.detections += len(names)
            for name, count in counts.items():
                self._per_class[name] = self._per_class.get(name, 0) + count
            self._last_frame_classes = counts

    def count(self, field: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + amount)

    def set_source(self, info: Dict[str, Any]) -> None:
        with self._lock:
            self.source = dict(info)
            self.sources[0].source = dict(info)

    # ------------------------------------------------------------ reading
    def fps(self, recent: Optional[float] = None) -> float:
        """Results per second: over the whole run, or over the last `recent` seconds."""
        with self._lock:
            return self._fps(recent)

    def _fps(self, recent: Optional[float]) -> float:
        times = self._done_times
        if recent is not None and len(times) >= 2:
            horizon = times[-1] - recent
            inside = [t for t in times if t >= horizon]
            if len(inside) >= 2 and inside[-1] > inside[0]:
                return (len(inside) - 1) / (inside[-1] - inside[0])
        if self.frames >= 2 and self.first_result is not None and self.last_result is not None \
                and self.last_result > self.first_result:
            return (self.frames - 1) / (self.last_result - self.first_result)
        return 0.0

    def snapshot(self) -> Dict[str, Any]:
        """A JSON-serializable view of everything (what the web viewer and `bench --json` show)."""
        with self._lock:
            source_dropped = sum(int(entry.source.get("dropped", 0)) for entry in self.sources)
            return {
                "frames": self.frames,
                "fps": round(self._fps(None), 3),
                "fps_recent": round(self._fps(3.0), 3),
                "elapsed_s": round(time.monotonic() - self.started, 3),
                "dropped": self.dropped + source_dropped,
                "dropped_pipeline": self.dropped,
                "dropped_source": source_dropped,
                "bad_frames": self.bad_frames,
                "converted_frames": self.converted_frames,
                "detections": self.detections,
                "detections_per_class": dict(self._per_class),
                "last_frame_detections": dict(self._last_frame_classes),
                "latency": _summary(self._latency),
                "stages": {name: _summary(values) for name, values in self._stages.items()},
                "source": dict(self.source),
                "sources": [entry.snapshot(self.frames) for entry in self.sources],
                **self.extra,
            }


def format_line(snap: Dict[str, Any]) -> str:
    """One line for the periodic print."""
    stages = " ".join(f"{name} {info['median_ms']:.1f}" for name, info in snap["stages"].items() if info["count"])
    return (f"[edge-fpn] {snap['frames']} frames | {snap['fps_recent']:.1f} fps | "
            f"latency {snap['latency']['median_ms']:.0f}/{snap['latency']['p95_ms']:.0f} ms (median/p95) | "
            f"dropped {snap['dropped']} | bad {snap['bad_frames']} | stages ms: {stages}")


def format_summary(snap: Dict[str, Any]) -> str:
    """The end-of-run table."""
    lines = [f"[edge-fpn] {snap['frames']} frames in {snap['elapsed_s']:.1f} s: {snap['fps']:.2f} fps, "
             f"{snap['dropped']} dropped, {snap['bad_frames']} bad frames skipped, "
             f"{snap['converted_frames']} converted, {snap['detections']} detections"]
    source = snap.get("source") or {}
    if source.get("skipped"):
        lines.append(f"  {source['skipped']} unreadable image(s) skipped")
    if source.get("reconnects"):
        lines.append(f"  source reconnected {source['reconnects']} time(s)")
    sources = snap.get("sources") or []
    if len(sources) > 1:
        lines.append(format_sources(sources))
    lines.append(f"  {'stage':<12} {'median ms':>10} {'p95 ms':>10}")
    for name, info in snap["stages"].items():
        if info["count"]:
            lines.append(f"  {name:<12} {info['median_ms']:>10.2f} {info['p95_ms']:>10.2f}")
    lat = snap["latency"]
    lines.append(f"  {'end-to-end':<12} {lat['median_ms']:>10.2f} {lat['p95_ms']:>10.2f}   (capture -> detections)")
    if snap["detections_per_class"]:
        lines.append("  detections per class: " + ", ".join(f"{k} {v}" for k, v in snap["detections_per_class"].items()))
    return "\n".join(lines)


def format_sources(sources: Sequence[Dict[str, Any]]) -> str:
    """Per-source lines: results, share, FPS, frame age (capture -> result), drops, and how it ended."""
    lines = [f"  {'source':<32} {'frames':>7} {'share':>6} {'fps':>7} {'age ms p50/p95':>15} {'dropped':>8} {'bad':>5}"]
    for item in sources:
        uri = str(item.get("uri", ""))
        name = f"{item['index']} {uri if len(uri) <= 28 else '...' + uri[-25:]}"
        state = f"  failed: {item['error']}" if item.get("error") else ""
        lines.append(f"  {name:<32} {item['frames']:>7} {item['share'] * 100:>5.1f}% {item['fps']:>7.2f} "
                     f"{item['age']['median_ms']:>7.0f}/{item['age']['p95_ms']:<7.0f} {item['dropped']:>8} "
                     f"{item['bad_frames']:>5}{state}")
    return "\n".join(lines)
