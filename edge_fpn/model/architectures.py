"""torchvision Faster R-CNN FPN architectures, loaded from local state-dict checkpoints."""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

import torch.nn as nn

from ..errors import EdgeFpnError

ARCHITECTURES = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
)


def build_architecture(arch: str, num_classes: int) -> nn.Module:
    """An untrained torchvision model of `arch` (no weights are downloaded)."""
    from torchvision.models import detection

    if arch == "shapes":
        from .shapes import build_shapes_model
        return build_shapes_model(num_classes)
    if arch not in ARCHITECTURES:
        raise EdgeFpnError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)} (or --model shapes)")
    if num_classes < 2:
        raise EdgeFpnError(f"--num-classes is {num_classes}; it counts the background too, so it must be at least 2")
    factory: Callable[..., nn.Module] = getattr(detection, arch)
    return factory(weights=None, weights_backbone=None, num_classes=num_classes).eval()


def load_state_dict_file(path: str) -> Dict[str, object]:
    import torch

    if not os.path.isfile(path):
        raise EdgeFpnError(f"checkpoint {path!r} does not exist; give the path of a state-dict file saved with torch.save(model.state_dict(), path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise EdgeFpnError(f"checkpoint {path!r} cannot be read ({type(exc).__name__}); it must be a state dict saved with torch.save") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # the torchvision references' training checkpoints
    if not isinstance(state, dict):
        raise EdgeFpnError(f"checkpoint {path!r} holds a {type(state).__name__}, not a state dict; save model.state_dict()")
    return state


def load_checkpoint(model: nn.Module, path: str, arch: str) -> nn.Module:
    """Load a checkpoint strictly; a mismatch names the first offending keys and shapes."""
    state = load_state_dict_file(path)
    expected = model.state_dict()
    problems: List[str] = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if missing:
        problems.append(f"missing keys {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"unexpected keys {', '.join(unexpected[:3])}")
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs model) {', '.join(shapes[:3])}")
    if problems:
        raise EdgeFpnError(f"checkpoint {path!r} does not fit {arch} with these settings: {'; '.join(problems)}; check --arch and --num-classes")
    model.load_state_dict(state)
    return model.eval()


def read_class_names(path: Optional[str], num_classes: int) -> List[str]:
    """Class names with the background first; a file holds one name a line, background optional."""
    if path is None:
        return ["__background__"] + [f"class_{i}" for i in range(1, num_classes)]
    try:
        with open(path, "r", encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as exc:
        raise EdgeFpnError(f"cannot read class names from {path!r} ({exc.strerror}); give a text file with one name a line") from None
    if len(names) == num_classes - 1:
        names = ["__background__"] + names
    if len(names) != num_classes:
        raise EdgeFpnError(f"{path!r} has {len(names)} names but --num-classes is {num_classes}; give {num_classes - 1} names (the background is added) or {num_classes}")
    return names
