"""torch -> static ONNX + manifest: the bundle `edge-fpn export` writes.

Layout "engine" (the default): one graph from the letterboxed uint8 frame to padded detections
(model/engine_graph.py). Layout "host": stage 1 and stage 2 graphs, the postprocessing in numpy.
"""
from __future__ import annotations

import dataclasses
import io
import os
import warnings
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import graph_names as names
from ..bundle import (FORMAT_VERSION, LAYOUTS, LevelSpec, Manifest, PreprocessSpec, RoiSpec, RpnSpec, StageSpec,
                      TensorSpec, atomic_directory, check_output_dir, file_sha256, write_manifest)
from ..errors import EdgeFpnError
from ..progress import progress_bar

OPSET = 17
LARGEST_STRIDE = 32  # the backbone's; torchvision pads its batches to a multiple of it
PROPOSALS_AXIS = "num_proposals"
TOPK_MAX_K = 3840  # TensorRT 8.5-10's largest TopK K: the engine graph's cap on its candidates
# the largest engine side taken: 4096 is three times torchvision's own largest (1333), and its first
# backbone activation alone is 1 GB (ResNet-50); 100000x100000 asked torch for 120 GB: a traceback
MAX_INPUT_SIDE = 4096
# the largest batch (cameras on one engine): DeepStream's largest Orin setups run 32 streams; the
# export traces the whole batch at once (100000 asked torch for 30 GB and ended in a traceback)
MAX_BATCH = 64


def parse_input_size(text: str) -> Tuple[int, int]:
    """'HxW' or 'S' -> (H, W), both multiples of the largest backbone stride (check_input_size)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise EdgeFpnError(f"input size {text!r} is not HxW (e.g. 320x320) or a single number") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise EdgeFpnError(f"input size {text!r} is not HxW (e.g. 320x320) or a single number")
    return check_input_size((parts[0], parts[1]))


def check_input_size(size: Tuple[int, int]) -> Tuple[int, int]:
    """(H, W) as given, if both are positive multiples of the largest stride, at most MAX_INPUT_SIDE."""
    height, width = (int(side) for side in size)
    if min(height, width) <= 0:
        raise EdgeFpnError(f"input size {height}x{width} must be positive, e.g. 320x320")
    if max(height, width) > MAX_INPUT_SIDE:
        raise EdgeFpnError(f"input size {height}x{width} is larger than {MAX_INPUT_SIDE} on a side; detectors of this "
                           "kind run at 320-1344 (torchvision's default is 800x1333)")
    if height % LARGEST_STRIDE or width % LARGEST_STRIDE:
        raise EdgeFpnError(f"input size {height}x{width} is not a multiple of the largest stride ({LARGEST_STRIDE}); "
                           f"use e.g. {_round_up(height)}x{_round_up(width)}")
    return height, width


def _round_up(value: int) -> int:
    return max(LARGEST_STRIDE, (value + LARGEST_STRIDE - 1) // LARGEST_STRIDE * LARGEST_STRIDE)


def configure_transform(model: Any, input_size: Tuple[int, int]) -> None:
    """Make torchvision's own transform resize to the engine size (the reference for fidelity)."""
    model.transform.min_size = (min(input_size),)
    model.transform.max_size = max(input_size)


