"""`edge-fpn calibrate`: activation ranges of an FP32 bundle, measured with ONNX Runtime on the CPU.

Each image goes through the runtime exactly as at inference, on a copy of the bundle whose stages
also output the intermediate tensors to be measured: for the engine layout ``Detector.preprocess``
(the letterboxed uint8 frame) and the one "detector" graph, for the host layout
``Detector.preprocess``, stage 1, the per-level proposal postprocessing, and stage 2 on the
proposals stage 1 really produced. Every tensor's values go into a fixed-size |x| histogram
(``histogram.AbsHistogram``) and are dropped: memory does not grow with the number of images. At
the end each tensor's range (amax) is chosen by the method and written as CAL_DIR/ranges.json
(what the Q/DQ writer reads) and CAL_DIR/calibration.cache (TensorRT's own format, for the
implicit INT8 path of older TensorRT).

Measured tensors: by default those that get a Q/DQ pair (the inputs of weighted layers and of
residual Adds, ``qdq.plan_quantization``); with ``tensors="all"`` every float network activation
(backbone, FPN, RPN head, box head), so that the TensorRT cache has a scale for each layer's input
and output, as implicit INT8 needs. Never measured: the postprocessing part (nodes under
graph_names.POSTPROCESS_SCOPES, kept FP32), box arithmetic, integer and boolean tensors, and the
engine layout's in-graph preprocessing before the first convolution's input.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..bundle import (LAYOUT_STAGES, Manifest, atomic_directory, bundle_hash, check_output_dir, load_manifest,
                      refuse_output_over_inputs, verify_onnx_stages)
from ..errors import EdgeFpnError
from ..progress import progress_bar
from .cache import DEFAULT_TENSORRT_VERSION, format_cache, merge_stage_ranges
from .data import source_paths
from .histogram import DEFAULT_PERCENTILE, METHODS, NUM_BINS, AbsHistogram, compute_amax

RANGES_FILE = "ranges.json"
CACHE_FILE = "calibration.cache"
RANGES_FORMAT = 1

logger = logging.getLogger(__name__)


def stage_keys(manifest: Manifest) -> Tuple[str, ...]:
    """The stages of the bundle's layout, in run order: ("detector",) or ("stage1", "stage2")."""
    return tuple(LAYOUT_STAGES[manifest.layout])


@dataclass
class TensorRange:
    amax: float
    absmax: float
    method: str
    qdq: bool  # gets a Q/DQ pair in the INT8 graphs (the others are for the TensorRT cache only)


@dataclass
class CalibrationRanges:
    """The content of ranges.json."""
    bundle_hash: str
    method: str
    data: Dict[str, Any]  # spec, hash, images, skipped
    stages: Dict[str, Dict[str, TensorRange]]
    percentile: Optional[float] = None
    num_bins: int = NUM_BINS
    extra: Dict[str, Any] = field(default_factory=dict)

    def amax(self, stage: str) -> Dict[str, float]:
        return {name: r.amax for name, r in self.stages.get(stage, {}).items()}

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format_version": RANGES_FORMAT, "bundle_hash": self.bundle_hash, "method": self.method,
            "percentile": self.percentile, "num_bins": self.num_bins, "data": self.data,
            "stages": {stage: {name: {"amax": r.amax, "absmax": r.absmax, "method": r.method, "qdq": r.qdq}
                               for name, r in tensors.items()} for stage, tensors in self.stages.items()},
            **self.extra,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "CalibrationRanges":
        known = {"format_version", "bundle_hash", "method", "percentile", "num_bins", "data", "stages"}
        return CalibrationRanges(
            bundle_hash=str(data["bundle_hash"]), method=str(data["method"]), data=dict(data["data"]),
            stages={stage: {name: TensorRange(float(r["amax"]), float(r["absmax"]), str(r["method"]), bool(r["qdq"]))
                            for name, r in tensors.items()} for stage, tensors in data["stages"].items()},
            percentile=data.get("percentile"), num_bins=int(data.get("num_bins", NUM_BINS)),
            extra={k: v for k, v in data.items() if k not in known})


