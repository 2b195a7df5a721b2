"""torchvision is the reference: the exported stages, the runtime's postprocessing and the whole
Detector are compared against it, for MobileNetV3-320 FPN and ResNet-50 FPN (random weights made
meaningful as reference_models.py explains)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import TEST_SIZE, textured_image
from detection_matching import assert_same_sequence, matched_share

from edge_fpn import Detector
from edge_fpn.bundle import load_manifest
from edge_fpn.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge_fpn.runtime.postprocess import DetectionPostprocessor, ProposalPostprocessor

ARCHS = ["fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn"]


def _normalized(model, image_bgr):
    x = torch.from_numpy(image_bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    mean = torch.tensor(model.transform.image_mean).view(3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(3, 1, 1)
    return ((x - mean) / std)[None]


def _relative_error(ours, ref):
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


@pytest.mark.parametrize("arch", ARCHS)
def test_stage_outputs_match_torch_modules(bundle_factory, arch):
    from edge_fpn.model.stages import Stage1, Stage2

    model, bundle = bundle_factory(arch)
    manifest = load_manifest(bundle)
    images = _normalized(model, textured_image(1, *TEST_SIZE))
    with torch.no_grad():
        ref1 = Stage1(model)(images)
    ref1 = {f"{kind}_{i // 3}": t.numpy() for i, (kind, t) in
            enumerate(zip(["features", "objectness", "deltas"] * (len(ref1) // 3), ref1))}
    ours1 = OnnxRuntimeBackend(os.path.join(bundle, "stage1.onnx"))({"images": images.numpy()})
    assert set(ours1) <= set(ref1) and len(ours1) >= 3
    # float32 in another kernel order: measured <= 8e-5 (ResNet-50), <= 6e-6 (MobileNet); a wrong
    # weight, op or layout moves outputs by far more than 1e-4
    for name, value in ours1.items():
        assert value.shape == ref1[name].shape, name
        assert _relative_error(value, ref1[name]) <= 1e-4, name

    pooled = [i for i, level in enumerate(manifest.levels) if level.pooled]
    stage2 = Stage2(model, TEST_SIZE, [tuple(manifest.levels[i].feature_shape[1:]) for i in pooled])
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 250, (37, 2)).astype(np.float32)
    wh = rng.uniform(4, 150, (37, 2)).astype(np.float32)
    proposals = np.concatenate([xy, np.minimum(xy + wh, 319)], axis=1)
    feats = [torch.from_numpy(ref1[f"features_{i}"]) for i in pooled]
    with torch.no_grad():
        ref2 = stage2(torch.from_numpy(proposals), *feats)
    ours2 = OnnxRuntimeBackend(os.path.join(bundle, "stage2.onnx"))(
        dict({"proposals": proposals}, **{f"features_{i}": ref1[f"features_{i}"] for i in pooled}))
    for name, ref in zip(["class_logits", "box_regression"], ref2):
        assert ours2[name].shape == tuple(ref.shape)
        assert _relative_error(ours2[name], ref.numpy()) <= 1e-4, name  # measured <= 6e-7


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("image_size", [(320, 320), (320, 224)])
def test_postprocessing_matches_torchvision(bundle_factory, arch, image_size):
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    model, bundle = bundle_factory(arch)
    manifest = load_manifest(bundle)
    images = _normalized(model, textured_image(2, *TEST_SIZE))
    with torch.no_grad():
        features = list(model.backbone(images).values())
        objectness, deltas = model.rpn.head(features)
        anchors = model.rpn.anchor_generator(ImageList(images, [image_size]), features)
        counts = [o[0].numel() for o in objectness]
        flat_obj, flat_deltas = concat_box_prediction_layers(objectness, deltas)
        decoded = model.rpn.box_coder.decode(flat_deltas, anchors).view(1, -1, 4)
        ref_boxes, ref_scores = model.rpn.filter_proposals(decoded, flat_obj, [image_size], counts)
    ours_boxes, ours_scores = ProposalPostprocessor(manifest.levels, manifest.rpn)(
        [o[0].numpy() for o in objectness], [d[0].numpy() for d in deltas], image_size)
    assert len(ref_boxes[0]) > 20  # 150 (MobileNet) or 1000 proposals: the comparison is not of a few
    assert_same_sequence(ref_boxes[0].numpy(), ref_scores[0].numpy(), ours_boxes, ours_scores)

    with torch.no_grad():
        feature_dict = model.backbone(images)
        pooled = model.roi_heads.box_roi_pool(feature_dict, ref_boxes, [image_size])
        class_logits, box_regression = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
        boxes, scores, labels = model.roi_heads.postprocess_detections(class_logits, box_regression, ref_boxes, [image_size])
    ours = DetectionPostprocessor(manifest.roi)(class_logits.numpy(), box_regression.numpy(), ref_boxes[0].numpy(), image_size)
    assert len(scores[0]) > 5  # 100 detections here: not a comparison of a few
    assert_same_sequence(boxes[0].numpy(), scores[0].numpy(), ours.boxes, ours.scores)
    order_ok = [np.any((np.abs(ours.scores - s) <= 1e-5) & (ours.labels == l)) for s, l in zip(scores[0].numpy(), labels[0].numpy())]
    assert all(order_ok)


def _torchvision_detect(model, image_bgr):
    x = torch.from_numpy(image_bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        out = model([x])[0]
    return out["boxes"].numpy(), out["scores"].numpy(), out["labels"].numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_detector_matches_torchvision_on_engine_sized_images(bundle_factory, arch):
    model, bundle = bundle_factory(arch)
    detector = Detector(bundle)
    # Two float implementations can disagree on an IoU that lies exactly on the NMS threshold (seed 3
    # of this suite has one at 0.5000004 for ResNet-50, and the suppressed box differs); such coin
    # flips are not fidelity errors, so these images are ones without a tie at the threshold.
    for seed in (4, 5, 6):
        image = textured_image(seed, *TEST_SIZE)
        ref = _torchvision_detect(model, image)
        d = detector(image)
        ours = (d.boxes, d.scores, d.labels)
        assert (ref[1] >= 0.05).sum() >= 10  # 100 here: the shares below are not of a few detections
        assert matched_share(ref, ours, 0.05) == 1.0
        assert matched_share(ours, ref, 0.05) == 1.0
        assert d.names == [detector.class_names[i] for i in d.labels]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("frame_size", [(240, 320), (480, 640), (400, 300)])
def test_detector_matches_torchvision_on_other_aspect_ratios(bundle_factory, arch, frame_size):
    """A static engine pads every frame to its full size, where torchvision pads only to a multiple
    of 32; with random weights (and MobileNet's squeeze-excitation averaging over the padding) that
    changes everything, so the reference is told to pad to the engine size as the engine does."""
    model, bundle = bundle_factory(arch)
    detector = Detector(bundle)
    image = textured_image(7, *frame_size)
    divisible = model.transform.size_divisible
    model.transform.size_divisible = TEST_SIZE[0]
    try:
        ref = _torchvision_detect(model, image)
    finally:
        model.transform.size_divisible = divisible
    d = detector(image)
    assert (ref[1] >= 0.3).sum() >= 5  # 100 here: the shares below are not of a few detections
    assert d.boxes[:, 2].max() <= frame_size[1] + 1e-3 and d.boxes[:, 3].max() <= frame_size[0] + 1e-3
    # measured 1.0 both ways for all six; 0.98 lets two of 100 fall to a resize rounding or an IoU
    # tie on another machine, while a wrong scale or padding back to the frame loses most of them
    assert matched_share(ref, (d.boxes, d.scores, d.labels), 0.3) >= 0.98
    assert matched_share((d.boxes, d.scores, d.labels), ref, 0.3) >= 0.98
