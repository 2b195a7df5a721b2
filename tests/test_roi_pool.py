"""The static multi-level RoIAlign (both forms) against torchvision's MultiScaleRoIAlign, including
the boxes where a shortcut would differ: thinner than a feature pixel at the bottom and right image
edges (RoIAlign stretches them to one pixel, so they sample past the level's last row)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TEST_SIZE, get_model

from edge_fpn.model.stages import MultiLevelRoiAlign


def _boxes(height, width):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, min(height, width) - 40, (60, 2))
    wh = rng.uniform(1, 250, (60, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [width, height])], axis=1)
    edge = [[width - 30, height - 2.5, width, height], [width - 0.7, 100, width, 180],
            [width - 3, height - 3, width, height], [0, height - 0.5, 60, height], [10, 10, 10.4, 300]]
    return torch.tensor(np.concatenate([boxes, edge]), dtype=torch.float32)


@pytest.mark.parametrize("stack_limit, split", [(0, 4), (1 << 40, 0), (10 << 20, 1)],
                         ids=["masked", "stacked", "largest-masked-rest-stacked"])
def test_multi_level_roi_align_equals_torchvision(reference_models, stack_limit, split):
    model = get_model(reference_models, "fasterrcnn_resnet50_fpn")
    height, width = TEST_SIZE
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, height, width))
    pooler = model.roi_heads.box_roi_pool
    names = [n for n in features if n in pooler.featmap_names]
    ours = MultiLevelRoiAlign(model, TEST_SIZE, [tuple(features[n].shape[2:]) for n in names], stack_limit=stack_limit)
    assert ours.split == split  # ResNet-50 at 320: P2..P5 of 80, 40, 20, 10 pixels, 256 channels
    boxes = _boxes(height, width)
    with torch.no_grad():
        reference = pooler(features, [boxes], [TEST_SIZE])
        pooled = ours(boxes, *[features[n] for n in names])
    assert pooled.shape == reference.shape
    # the stacked form shifts boxes by whole pixels, so sample positions round to a coarser float
    # (~3e-5 px): values then differ in the fifth decimal, never by a structural edge difference
    torch.testing.assert_close(pooled, reference, rtol=0, atol=1e-5 if not stack_limit else 1e-4)
