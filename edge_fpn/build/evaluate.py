"""COCO box AP of a bundle, run through the runtime (``Detector``) on held-out images.

Data: ``synthetic:N`` (or ``synthetic:N:SEED``; scenes of the evaluation seed, rendered at the
engine's input size), a directory holding ``annotations.json`` (COCO) beside its images, or the
path of a COCO json whose ``file_name`` entries are relative to it. Scores come from pycocotools.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgeFpnError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
ANNOTATIONS_FILE = "annotations.json"


class EvalSet:
    """Images and COCO ground truth of one data spec; frames are kept after the first pass
    (a sensitivity analysis evaluates the same images many times)."""

    def __init__(self, spec: str, input_size: Tuple[int, int], cache_frames: bool = True):
        from .data import EVALUATION_SEED, parse_synthetic

        self.spec = spec
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self._cache: Optional[List[np.ndarray]] = [] if cache_frames else None
        self._complete = False
        synthetic = parse_synthetic(spec)
        if synthetic is not None:
            count, seed = synthetic
            self.seed = EVALUATION_SEED if seed is None else seed
            self.kind = "synthetic"
            self.coco, self.files = _synthetic_ground_truth(count, self.seed, self.input_size), []
        else:
            self.kind = "coco"
            self.coco, self.files = _coco_ground_truth(spec)
        self.image_ids = [int(image["id"]) for image in self.coco["images"]]

    def __len__(self) -> int:
        return len(self.image_ids)

    def frames(self) -> Iterator[Tuple[int, np.ndarray]]:
        if self._cache is not None and self._complete:
            yield from zip(self.image_ids, self._cache)
            return
        fresh: List[np.ndarray] = []
        for index, image_id in enumerate(self.image_ids):
            frame = self._read(index)
            if self._cache is not None:
                fresh.append(frame)
            yield image_id, frame
        if self._cache is not None:
            self._cache, self._complete = fresh, True

    def _read(self, index: int) -> np.ndarray:
        if self.kind == "synthetic":
            from ..runtime.synthetic import make_scene
            return make_scene(self.seed, index, self.input_size[1], self.input_size[0])[0]
        from .data import read_image
        frame = read_image(self.files[index])
        if frame is None:
            raise EdgeFpnError(f"evaluation image {self.files[index]!r} is not readable; fix or remove it from the annotations")
        return frame


def _synthetic_ground_truth(count: int, seed: int, input_size: Tuple[int, int]) -> Dict[str, Any]:
    from ..runtime.synthetic import CLASS_NAMES, make_scene

    height, width = input_size
    coco: Dict[str, Any] = {"images": [], "annotations": [],
                            "categories": [{"id": i, "name": n} for i, n in enumerate(CLASS_NAMES) if i > 0]}
    for index in range(count):
        _, boxes, labels = make_scene(seed, index, width, height)
        coco["images"].append({"id": index + 1, "width": width, "height": height})
        for box, label in zip(boxes.tolist(), labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": index + 1,
                                        "category_id": int(label), "bbox": [box[0], box[1], w, h],
                                        "area": w * h, "iscrowd": 0})
    return coco


def _coco_ground_truth(spec: str) -> Tuple[Dict[str, Any], List[str]]:
    path = os.path.join(spec, ANNOTATIONS_FILE) if os.path.isdir(spec) else spec
    if not os.path.isfile(path):
        raise EdgeFpnError(f"evaluation data {spec!r} is neither synthetic:N nor a directory with {ANNOTATIONS_FILE} "
                           "(COCO) nor a COCO json file; give one of these")
    try:
        with open(path, "r", encoding="utf-8") as f:
            coco = json.load(f)
        files = [os.path.join(os.path.dirname(os.path.abspath(path)), image["file_name"]) for image in coco["images"]]
        coco["annotations"], coco["categories"]  # noqa: B018 (presence check)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeFpnError(f"{path} is not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    if not files:
        raise EdgeFpnError(f"{path} lists no images; give annotated evaluation images")
    return coco, files


def coco_metrics(coco_gt: Dict[str, Any], detections: List[Dict[str, Any]]) -> Dict[str, float]:
    """pycocotools box metrics; -1 (no ground truth in a size range) is kept as pycocotools gives it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return {name: 0.0 for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dict(coco_gt, info=coco_gt.get("info", {}))
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}


def _category_map(class_names: Sequence[str], coco: Dict[str, Any]) -> Dict[int, int]:
    """Label -> COCO category id: by class name where the names match, else the label itself."""
    by_name = {str(c["name"]): int(c["id"]) for c in coco["categories"]}
    mapping = {}
    for label, name in enumerate(class_names):
        mapping[label] = by_name.get(name, label)
    return mapping


def evaluate_detector(detector: Any, evalset: EvalSet, progress: bool = False) -> Dict[str, float]:
    categories = _category_map(detector.class_names, evalset.coco)
    results: List[Dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(evalset), desc="evaluate", unit="img", leave=False, dynamic_ncols=True)
    for image_id, frame in evalset.frames():
        d = detector(frame)
        for box, score, label in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist()):
            results.append({"image_id": image_id, "category_id": categories.get(int(label), int(label)),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": float(score)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return coco_metrics(evalset.coco, results)


def evaluate_bundle(bundle_dir: str, data_spec: str = "synthetic:100", progress: bool = False,
                    threads: int = 0, evalset: Optional[EvalSet] = None) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (pycocotools, 0..1) of a bundle on `data_spec`."""
    from ..bundle import load_manifest
    from ..runtime.detector import Detector

    manifest = load_manifest(bundle_dir)
    evalset = evalset or EvalSet(data_spec, manifest.input_size)
    with Detector(bundle_dir, threads=threads) as detector:
        return evaluate_detector(detector, evalset, progress)
