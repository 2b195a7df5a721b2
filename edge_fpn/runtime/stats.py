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

    # ------------------------------------------------------------ recording
    def add_stage(self, name: str, seconds: float) -> None:
        with self._lock:
            self._stages.setdefault(name, collections.deque(maxlen=self.window)).append(seconds)

    def add_result(self, latency: float, names: Sequence[str], now: Optional[float] = None) -> None:
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
            source_dropped = int(self.source.get("dropped", 0))
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
    lines.append(f"  {'stage':<12} {'median ms':>10} {'p95 ms':>10}")
    for name, info in snap["stages"].items():
        if info["count"]:
            lines.append(f"  {name:<12} {info['median_ms']:>10.2f} {info['p95_ms']:>10.2f}")
    lat = snap["latency"]
    lines.append(f"  {'end-to-end':<12} {lat['median_ms']:>10.2f} {lat['p95_ms']:>10.2f}   (capture -> detections)")
    if snap["detections_per_class"]:
        lines.append("  detections per class: " + ", ".join(f"{k} {v}" for k, v in snap["detections_per_class"].items()))
    return "\n".join(lines)
