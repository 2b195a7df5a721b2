"""Detector: a bundle made callable on a frame (preprocess -> engine call(s) -> detections in frame pixels)."""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..bundle import LAYOUT_STAGES, Manifest, graph_mismatch, load_manifest, session_graph_io
from ..errors import EdgeFpnError
from .boxes import scale_boxes
from .layouts import HostLayout, open_layout
from .postprocess import RawDetections
from .preprocess import Letterbox

logger = logging.getLogger("edge_fpn.runtime")


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4) float32, xyxy in frame pixels
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64 (0 is the background, so real labels start at 1)
    names: List[str]  # class name of each detection
    # (N,) int64 persistent object IDs when a tracker ran (-1: not a confirmed track yet); None without one
    track_ids: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_list(self) -> List[Dict[str, Any]]:
        items = [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
                  "label": int(label), "name": name}
                 for box, score, label, name in zip(self.boxes, self.scores, self.labels, self.names)]
        if self.track_ids is not None:
            for item, track_id in zip(items, self.track_ids.tolist()):
                item["track_id"] = int(track_id)
        return items


class Detector:
    """``Detector(bundle)(frame_bgr) -> Detections``; also ``stream(source)`` for live sources.

    A Detector returns every detection the model keeps (down to the model's own score threshold,
    0.05 for torchvision's models), for evaluation and embedding; pass ``score_threshold`` to
    keep fewer. ``detect``, ``demo`` and the pipeline's sinks display from 0.5 by default.
    device: "auto" (the GPU where ONNX Runtime has one), "cpu" or "cuda" (ONNX Runtime bundles).
    cuda: what moves a TensorRT bundle's memory: "auto" (cuda-python, else pycuda), "cuda-python"
    or "pycuda".
    """

    def __init__(self, bundle: str, score_threshold: Optional[float] = None,
                 classes: Optional[Sequence[str]] = None, threads: int = 0, device: str = "auto",
                 cuda: str = "auto"):
        if not isinstance(bundle, (str, os.PathLike)):
            raise EdgeFpnError(f"Detector needs a bundle directory (a path), not {bundle!r}")
        self.bundle_dir = bundle = os.fspath(bundle)
        self.manifest: Manifest = load_manifest(bundle)
        self.score_threshold = check_score_threshold(score_threshold)
        self.class_names = self.manifest.class_names
        self.class_filter = _class_filter(self.class_names, classes)
        # label -> name by one numpy gather a frame, not a Python loop over the detections
        self._name_table = np.asarray(self.class_names, dtype=object)
        self.layout = open_layout(bundle, self.manifest, threads, device, cuda)
        try:
            _refuse_foreign_graphs(bundle, self.manifest, self.layout.backends())
        except BaseException:
            self.layout.close()
            raise
        # seconds spent in each step of the last __call__ (the pipeline keeps its own statistics)
        self.last_timings: Dict[str, float] = {}
        self.invalid_detections = 0  # detections the engine gave with NaN or inf numbers or a bad label (_to_frame)

    @property
    def engine_steps(self) -> Tuple[str, ...]:
        """The names of the timed steps that are engine calls (the rest is host work)."""
        return self.layout.engine_steps

    # the steps, separately callable so that the pipeline can run them on different threads
    def preprocess(self, frame: np.ndarray) -> Tuple[Any, Letterbox]:
        return self.layout.preprocess(frame)

    def infer(self, inputs: Any, letterbox: Letterbox) -> Tuple[Any, Dict[str, float]]:
        """The engine call(s): (outputs for ``finish``, seconds per step)."""
        return self.layout.infer(inputs, letterbox)

    @property
    def batch(self) -> int:
        """Frames per engine call: 1, or N for a batch-N engine-layout bundle (``export --batch N``)."""
        return int(getattr(self.layout, "batch", 1))

    def infer_batch(self, items: Sequence[Tuple[Any, Letterbox]]) -> Tuple[List[Any], Dict[str, float]]:
        """Up to ``batch`` prepared frames (``preprocess`` results) in one engine call: (outputs per
        frame, for ``finish``; seconds per step). A batch-1 bundle runs them one by one."""
        infer_batch = getattr(self.layout, "infer_batch", None)
        if infer_batch is not None and self.batch > 1:
            return infer_batch(items)
        outputs: List[Any] = []
        timings: Dict[str, float] = {}
        for inputs, letterbox in items:
            result, seconds = self.layout.infer(inputs, letterbox)
            outputs.append(result)
            for step, value in seconds.items():
                timings[step] = timings.get(step, 0.0) + value
        return outputs, timings

    def detect_batch(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        """Detections for several frames (a batch-N bundle: ``batch`` frames a call)."""
        prepared = [self.layout.preprocess(frame) for frame in frames]
        found: List[Detections] = []
        for first in range(0, len(prepared), self.batch):
            chunk = prepared[first: first + self.batch]
            outputs, _ = self.infer_batch(chunk)
            found.extend(self.finish(out, letterbox) for out, (_, letterbox) in zip(outputs, chunk))
        return found

    def engine_runner(self, inputs: Any, letterbox: Letterbox) -> Callable[[], Dict[str, float]]:
        """A callable that runs only the engine call(s) on prepared inputs and returns their seconds."""
        return self.layout.engine_runner(inputs, letterbox)

    def backends(self) -> List[Any]:
        return self.layout.backends()

    def finish(self, outputs: Any, letterbox: Letterbox) -> Detections:
        return self._to_frame(self.layout.finish(outputs, letterbox), letterbox)

    def __call__(self, frame: np.ndarray) -> Detections:
        t0 = time.perf_counter()
        inputs, letterbox = self.layout.preprocess(frame, reuse_buffer=True)
        t1 = time.perf_counter()
        outputs, timings = self.layout.infer(inputs, letterbox)
        t2 = time.perf_counter()
        detections = self.finish(outputs, letterbox)
        t3 = time.perf_counter()
        self.last_timings = dict(preprocess=t1 - t0, **timings, postprocess=t3 - t2)  # the pipeline's step names
        return detections

    # the host layout's stages, one by one (calibration measures them separately)
    def run_stage1(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        return self._host().run_stage1(tensor)

    def propose(self, stage1_outputs: Dict[str, np.ndarray], letterbox: Letterbox) -> np.ndarray:
        return self._host().propose(stage1_outputs, letterbox)

    def run_stage2(self, stage1_outputs: Dict[str, np.ndarray], proposals: np.ndarray) -> Dict[str, np.ndarray]:
        return self._host().run_stage2(stage1_outputs, proposals)

    @property
    def stage2_inputs(self) -> List[str]:
        return self._host().stage2_inputs

    def _host(self) -> HostLayout:
        if not isinstance(self.layout, HostLayout):
            raise EdgeFpnError(f"{self.bundle_dir!r} has the {self.manifest.layout!r} layout: it has no separate stages")
        return self.layout

    def _to_frame(self, raw: RawDetections, letterbox: Letterbox) -> Detections:
        boxes = scale_boxes(raw.boxes, letterbox.resized_size, letterbox.frame_size)
        # the engine's numbers as a device gives them: an FP16 or INT8 engine that overflows gives NaN
        # or inf boxes and scores, a broken one labels past the class table; such detections are
        # dropped (counted, warned about once), never drawn, tracked or written (a NaN box stopped
        # every drawing sink, and JSON has no NaN)
        keep = (np.isfinite(raw.scores) & np.isfinite(boxes).all(axis=1)
                & (raw.labels >= 0) & (raw.labels < self._name_table.shape[0]))
        invalid = keep.shape[0] - np.count_nonzero(keep)  # (per frame: one count)
        if invalid:
            self._drop_invalid(int(invalid))
        if self.score_threshold is not None:
            keep &= raw.scores >= self.score_threshold
        if self.class_filter is not None:
            keep &= np.isin(raw.labels, self.class_filter)
        labels = raw.labels[keep]
        return Detections(boxes=boxes[keep], scores=raw.scores[keep], labels=labels,
                          names=self._name_table[labels].tolist())

    def _drop_invalid(self, count: int) -> None:
        if not self.invalid_detections:
            logger.warning("%s: the engine gave %d detection(s) with a non-finite box or score or a label past its %d "
                           "classes; they are dropped (and counted in Detector.invalid_detections). An FP16 or INT8 "
                           "engine that overflows does this: check it with `edge-fpn eval`, or rebuild it in FP32",
                           self.bundle_dir, count, len(self.class_names) - 1)
        self.invalid_detections += count

    def stream(self, source: Any, track: Any = False, **options: Any):
        """Yield (frame, detections) for every frame of a source (URI or Source), pipelined.

        track: True (or a TrackerConfig, or a Tracker) gives ``detections.track_ids``, persistent
        object IDs (runtime/tracking/)."""
        from .pipeline import Pipeline
        if track:
            options["tracker"] = track
        with Pipeline(self, source, **options) as pipeline:
            for result in pipeline:
                yield result.frame, result.detections

    def close(self) -> None:
        self.layout.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_score_threshold(value: Any, name: str = "score_threshold") -> Optional[float]:
    """None, or a finite number in [0, 1] (a string, 2 or NaN would silently keep nothing); `name`
    is how the caller's user spells the option (``--score-threshold`` on the command line)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
            not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
        raise EdgeFpnError(f"{name} must be a number between 0 and 1 (or None), not {value!r}")
    return float(value)


def _refuse_foreign_graphs(bundle: str, manifest: Manifest, backends: Sequence[Any]) -> None:
    """An ONNX Runtime stage whose graph is not the one its manifest describes (another layout's,
    another class count or input size) is refused at load, with the file and what differs, instead
    of a KeyError or an ONNX Runtime InvalidArgument at the first frame. TensorRT engines are
    checked by their backend (check_engine_io)."""
    for key, backend in zip(LAYOUT_STAGES[manifest.layout], backends):
        session = getattr(backend, "session", None)
        if session is None or not hasattr(session, "get_inputs"):
            continue
        inputs, outputs, metadata = session_graph_io(session)
        mismatch = graph_mismatch(key, manifest.stages[key], manifest, inputs, outputs, metadata)
        if mismatch:
            path = os.path.join(bundle, manifest.stages[key].file)
            raise EdgeFpnError(f"{path} does not match its manifest: {mismatch}; re-run `edge-fpn export`")


def _class_filter(class_names: Sequence[str], classes: Optional[Sequence[str]]) -> Optional[np.ndarray]:
    if not classes:
        return None
    unknown = [c for c in classes if c not in class_names]
    if unknown:
        raise EdgeFpnError(f"unknown class name(s) {', '.join(unknown)}; this bundle knows {', '.join(class_names[1:])}")
    return np.asarray([class_names.index(c) for c in classes], dtype=np.int64)
