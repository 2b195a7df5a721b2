"""The builder's AP measurements: ``edge_fpn.evaluate`` (pycocotools) behind one data-spec string.

Data specs: ``synthetic:N`` or ``synthetic:N:SEED`` (held-out scenes, ``edge_fpn.evaluate``'s
evaluation seed by default, rendered at the bundle's input size), a directory holding
``annotations.json`` (COCO) beside its images, or a COCO json file whose images lie beside it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgeFpnError

ANNOTATIONS_FILE = "annotations.json"
DEFAULT_EVAL_DATA = "synthetic:100"


def open_eval_data(spec: str, input_size: Tuple[int, int]) -> Tuple[Iterator[Tuple[int, np.ndarray]], Dict[str, Any], Optional[int]]:
    """(images, COCO ground truth, image count or None) of a data spec."""
    from ..evaluate import DEFAULT_EVAL_SEED, coco_folder_data, synthetic_data
    from .data import parse_synthetic

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


def classes_match_synthetic(class_names: Sequence[str]) -> bool:
    from ..runtime.synthetic import CLASS_NAMES
    return list(class_names)[1:] == list(CLASS_NAMES)[1:]


def evaluate_bundle(bundle_dir: str, data_spec: str = DEFAULT_EVAL_DATA, progress: bool = False) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (pycocotools, 0..1) of a bundle run through the runtime."""
    from ..evaluate import bundle_detect_fn, check_categories, evaluate

    detect, class_names, input_size = bundle_detect_fn(bundle_dir)
    images, coco, total = open_eval_data(data_spec, input_size)
    check_categories(coco, class_names, f"bundle {bundle_dir!r}")
    return evaluate(detect, images, coco, progress=progress, total=total)