def describe_levels(model: Any, input_size: Tuple[int, int]) -> Tuple[List[str], List[LevelSpec]]:
    import torch

    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, *input_size))
    pooled_names = set(model.roi_heads.box_roi_pool.featmap_names)
    generator = model.rpn.anchor_generator
    if len(generator.sizes) != len(features):
        raise EdgeFpnError(f"the anchor generator has {len(generator.sizes)} levels but the backbone returns {len(features)}; the model is not a standard FPN Faster R-CNN")
    levels = []
    for (name, feature), sizes, ratios in zip(features.items(), generator.sizes, generator.aspect_ratios):
        _, channels, height, width = feature.shape
        levels.append(LevelSpec(
            name=str(name), stride=[input_size[0] // height, input_size[1] // width],
            feature_shape=[int(channels), int(height), int(width)],
            anchor_sizes=[float(s) for s in sizes], aspect_ratios=[float(r) for r in ratios],
            pooled=name in pooled_names))
    return list(features.keys()), levels


def _rpn_spec(model: Any) -> RpnSpec:
    rpn = model.rpn
    return RpnSpec(pre_nms_top_n=int(rpn._pre_nms_top_n["testing"]), post_nms_top_n=int(rpn._post_nms_top_n["testing"]),
                   nms_thresh=float(rpn.nms_thresh), score_thresh=float(rpn.score_thresh), min_size=float(rpn.min_size),
                   box_coder_weights=[float(w) for w in rpn.box_coder.weights])


def _roi_spec(model: Any) -> RoiSpec:
    heads = model.roi_heads
    pooler = heads.box_roi_pool
    return RoiSpec(score_thresh=float(heads.score_thresh), nms_thresh=float(heads.nms_thresh),
                   detections_per_img=int(heads.detections_per_img),
                   box_coder_weights=[float(w) for w in heads.box_coder.weights],
                   pooler_output_size=[int(s) for s in pooler.output_size], sampling_ratio=int(pooler.sampling_ratio),
                   canonical_scale=float(pooler.canonical_scale), canonical_level=float(pooler.canonical_level))


def _quiet_export(module: Any, args: Tuple[Any, ...], path: str, **kwargs: Any) -> None:
    import torch

    # the TorchScript exporter handles torchvision's roi_align symbolic (opset 16+) directly;
    # its deprecation and tracer warnings say nothing to our users
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=False, opset_version=OPSET, do_constant_folding=True, **kwargs)


