"""Anchors per FPN level, computed once when a bundle is loaded (torchvision's AnchorGenerator)."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ..bundle import LevelSpec


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """Zero-centred base anchors, ratio-major then size, rounded, as AnchorGenerator.generate_anchors."""
    scales = np.asarray(sizes, dtype=np.float32)
    ratios = np.asarray(aspect_ratios, dtype=np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)).astype(np.float32)


def level_anchors(level: LevelSpec) -> np.ndarray:
    """All anchors of one level, ordered (y, x, anchor) as the RPN head's flattened outputs."""
    _, grid_h, grid_w = level.feature_shape
    stride_h, stride_w = level.stride
    shift_y, shift_x = np.meshgrid(np.arange(grid_h, dtype=np.int64) * stride_h,
                                   np.arange(grid_w, dtype=np.int64) * stride_w, indexing="ij")
    shift_x = shift_x.reshape(-1)
    shift_y = shift_y.reshape(-1)
    shifts = np.stack((shift_x, shift_y, shift_x, shift_y), axis=1).astype(np.float32)
    base = cell_anchors(level.anchor_sizes, level.aspect_ratios)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def all_level_anchors(levels: Sequence[LevelSpec]) -> List[np.ndarray]:
    return [level_anchors(level) for level in levels]
