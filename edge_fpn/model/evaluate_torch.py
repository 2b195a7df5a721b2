"""COCO box metrics of a torch detector on held-out synthetic scenes (the PyTorch reference)."""
from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
