"""Per-level proposal postprocessing and final detection postprocessing, in numpy.

These reproduce torchvision's ``RegionProposalNetwork.filter_proposals`` and
``RoIHeads.postprocess_detections`` step for step; tests compare both against torchvision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..bundle import LevelSpec, RoiSpec, RpnSpec
from .anchors import all_level_anchors
from .boxes import batched_nms, clip_boxes, decode_boxes, keep_large_boxes


@dataclass(frozen=True)
class RawDetections:
    """Detections in engine-input pixels (before mapping back to the frame)."""
    boxes: np.ndarray  # (N, 4) float32 xyxy
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64, 1-based (0 is the background)


def _top_k_descending(scores: np.ndarray, k: int) -> np.ndarray:
    if k >= scores.shape[0]:
        return np.argsort(-scores, kind="stable")
    candidates = np.argpartition(-scores, k - 1)[:k]
    return candidates[np.argsort(-scores[candidates], kind="stable")]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


class ProposalPostprocessor:
    """RPN head outputs of every level -> proposals [R, 4] (R <= post_nms_top_n), by decreasing score."""

    def __init__(self, levels: Sequence[LevelSpec], rpn: RpnSpec):
        self.rpn = rpn
        self.anchors = all_level_anchors(levels)  # once, at load

    def __call__(self, objectness: Sequence[np.ndarray], deltas: Sequence[np.ndarray],
                 image_size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
        boxes_per_level: List[np.ndarray] = []
        logits_per_level: List[np.ndarray] = []
        level_ids: List[np.ndarray] = []
        for index, (obj, delta, anchors) in enumerate(zip(objectness, deltas, self.anchors)):
            num_anchors = obj.shape[0]
            # [A, H, W] -> (h, w, a) order, the order of the anchors
            logits = np.ascontiguousarray(obj.transpose(1, 2, 0)).reshape(-1)
            top = _top_k_descending(logits, min(self.rpn.pre_nms_top_n, logits.shape[0]))
            grid_h, grid_w = delta.shape[1:]
            level_deltas = delta.reshape(num_anchors, 4, grid_h, grid_w).transpose(2, 3, 0, 1).reshape(-1, 4)
            boxes_per_level.append(decode_boxes(level_deltas[top], anchors[top], self.rpn.box_coder_weights)[:, 0, :])
            logits_per_level.append(logits[top])
            level_ids.append(np.full(top.shape[0], index, dtype=np.int64))
        boxes = clip_boxes(np.concatenate(boxes_per_level), *image_size)
        scores = _sigmoid(np.concatenate(logits_per_level))
        levels = np.concatenate(level_ids)
        keep = keep_large_boxes(boxes, self.rpn.min_size) & (scores >= self.rpn.score_thresh)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, self.rpn.nms_thresh)[: self.rpn.post_nms_top_n]
        return boxes[keep], scores[keep]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class DetectionPostprocessor:
    """Stage 2 outputs -> final detections (class-wise decode, threshold, NMS, top detections)."""

    def __init__(self, roi: RoiSpec):
        self.roi = roi

    def __call__(self, class_logits: np.ndarray, box_regression: np.ndarray, proposals: np.ndarray,
                 image_size: Tuple[int, int]) -> RawDetections:
        num_classes = class_logits.shape[1]
        boxes = clip_boxes(decode_boxes(box_regression, proposals, self.roi.box_coder_weights), *image_size)
        scores = _softmax(class_logits.astype(np.float32, copy=False))
        labels = np.broadcast_to(np.arange(num_classes, dtype=np.int64), scores.shape)
        # drop the background column, then one candidate per (proposal, class)
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)
        keep = scores > self.roi.score_thresh
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = keep_large_boxes(boxes, 1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.roi.nms_thresh)[: self.roi.detections_per_img]
        return RawDetections(boxes=boxes[keep], scores=scores[keep], labels=labels[keep])
