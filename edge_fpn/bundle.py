"""The bundle manifest, read and written in one place.

A bundle is a directory (manifest.json + one file per stage). Everything the runtime needs to
pre- and post-process is in the manifest, so no parameter is copied by hand between build and run.
Bundles are written into a temporary sibling directory and renamed into place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import EdgeFpnError

FORMAT_VERSION = 2  # 2 added `layout`; a version-1 manifest is a "host" layout bundle
MANIFEST_NAME = "manifest.json"

# "engine": one graph from the letterboxed uint8 frame to padded detections (stage "detector");
# "host": stage 1 and stage 2 graphs with the per-level postprocessing in numpy between them
LAYOUTS = ("engine", "host")
LAYOUT_STAGES = {"engine": ("detector",), "host": ("stage1", "stage2")}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: List[Any]  # ints; a string names a dynamic axis (declared in StageSpec.dynamic_axes)
    dtype: str = "float32"


@dataclass(frozen=True)
class StageSpec:
    file: str
    backend: str  # "onnxruntime" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8" | "mixed"
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    dynamic_axes: Dict[str, List[int]] = field(default_factory=dict)  # axis name -> [min, max]


@dataclass(frozen=True)
class LevelSpec:
    """One FPN level as stage 1 outputs it."""
    name: str  # torchvision's feature name ("0", "1", ..., "pool")
    stride: List[int]  # [h, w], torchvision's image_size // feature_size
    feature_shape: List[int]  # [C, H, W]
    anchor_sizes: List[float]
    aspect_ratios: List[float]
    pooled: bool  # used by stage 2's RoIAlign


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: List[int]  # [H, W] of the engine
    channel_order: str = "RGB"
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    resize: str = "fit_keep_aspect_pad_bottom_right"


@dataclass(frozen=True)
class RpnSpec:
    pre_nms_top_n: int
    post_nms_top_n: int
    nms_thresh: float
    score_thresh: float
    min_size: float = 1e-3
    box_coder_weights: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])


@dataclass(frozen=True)
class RoiSpec:
    score_thresh: float
    nms_thresh: float
    detections_per_img: int
    box_coder_weights: List[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    pooler_output_size: List[int] = field(default_factory=lambda: [7, 7])
    sampling_ratio: int = 2
    canonical_scale: float = 224.0
    canonical_level: float = 4.0


@dataclass(frozen=True)
class Manifest:
    format_version: int
    name: str
    architecture: str
    class_names: List[str]  # index 0 is the background
    preprocess: PreprocessSpec
    levels: List[LevelSpec]
    rpn: RpnSpec
    roi: RoiSpec
    stages: Dict[str, StageSpec]  # LAYOUT_STAGES[layout]: "detector", or "stage1" and "stage2"
    provenance: Dict[str, Any] = field(default_factory=dict)
    layout: str = "host"
    # the engine layout's cap on the final step's candidates (proposal x class pairs) before
    # class-wise NMS: the one place where a static graph can differ from torchvision
    detection_candidates: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> Tuple[int, int]:
        return int(self.preprocess.input_size[0]), int(self.preprocess.input_size[1])

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: Dict[str, Any]) -> "Manifest":
        return Manifest(
            format_version=int(data["format_version"]),
            name=str(data["name"]),
            architecture=str(data["architecture"]),
            class_names=[str(n) for n in data["class_names"]],
            preprocess=PreprocessSpec(**data["preprocess"]),
            levels=[LevelSpec(**level) for level in data["levels"]],
            rpn=RpnSpec(**data["rpn"]),
            roi=RoiSpec(**data["roi"]),
            stages={key: _stage_from_dict(value) for key, value in data["stages"].items()},
            provenance=dict(data.get("provenance", {})),
            layout=str(data.get("layout", "host")),
            detection_candidates=int(data.get("detection_candidates", 0)),
        )

    def replace(self, **changes: Any) -> "Manifest":
        return dataclasses.replace(self, **changes)


def _stage_from_dict(data: Dict[str, Any]) -> StageSpec:
    return StageSpec(
        file=data["file"], backend=data["backend"], precision=data["precision"],
        inputs=[TensorSpec(**t) for t in data["inputs"]],
        outputs=[TensorSpec(**t) for t in data["outputs"]],
        dynamic_axes={k: list(v) for k, v in data.get("dynamic_axes", {}).items()},
    )


def load_manifest(bundle_dir: str) -> Manifest:
    """Read and validate a bundle's manifest; every problem is one EdgeFpnError sentence."""
    if not os.path.isdir(bundle_dir):
        raise EdgeFpnError(f"bundle {bundle_dir!r} is not a directory; give the directory that `edge-fpn export` or `edge-fpn build` wrote")
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise EdgeFpnError(f"{path} is missing; {bundle_dir!r} is not an edge-fpn bundle (re-run `edge-fpn export`)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise EdgeFpnError(f"{path} is not readable JSON ({exc}); re-run `edge-fpn export` to write the bundle again") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if not isinstance(version, int):
        raise EdgeFpnError(f"{path} has no format_version; it is not an edge-fpn manifest (re-run `edge-fpn export`)")
    if version > FORMAT_VERSION:
        raise EdgeFpnError(f"{path} has format version {version}, newer than this edge-fpn understands ({FORMAT_VERSION}); upgrade edge-fpn")
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgeFpnError(f"{path} is incomplete or corrupt ({exc!r}); re-run `edge-fpn export`") from None
    if manifest.layout not in LAYOUTS:
        raise EdgeFpnError(f"{path} has layout {manifest.layout!r}, which this edge-fpn does not know ({' or '.join(LAYOUTS)}); "
                           f"upgrade edge-fpn or re-run `edge-fpn export`")
    for key in LAYOUT_STAGES[manifest.layout]:
        if key not in manifest.stages:
            raise EdgeFpnError(f"{path} declares no {key}; re-run `edge-fpn export`")
        stage_file = os.path.join(bundle_dir, manifest.stages[key].file)
        if not os.path.isfile(stage_file):
            raise EdgeFpnError(f"{stage_file} is missing from the bundle; re-run `edge-fpn export` or `edge-fpn build`")
    return manifest


def write_manifest(directory: str, manifest: Manifest) -> None:
    with open(os.path.join(directory, MANIFEST_NAME), "w", encoding="utf-8") as f:
        json.dump(manifest.to_dict(), f, indent=2)
        f.write("\n")


def check_output_dir(output: str, force: bool) -> None:
    """Refuse an existing output unless forced, and a parent directory that does not exist."""
    if os.path.exists(output) and not force:
        raise EdgeFpnError(f"output {output!r} already exists; choose another path or pass --force to replace it")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise EdgeFpnError(f"the directory {parent!r} for output {output!r} does not exist; create it first")


@contextlib.contextmanager
def atomic_directory(output: str, force: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside `output`; rename it into place only if the block succeeds."""
    check_output_dir(output, force)
    parent = os.path.dirname(os.path.abspath(output))
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(os.path.abspath(output)) + "-", dir=parent)
    # mkdtemp makes it 0700; a bundle is read by other users too (a robot's service account)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        if os.path.exists(output):
            old = tempfile.mkdtemp(prefix=".old-", dir=parent)
            os.rename(output, os.path.join(old, "previous"))
            os.rename(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_hash(bundle_dir: str, manifest: Optional[Manifest] = None) -> str:
    """A hash of a bundle's stage files: what calibration ranges and engines are tied to."""
    manifest = manifest or load_manifest(bundle_dir)
    digest = hashlib.sha256()
    for key in sorted(manifest.stages):
        digest.update(key.encode())
        digest.update(file_sha256(os.path.join(bundle_dir, manifest.stages[key].file)).encode())
    return digest.hexdigest()
