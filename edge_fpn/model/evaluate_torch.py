"""COCO box metrics of a torch detector on held-out synthetic scenes (the PyTorch reference)."""
from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_metrics(coco_gt: Dict[str, Any], detections: List[Dict[str, Any]]) -> Dict[str, float]:
    """pycocotools box metrics; `detections` are COCO results (image_id, category_id, bbox, score)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:  # COCO.loadRes refuses an empty list; nothing detected scores 0
        return {name: 0.0 for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        gt = COCO()
        gt.dataset = coco_gt
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # stats: AP, AP50, AP75, APs, APm, APl, AR...; -1 means no ground truth in that range
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}


def detections_to_coco(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> List[Dict[str, Any]]:
    return [{"image_id": int(image_id), "category_id": int(label),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(score)}
            for b, score, label in zip(boxes, scores, labels)]


def evaluate_model(model, count: int, seed: int, image_size: Optional[Tuple[int, int]] = None,
                   batch_size: int = 4, progress: bool = False) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl of a torchvision detector on `count` scenes of `seed`.

    `image_size` is (height, width) of the scenes; by default the model's own input size.
    """
    import torch

    from ..runtime.synthetic import coco_dataset

    if image_size is None:
        size = int(model.transform.min_size[0])
        image_size = (size, size)
    images, coco_gt = coco_dataset(count, seed, image_size[1], image_size[0])
    was_training = model.training
    model.eval()
    results: List[Dict[str, Any]] = []
    bar = _progress(len(images), progress)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            tensors = [torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1])).permute(2, 0, 1).float() / 255.0
                       for im in chunk]
            for offset, output in enumerate(model(tensors)):
                info = coco_gt["images"][start + offset]
                results += detections_to_coco(info["id"], output["boxes"].numpy(), output["scores"].numpy(),
                                              output["labels"].numpy())
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    model.train(was_training)
    return coco_metrics(coco_gt, results)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc="evaluate", unit="img", leave=False)


def evaluate_checkpoint(checkpoint: str, count: int = 500, seed: int = 1000, progress: bool = False) -> Dict[str, Any]:
    """Evaluate a shapes checkpoint and record the figures in the metadata json beside it.

    This is how the shipped ``shapes.json`` gets its "evaluation" entry; `seed` must not be the
    training seed (the scenes of the training seed are the training data).
    """
    import json
    import os
    import time

    from .shapes import load_shapes_model
    from .train import metadata_path

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