def ranges_hash(path: str) -> str:
    from ..bundle import file_sha256
    return file_sha256(path)


def load_ranges(cal_dir: str, bundle_dir: Optional[str] = None, manifest: Optional[Manifest] = None,
                expected_hash: Optional[str] = None) -> CalibrationRanges:
    """Read CAL_DIR/ranges.json; with a bundle (or its hash), refuse ranges made for another bundle,
    among them the same model exported with another batch size (one sentence that says so: the
    ranges themselves are per tensor and the same for every batch, but a calibration belongs to
    the bundle it measured), and a batch-N bundle's ranges written before the padding slots were
    left out (they record no batch)."""
    path = os.path.join(cal_dir, RANGES_FILE) if os.path.isdir(cal_dir) else cal_dir
    if not os.path.isfile(path):
        raise EdgeFpnError(f"{cal_dir!r} holds no {RANGES_FILE}; give the directory `edge-fpn calibrate --output` wrote")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
        ranges = CalibrationRanges.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeFpnError(f"{path} is not a readable calibration ({type(exc).__name__}: {exc}); re-run `edge-fpn calibrate`") from None
    if int(data.get("format_version", 0)) > RANGES_FORMAT:
        raise EdgeFpnError(f"{path} has format version {data.get('format_version')}, newer than this edge-fpn understands; upgrade edge-fpn")
    name = bundle_dir or "this bundle"
    if bundle_dir is not None and manifest is None:
        manifest = load_manifest(bundle_dir)
    batch = int(manifest.batch) if manifest is not None else None
    recorded = ranges.extra.get("batch")
    if batch is not None and recorded is not None and int(recorded) != batch:
        raise EdgeFpnError(f"the calibration in {cal_dir!r} was made on a batch-{recorded} bundle, and {name} is batch {batch}; "
                           f"calibrate this bundle itself: `edge-fpn calibrate {name} --data ... --output DIR`")
    if bundle_dir is not None and expected_hash is None:
        expected_hash = bundle_hash(bundle_dir, manifest)
    if expected_hash is not None and ranges.bundle_hash != expected_hash:
        raise EdgeFpnError(f"the calibration in {cal_dir!r} was made for another bundle (hash {ranges.bundle_hash[:12]}, "
                           f"not {expected_hash[:12]} of {name}); re-run `edge-fpn calibrate {name} --data ... --output DIR`")
    if batch is not None and batch > 1 and recorded is None:
        # written before calibration left a batch-N graph's blank padding slots out of the histograms
        raise EdgeFpnError(f"the calibration in {cal_dir!r} of the batch-{batch} bundle {name} was made by an edge-fpn that also "
                           f"measured the blank padding slots (ranges far too small); re-run `edge-fpn calibrate {name} --data ... --output DIR`")
    return ranges


def require_fp32_onnx(bundle_dir: str, manifest: Manifest, what: str) -> None:
    for key in stage_keys(manifest):
        stage = manifest.stages[key]
        if stage.backend != "onnxruntime" or not stage.file.endswith(".onnx") or stage.precision != "fp32":
            raise EdgeFpnError(f"{what} needs the FP32 ONNX bundle that `edge-fpn export` writes, but {bundle_dir!r} holds "
                               f"a {stage.precision} {stage.backend} {key} ({stage.file}); give the exported bundle")


