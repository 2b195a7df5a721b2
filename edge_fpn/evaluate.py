"""COCO box evaluation (pycocotools): the one module that measures AP in edge-fpn.

It owns the data (held-out synthetic scenes, COCO folders, the builder's data-spec strings), the
metrics, and the adapters that turn a bundle (through the runtime) or a torch detector into a
detect function. Everything measures AP here: `edge-fpn eval`, the builder's INT8-vs-FP32 report,
the demo's report and the shipped model's figures.

Importing it costs numpy only: pycocotools, OpenCV, the runtime and torch are imported inside the
functions that need them (torch only by the torch adapters), so the runtime never loads torch.

Data specs (the builder's ``--eval-data``): ``synthetic:N`` or ``synthetic:N:SEED`` (held-out
scenes, of DEFAULT_EVAL_SEED by default, rendered at the bundle's input size), a directory holding
``annotations.json`` (COCO) beside its images, or a COCO json file whose images lie beside it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import EdgeFpnError
from .progress import progress_iter

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# seeds the shipped model never trained on (training uses seeds < 1000, calibration 1000)
DEFAULT_EVAL_SEED = 12345
DEFAULT_EVAL_DATA = "synthetic:100"
ANNOTATIONS_FILE = "annotations.json"

DetectFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]  # -> boxes xyxy, scores, labels


# ---------- metrics ----------

def coco_metrics(coco_gt: Dict[str, Any], results: List[Dict[str, Any]]) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl of `results` (COCO result dicts) against a COCO annotation dict."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_gt
        gt.createIndex()
        if not results:
            return {k: 0.0 for k in METRIC_KEYS}
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # -1 means "no ground truth in that area range"; report it as such rather than as 0
    return {k: round(float(v), 4) for k, v in zip(METRIC_KEYS, evaluator.stats[:6])}


def detections_to_results(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> List[Dict[str, Any]]:
    return [{"image_id": int(image_id), "category_id": int(label),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(score)}
            for b, score, label in zip(boxes, scores, labels)]


def evaluate(detect: DetectFn, images: Iterator[Tuple[int, np.ndarray]], coco_gt: Dict[str, Any],
             progress: bool = False, total: Optional[int] = None) -> Dict[str, float]:
    results: List[Dict[str, Any]] = []
    images = progress_iter(images, total, "evaluate", "img", enabled=progress)
    batch = int(getattr(detect, "batch", 1))
    for chunk in _chunks(images, batch):
        if batch > 1:  # a batch-N bundle: N different images a call, as it runs live
            found = detect.many([image for _, image in chunk])  # type: ignore[attr-defined]
        else:
            found = [detect(chunk[0][1])]
        for (image_id, _), (boxes, scores, labels) in zip(chunk, found):
            results += detections_to_results(image_id, boxes, scores, labels)
    return coco_metrics(coco_gt, results)


def _chunks(items: Iterator[Any], size: int) -> Iterator[List[Any]]:
    chunk: List[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def format_metrics(metrics: Dict[str, float]) -> str:
    return "  ".join(f"{k} {metrics[k]:.3f}" for k in METRIC_KEYS)


# ---------- data sets ----------

def synthetic_data(count: int, seed: int, size: Tuple[int, int]) -> Tuple[Iterator[Tuple[int, np.ndarray]], Dict[str, Any]]:
    """Held-out synthetic scenes, generated an image at a time; the COCO dict's annotations fill in
    as the iterator runs (so nothing is rendered twice and no image set is held in memory)."""
    from .runtime.synthetic import CLASS_NAMES, make_scene

    height, width = size
    coco: Dict[str, Any] = {
        "images": [{"id": i + 1, "file_name": f"{seed}_{i}.png", "width": width, "height": height} for i in range(count)],
        "annotations": [],
        "categories": [{"id": i, "name": n} for i, n in enumerate(CLASS_NAMES) if i > 0],
    }

    def images() -> Iterator[Tuple[int, np.ndarray]]:
        for i in range(count):
            image, boxes, labels = make_scene(seed, i, width, height)
            for box, label in zip(boxes, labels):
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                            "category_id": int(label), "bbox": [float(box[0]), float(box[1]), w, h],
                                            "area": w * h, "iscrowd": 0})
            yield i + 1, image
    return images(), coco


def coco_folder_data(annotations: str, image_dir: str) -> Tuple[Iterator[Tuple[int, np.ndarray]], Dict[str, Any]]:
    """A COCO annotation file and its image directory; mismatches are one-line errors."""
    import cv2

    if not os.path.isdir(image_dir):
        raise EdgeFpnError(f"image directory {image_dir!r} does not exist")
    coco = _read_coco_annotations(annotations)
    entries = coco["images"]
    if not entries:
        raise EdgeFpnError(f"{annotations!r} lists no images")
    files = set(os.listdir(image_dir))
    if not files:
        raise EdgeFpnError(f"image directory {image_dir!r} is empty")
    missing = [e["file_name"] for e in entries if os.path.basename(e["file_name"]) not in files]
    if missing:
        raise EdgeFpnError(f"{len(missing)} of {len(entries)} images in {annotations!r} are not in {image_dir!r} "
                           f"(first: {missing[0]}); the annotations do not match the images")

    def images() -> Iterator[Tuple[int, np.ndarray]]:
        for entry in entries:
            image = cv2.imread(os.path.join(image_dir, os.path.basename(entry["file_name"])), cv2.IMREAD_COLOR)
            if image is None:
                raise EdgeFpnError(f"image {entry['file_name']!r} cannot be read")
            yield entry["id"], image
    return images(), coco


def _read_coco_annotations(annotations: str) -> Dict[str, Any]:
    """The annotation file's JSON, with the three lists COCO needs and a file name per image."""
    try:
        with open(annotations, "r", encoding="utf-8") as f:
            coco = json.load(f)
    except OSError as exc:
        raise EdgeFpnError(f"cannot read the annotation file {annotations!r} ({exc.strerror}); give a COCO "
                           "annotation .json") from None
    except ValueError:  # not UTF-8, or not JSON
        raise EdgeFpnError(f"{annotations!r} is not JSON; give a COCO annotation .json (images, annotations, "
                           "categories)") from None
    lists = ("images", "annotations", "categories")
    if not isinstance(coco, dict) or not all(isinstance(coco.get(key), list) for key in lists):
        raise EdgeFpnError(f"{annotations!r} is not a COCO annotation file; it needs the lists images, annotations "
                           "and categories")
    needs = {"images": ("id", "file_name"), "annotations": ("image_id", "category_id", "bbox"),
             "categories": ("id", "name")}
    for key, fields in needs.items():
        for entry in coco[key]:
            if not isinstance(entry, dict) or any(field not in entry for field in fields):
                raise EdgeFpnError(f"an entry of {key} in {annotations!r} lacks {' or '.join(fields)}; "
                                   f"each COCO {key[:-1].replace('categorie', 'category')} needs them")
    if not all(isinstance(a["bbox"], list) and len(a["bbox"]) == 4 for a in coco["annotations"]):
        raise EdgeFpnError(f"an annotation bbox in {annotations!r} is not [x, y, width, height]")
    return coco


