"""The engine layout: one static graph from the letterboxed uint8 frame to padded detections.

``DetectorGraph`` wraps the parts of a torchvision ``FasterRCNN`` (same weights, same numbers) and
writes every data-dependent step of torchvision's postprocessing with fixed sizes:

- per level: top-k with a static K, decode against constant anchors, clip, and a mask (score -1)
  for small and low-scoring boxes, which the NMS score threshold then drops;
- ONE NMS (ONNX ``NonMaxSuppression``) over all levels with the levels as classes, which is
  torchvision's ``batched_nms`` by level; the kept boxes found by comparing the selected indices
  with ``arange(K)`` (no Scatter: TensorRT refuses it), the best post_nms_top_n proposals by one
  more top-k, padded, with a validity mask;
- multi-scale RoIAlign (every level, selected by a mask, as in the host layout), box head,
  predictor;
- softmax, class-wise decode, clip, score threshold, then the best ``detection_candidates``
  (proposal, class) pairs (**the one cap that can differ from torchvision**, which sends every
  pair above the score threshold to NMS; TensorRT's NMS considers at most 5000 boxes per image
  and top-k at most 3840; the default, 2000, keeps the final NMS small and changed no detection
  of the tested models), class-wise NMS (as one class, each class's boxes moved apart by a class
  offset, as torchvision's batched_nms does), the best ``detections_per_img``.

The postprocessing modules are attributes named ``proposals``, ``roi_pool`` and ``detections``, so
their ONNX nodes carry those scopes (graph_names.POSTPROCESS_SCOPES) and the builder keeps them FP32.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from ..bundle import LevelSpec, RoiSpec, RpnSpec
from ..graph_names import DEFAULT_DETECTION_CANDIDATES
from ..runtime.anchors import level_anchors
from torchvision.ops import roi_align

from .stages import MultiLevelRoiAlign, _pad_top_left

# a masked score: below every real score (sigmoid and softmax are >= 0) and below the NMS threshold
MASKED = -1.0
NMS_SCORE_THRESHOLD = -0.5


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX NonMaxSuppression with constant parameters, exported as that one node.

    torchvision's own symbolic exports max_output_boxes_per_class as INT64_MAX and no score
    threshold; the engine needs the mask threshold and a count that fits TensorRT's int32.
    Eager mode (used for tracing and as a reference) gives the ONNX semantics: per class, boxes
    whose score exceeds the threshold, greedy by decreasing score, rows of (batch, class, box).
    """

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_output: int, iou_threshold: float,
                score_threshold: float) -> torch.Tensor:
        from torchvision.ops import nms
        rows = []
        for item in range(scores.shape[0]):
            for cls in range(scores.shape[1]):
                candidates = torch.nonzero(scores[item, cls] > score_threshold)[:, 0]
                kept = candidates[nms(boxes[item, candidates], scores[item, cls, candidates], iou_threshold)][:max_output]
                rows.append(torch.stack([torch.full_like(kept, item), torch.full_like(kept, cls), kept], dim=1))
        return torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_output: int, iou_threshold: float, score_threshold: float):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_output], dtype=torch.int64)),
                    g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)))


def _kept_mask(boxes: torch.Tensor, class_scores: torch.Tensor, max_output: int, iou_threshold: float) -> torch.Tensor:
    """NMS -> a [K] mask of kept boxes (K static): selected box indices compared with arange(K)."""
    count = int(boxes.shape[0])
    selected = _NonMaxSuppression.apply(boxes[None], class_scores[None], max_output, iou_threshold,
                                        NMS_SCORE_THRESHOLD)
    # int32 on both sides: an INT64 arange constant costs TensorRT memory and a cast at build time;
    # "any" as a float sum (an empty selection sums to 0): float reductions import on every TensorRT
    hits = selected[:, 2:3].to(torch.int32) == torch.arange(count, dtype=torch.int32)[None, :]
    return hits.to(torch.float32).sum(dim=0) > 0.5


