"""Detector: a bundle made callable on a frame (preprocess -> stage 1 -> proposals -> stage 2 -> detections)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..bundle import Manifest, load_manifest
from .backends import open_stage
from .boxes import scale_boxes
from .postprocess import DetectionPostprocessor, ProposalPostprocessor, RawDetections
from .preprocess import Letterbox, Preprocessor


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4) float32, xyxy in frame pixels
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64 (0 is the background, so real labels start at 1)
    names: List[str]  # class name of each detection

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_list(self) -> List[Dict[str, Any]]:
        return [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
                 "label": int(label), "name": name}
                for box, score, label, name in zip(self.boxes, self.scores, self.labels, self.names)]


STAGE_NAMES = ("preprocess", "stage1", "proposals", "stage2", "detections")


@dataclass
class StageTimer:
    """Seconds spent in each step of the last call (the pipeline keeps its own statistics)."""
    last: Dict[str, float] = field(default_factory=dict)


class Detector:
    """``Detector(bundle)(frame_bgr) -> Detections``; also ``stream(source)`` for live sources."""

    def __init__(self, bundle: str, score_threshold: Optional[float] = None,
                 classes: Optional[Sequence[str]] = None, threads: int = 0):
        self.bundle_dir = bundle
        self.manifest: Manifest = load_manifest(bundle)
        self.score_threshold = score_threshold
        self.class_names = self.manifest.class_names
        self.class_filter = _class_filter(self.class_names, classes)
        self.preprocessor = Preprocessor(self.manifest.preprocess)
        self.proposal_postprocessor = ProposalPostprocessor(self.manifest.levels, self.manifest.rpn)
        self.detection_postprocessor = DetectionPostprocessor(self.manifest.roi)
        self.stage1 = open_stage(bundle, self.manifest.stages["stage1"], threads)
        self.stage2 = open_stage(bundle, self.manifest.stages["stage2"], threads)
        spec1 = self.manifest.stages["stage1"]
        self.stage1_input = spec1.inputs[0].name
        names = [t.name for t in spec1.outputs]
        self.objectness_names = [n for n in names if n.startswith("objectness_")]
        self.deltas_names = [n for n in names if n.startswith("deltas_")]
        self.stage2_inputs = [t.name for t in self.manifest.stages["stage2"].inputs]
        self.timer = StageTimer()

    # the steps, separately callable so that the pipeline can run them on different threads
    def preprocess(self, frame: np.ndarray):
        return self.preprocessor(frame)

    def run_stage1(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        return self.stage1({self.stage1_input: tensor})

    def propose(self, stage1_outputs: Dict[str, np.ndarray], letterbox: Letterbox) -> np.ndarray:
        proposals, _ = self.proposal_postprocessor(
            [stage1_outputs[n] for n in self.objectness_names],
            [stage1_outputs[n] for n in self.deltas_names], letterbox.resized_size)
        return proposals

    def run_stage2(self, stage1_outputs: Dict[str, np.ndarray], proposals: np.ndarray) -> Dict[str, np.ndarray]:
        inputs = {name: stage1_outputs[name] for name in self.stage2_inputs if name != "proposals"}
        inputs["proposals"] = np.ascontiguousarray(proposals, dtype=np.float32)
        return self.stage2(inputs)

    def finish(self, stage2_outputs: Optional[Dict[str, np.ndarray]], proposals: np.ndarray,
               letterbox: Letterbox) -> Detections:
        if stage2_outputs is None:
            raw = RawDetections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))
        else:
            raw = self.detection_postprocessor(stage2_outputs["class_logits"], stage2_outputs["box_regression"],
                                               proposals, letterbox.resized_size)
        return self._to_frame(raw, letterbox)

    def infer(self, tensor: np.ndarray, letterbox: Letterbox
              ) -> Tuple[np.ndarray, Optional[Dict[str, np.ndarray]], Dict[str, float]]:
        """Stage 1 -> proposals -> stage 2: (proposals, stage 2 outputs or None, seconds per step)."""
        t0 = time.perf_counter()
        outputs1 = self.run_stage1(tensor)
        t1 = time.perf_counter()
        proposals = self.propose(outputs1, letterbox)
        t2 = time.perf_counter()
        # an engine cannot run on zero proposals; there is then nothing to detect
        outputs2 = self.run_stage2(outputs1, proposals) if len(proposals) else None
        t3 = time.perf_counter()
        return proposals, outputs2, {"stage1": t1 - t0, "proposals": t2 - t1, "stage2": t3 - t2}

    def __call__(self, frame: np.ndarray) -> Detections:
        t0 = time.perf_counter()
        tensor, letterbox = self.preprocess(frame)
        t1 = time.perf_counter()
        proposals, outputs2, timings = self.infer(tensor, letterbox)
        t2 = time.perf_counter()
        detections = self.finish(outputs2, proposals, letterbox)
        t3 = time.perf_counter()
        self.timer.last = dict(preprocess=t1 - t0, **timings, detections=t3 - t2)
        return detections

    def _to_frame(self, raw: RawDetections, letterbox: Letterbox) -> Detections:
        boxes = scale_boxes(raw.boxes, letterbox.resized_size, letterbox.frame_size)
        keep = np.ones(raw.scores.shape[0], dtype=bool)
        if self.score_threshold is not None:
            keep &= raw.scores >= self.score_threshold
        if self.class_filter is not None:
            keep &= np.isin(raw.labels, self.class_filter)
        labels = raw.labels[keep]
        return Detections(boxes=boxes[keep], scores=raw.scores[keep], labels=labels,
                          names=[self.class_names[int(i)] for i in labels])

    def stream(self, source: Any, **options: Any):
        """Yield (frame, detections) for every frame of a source (URI or Source), pipelined."""
        from .pipeline import Pipeline
        with Pipeline(self, source, **options) as pipeline:
            for result in pipeline:
                yield result.frame, result.detections

    def close(self) -> None:
        self.stage1.close()
        self.stage2.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _class_filter(class_names: Sequence[str], classes: Optional[Sequence[str]]) -> Optional[np.ndarray]:
    if not classes:
        return None
    from ..errors import EdgeFpnError
    unknown = [c for c in classes if c not in class_names]
    if unknown:
        raise EdgeFpnError(f"unknown class name(s) {', '.join(unknown)}; this bundle knows {', '.join(class_names[1:])}")
    return np.asarray([class_names.index(c) for c in classes], dtype=np.int64)
