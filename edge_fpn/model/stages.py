"""The stage split: stage 1 (backbone + FPN + RPN head) and stage 2 (multi-scale RoIAlign + box head).

Both are plain torch modules wrapping the parts of a torchvision ``FasterRCNN``, so they share its
weights and produce the same numbers. Everything data-dependent (anchors, top-k, NMS) is left to
the runtime, which is what lets both graphs export with static shapes.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from torchvision.ops import roi_align


class Stage1(nn.Module):
    """Backbone + FPN + RPN head: returns features, objectness and deltas of every level."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = list(self.backbone(images).values())
        objectness, deltas = self.rpn_head(features)
        outputs: List[torch.Tensor] = []
        for feature, obj, delta in zip(features, objectness, deltas):
            # batch 1: drop the batch axis of the head outputs, the runtime works per image
            outputs += [feature, obj[0], delta[0]]
        return tuple(outputs)


class MultiLevelRoiAlign(nn.Module):
    """torchvision's MultiScaleRoIAlign on R boxes, as a static graph.

    torchvision assigns each box to one level and scatters the pooled results back with
    index_put, which exports as NonZero/ScatterND. Here RoIAlign runs on every level and a 0/1
    mask picks each box's level: same numbers, static graph.
    """

    def __init__(self, model: nn.Module, image_size: Tuple[int, int],
                 pooled_feature_sizes: Sequence[Tuple[int, int]]):
        super().__init__()
        pooler = model.roi_heads.box_roi_pool
        self.output_size = tuple(pooler.output_size)
        self.sampling_ratio = int(pooler.sampling_ratio)
        # torchvision infers each level's scale as 2 ** round(log2(feature / image)), see
        # MultiScaleRoIAlign._infer_scale; the level range follows from the first and last scale
        self.scales = [_infer_scale(size, image_size) for size in pooled_feature_sizes]
        self.k_min = int(-math.log2(self.scales[0]))
        self.k_max = int(-math.log2(self.scales[-1]))
        # the mapper only ever picks levels 0..k_max-k_min; features past that (MobileNet's two
        # pooled maps share one scale) would cost a RoIAlign whose result is always masked out
        self.scales = self.scales[: self.k_max - self.k_min + 1]
        self.canonical_scale = float(getattr(pooler, "canonical_scale", 224))
        self.canonical_level = float(getattr(pooler, "canonical_level", 4))
        self.eps = 1e-6

    def level_of_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """torchvision's LevelMapper, as float ops."""
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        s = torch.sqrt(area)
        level = torch.floor(self.canonical_level + torch.log2(s / self.canonical_scale) + self.eps)
        return torch.clamp(level, min=self.k_min, max=self.k_max) - self.k_min

    def forward(self, boxes: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        level = self.level_of_boxes(boxes)
        batch_index = torch.zeros_like(boxes[:, :1])
        rois = torch.cat([batch_index, boxes], dim=1)
        pooled = None
        for index, (feature, scale) in enumerate(zip(features, self.scales)):
            level_pooled = roi_align(feature, rois, self.output_size, spatial_scale=scale,
                                     sampling_ratio=self.sampling_ratio, aligned=False)
            mask = (level == index).to(level_pooled.dtype).reshape(-1, 1, 1, 1)
            pooled = level_pooled * mask if pooled is None else pooled + level_pooled * mask
        return pooled


class Stage2(nn.Module):
    """Multi-scale RoIAlign + box head + predictor on R proposals (R dynamic)."""

    def __init__(self, model: nn.Module, image_size: Tuple[int, int],
                 pooled_feature_sizes: Sequence[Tuple[int, int]]):
        super().__init__()
        self.roi_pool = MultiLevelRoiAlign(model, image_size, pooled_feature_sizes)
        self.box_head = model.roi_heads.box_head
        self.box_predictor = model.roi_heads.box_predictor

    @property
    def scales(self) -> List[float]:
        return self.roi_pool.scales

    def forward(self, proposals: torch.Tensor, *features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        box_features = self.box_head(self.roi_pool(proposals, *features))
        class_logits, box_regression = self.box_predictor(box_features)
        return class_logits, box_regression


def _infer_scale(feature_size: Tuple[int, int], image_size: Tuple[int, int]) -> float:
    approx_scale = float(feature_size[0]) / float(image_size[0])
    return 2.0 ** float(torch.tensor(approx_scale).log2().round())