def check_categories(coco: Dict[str, Any], class_names: Sequence[str], what: str) -> None:
    """The annotation categories must be the model's classes (by id and name)."""
    for category in coco["categories"]:
        cid, name = int(category["id"]), str(category["name"])
        if cid <= 0 or cid >= len(class_names) or class_names[cid] != name:
            raise EdgeFpnError(f"annotation category {cid} {name!r} is not class {cid} of {what} "
                               f"({', '.join(class_names[1:])}); the class names do not match")


def classes_match_synthetic(class_names: Sequence[str]) -> bool:
    """Whether a model's classes are those of the synthetic scenes (so synthetic data can score it)."""
    from .runtime.synthetic import CLASS_NAMES
    return list(class_names)[1:] == list(CLASS_NAMES)[1:]


def open_eval_data(spec: str, input_size: Tuple[int, int]) -> Tuple[Iterator[Tuple[int, np.ndarray]], Dict[str, Any], Optional[int]]:
    """(images, COCO ground truth, image count or None) of a data spec (see the module's docstring)."""
    from .builder.data import parse_synthetic

    synthetic = parse_synthetic(spec)
    if synthetic is not None:
        count, seed = synthetic
        images, coco = synthetic_data(count, DEFAULT_EVAL_SEED if seed is None else seed, input_size)
        return images, coco, count
    if os.path.isdir(spec):
        annotations, image_dir = os.path.join(spec, ANNOTATIONS_FILE), spec
    elif os.path.isfile(spec):
        annotations, image_dir = spec, os.path.dirname(os.path.abspath(spec))
    else:
        raise EdgeFpnError(f"evaluation data {spec!r} is neither synthetic:N, nor a directory with {ANNOTATIONS_FILE} "
                           "(COCO), nor a COCO json file")
    if not os.path.isfile(annotations):
        raise EdgeFpnError(f"{spec!r} has no {ANNOTATIONS_FILE}; evaluation needs COCO annotations beside the images")
    images, coco = coco_folder_data(annotations, image_dir)
    return images, coco, len(coco["images"])


