"""COCO box metrics of a torch detector on held-out synthetic scenes (the PyTorch reference)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple


def evaluate_model(model, count: int, seed: int, image_size: Optional[Tuple[int, int]] = None,
                   progress: bool = False) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl of a torchvision detector on `count` scenes of `seed`.

    `image_size` is (height, width) of the scenes; by default the model's own input size.
    """
    from ..evaluate import evaluate, synthetic_data, torch_detect_fn

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
