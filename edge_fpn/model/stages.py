"""The stage split: stage 1 (backbone + FPN + RPN head) and stage 2 (multi-scale RoIAlign + box head).

Both are plain torch modules wrapping the parts of a torchvision ``FasterRCNN``, so they share its
weights and produce the same numbers. Everything data-dependent (anchors, top-k, NMS) is left to
the runtime, which is what lets both graphs export with static shapes.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
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


# the largest stack of pooled levels (bytes of float32) worth one RoIAlign instead of one per level
STACKED_LEVELS_LIMIT = 32 << 20


class MultiLevelRoiAlign(nn.Module):
    """torchvision's MultiScaleRoIAlign on R boxes, as a static graph.

    torchvision assigns each box to one level and scatters the pooled results back with
    index_put, which exports as NonZero/ScatterND. Here, static and exact:

    - stacked: the pooled levels are padded at the top and left to the
      largest one's size and stacked on the batch axis; each box is scaled by its
      level's power-of-two scale (exact, as torchvision's box * spatial_scale), shifted by that
      padding, and pooled from its level's batch item: one RoIAlign of R boxes, torchvision's own
      sampling work. The padding goes top-left so that each level's bottom and right edges stay
      the edges of its item, where RoIAlign's clamping and zeroing rules apply as in torchvision
      (a box thinner than a pixel samples past the edge).
      Levels are stacked from the smallest up while the stack stays under `stack_limit`.
    - masked: each larger level (ResNet-50 at 800: P2, whose stack would copy four 200x200 maps)
      gets a RoIAlign of every box, and a 0/1 mask keeps the boxes of that level; so does the
      stack's result. ResNet-50 at 800 pools twice per box instead of four times.
    """

    def __init__(self, model: nn.Module, image_size: Tuple[int, int],
                 pooled_feature_sizes: Sequence[Tuple[int, int]], stack_limit: int = STACKED_LEVELS_LIMIT):
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
        sizes = [(int(h), int(w)) for h, w in pooled_feature_sizes[: len(self.scales)]]
        channels = int(getattr(model.backbone, "out_channels", 256))
        # levels from `split` on are stacked: the most (smallest first) whose stack fits the limit
        self.split = next((first for first in range(len(sizes) - 1)
                           if _stack_bytes(sizes[first:], channels) <= stack_limit), len(sizes))
        stacked = sizes[self.split:] or sizes[-1:]
        self.stack_size = (max(h for h, _ in stacked), max(w for _, w in stacked))
        # per stacked level: its scale on every coordinate, and the (left, top) padding its boxes move by
        self.register_buffer("box_scale", torch.tensor([[s] * 4 for s in self.scales[len(sizes) - len(stacked):]],
                                                       dtype=torch.float32), persistent=False)
        shifts = [[float(self.stack_size[1] - w), float(self.stack_size[0] - h)] * 2 for h, w in stacked]
        self.register_buffer("box_shift", torch.tensor(shifts, dtype=torch.float32), persistent=False)
        self.canonical_scale = float(getattr(pooler, "canonical_scale", 224))
        self.canonical_level = float(getattr(pooler, "canonical_level", 4))
        self.eps = 1e-6

    def masked_levels(self, rois: torch.Tensor, level: torch.Tensor, features: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
        """The levels pooled on their own (the first `split`): one RoIAlign each on every RoI
        (batch index, x1, y1, x2, y2), masked to the RoIs of that level and summed; None if none."""
        pooled = None
        for index in range(min(self.split, len(self.scales))):
            part = roi_align(features[index], rois, self.output_size, spatial_scale=self.scales[index],
                             sampling_ratio=self.sampling_ratio, aligned=False)
            part = part * (level == index).to(part.dtype).reshape(-1, 1, 1, 1)
            pooled = part if pooled is None else pooled + part
        return pooled

    def level_of_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """torchvision's LevelMapper, as float ops."""
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        s = torch.sqrt(area)
        level = torch.floor(self.canonical_level + torch.log2(s / self.canonical_scale) + self.eps)
        return torch.clamp(level, min=self.k_min, max=self.k_max) - self.k_min

    def forward(self, boxes: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        level = self.level_of_boxes(boxes)
        levels = len(self.scales)
        # the large levels, one RoIAlign each on every box, masked to the boxes of that level
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        pooled = self.masked_levels(rois, level, features)
        if self.split < levels:
            part = self._stacked(boxes, level, features[self.split: levels])
            if self.split:  # the boxes of the large levels were pooled above
                part = part * (level >= self.split).to(part.dtype).reshape(-1, 1, 1, 1)
            pooled = part if pooled is None else pooled + part
        return pooled

    def _stacked(self, boxes: torch.Tensor, level: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """One RoIAlign of every box on the stacked levels (a box of a larger level samples the
        first stacked level; the caller masks it out)."""
        height, width = self.stack_size
        stack = torch.cat([_pad_top_left(f, height, width) for f in features], dim=0)
        item = torch.clamp(level - self.split, min=0) if self.split else level
        index = item.to(torch.int64)
        moved = boxes * self.box_scale[index] + self.box_shift[index]
        rois = torch.cat([item[:, None], moved], dim=1)
        return roi_align(stack, rois, self.output_size, spatial_scale=1.0, sampling_ratio=self.sampling_ratio,
                         aligned=False)


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


def _stack_bytes(sizes: Sequence[Tuple[int, int]], channels: int) -> int:
    """float32 bytes of these levels padded to the largest of them and stacked."""
    return 4 * channels * len(sizes) * max(h for h, _ in sizes) * max(w for _, w in sizes)


def _pad_top_left(feature: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left = height - int(feature.shape[2]), width - int(feature.shape[3])
    return F.pad(feature, (left, 0, top, 0)) if top or left else feature


def _infer_scale(feature_size: Tuple[int, int], image_size: Tuple[int, int]) -> float:
    approx_scale = float(feature_size[0]) / float(image_size[0])
    return 2.0 ** float(torch.tensor(approx_scale).log2().round())