def _kept_masks(boxes: torch.Tensor, class_scores: torch.Tensor, max_output: int, iou_threshold: float) -> torch.Tensor:
    """Batched NMS (boxes [N, K, 4], class scores [N, C, K]; ONE node, the batch axis ONNX's own)
    -> a [N, K] mask of kept boxes. Still no Scatter: the selected rows' box indices compared with
    arange(K) give [M, K], their image indices compared with arange(N) give [M, N], and one MatMul
    [N, M] x [M, K] counts each (image, box) pair (0/1 sums, exact in float32)."""
    count, items = int(boxes.shape[1]), int(boxes.shape[0])
    selected = _NonMaxSuppression.apply(boxes, class_scores, max_output, iou_threshold, NMS_SCORE_THRESHOLD)
    box_hits = (selected[:, 2:3].to(torch.int32) == torch.arange(count, dtype=torch.int32)[None, :]).to(torch.float32)
    item_hits = (selected[:, 0:1].to(torch.int32) == torch.arange(items, dtype=torch.int32)[None, :]).to(torch.float32)
    return torch.matmul(item_hits.transpose(0, 1), box_hits) > 0.5


def _class_offsets(labels: torch.Tensor, longest_side: torch.Tensor) -> torch.Tensor:
    """Class-wise NMS as ONE class: each class's boxes moved (label x (longest side + 1)) px along
    both axes, so that boxes of two classes never overlap (torchvision's batched_nms does the same).
    One class, not one per label: ONNX Runtime's CUDA NMS runs each class separately and copies its
    count to the host (onnxruntime cuda/object_detection/non_max_suppression_impl.h), 90 waits a
    frame for COCO's classes. The kept boxes and their order are the same (a class's boxes are never
    suppressed by another's); the postprocessing is FP32 in every engine, where a moved box is
    rounded to 1/128 px at 90 classes of an 800 px image (IoU moves by ~1e-4; torchvision rounds
    the same way in its batched_nms)."""
    return labels.to(torch.float32) * (longest_side.to(torch.float32) + 1.0)


def _gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [N, K, ...] at per-image indices [N, J] -> [N, J, ...]: one flat Gather (offsets
    n * K are constants), not GatherElements."""
    items, count = int(values.shape[0]), int(values.shape[1])
    offsets = (torch.arange(items, dtype=torch.int64) * count)[:, None]
    flat = values.reshape((items * count,) + tuple(values.shape[2:]))
    return flat[(index + offsets).reshape(-1)].reshape(tuple(index.shape) + tuple(values.shape[2:]))


def _clip_batch(boxes: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """_clip per image: boxes [N, ..., 4] against image_size [N, 2]."""
    upper = torch.stack([image_size[:, 1], image_size[:, 0]] * 2, dim=1)
    upper = upper.reshape((int(upper.shape[0]),) + (1,) * (boxes.dim() - 2) + (4,))
    return torch.minimum(torch.clamp(boxes, min=0.0), upper)


def _clip(boxes: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """clip_boxes_to_image against a runtime (h, w): x into [0, w], y into [0, h]."""
    upper = torch.stack([image_size[1], image_size[0]] * 2)
    return torch.minimum(torch.clamp(boxes, min=0.0), upper)


def _large(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """remove_small_boxes as a mask."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


