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
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .errors import EdgeFpnError

FORMAT_VERSION = 2  # 2 added `layout`; a version-1 manifest is a "host" layout bundle
MANIFEST_NAME = "manifest.json"

# "engine": one graph from the letterboxed uint8 frame to padded detections (stage "detector");
# "host": stage 1 and stage 2 graphs with the per-level postprocessing in numpy between them
LAYOUTS = ("engine", "host")
LAYOUT_STAGES = {"engine": ("detector",), "host": ("stage1", "stage2")}
# ONNX metadata (model props) that export stamps into each graph: which stage it is and how many
# classes its predictor has (the engine layout's outputs do not show it)
GRAPH_STAGE_KEY = "edge_fpn.stage"
GRAPH_CLASSES_KEY = "edge_fpn.num_classes"
# ONNX Runtime's and ONNX's element type names -> the manifest's dtype names
_TENSOR_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
                 "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}


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
    # images per engine call (the engine layout's batch-N graphs: one frame per camera); 1 by default
    batch: int = 1

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
            batch=data.get("batch", 1),
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
    if version is None:
        raise EdgeFpnError(f"{path} has no format_version; it is not an edge-fpn manifest (re-run `edge-fpn export`)")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EdgeFpnError(f"{path}: format_version must be a whole number like {FORMAT_VERSION}, not {version!r}; "
                           "fix it or re-run `edge-fpn export`")
    if version > FORMAT_VERSION:
        raise EdgeFpnError(f"{path} has format version {version}, newer than this edge-fpn understands ({FORMAT_VERSION}); upgrade edge-fpn")
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgeFpnError(f"{path} is incomplete or corrupt ({exc!r}); re-run `edge-fpn export`") from None
    problem = _manifest_problem(data, manifest)
    if problem:
        raise EdgeFpnError(f"{path}: {problem}; fix the manifest or re-run `edge-fpn export`")
    if manifest.layout not in LAYOUTS:
        raise EdgeFpnError(f"{path} has layout {manifest.layout!r}, which this edge-fpn does not know ({' or '.join(LAYOUTS)}); "
                           f"upgrade edge-fpn or re-run `edge-fpn export`")
    for key in LAYOUT_STAGES[manifest.layout]:
        if key not in manifest.stages:
            raise EdgeFpnError(f"{path} declares no {key}; re-run `edge-fpn export`")
        stage_file = os.path.join(bundle_dir, manifest.stages[key].file)
        inside = os.path.realpath(bundle_dir)
        if os.path.commonpath([inside, os.path.realpath(stage_file)]) != inside:
            raise EdgeFpnError(f"{path}: the {key} file {manifest.stages[key].file!r} lies outside the bundle; a bundle "
                               "names only files inside its own directory (re-run `edge-fpn export`)")
        if not os.path.isfile(stage_file):
            raise EdgeFpnError(f"{stage_file} is missing from the bundle; re-run `edge-fpn export` or `edge-fpn build`")
    return manifest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    import math
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _manifest_problem(data: Dict[str, Any], manifest: Manifest) -> str:
    """The first type or range a manifest gets wrong, as a phrase ('' when none): the one place
    where a manifest's values are checked, so that nothing downstream meets a negative size."""
    names = data.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return f"class_names must be a list of names (index 0 the background), not {type(names).__name__}"
    if len(names) < 2:
        return "class_names needs the background and at least one class"
    size = data.get("preprocess", {}).get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        return f"preprocess.input_size must be two positive whole numbers [H, W], not {size!r}"
    rpn, roi = manifest.rpn, manifest.roi
    checks = [
        ("rpn.pre_nms_top_n", rpn.pre_nms_top_n, _is_int, lambda v: v >= 1, "a whole number >= 1"),
        ("rpn.post_nms_top_n", rpn.post_nms_top_n, _is_int, lambda v: v >= 1, "a whole number >= 1"),
        ("rpn.nms_thresh", rpn.nms_thresh, _is_number, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        ("rpn.score_thresh", rpn.score_thresh, _is_number, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        ("roi.score_thresh", roi.score_thresh, _is_number, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        ("roi.nms_thresh", roi.nms_thresh, _is_number, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        ("roi.detections_per_img", roi.detections_per_img, _is_int, lambda v: v >= 1, "a whole number >= 1"),
    ]
    for name, value, kind, in_range, wanted in checks:
        if not kind(value) or not in_range(value):
            return f"{name} must be {wanted}, not {value!r}"
    if not _is_int(manifest.batch) or manifest.batch < 1:
        return f"batch must be a whole number >= 1, not {manifest.batch!r}"
    if manifest.batch > 1 and manifest.layout != "engine":
        return f"batch {manifest.batch} needs the engine layout (a host-layout bundle runs one image a call)"
    if not isinstance(data.get("stages"), dict) or not data["stages"]:
        return "stages must name the bundle's graph or engine files"
    for key, stage in manifest.stages.items():
        if not isinstance(stage.file, str) or not stage.file or os.path.isabs(stage.file):
            return f"the {key} file must be a file name inside the bundle, not {stage.file!r}"
        for tensor in list(stage.inputs) + list(stage.outputs):
            if not all((_is_int(d) and d >= 0) or (isinstance(d, str) and d) for d in tensor.shape):
                return f"the shape of {key}'s {tensor.name!r} must hold sizes >= 0 or axis names, not {tensor.shape!r}"
    return ""


def graph_mismatch(key: str, stage: StageSpec, manifest: Manifest, inputs: Dict[str, Tuple[List[Any], str]],
                   outputs: Dict[str, Tuple[List[Any], str]], metadata: Dict[str, str]) -> str:
    """How a stage's graph differs from what the manifest says of it, as a phrase ('' when it does
    not): its input and output names, element types and fixed sizes, and the stage and class count
    that export stamps into its metadata. `inputs`/`outputs`: name -> (shape with None or a name for
    a dynamic axis, dtype as the manifest names it), read by ONNX or by ONNX Runtime."""
    stamped = metadata.get(GRAPH_STAGE_KEY)
    if stamped and stamped != key:
        return f"it holds the {stamped} graph, not the {key} graph (another layout's file?)"
    classes = metadata.get(GRAPH_CLASSES_KEY)
    if classes and classes.isdigit() and int(classes) != manifest.num_classes:
        return (f"its predictor has {classes} classes (with the background) but the manifest names "
                f"{manifest.num_classes}")
    height, width = manifest.input_size
    for name, axes in (("image", (1, 2)), ("images", (2, 3))):  # engine layout NHWC; host stage 1 NCHW
        shape = inputs.get(name, ([], ""))[0]
        if len(shape) == 4 and all(isinstance(shape[a], int) for a in axes) and \
                [shape[axes[0]], shape[axes[1]]] != [height, width]:
            return (f"it takes {shape[axes[0]]}x{shape[axes[1]]} images but the manifest's input_size is "
                    f"{height}x{width}")
    logits = outputs.get("class_logits")  # the host layout's stage 2 shows its class count
    if logits and len(logits[0]) == 2 and isinstance(logits[0][1], int) and logits[0][1] != manifest.num_classes:
        return (f"its predictor has {logits[0][1]} classes (with the background) but the manifest names "
                f"{manifest.num_classes}")
    for role, declared, actual in (("input", stage.inputs, inputs), ("output", stage.outputs, outputs)):
        wanted = [t.name for t in declared]
        if sorted(wanted) != sorted(actual):
            return f"its {role}s are {sorted(actual)}, the manifest's {sorted(wanted)}"
        for tensor in declared:
            shape, dtype = actual[tensor.name]
            if dtype and dtype != tensor.dtype:
                return f"{role} {tensor.name!r} is {dtype} in the graph, {tensor.dtype} in the manifest"
            fixed = [(a, b) for a, b in zip(shape, tensor.shape) if isinstance(a, int) and isinstance(b, int)]
            if len(shape) != len(tensor.shape) or any(a != b for a, b in fixed):
                return f"{role} {tensor.name!r} has the shape {list(shape)} in the graph, {tensor.shape} in the manifest"
    return ""


def onnx_graph_io(path: str) -> Tuple[Dict[str, Tuple[List[Any], str]], Dict[str, Tuple[List[Any], str]], Dict[str, str]]:
    """(inputs, outputs, metadata) of an ONNX file for graph_mismatch, read with onnx (weights not loaded)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}

    def describe(infos: Any) -> Dict[str, Tuple[List[Any], str]]:
        out = {}
        for info in infos:
            if info.name in initializers:
                continue
            tensor_type = info.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]
            name = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name if tensor_type.elem_type else ""
            out[info.name] = (shape, name)
        return out

    return describe(model.graph.input), describe(model.graph.output), {p.key: p.value for p in model.metadata_props}


def session_graph_io(session: Any) -> Tuple[Dict[str, Tuple[List[Any], str]], Dict[str, Tuple[List[Any], str]], Dict[str, str]]:
    """(inputs, outputs, metadata) of an ONNX Runtime session for graph_mismatch (no onnx needed)."""
    def describe(args: Any) -> Dict[str, Tuple[List[Any], str]]:
        return {a.name: ([d if isinstance(d, int) else None for d in a.shape], _TENSOR_TYPES.get(a.type, ""))
                for a in args}

    modelmeta = session.get_modelmeta() if hasattr(session, "get_modelmeta") else None
    metadata = dict(getattr(modelmeta, "custom_metadata_map", {}) or {})
    return describe(session.get_inputs()), describe(session.get_outputs()), metadata


def onnx_stage_mismatches(bundle_dir: str, manifest: Manifest, stage_dir: Optional[str] = None) -> List[Tuple[str, str]]:
    """(stage file, what differs) for every ONNX stage whose graph does not match the manifest;
    engine files are checked by the runtime when it loads them."""
    found = []
    for key, stage in sorted(manifest.stages.items()):
        if not stage.file.endswith(".onnx"):
            continue
        path = os.path.join(stage_dir or bundle_dir, stage.file)
        try:
            inputs, outputs, metadata = onnx_graph_io(path)
        except Exception as exc:  # protobuf raises several types for a corrupt file
            found.append((stage.file, f"it is not a readable ONNX graph ({type(exc).__name__})"))
            continue
        mismatch = graph_mismatch(key, stage, manifest, inputs, outputs, metadata)
        if mismatch:
            found.append((stage.file, mismatch))
    return found


def verify_onnx_stages(bundle_dir: str, manifest: Manifest, stage_dir: Optional[str] = None) -> None:
    """Refuse (one sentence naming the file and what differs) a bundle whose ONNX graphs do not
    match its manifest."""
    for file, mismatch in onnx_stage_mismatches(bundle_dir, manifest, stage_dir)[:1]:
        raise EdgeFpnError(f"{os.path.join(stage_dir or bundle_dir, file)} does not match its manifest: {mismatch}; "
                           "re-run `edge-fpn export`")


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


def refuse_output_over_inputs(output: str, inputs: Sequence[Optional[str]]) -> None:
    """An output directory that is, or holds, one of the command's input files would delete it when
    --force replaces the output: refused (real paths, so ``..`` and symlinks count)."""
    real_output = os.path.realpath(output)
    for path in inputs:
        if not path:
            continue
        real = os.path.realpath(path)
        if real == real_output or real.startswith(real_output.rstrip(os.sep) + os.sep):
            raise EdgeFpnError(f"output {output!r} would replace the input {path!r}; edge-fpn never writes over its "
                               "input: choose another output path")


@contextlib.contextmanager
def atomic_directory(output: str, force: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside `output`; rename it into place only if the block succeeds."""
    check_output_dir(output, force)
    parent = os.path.dirname(os.path.abspath(output))
    try:
        tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(os.path.abspath(output)) + "-", dir=parent)
    except OSError as exc:  # a read-only or immutable folder, a full disk
        raise EdgeFpnError(f"cannot write into {parent!r} ({exc.strerror}); choose a writable place for "
                           f"{os.path.basename(os.path.abspath(output))!r}") from None
    # mkdtemp makes it 0700; a bundle is read by other users too (a robot's service account)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        _move_into_place(tmp, output, parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: str, output: str, parent: str) -> None:
    """Rename `tmp` to `output`; an existing `output` is replaced only once the new one is in
    place, and any failure leaves the old one where it was and no .old-* folder behind."""
    if not os.path.exists(output):
        try:
            os.rename(tmp, output)
        except OSError as exc:
            raise EdgeFpnError(f"cannot create {output!r} ({exc.strerror}); choose a writable place") from None
        return
    old = tempfile.mkdtemp(prefix=".old-", dir=parent)
    previous = os.path.join(old, "previous")
    try:
        os.rename(output, previous)
    except OSError as exc:
        shutil.rmtree(old, ignore_errors=True)
        raise EdgeFpnError(f"cannot replace {output!r} ({exc.strerror}); it is left as it was: make it writable "
                           "or choose another output") from None
    try:
        os.rename(tmp, output)
    except OSError as exc:
        os.rename(previous, output)  # put the old one back
        shutil.rmtree(old, ignore_errors=True)
        raise EdgeFpnError(f"cannot create {output!r} ({exc.strerror}); the previous one is left as it was") from None
    shutil.rmtree(old, ignore_errors=True)


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
