"""Models by name or checkpoint: the shipped models for `--model`, references for `eval --reference`."""
from __future__ import annotations

import os
from typing import Any, Dict, Tuple

from ..errors import EdgeFpnError

SHIPPED_MODELS = ("shapes",)


def load_shipped_model(name: str) -> Tuple[Any, Dict[str, Any]]:
    """(model, metadata) of a model shipped inside the package; metadata names its checkpoint."""
    from ..bundle import file_sha256
    from .shapes import SHAPES_WEIGHTS, load_shapes_model, shapes_metadata

    if name not in SHIPPED_MODELS:
        raise EdgeFpnError(f"unknown shipped model {name!r}; edge-fpn ships: {', '.join(SHIPPED_MODELS)}")
    meta = dict(shapes_metadata())
    meta.setdefault("architecture", "shapes")
    meta["checkpoint"] = os.path.relpath(SHAPES_WEIGHTS, os.path.dirname(os.path.dirname(SHAPES_WEIGHTS)))
    meta["checkpoint_sha256"] = file_sha256(SHAPES_WEIGHTS)
    return load_shapes_model(), meta


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