def _slim(path: str, stage: str = "", num_classes: int = 0) -> None:
    """Simplify the graph in place; `stage` and `num_classes` are stamped into its metadata
    (bundle.GRAPH_STAGE_KEY, GRAPH_CLASSES_KEY) so that a loader can tell a graph that does not
    belong to the manifest, even where the outputs do not show the class count."""
    import onnx
    import onnxslim

    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        slimmed = onnxslim.slim(onnx.load(path))
    if stage:
        from ..bundle import GRAPH_CLASSES_KEY, GRAPH_STAGE_KEY
        onnx.helper.set_model_props(slimmed, {GRAPH_STAGE_KEY: stage, GRAPH_CLASSES_KEY: str(num_classes)})
    onnx.save(slimmed, path)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How a bundle is exported; checked once, here (one sentence each).

    layout: "engine" (one graph, pixels to detections) or "host" (two graphs, numpy between).
    detection_candidates: the engine layout's cap on (proposal, class) pairs sent to the final NMS
    (default 2000, at most TOPK_MAX_K).
    batch: images per engine call (engine layout): a static batch-N graph, one frame per camera.
    name: the manifest's name (default: the output directory's). provenance: merged into the
    manifest's. check: run the TensorRT lint. force: replace an existing output directory.
    """
    force: bool = False
    name: Optional[str] = None
    provenance: Optional[Dict[str, Any]] = None
    check: bool = True
    progress: bool = True
    layout: str = "engine"
    detection_candidates: Optional[int] = None
    batch: int = 1

    def __post_init__(self) -> None:
        layout, candidates, batch = self.layout, self.detection_candidates, self.batch
        if layout not in LAYOUTS:
            raise EdgeFpnError(f"unknown layout {layout!r}; choose {' or '.join(LAYOUTS)}")
        if candidates is not None and not 1 <= candidates <= TOPK_MAX_K:
            raise EdgeFpnError(f"--detection-candidates must be between 1 and {TOPK_MAX_K} (TensorRT's largest top-k), "
                               f"not {candidates}")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
            raise EdgeFpnError(f"--batch must be a whole number from 1 to {MAX_BATCH} (cameras on one engine), not {batch!r}")
        if batch > 1 and layout != "engine":
            raise EdgeFpnError(f"--batch {batch} needs the engine layout (--postprocess engine); the host layout runs "
                               "one image a call")


def export_bundle(model: Any, architecture: str, class_names: Sequence[str], input_size: Tuple[int, int],
                  output: str, options: Optional[ExportOptions] = None) -> Manifest:
    """Export `model` as a bundle of `options.layout` ("engine" or "host"), simplified, linted,
    written atomically."""
    import torch
    from ..model.stages import MultiLevelRoiAlign

    options = options or ExportOptions()
    force, check, progress, layout = options.force, options.check, options.progress, options.layout
    check_output_dir(output, force)
    model = model.eval()
    input_size = check_input_size(input_size)  # (the API's callers too, not only the CLI's)
    configure_transform(model, input_size)
    if len(class_names) != model.roi_heads.box_predictor.cls_score.out_features:
        raise EdgeFpnError(f"{len(class_names)} class names for a model with {model.roi_heads.box_predictor.cls_score.out_features} classes")
    _, levels = describe_levels(model, input_size)
    pooled = [i for i, level in enumerate(levels) if level.pooled]
    scales = MultiLevelRoiAlign(model, input_size, [tuple(levels[i].feature_shape[1:]) for i in pooled]).scales
    if len(scales) < len(pooled):
        levels = [dataclasses.replace(level, pooled=i in pooled[: len(scales)]) for i, level in enumerate(levels)]
        pooled = pooled[: len(scales)]
    manifest = Manifest(
        format_version=FORMAT_VERSION, name=options.name or os.path.basename(os.path.abspath(output)),
        architecture=architecture, class_names=list(class_names),
        preprocess=PreprocessSpec(input_size=list(input_size), mean=[float(m) for m in model.transform.image_mean],
                                  std=[float(s) for s in model.transform.image_std]),
        levels=levels, rpn=_rpn_spec(model), roi=_roi_spec(model), stages={},
        provenance=dict(options.provenance or {}, opset=OPSET, torch=torch.__version__), layout=layout,
        batch=options.batch)
    if layout == "engine":
        return _export_engine_layout(model, manifest, output, force, check, progress,
                                     options.detection_candidates or names.DEFAULT_DETECTION_CANDIDATES)
    return _export_host_layout(model, manifest, output, force, check, progress)


def _export_engine_layout(model: Any, manifest: Manifest, output: str, force: bool, check: bool, progress: bool,
                          candidates: int) -> Manifest:
    from ..model.engine_graph import DetectorGraph, example_inputs

    input_size = manifest.input_size
    levels = manifest.levels
    pooled = [i for i, level in enumerate(levels) if level.pooled]
    batch = manifest.batch
    graph = DetectorGraph(model, input_size, levels, manifest.rpn, manifest.roi,
                          [tuple(levels[i].feature_shape[1:]) for i in pooled], candidates, batch=batch).eval()
    image, image_size = example_inputs(input_size, batch)
    inputs = [TensorSpec(names.IMAGE, [batch, input_size[0], input_size[1], 3], "uint8"),
              TensorSpec(names.IMAGE_SIZE, [2] if batch == 1 else [batch, 2], "float32")]
    bar = progress_bar(3, "export", "step", enabled=progress)
    with atomic_directory(output, force) as tmp:
        path = os.path.join(tmp, names.DETECTOR_FILE)
        bar.set_description("export detector graph")
        _quiet_export(graph, (image, image_size), path, input_names=[t.name for t in inputs],
                      output_names=[names.BOXES, names.SCORES, names.LABELS, names.NUM_DETECTIONS])
        bar.update(1)
        bar.set_description("simplify (onnxslim)")
        _slim(path, names.DETECTOR_STAGE, manifest.num_classes)
        bar.update(1)
        outputs = _declared_outputs(path)
        manifest = manifest.replace(
            stages={names.DETECTOR_STAGE: StageSpec(names.DETECTOR_FILE, "onnxruntime", "fp32", inputs, outputs)},
            detection_candidates=int(candidates),
            provenance=dict(manifest.provenance, detector_onnx_sha256=file_sha256(path)))
        write_manifest(tmp, manifest)
        _finish_check(tmp, check, bar)
    return manifest


def _declared_outputs(path: str) -> List[TensorSpec]:
    """The graph's outputs as TensorSpecs (all static: the detection count follows the model)."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    specs = []
    for output in graph.output:
        tensor_type = output.type.tensor_type
        shape = [int(d.dim_value) for d in tensor_type.shape.dim]
        if any(d.dim_param or not d.dim_value for d in tensor_type.shape.dim):
            raise EdgeFpnError(f"output {output.name} of the exported graph has a dynamic shape; please report this")
        specs.append(TensorSpec(output.name, shape, onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name))
    return specs


def _finish_check(bundle_dir: str, check: bool, bar: Any) -> None:
    if check:
        from .check import require_lint_clean
        bar.set_description("check (TensorRT lint)")
        require_lint_clean(bundle_dir, "exported graphs")
    bar.update(1)
    bar.close()


