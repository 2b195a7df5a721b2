"""Matching two detection sets the way the fidelity criteria are stated."""
from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def matched(ref, ours, min_score: float, min_iou: float = 0.99, max_score_diff: float = 1e-3) -> np.ndarray:
    """For each of ref's detections with score >= min_score (in ref's order): whether ours has one
    matched to it one-to-one (same label, IoU >= min_iou, |score difference| <= max_score_diff;
    each of ours used at most once, the best IoU among those left)."""
    ref_boxes, ref_scores, ref_labels = ref
    our_boxes, our_scores, our_labels = ours
    wanted = np.nonzero(np.asarray(ref_scores) >= min_score)[0]
    ious = iou_matrix(ref_boxes, our_boxes) if len(our_boxes) else np.zeros((len(ref_boxes), 0))
    used = np.zeros(len(our_boxes), dtype=bool)
    found = np.zeros(len(wanted), dtype=bool)
    for k, i in enumerate(wanted):
        ok = (~used) & (our_labels == ref_labels[i]) & (ious[i] >= min_iou) & (np.abs(our_scores - ref_scores[i]) <= max_score_diff)
        candidates = np.nonzero(ok)[0]
        if candidates.size:
            used[candidates[np.argmax(ious[i, candidates])]] = True
            found[k] = True
    return found


def matched_share(ref, ours, min_score: float, min_iou: float = 0.99, max_score_diff: float = 1e-3) -> float:
    """Share of ref's detections (score >= min_score) matched one-to-one by ours (same label, IoU, score)."""
    found = matched(ref, ours, min_score, min_iou, max_score_diff)
    return float(found.mean()) if found.size else 1.0


def found_objects(boxes, labels, detections, min_score: float, min_iou: float = 0.5) -> np.ndarray:
    """For each ground-truth object: whether `detections` (boxes, scores, labels) scoring at least
    min_score find it, one detection per object, same label, IoU >= min_iou (COCO's AP50 criterion)."""
    det_boxes, det_scores, det_labels = detections
    keep = np.asarray(det_scores) >= min_score
    truth = (np.asarray(boxes, np.float32).reshape(-1, 4), np.ones(len(labels), np.float32), np.asarray(labels))
    # ground truth scores 1 and any score in [0, 1] is within 1 of it: the score plays no part
    return matched(truth, (det_boxes[keep], det_scores[keep], det_labels[keep]), 0.0, min_iou, 1.0)


def assert_same_sequence(ref_boxes, ref_scores, our_boxes, our_scores, box_tol=1e-3, score_tol=1e-5):
    """Same boxes and scores in the same order, where entries with (nearly) tied scores may swap."""
    assert len(ref_scores) == len(our_scores), f"{len(ref_scores)} reference entries vs {len(our_scores)}"
    np.testing.assert_allclose(our_scores, ref_scores, atol=score_tol, rtol=0)
    for i in range(len(ref_scores)):
        if np.abs(our_boxes[i] - ref_boxes[i]).max() <= box_tol:
            continue
        tied = np.nonzero(np.abs(ref_scores - ref_scores[i]) <= score_tol)[0]
        assert any(np.abs(our_boxes[i] - ref_boxes[j]).max() <= box_tol for j in tied), (
            f"entry {i}: box {our_boxes[i]} matches no reference box of the same score")
