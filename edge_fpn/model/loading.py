"""Models by name or checkpoint: the shipped models for `--model`, references for `eval --reference`."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from ..errors import EdgeFpnError

SHIPPED_MODELS = ("shapes",)


def load_shipped_model(name: str, checkpoint: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """(model, metadata) of a model shipped inside the package, or of `checkpoint`, a retrained one
    (``edge-fpn train``; its classes and input size are the shipped model's); metadata names the
    checkpoint."""
    from ..bundle import file_sha256
    from .shapes import SHAPES_WEIGHTS, load_shapes_model, shapes_metadata, shapes_model_from_state

    if name not in SHIPPED_MODELS:
        raise EdgeFpnError(f"unknown shipped model {name!r}; edge-fpn ships: {', '.join(SHIPPED_MODELS)}")
    meta = dict(shapes_metadata())
    meta.setdefault("architecture", "shapes")
    if checkpoint is None:
        meta["checkpoint"] = os.path.relpath(SHAPES_WEIGHTS, os.path.dirname(os.path.dirname(SHAPES_WEIGHTS)))
        meta["checkpoint_sha256"] = file_sha256(SHAPES_WEIGHTS)
        return load_shapes_model(), meta
    if os.path.isdir(checkpoint):
        raise EdgeFpnError(f"checkpoint {checkpoint!r} is a folder; give the file `edge-fpn train --output` wrote")
    if not os.path.isfile(checkpoint):
        raise EdgeFpnError(f"checkpoint {checkpoint!r} does not exist; give the file `edge-fpn train --output` wrote")
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (an image, a text file, a pickle of arbitrary objects, a cut-off file)
        raise EdgeFpnError(f"{checkpoint!r} is not a PyTorch checkpoint of weights; give a file `edge-fpn train` "
                           "wrote") from None
    try:
        model = shapes_model_from_state(state)
    except Exception as exc:  # a file of another model, or not a state dict at all
        raise EdgeFpnError(f"{checkpoint!r} is not a checkpoint of the {name} model ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160]}); give a file `edge-fpn train` wrote") from None
    if len(meta["class_names"]) != model.roi_heads.box_predictor.cls_score.out_features:
        raise EdgeFpnError(f"{checkpoint!r} has {model.roi_heads.box_predictor.cls_score.out_features} classes, the "
                           f"{name} model {len(meta['class_names'])}; give a file `edge-fpn train` wrote")
    meta["checkpoint"] = checkpoint
    meta["checkpoint_sha256"] = file_sha256(checkpoint)
    return model, meta


def load_reference_model(spec: str, bundle_dir: str) -> Any:
    """The PyTorch model a bundle came from: a shipped model's name, or a checkpoint of its architecture."""
    from ..bundle import load_manifest
    from .architectures import build_architecture, load_checkpoint

    if spec in SHIPPED_MODELS:
        return load_shipped_model(spec)[0]
    manifest = load_manifest(bundle_dir)
    if manifest.architecture == "shapes":
        from .shapes import load_shapes_model
        if not os.path.isfile(spec):
            raise EdgeFpnError(f"reference checkpoint {spec!r} does not exist; give 'shapes' or a checkpoint file")
        return load_shapes_model(spec)
    model = build_architecture(manifest.architecture, manifest.num_classes)
    return load_checkpoint(model, spec, manifest.architecture)
