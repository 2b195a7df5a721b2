"""The host layout's numpy NMS (runtime/boxes.py) against torchvision's, to the bit and index."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from edge_fpn.runtime import boxes as box_ops


def _boxes(rng: np.random.Generator, count: int, side: float = 800.0) -> np.ndarray:
    """Boxes that overlap a lot (RPN-like clusters), with exact duplicates and zero-area ones."""
    centres = rng.uniform(0, side, (max(1, count // 20), 2))[rng.integers(0, max(1, count // 20), count)]
    centres += rng.normal(0, 12, (count, 2))
    sizes = rng.uniform(0, 160, (count, 2))
    found = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    found[::17] = found[1::17][: len(found[::17])] if count > 17 else found[::17]  # duplicates
    found[::29, 2] = found[::29, 0]  # zero width
    return found


@pytest.mark.parametrize("count", [0, 1, 7, 300, 2047, 2049, 3000])
def test_nms_keeps_what_torchvision_keeps(count):
    rng = np.random.default_rng(count)
    boxes = _boxes(rng, count)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    scores[::13] = scores[0] if count else scores[::13]  # ties, broken by index as torchvision's stable sort
    for threshold in (0.3, 0.5, 0.7):
        expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        np.testing.assert_array_equal(box_ops.nms(boxes, scores, threshold), expected)


@pytest.mark.parametrize("count", [500, 1200])  # torchvision's coordinate trick (<= 1000 boxes) and per group
def test_batched_nms_keeps_what_torchvision_keeps(count):
    rng = np.random.default_rng(100 + count)
    boxes = _boxes(rng, count)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    groups = rng.integers(0, 5, count)
    expected = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                           torch.from_numpy(groups), 0.7).numpy()
    np.testing.assert_array_equal(box_ops.batched_nms(boxes, scores, groups, 0.7), expected)


def test_the_iou_matrix_is_torchvisions_to_the_bit():
    rng = np.random.default_rng(3)
    boxes = _boxes(rng, 400)
    index = np.arange(len(boxes))
    ours = box_ops._iou_rows(boxes, index, index)
    theirs = torchvision.ops.box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy()
    np.testing.assert_array_equal(ours, theirs)  # NaN where both boxes have no area, in both
    rows = np.array([5, 9])
    np.testing.assert_array_equal(box_ops._iou_rows(boxes, rows, index), theirs[rows])