# ---------- bundles (through the runtime) ----------

def bundle_detect_fn(bundle_dir: str, device: str = "auto") -> Tuple[DetectFn, List[str], Tuple[int, int]]:
    from .runtime.detector import Detector

    detector = Detector(bundle_dir, device=device)
    return _BundleDetect(detector), detector.class_names, detector.manifest.input_size


class _BundleDetect:
    """A DetectFn of a bundle; ``many`` runs ``batch`` images a call (``Detector.detect_batch``), so
    that a batch-N bundle is evaluated at the cost of batch 1, not N times it."""

    def __init__(self, detector: Any) -> None:
        self.detector, self.batch = detector, detector.batch

    def __call__(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self.detector(image)
        return d.boxes, d.scores, d.labels

    def many(self, images: Sequence[np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [(d.boxes, d.scores, d.labels) for d in self.detector.detect_batch(images)]


def evaluate_bundle(bundle_dir: str, data: str = DEFAULT_EVAL_DATA, progress: bool = False,
                    device: str = "cpu") -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (0..1) of a bundle run through the runtime, on a data spec
    (``synthetic:N[:SEED]`` at the bundle's input size, or COCO data; the classes must match).

    device "cpu" by default: the builder's FP32/INT8 comparison must measure the Q/DQ graphs as
    written, not what a GPU provider (or ONNX Runtime's TensorRT provider) makes of them."""
    detect, class_names, input_size = bundle_detect_fn(bundle_dir, device=device)
    images, coco, total = open_eval_data(data, input_size)
    check_categories(coco, class_names, f"bundle {bundle_dir!r}")
    return evaluate(detect, images, coco, progress=progress, total=total)


# ---------- torch detectors (the PyTorch reference; torch is imported here only) ----------

def torch_detect_fn(model: Any, input_size: Tuple[int, int]) -> DetectFn:
    """A detect function of a torchvision detector, resizing as the bundle does (`input_size` HxW)."""
    import torch
    from .export.onnx_export import configure_transform

    model = model.eval()
    configure_transform(model, input_size)

    def detect(image: np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            out = model([x])[0]
        return out["boxes"].numpy(), out["scores"].numpy(), out["labels"].numpy()
    return detect


def evaluate_model(model: Any, count: int, seed: int, image_size: Optional[Tuple[int, int]] = None,
                   progress: bool = False) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl of a torchvision detector on `count` synthetic scenes of `seed`.

    `image_size` is (height, width) of the scenes; by default the model's own input size.
    """
    if image_size is None:
        size = int(model.transform.min_size[0])
        image_size = (size, size)
    was_training = model.training
    images, coco = synthetic_data(count, seed, image_size)
    metrics = evaluate(torch_detect_fn(model, image_size), images, coco, progress=progress, total=count)
    model.train(was_training)
    return metrics


def evaluate_checkpoint(checkpoint: str, count: int = 500, seed: int = 1000, progress: bool = False) -> Dict[str, Any]:
    """Evaluate a shapes checkpoint and record the figures in the metadata json beside it.

    This is how the shipped ``shapes.json`` gets its "evaluation" entry; `seed` must not be the
    training seed (the scenes of the training seed are the training data).
    """
    import time

    from .model.shapes import load_shapes_model
    from .model.train import metadata_path

    meta_path = metadata_path(checkpoint)
    metadata: Dict[str, Any] = {}
    if os.path.isfile(meta_path):
        with open(meta_path, "r", encoding="utf-8") as f:
            metadata = json.load(f)
    if metadata.get("seed") == seed:
        raise ValueError(f"seed {seed} is the training seed of {checkpoint}; evaluate on another seed")
    model = load_shapes_model(checkpoint)
    start = time.time()
    metrics = evaluate_model(model, count, seed, progress=progress)
    size = int(model.transform.min_size[0])
    metadata["evaluation"] = dict({"images": int(count), "seed": int(seed), "image_size": [size, size],
                                   "seconds": round(time.time() - start, 1)},
                                  **{k: round(v, 4) for k, v in metrics.items()})
    with open(meta_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
        f.write("\n")
    os.replace(meta_path + ".tmp", meta_path)
    return metadata


def camera_false_boxes(detect: DetectFn, seeds: Sequence[int], motions: Sequence[str] = ("drift", "occlude"),
                       frames: Sequence[int] = (0, 150), min_score: float = 0.5) -> Dict[str, Any]:
    """A detector's confident boxes on no object in synthetic camera frames (640x480, ``test://``).

    A tracking sequence keeps one background, so a box the detector reads into its texture stays
    put and is tracked like a still object; AP on the evaluation scenes does not show it. Per frame
    of each seed's camera, each motion, each index: boxes scoring >= `min_score` with IoU < 0.1
    against every object ("false"), objects found (a box of their class at IoU >= 0.5) and objects
    found only as another class. Returns the rates and the false boxes of each seed's background.
    """
    from .runtime.synthetic import SyntheticCamera
    from .runtime.tracking.geometry import iou_matrix

    per_seed: List[int] = []
    objects = found = other_class = images = 0
    for seed in seeds:
        false = 0
        for motion in motions:
            camera = SyntheticCamera(640, 480, 30.0, seed, motion)
            for index in frames:
                truth_boxes, truth_labels = camera.ground_truth(index)
                truth_boxes = np.asarray(truth_boxes, np.float32).reshape(-1, 4)
                boxes, scores, labels = detect(camera.frame(index))
                confident = np.asarray(scores) >= min_score
                boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[confident]
                labels = np.asarray(labels)[confident]
                iou = iou_matrix(boxes, truth_boxes)  # (0, M) or (N, 0) where either side is empty
                overlaps = iou >= 0.5
                same = labels[:, None] == np.asarray(truth_labels)[None, :]
                of_class = (overlaps & same).any(axis=0)
                false += int((iou.max(axis=1, initial=0.0) < 0.1).sum())
                objects += len(truth_boxes)
                found += int(of_class.sum())
                other_class += int(((overlaps & ~same).any(axis=0) & ~of_class).sum())
                images += 1
        per_seed.append(false)
    return {"frames": images, "false_boxes_per_frame": sum(per_seed) / max(images, 1),
            "found": found / max(objects, 1), "other_class_only": other_class / max(objects, 1),
            "false_boxes_by_seed": dict(zip((int(s) for s in seeds), per_seed))}