class ProposalStep(nn.Module):
    """RPN head outputs -> (proposals [P, 4], their scores [P]; -1 marks padding); P = min(post_nms_top_n, candidates)."""

    def __init__(self, levels: Sequence[LevelSpec], rpn: RpnSpec, box_coder: nn.Module):
        super().__init__()
        self.rpn = rpn
        self.box_coder = box_coder
        counts = []
        for index, level in enumerate(levels):
            anchors = torch.from_numpy(level_anchors(level))
            self.register_buffer(f"anchors_{index}", anchors, persistent=False)
            counts.append(min(rpn.pre_nms_top_n, int(anchors.shape[0])))
        self.num_levels = len(levels)
        # ONE NMS over all levels with the levels as classes (torchvision's batched_nms by level):
        # row l of this constant [L, sum K_l] mask marks level l's candidates. One NMS layer instead
        # of one per level: NMS layers are slow on TensorRT 10.0-10.6 (NVIDIA/TensorRT#4248).
        level_of = torch.cat([torch.full((count,), index, dtype=torch.int32) for index, count in enumerate(counts)])
        self.register_buffer("level_rows", level_of[None, :] == torch.arange(len(counts), dtype=torch.int32)[:, None],
                             persistent=False)
        self.max_per_level = max(counts)

    def forward(self, objectness: List[torch.Tensor], deltas: List[torch.Tensor],
                image_size: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if image_size.dim() == 2:  # N images: called through the module, so the nodes keep their scope
            return self.forward_batch(objectness, deltas, image_size)
        all_boxes, all_scores = [], []
        for index in range(self.num_levels):
            obj, delta = objectness[index][0], deltas[index][0]
            num_anchors, grid_h, grid_w = obj.shape
            logits = obj.permute(1, 2, 0).reshape(-1)  # (y, x, anchor): the anchors' order
            top_logits, top = logits.topk(min(self.rpn.pre_nms_top_n, int(logits.shape[0])))
            level_deltas = delta.reshape(num_anchors, 4, grid_h, grid_w).permute(2, 3, 0, 1).reshape(-1, 4)
            anchors = getattr(self, f"anchors_{index}")
            boxes = _clip(self.box_coder.decode_single(level_deltas[top], anchors[top]), image_size)
            # 1 / (1 + exp(-x)) spelled out: ONNX Runtime's Sigmoid kernel is an approximation that
            # saturates differently, and which scores tie at 1.0 decides NMS's order among them
            scores = 1.0 / (1.0 + torch.exp(-top_logits))
            ok = _large(boxes, self.rpn.min_size) & (scores >= self.rpn.score_thresh)
            all_boxes.append(boxes)
            all_scores.append(torch.where(ok, scores, torch.full_like(scores, MASKED)))
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        level_scores = torch.where(self.level_rows, scores[None, :], torch.full_like(self.level_rows, MASKED, dtype=scores.dtype))
        kept = _kept_mask(boxes, level_scores, self.max_per_level, self.rpn.nms_thresh)
        scores = torch.where(kept, scores, torch.full_like(scores, MASKED))
        scores, best = scores.topk(min(self.rpn.post_nms_top_n, int(boxes.shape[0])))
        return boxes[best], scores

    def forward_batch(self, objectness: List[torch.Tensor], deltas: List[torch.Tensor],
                      image_size: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """forward for N images at once (image_size [N, 2]): every step per image (top-k along the
        image's row, NMS with the batch axis) -> (proposals [N, P, 4], scores [N, P])."""
        all_boxes, all_scores = [], []
        for index in range(self.num_levels):
            obj, delta = objectness[index], deltas[index]
            items, num_anchors, grid_h, grid_w = obj.shape
            logits = obj.permute(0, 2, 3, 1).reshape(items, -1)  # per image: (y, x, anchor)
            top_logits, top = logits.topk(min(self.rpn.pre_nms_top_n, int(logits.shape[1])), dim=1)
            level_deltas = delta.reshape(items, num_anchors, 4, grid_h, grid_w).permute(0, 3, 4, 1, 2)
            level_deltas = _gather_rows(level_deltas.reshape(items, -1, 4), top)
            anchors = getattr(self, f"anchors_{index}")[top.reshape(-1)]
            boxes = self.box_coder.decode_single(level_deltas.reshape(-1, 4), anchors).reshape(items, -1, 4)
            boxes = _clip_batch(boxes, image_size)
            scores = 1.0 / (1.0 + torch.exp(-top_logits))
            ok = _large(boxes, self.rpn.min_size) & (scores >= self.rpn.score_thresh)
            all_boxes.append(boxes)
            all_scores.append(torch.where(ok, scores, torch.full_like(scores, MASKED)))
        boxes, scores = torch.cat(all_boxes, dim=1), torch.cat(all_scores, dim=1)
        level_scores = torch.where(self.level_rows[None], scores[:, None, :],
                                   torch.full_like(self.level_rows, MASKED, dtype=scores.dtype)[None])
        kept = _kept_masks(boxes, level_scores, self.max_per_level, self.rpn.nms_thresh)
        scores = torch.where(kept, scores, torch.full_like(scores, MASKED))
        scores, best = scores.topk(min(self.rpn.post_nms_top_n, int(boxes.shape[1])), dim=1)
        return _gather_rows(boxes, best), scores


class DetectionStep(nn.Module):
    """Box head outputs on P proposals -> padded (boxes [D, 4], scores [D], labels [D], num [1])."""

    def __init__(self, roi: RoiSpec, box_coder: nn.Module, num_classes: int, candidates: int):
        super().__init__()
        self.roi = roi
        self.box_coder = box_coder
        self.num_classes = num_classes
        self.candidates = candidates

    def forward(self, class_logits: torch.Tensor, box_regression: torch.Tensor, proposals: torch.Tensor,
                proposal_scores: torch.Tensor, image_size: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if proposals.dim() == 3:  # N images (see ProposalStep.forward)
            return self.forward_batch(class_logits, box_regression, proposals, proposal_scores, image_size)
        count, classes = (int(d) for d in class_logits.shape)
        boxes = self.box_coder.decode_single(box_regression, proposals).reshape(count, classes, 4)
        boxes = _clip(boxes, image_size)[:, 1:].reshape(-1, 4)  # no background column
        scores = torch.softmax(class_logits, -1)[:, 1:]
        # padded proposals first, on [P, classes - 1] (a broadcast select, no boolean expand)
        padded = proposal_scores[:, None] < NMS_SCORE_THRESHOLD
        scores = torch.where(padded, torch.full_like(scores, MASKED), scores).reshape(-1)
        labels = torch.arange(1, classes, dtype=torch.int32).repeat(count)  # int32: TensorRT's own
        ok = (scores > self.roi.score_thresh) & _large(boxes, 1e-2)
        scores = torch.where(ok, scores, torch.full_like(scores, MASKED))
        # the named cap: the best `candidates` pairs go to NMS (torchvision sends them all)
        scores, best = scores.topk(min(self.candidates, int(scores.shape[0])))
        boxes, labels = boxes[best], labels[best]
        apart = boxes + _class_offsets(labels, image_size.max())[:, None]
        kept = _kept_mask(apart, scores[None, :], self.roi.detections_per_img, self.roi.nms_thresh)
        scores = torch.where(kept, scores, torch.full_like(scores, MASKED))
        scores, best = scores.topk(min(self.roi.detections_per_img, int(scores.shape[0])))
        found = scores > NMS_SCORE_THRESHOLD
        boxes = boxes[best] * found.to(torch.float32)[:, None]  # padding rows are zero
        labels = torch.where(found, labels[best], torch.zeros_like(labels[best]))
        scores = torch.where(found, scores, torch.zeros_like(scores))
        count = found.to(torch.float32).sum().to(torch.int32)  # a float reduction, as everywhere here
        return boxes, scores, labels, count.reshape(1)

    def forward_batch(self, class_logits: torch.Tensor, box_regression: torch.Tensor, proposals: torch.Tensor,
                      proposal_scores: torch.Tensor, image_size: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """forward for N images (proposals [N, P, 4], image_size [N, 2]; the box head's rows are
        image-major) -> boxes [N, D, 4], scores [N, D], labels [N, D], num_detections [N]."""
        items, count = int(proposals.shape[0]), int(proposals.shape[1])
        classes = int(class_logits.shape[1])
        boxes = self.box_coder.decode_single(box_regression, proposals.reshape(-1, 4)).reshape(items, count, classes, 4)
        boxes = _clip_batch(boxes, image_size)[:, :, 1:].reshape(items, -1, 4)
        scores = torch.softmax(class_logits, -1)[:, 1:].reshape(items, count, classes - 1)
        padded = proposal_scores[:, :, None] < NMS_SCORE_THRESHOLD
        scores = torch.where(padded, torch.full_like(scores, MASKED), scores).reshape(items, -1)
        labels = torch.arange(1, classes, dtype=torch.int32).repeat(count)  # the same for every image
        ok = (scores > self.roi.score_thresh) & _large(boxes, 1e-2)
        scores = torch.where(ok, scores, torch.full_like(scores, MASKED))
        scores, best = scores.topk(min(self.candidates, int(scores.shape[1])), dim=1)
        boxes, labels = _gather_rows(boxes, best), labels[best]
        apart = boxes + _class_offsets(labels, image_size.max(dim=1, keepdim=True).values)[:, :, None]
        kept = _kept_masks(apart, scores[:, None, :], self.roi.detections_per_img, self.roi.nms_thresh)
        scores = torch.where(kept, scores, torch.full_like(scores, MASKED))
        scores, best = scores.topk(min(self.roi.detections_per_img, int(scores.shape[1])), dim=1)
        found = scores > NMS_SCORE_THRESHOLD
        boxes = _gather_rows(boxes, best) * found.to(torch.float32)[:, :, None]
        labels = _gather_rows(labels, best)
        labels = torch.where(found, labels, torch.zeros_like(labels))
        scores = torch.where(found, scores, torch.zeros_like(scores))
        return boxes, scores, labels, found.to(torch.float32).sum(dim=1).to(torch.int32)


class BatchedRoiAlign(MultiLevelRoiAlign):
    """MultiLevelRoiAlign on the boxes of N images (image-major): each box pools from its own
    image (RoIAlign's batch index), and the stacked levels are stacked level-major, N per level."""

    def __init__(self, model: nn.Module, image_size: Tuple[int, int], pooled_feature_sizes: Sequence[Tuple[int, int]],
                 batch: int):
        super().__init__(model, image_size, pooled_feature_sizes)
        self.batch = int(batch)

    def forward(self, boxes: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        per_image = int(boxes.shape[0]) // self.batch
        image = torch.arange(self.batch, dtype=torch.float32).repeat_interleave(per_image)
        level = self.level_of_boxes(boxes)
        levels = len(self.scales)
        rois = torch.cat([image[:, None], boxes], dim=1)  # each box pools from its own image
        pooled = self.masked_levels(rois, level, features)
        if self.split < levels:
            height, width = self.stack_size
            stack = torch.cat([_pad_top_left(f, height, width) for f in features[self.split: levels]], dim=0)
            item = torch.clamp(level - self.split, min=0) if self.split else level
            index = item.to(torch.int64)
            moved = boxes * self.box_scale[index] + self.box_shift[index]
            part = roi_align(stack, torch.cat([(item * self.batch + image)[:, None], moved], dim=1), self.output_size,
                             spatial_scale=1.0, sampling_ratio=self.sampling_ratio, aligned=False)
            if self.split:
                part = part * (level >= self.split).to(part.dtype).reshape(-1, 1, 1, 1)
            pooled = part if pooled is None else pooled + part
        return pooled


class DetectorGraph(nn.Module):
    """(image uint8 [1, H, W, 3] BGR, image_size float [2]) -> (boxes, scores, labels, num_detections).

    batch N > 1: (image [N, H, W, 3], image_size [N, 2]) -> (boxes [N, D, 4], scores [N, D],
    labels [N, D], num_detections [N]); every postprocessing step per image (top-k along each
    image's row, NonMaxSuppression's batch axis, RoIAlign with per-image batch indices); an image
    whose image_size is (0, 0) gives no detections (padding for a missing camera). The batch-1
    graph is left exactly as it was."""

    def __init__(self, model: nn.Module, input_size: Tuple[int, int], levels: Sequence[LevelSpec],
                 rpn: RpnSpec, roi: RoiSpec, pooled_feature_sizes: Sequence[Tuple[int, int]],
                 candidates: int = DEFAULT_DETECTION_CANDIDATES, batch: int = 1):
        super().__init__()
        if int(batch) < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.batch = int(batch)
        self.input_size = tuple(input_size)
        transform = model.transform
        self.register_buffer("mean", torch.tensor(transform.image_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(transform.image_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head
        self.proposals = ProposalStep(levels, rpn, model.rpn.box_coder)
        self.roi_pool = MultiLevelRoiAlign(model, input_size, pooled_feature_sizes) if self.batch == 1 else \
            BatchedRoiAlign(model, input_size, pooled_feature_sizes, self.batch)
        self.box_head = model.roi_heads.box_head
        self.box_predictor = model.roi_heads.box_predictor
        num_classes = int(model.roi_heads.box_predictor.cls_score.out_features)
        self.detections = DetectionStep(roi, model.roi_heads.box_coder, num_classes, candidates)
        self.pooled_names = set(model.roi_heads.box_roi_pool.featmap_names)

    def normalize(self, image: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
        """BGR uint8 NHWC -> torchvision's normalized RGB NCHW, zero outside the resized frame."""
        # Cast first: TensorRT takes UINT8 only as network I/O, and every UINT8 input must feed a
        # Cast directly (its parsers reject UINT8 into Transpose, Gather or any other layer)
        x = image.to(torch.float32).permute(0, 3, 1, 2)[:, [2, 1, 0]] / 255.0
        x = (x - self.mean) / self.std
        height, width = self.input_size
        if self.batch > 1:  # image_size [N, 2]: a mask per image
            rows = (torch.arange(height, dtype=torch.float32)[None, :] < image_size[:, 0:1]).to(torch.float32)
            cols = (torch.arange(width, dtype=torch.float32)[None, :] < image_size[:, 1:2]).to(torch.float32)
            return x * (rows[:, None, :, None] * cols[:, None, None, :])
        rows = (torch.arange(height, dtype=torch.float32) < image_size[0]).to(torch.float32)
        cols = (torch.arange(width, dtype=torch.float32) < image_size[1]).to(torch.float32)
        return x * (rows[:, None] * cols[None, :])

    def forward(self, image: torch.Tensor, image_size: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(self.normalize(image, image_size))
        objectness, deltas = self.rpn_head(list(features.values()))
        if self.batch > 1:
            proposals, proposal_scores = self.proposals(objectness, deltas, image_size)
            maps = [feature for name, feature in features.items() if name in self.pooled_names]
            pooled = self.roi_pool(proposals.reshape(-1, 4), *maps[: len(self.roi_pool.scales)])
            class_logits, box_regression = self.box_predictor(self.box_head(pooled))
            return self.detections(class_logits, box_regression, proposals, proposal_scores, image_size)
        proposals, proposal_scores = self.proposals(objectness, deltas, image_size)
        # as MultiScaleRoIAlign: the backbone's features that it names, in the backbone's order
        maps = [feature for name, feature in features.items() if name in self.pooled_names]
        pooled = self.roi_pool(proposals, *maps[: len(self.roi_pool.scales)])
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        return self.detections(class_logits, box_regression, proposals, proposal_scores, image_size)


def example_inputs(input_size: Tuple[int, int], batch: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """A mid-grey frame filling the engine input (per batch item): the inputs export traces with."""
    image = torch.full((batch, input_size[0], input_size[1], 3), 114, dtype=torch.uint8)
    size = torch.tensor([float(input_size[0]), float(input_size[1])])
    return image, (size if batch == 1 else size[None].repeat(batch, 1))
