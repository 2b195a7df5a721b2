"""The shipped "shapes" detector: a small torchvision FasterRCNN with FPN (P2..P6).

It stays a plain ``torchvision.models.detection.FasterRCNN`` (custom parts are only passed in), so
the stage split of ``stages.py`` and every exporter treat it like any torchvision detector:
stage 1 = ``model.backbone`` + ``model.rpn.head``, stage 2 = ``model.roi_heads`` box parts.

The backbone is a narrow ResNet (BasicBlocks with BatchNorm), the FPN (64 channels) and the box
head (torchvision's ``FastRCNNConvFCHead``: one conv + one FC) are BatchNorm'd too, all trained
from scratch on the synthetic scenes of ``edge_fpn.runtime.synthetic``; the width and the
anchors suit objects of 8..192 px in a 320x320 input. BatchNorm folds into the convs on export.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Any, Dict, List, Sequence

import torch.nn as nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..errors import EdgeFpnError

# square input, a multiple of 32 (the stride of C5) so that every level's size is exact
SHAPES_INPUT_SIZE = 320
# channels of C2..C5 and of the FPN outputs
STAGE_CHANNELS = (32, 64, 128, 192)
STAGE_BLOCKS = (1, 2, 2, 1)
FPN_CHANNELS = 64
BOX_HEAD_UNITS = 256
# one anchor size per level P2..P6 (strides 4..64): 3x the stride, so an 8 px shape still
# overlaps a P2 anchor with IoU 0.44 and a 192 px one fits P6
ANCHOR_SIZES = ((12,), (24,), (48,), (96,), (192,))
# shapes are near square, but occlusion and the image border cut some of them
ASPECT_RATIOS = (0.5, 1.0, 2.0)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> List[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class NarrowResNet(nn.Sequential):
    """stem (stride 4) + four stages C2..C5 (strides 4, 8, 16, 32), children named for
    ``IntermediateLayerGetter``."""

    def __init__(self, channels: Sequence[int] = STAGE_CHANNELS, blocks: Sequence[int] = STAGE_BLOCKS):
        stem = nn.Sequential(*_conv_bn_relu(3, channels[0] // 2, 2), *_conv_bn_relu(channels[0] // 2, channels[0], 2))
        layers = OrderedDict([("stem", stem)])
        in_channels = channels[0]
        for index, (width, count) in enumerate(zip(channels, blocks)):
            layers[f"layer{index + 1}"] = _stage(in_channels, width, count, 1 if index == 0 else 2)
            in_channels = width
        super().__init__(layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # zero-init the last BN of each block: every block starts as the identity (trains faster)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)


def build_shapes_model(num_classes: int = 6) -> FasterRCNN:
    """The untrained shapes detector (eval mode); load weights with ``load_shapes_model``."""
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too, so it must be at least 2, not {num_classes}")
    body = NarrowResNet()
    # BatchNorm in the FPN and the box head too: trained from scratch, normalised heads converge
    # several times faster (as in torchvision's fasterrcnn_resnet50_fpn_v2); it folds away on export
    backbone = BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)}, list(STAGE_CHANNELS),
                               FPN_CHANNELS, extra_blocks=LastLevelMaxPool(), norm_layer=nn.BatchNorm2d)
    anchors = AnchorGenerator(ANCHOR_SIZES, (ASPECT_RATIOS,) * len(ANCHOR_SIZES))
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    box_head = FastRCNNConvFCHead((FPN_CHANNELS, 7, 7), [FPN_CHANNELS], [BOX_HEAD_UNITS], norm_layer=nn.BatchNorm2d)
    model = FasterRCNN(
        backbone, num_classes=None,
        min_size=SHAPES_INPUT_SIZE, max_size=SHAPES_INPUT_SIZE,
        rpn_anchor_generator=anchors, box_roi_pool=pooler, box_head=box_head,
        box_predictor=FastRCNNPredictor(BOX_HEAD_UNITS, num_classes),
        # few objects per image: fewer proposals keep stage 2 cheap on a Jetson
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
        # more positive RoIs per image: the box regression is what AP@[.5:.95] needs most
        box_batch_size_per_image=128, box_positive_fraction=0.5, box_detections_per_img=100,
    )
    return model.eval()


ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
SHAPES_WEIGHTS = os.path.join(ASSETS_DIR, "shapes.pt")
SHAPES_METADATA = os.path.join(ASSETS_DIR, "shapes.json")


def shapes_metadata(path: str = SHAPES_METADATA) -> Dict[str, Any]:
    """The shipped model's metadata: architecture, class names, input size, training and evaluation."""
    if not os.path.isfile(path):
        raise EdgeFpnError(f"the shipped model's metadata {path!r} is missing; reinstall edge-fpn or train one with edge-fpn train")
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def load_shapes_model(weights: str = SHAPES_WEIGHTS) -> FasterRCNN:
    """The shipped, trained shapes detector in float32 and eval mode (or another checkpoint of it)."""
    import torch

    if not os.path.isfile(weights):
        raise EdgeFpnError(f"the shapes model weights {weights!r} are missing; reinstall edge-fpn or train them with edge-fpn train")
    return shapes_model_from_state(torch.load(weights, map_location="cpu", weights_only=True))


def shapes_model_from_state(state: Dict[str, Any]) -> FasterRCNN:
    """The shapes detector holding a state dict of ``edge-fpn train`` (float16), in float32 and eval mode."""
    # stored as float16 to keep the package small; the model runs in float32
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    num_classes = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    model = build_shapes_model(num_classes)
    model.load_state_dict(state)
    return model.eval()