def _export_host_layout(model: Any, manifest: Manifest, output: str, force: bool, check: bool,
                        progress: bool) -> Manifest:
    import torch
    from ..model.stages import Stage1, Stage2

    input_size = manifest.input_size
    levels = manifest.levels
    class_names = manifest.class_names
    pooled = [i for i, level in enumerate(levels) if level.pooled]
    stage1 = Stage1(model).eval()
    stage2 = Stage2(model, input_size, [tuple(levels[i].feature_shape[1:]) for i in pooled]).eval()

    images = torch.zeros(1, 3, *input_size)
    stage1_outputs: List[TensorSpec] = []
    for i, level in enumerate(levels):
        a = len(level.anchor_sizes) * len(level.aspect_ratios)
        h, w = level.feature_shape[1:]
        stage1_outputs += [TensorSpec(f"features_{i}", [1] + list(level.feature_shape)),
                           TensorSpec(f"objectness_{i}", [a, h, w]), TensorSpec(f"deltas_{i}", [4 * a, h, w])]
    num_classes = len(class_names)
    post_nms = manifest.rpn.post_nms_top_n
    stage2_inputs = [TensorSpec("proposals", [PROPOSALS_AXIS, 4])] + [stage1_outputs[3 * i] for i in pooled]
    stage2_outputs = [TensorSpec("class_logits", [PROPOSALS_AXIS, num_classes]),
                      TensorSpec("box_regression", [PROPOSALS_AXIS, 4 * num_classes])]

    steps = ["stage 1", "stage 2", "simplify", "check"]
    bar = progress_bar(len(steps), "export", "step", enabled=progress)
    with atomic_directory(output, force) as tmp:
        stage1_path = os.path.join(tmp, "stage1.onnx")
        stage2_path = os.path.join(tmp, "stage2.onnx")
        bar.set_description("export stage 1")
        _quiet_export(stage1, (images,), stage1_path, input_names=["images"],
                      output_names=[t.name for t in stage1_outputs])
        bar.update(1)
        bar.set_description("export stage 2")
        with torch.no_grad():
            features = stage1(images)
        proposals = torch.tensor([[0.0, 0.0, input_size[1] / 2.0, input_size[0] / 2.0]] * 2)
        _quiet_export(stage2, (proposals,) + tuple(features[3 * i] for i in pooled), stage2_path,
                      input_names=[t.name for t in stage2_inputs], output_names=[t.name for t in stage2_outputs],
                      dynamic_axes={"proposals": {0: PROPOSALS_AXIS}, "class_logits": {0: PROPOSALS_AXIS},
                                    "box_regression": {0: PROPOSALS_AXIS}})
        bar.update(1)
        bar.set_description("simplify (onnxslim)")
        _slim(stage2_path, "stage2", num_classes)
        # stage 1 is stamped once, after its unused outputs are dropped (a second slim)
        _drop_unused_stage1_outputs(stage1_path, keep=[t.name for t in stage1_outputs if _is_needed(t.name, pooled)],
                                    stamp=("stage1", num_classes))
        bar.update(1)
        stage1_outputs = [t for t in stage1_outputs if _is_needed(t.name, pooled)]
        dynamic = {PROPOSALS_AXIS: [1, post_nms]}
        manifest = manifest.replace(
            stages={"stage1": StageSpec("stage1.onnx", "onnxruntime", "fp32", [TensorSpec("images", [1, 3] + list(input_size))], stage1_outputs),
                    "stage2": StageSpec("stage2.onnx", "onnxruntime", "fp32", stage2_inputs, stage2_outputs, dynamic)},
            provenance=dict(manifest.provenance, stage1_onnx_sha256=file_sha256(stage1_path),
                            stage2_onnx_sha256=file_sha256(stage2_path)))
        write_manifest(tmp, manifest)
        _finish_check(tmp, check, bar)
    return manifest


def _is_needed(name: str, pooled: Sequence[int]) -> bool:
    # features of levels RoIAlign does not use (the max-pool level) are not stage 1 outputs
    return not name.startswith("features_") or int(name.split("_")[1]) in pooled


def _drop_unused_stage1_outputs(path: str, keep: Sequence[str], stamp: Tuple[str, int]) -> None:
    import onnx

    model = onnx.load(path)
    outputs = [o for o in model.graph.output if o.name in keep]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    onnx.save(model, path)
    _slim(path, *stamp)  # removes the nodes that only fed the dropped outputs