@dataclass(frozen=True)
class CalibrationRequest:
    """One calibration: the FP32 bundle, the data, where the ranges go, and how they are chosen. The
    options are checked once, here (one sentence each); what needs the files is checked by calibrate.

    data: an image directory, a glob, a video file or ``synthetic:N``; num: at most this many
    images (all by default; a video is sampled). tensors: "qdq" (default) measures the tensors the
    Q/DQ graphs quantize (inputs of Conv/Gemm/MatMul and of residual Adds); "all" every network
    activation, so that calibration.cache also serves TensorRT's implicit INT8, which needs each
    layer's output range too (about twice the time: ONNX Runtime loses its Conv+ReLU fusions).
    """
    bundle: str
    data: str
    output: Optional[str] = None
    num: Optional[int] = None
    method: str = "entropy"
    percentile: float = DEFAULT_PERCENTILE
    force: bool = False
    threads: int = 0
    tensorrt_version: Optional[str] = None
    tensors: str = "qdq"

    def __post_init__(self) -> None:
        if self.output is None:
            raise EdgeFpnError("calibrate needs an output directory (--output CAL_DIR)")
        # --force replaces the output: it must not be, or hold, the bundle or the images
        refuse_output_over_inputs(self.output, [self.bundle, *source_paths(self.data)])
        if self.method not in METHODS:
            raise EdgeFpnError(f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.tensors not in ("all", "qdq"):
            raise EdgeFpnError(f"tensors must be 'all' or 'qdq', not {self.tensors!r}")
        if self.method == "percentile" and not 0.0 < float(self.percentile) <= 100.0:
            raise EdgeFpnError(f"--percentile must be in (0, 100], not {self.percentile}")


def calibrate(request: CalibrationRequest, progress: bool = True) -> str:
    """Calibrate the request's bundle on its data and write `output`/ranges.json and
    calibration.cache. Returns `output`. The summary line goes to this module's logger (INFO), the
    progress bar to stderr."""
    from .data import open_source, require_enough

    bundle_dir, data, num, output = request.bundle, request.data, request.num, str(request.output)
    method, percentile, tensors = request.method, request.percentile, request.tensors
    manifest = load_manifest(bundle_dir)
    require_fp32_onnx(bundle_dir, manifest, "calibration")
    verify_onnx_stages(bundle_dir, manifest)
    check_output_dir(output, request.force)
    source_hash = bundle_hash(bundle_dir, manifest)
    source = open_source(data, manifest.input_size, num)
    if source.kind == "images":
        _prescan(source, num)

    started = time.time()
    plans, measured = _plans(bundle_dir, manifest, tensors)
    histograms = {stage: {name: AbsHistogram() for name in names} for stage, names in measured.items()}
    run = _collect(bundle_dir, manifest, measured, source, histograms, request.threads, progress)
    require_enough(run.readable, run.skipped, source, num)
    if manifest.layout == "host" and run.stage2_runs == 0:
        raise EdgeFpnError(f"stage 1 proposed no box on any of the {run.readable} calibration images, so stage 2 cannot be "
                           "calibrated; use images that show the objects the model detects")

    qdq = {stage: set(plan.activation_tensors) for stage, plan in plans.items()}
    stages: Dict[str, Dict[str, TensorRange]] = {}
    for stage, table in histograms.items():
        stages[stage] = {}
        for name, hist in table.items():
            if hist.count == 0:
                continue  # a stage-2 input never fed (cannot happen once stage 2 ran)
            amax = compute_amax(hist, method, percentile)
            stages[stage][name] = TensorRange(amax=amax, absmax=float(hist.absmax), method=method, qdq=name in qdq[stage])
    if manifest.layout == "host":
        per_image = {"mean_proposals": round(run.proposals / max(run.stage2_runs, 1), 1)}
    else:  # the engine keeps its proposals inside; what it hands out is the detections
        per_image = {"mean_detections": round(run.detections / max(run.readable, 1), 1)}
    ranges = CalibrationRanges(
        bundle_hash=source_hash, method=method, percentile=float(percentile) if method == "percentile" else None,
        data={"spec": data, "hash": run.data_hash, "images": run.readable,
              "skipped": run.skipped, "description": source.description},
        stages=stages,
        extra={"seconds": round(time.time() - started, 1), "tensors": tensors, "layout": manifest.layout,
               "batch": int(manifest.batch), **per_image})
    version = request.tensorrt_version or _local_tensorrt_version() or DEFAULT_TENSORRT_VERSION
    with atomic_directory(output, request.force) as tmp:
        write_ranges(tmp, ranges)
        with open(os.path.join(tmp, CACHE_FILE), "w", encoding="utf-8") as f:
            f.write(format_cache(merge_stage_ranges((s, ranges.amax(s)) for s in stage_keys(manifest) if s in ranges.stages),
                                 version, method))
    counts = ", ".join(f"{stage} {len(t)} ({sum(r.qdq for r in t.values())} Q/DQ)" for stage, t in stages.items())
    per_image_line = (f"{ranges.extra['mean_proposals']:g} proposals" if manifest.layout == "host"
                      else f"{ranges.extra['mean_detections']:g} detections")
    logger.info(f"calibrated {bundle_dir} by {method} on {run.readable} images of {data}"
                + (f" ({run.skipped} unreadable skipped)" if run.skipped else "")
                + f": {counts} tensors, {per_image_line} per image, {ranges.extra['seconds']:g} s; "
                f"wrote {os.path.join(output, RANGES_FILE)} and {CACHE_FILE} (TensorRT {version})")
    return output


def write_ranges(directory: str, ranges: CalibrationRanges) -> None:
    with open(os.path.join(directory, RANGES_FILE), "w", encoding="utf-8") as f:
        json.dump(ranges.to_dict(), f, indent=1)
        f.write("\n")


def _prescan(source: Any, num: Optional[int]) -> None:
    """Fail fast, before any inference, when too few files decode (the same rule as at the end)."""
    from .data import read_image, require_enough

    readable = 0
    for path in source.names:
        readable += read_image(path) is not None
    require_enough(readable, len(source) - readable, source, num)


def _local_tensorrt_version() -> Optional[str]:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # not installed (any import failure means: not usable here)
        return None
    return str(tensorrt.__version__)


def _plans(bundle_dir: str, manifest: Manifest, tensors: str) -> Tuple[Dict[str, Any], Dict[str, List[str]]]:
    """Each stage's Q/DQ plan, and the tensors to measure (every network activation, or the Q/DQ ones)."""
    import onnx

    from .qdq import ensure_node_names, plan_quantization

    plans: Dict[str, Any] = {}
    measured: Dict[str, List[str]] = {}
    for key in stage_keys(manifest):
        model = onnx.load(os.path.join(bundle_dir, manifest.stages[key].file), load_external_data=False)
        ensure_node_names(model)
        plans[key] = plan_quantization(model, key)
        measured[key] = list(plans[key].dense_tensors if tensors == "all" else plans[key].activation_tensors)
    return plans, measured


@dataclass
class _Run:
    """What running the calibration images gave, besides the histograms."""
    readable: int = 0
    skipped: int = 0
    data_hash: str = ""
    proposals: int = 0  # host layout: proposals fed to stage 2, over the images that had any
    stage2_runs: int = 0
    detections: int = 0  # engine layout: num_detections, over every image


# the runtime layout's attribute that holds each stage's backend
_LAYOUT_ATTRIBUTES = {"detector": "engine", "stage1": "stage1", "stage2": "stage2"}


class _SlotSink:
    """Where a stage's measured tensors go: each calibration image's rows into the histograms, one
    update per image, and nothing of a batch-N graph's padding slots.

    A batch-N engine graph (``export --batch N``) runs N images a call; a call with fewer images
    than N pads the rest with blank frames (image_size (0, 0)), whose activations (a zero image
    through the backbone, masked proposals through the box head) are not calibration data: with
    them in the histograms, entropy chose ranges a quarter of the real ones and INT8 kept 69% of
    the FP32 AP. Every measured tensor is image-major along axis 0 ([N, ...] from the backbone to
    the RPN head, [N*P, ...] for the box head's rows), so slot s owns rows s*R .. (s+1)*R with
    R = rows / N. Updating per image keeps the histograms those of a batch-1 calibration."""

    def __init__(self, table: Dict[str, AbsHistogram], batch: int) -> None:
        self.table = table
        self.batch = batch
        self.filled = batch  # images in the current call (the first `filled` slots)

    def __call__(self, name: str, value: Any) -> None:
        if self.batch == 1:
            self.table[name].update(value)
            return
        rows = int(value.shape[0]) if getattr(value, "ndim", 0) else 0
        if rows == 0 or rows % self.batch:
            raise EdgeFpnError(f"calibration cannot tell the images apart in {name!r} (shape {tuple(value.shape)}) of "
                               f"this batch-{self.batch} graph; calibrate the batch-1 export of the same model instead")
        per_image = rows // self.batch
        for slot in range(self.filled):
            self.table[name].update(value[slot * per_image: (slot + 1) * per_image])


def _measuring_detector(bundle_dir: str, manifest: Manifest, measured: Dict[str, List[str]],
                        histograms: Dict[str, Dict[str, AbsHistogram]], threads: int) -> Tuple[Any, List[_SlotSink]]:
    """A ``Detector`` of the bundle whose engine backends are ``MeasuringStage`` backends of the same
    graphs, which also hand each measured tensor to its histogram (through a ``_SlotSink``) and then
    drop it."""
    import onnx

    from ..runtime.detector import Detector
    from .measure import MeasuringStage
    from .qdq import ensure_node_names

    detector = Detector(bundle_dir, threads=threads, device="cpu")
    detector.close()  # calibration runs the same graphs through measuring backends instead
    dynamic = {axis: int(bounds[-1]) for spec in manifest.stages.values() for axis, bounds in spec.dynamic_axes.items()}
    sinks: List[_SlotSink] = []
    for key in stage_keys(manifest):
        model = onnx.load(os.path.join(bundle_dir, manifest.stages[key].file))
        ensure_node_names(model)
        sink = _SlotSink(histograms[key], int(manifest.batch))
        stage = MeasuringStage(model, measured[key], sink, threads=threads, dynamic_sizes=dynamic)
        del model
        setattr(detector.layout, _LAYOUT_ATTRIBUTES[key], stage)
        sinks.append(sink)
    return detector, sinks


def _collect(bundle_dir: str, manifest: Manifest, measured: Dict[str, List[str]], source: Any,
             histograms: Dict[str, Dict[str, AbsHistogram]], threads: int, progress: bool) -> _Run:
    """Run every image through the runtime (``Detector``'s own steps) and feed the histograms: the
    host layout one image at a time, the engine layout ``batch`` images a call (a batch-N graph gets
    N different images; only the last call may have padding slots, which are not measured)."""
    from .. import graph_names as names
    from ..runtime.preprocess import FrameError
    from .data import ContentHash

    digest = ContentHash()
    run = _Run()
    detector, sinks = _measuring_detector(bundle_dir, manifest, measured, histograms, threads)
    batch = int(manifest.batch) if manifest.layout == "engine" else 1
    pending: List[Tuple[Any, Any]] = []

    def flush() -> None:
        for sink in sinks:
            sink.filled = len(pending)
        outputs, _ = detector.infer_batch(pending)
        run.detections += sum(int(out[names.NUM_DETECTIONS].reshape(-1)[0]) for out in outputs)
        pending.clear()

    bar = progress_bar(len(source), "calibrate", "img", enabled=progress)
    try:
        for _, frame in source:
            bar.update(1)
            if frame is None:
                run.skipped += 1
                continue
            try:
                inputs, letterbox = detector.preprocess(frame)
            except FrameError:
                run.skipped += 1
                continue
            run.readable += 1
            digest.update(frame)
            if manifest.layout == "engine":
                pending.append((inputs, letterbox))
                if len(pending) == batch:
                    flush()
            else:
                _run_host(detector, inputs, letterbox, run)
            del inputs
        if pending:
            flush()
    finally:
        detector.close()
        bar.close()
    run.data_hash = digest.hexdigest()
    return run


def _run_host(detector: Any, inputs: Any, letterbox: Any, run: _Run) -> None:
    """One image through the host layout: stage 1, the real proposals, stage 2 where there are any."""
    outputs1 = detector.run_stage1(inputs)
    proposals = detector.propose(outputs1, letterbox)
    if len(proposals):
        detector.run_stage2(outputs1, proposals)
        run.proposals += len(proposals)
        run.stage2_runs += 1
