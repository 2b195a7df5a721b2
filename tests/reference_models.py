"""torchvision models with random weights made meaningful, the reference for fidelity tests.

Random init gives degenerate outputs: BatchNorm running statistics of (0, 1) blow activations up
through deep backbones, and near-zero heads give every class the same score. So, with a fixed seed:
1. BatchNorm statistics are re-estimated on a few textured images (cumulative average), and
2. the RPN objectness and the class logits are scaled so that scores spread over (0, 1).
The weights are then fixed; torchvision and the exported bundle both use exactly these.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def meaningful_model(arch: str, num_classes: int, input_size: Tuple[int, int], seed: int = 0):
    import torch
    from conftest import textured_image
    from edge_fpn.export.onnx_export import configure_transform
    from edge_fpn.model.architectures import build_architecture

    torch.manual_seed(seed)
    model = build_architecture(arch, num_classes)
    configure_transform(model, input_size)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.backbone.train()
    mean = torch.tensor(model.transform.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        for i in range(4):
            batch = np.stack([textured_image(seed * 100 + i * 2 + j, *input_size)[:, :, ::-1] for j in range(2)])
            x = (torch.from_numpy(batch.copy()).permute(0, 3, 1, 2).float() / 255 - mean) / std
            model.backbone(x)
        model.eval()
        probe = torch.from_numpy(textured_image(seed + 999, *input_size)[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
        _scale_output(model, model.rpn.head.cls_logits, probe, target_std=3.0)
        _scale_output(model, model.roi_heads.box_predictor.cls_score, probe, target_std=2.0)
        _scale_output(model, model.roi_heads.box_predictor.bbox_pred, probe, target_std=0.5)
    return model


def _scale_output(model, layer, probe, target_std: float) -> None:
    """Scale a layer's weights so that its outputs on a probe image have the given spread."""
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().flatten()))
    model([probe])
    handle.remove()
    std = float(torch_cat(seen).std())
    factor = target_std / max(std, 1e-6)
    layer.weight.mul_(factor)
    if layer.bias is not None:
        layer.bias.mul_(factor)


def torch_cat(tensors):
    import torch
    return torch.cat(tensors)
