"""`edge-fpn build`: an engine bundle (TensorRT where it exists, ONNX Runtime elsewhere) from the
FP32 bundle that `edge-fpn export` wrote, FP32, FP16 or INT8, written atomically.

INT8 is explicit quantization: Q/DQ stages from the calibration ranges (``qdq``), whose accuracy
is measured through the runtime on held-out images before anything is written, with optional
per-layer sensitivity and FP16 fallback (``precision``). TensorRT then builds those Q/DQ graphs
(or, with ``implicit_int8``, the FP32 graphs with a calibrator fed from the calibration cache).
The built bundle keeps the source's layout and stage names ("detector", or "stage1" and "stage2").

Python 3.8: this module runs on the device.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..bundle import (Manifest, StageSpec, atomic_directory, bundle_hash, check_output_dir, load_manifest,
                      refuse_output_over_inputs, verify_onnx_stages, write_manifest)
from ..errors import EdgeFpnError
from ..progress import progress_bar
from .calibrate import CalibrationRanges, load_ranges, ranges_hash, require_fp32_onnx, stage_keys
from .data import source_paths
from .tensorrt_builder import PRECISIONS

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime")
REPORT_FILE = "build_report.json"


@dataclass(frozen=True)
class BuildRequest:
    """One build: the FP32 bundle, where the engine bundle goes, and how it is built. The options
    are checked once, here (one sentence each); what needs the files is checked by build_engine.

    fp16_fallback: None, "auto" (keep the worst layers unquantized until the AP drop is at most
    `max_ap_drop`), or a list / comma-separated string of layer names to keep unquantized.
    eval_data: held-out data for the INT8 AP report (None skips it, unless the fallback needs it).
    """
    bundle: str
    output: str
    precision: str = "fp32"
    calibration: Optional[str] = None
    backend: str = "auto"
    workspace_mib: Optional[int] = None
    dla_core: Optional[int] = None
    timing_cache: Optional[str] = None
    force: bool = False
    implicit_int8: bool = False
    fp16_fallback: Optional[Any] = None
    max_ap_drop: float = 0.005
    eval_data: Optional[str] = "synthetic:100"
    sensitivity: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EdgeFpnError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.backend not in BACKENDS:
            raise EdgeFpnError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if not self.output:
            raise EdgeFpnError("build needs an output directory (--output ENGINE_DIR)")
        # --force replaces the output: it must not be, or hold, anything the build reads
        refuse_output_over_inputs(self.output, [self.bundle, self.calibration, self.timing_cache,
                                                *source_paths(self.eval_data)])
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise EdgeFpnError(f"--workspace must be a positive number of MiB, not {self.workspace_mib}")
        if not 0.0 <= self.max_ap_drop <= 1.0:  # an AP lives in [0, 1]; NaN fails this too
            raise EdgeFpnError(f"--max-ap-drop is an AP difference between 0 and 1 (0.005 = half a point), "
                               f"not {self.max_ap_drop}")
        if self.precision != "int8":
            if self.fallback is not None or self.sensitivity or self.implicit_int8:
                raise EdgeFpnError("--fp16-fallback, --sensitivity and --implicit-int8 apply to --precision int8 only")
        elif self.implicit_int8 and (self.fallback is not None or self.sensitivity):
            raise EdgeFpnError("--fp16-fallback and --sensitivity work on the Q/DQ graphs; drop them or --implicit-int8")
        elif self.calibration is None:
            raise EdgeFpnError("--precision int8 needs calibration ranges: run `edge-fpn calibrate BUNDLE --data IMAGES "
                               "--output CAL_DIR` (IMAGES: a directory, glob, video or synthetic:N), then pass "
                               "--calibration CAL_DIR")

    @property
    def fallback(self) -> Optional[Any]:
        return _parse_fallback(self.fp16_fallback)

    @property
    def qdq(self) -> bool:
        """INT8 by explicit Q/DQ graphs (the default INT8 path)."""
        return self.precision == "int8" and not self.implicit_int8


def build_engine(request: BuildRequest, progress: bool = True) -> Dict[str, Any]:
    """Build an engine bundle from the request's FP32 bundle; returns the build report. The steps:
    check the source, load the calibration, choose the backend (and ask its parser), then write the
    Q/DQ graphs, the engines and the bundle, atomically. What it has to say goes to this module's
    logger (INFO), which the `edge-fpn` command shows."""
    started = time.time()
    manifest = _check_source(request)
    source_hash = bundle_hash(request.bundle, manifest)
    ranges = _load_calibration(request, manifest, source_hash)
    # the AP report's data is decided (and pycocotools, which scores it, found) before any build or
    # evaluation work; _int8_decisions asks again and gets the same answer, without a second note
    eval_data = _usable_eval_data(request.eval_data, manifest) if request.qdq else request.eval_data
    trt = _choose_backend(request)
    report: Dict[str, Any] = {"precision": request.precision, "backend": "tensorrt" if trt is not None else "onnxruntime",
                              "source_bundle": os.path.abspath(request.bundle), "source_bundle_hash": source_hash}
    provenance = _provenance(request, report, ranges)
    work = tempfile.mkdtemp(prefix="edge-fpn-build-")
    try:
        with atomic_directory(request.output, request.force) as tmp:
            qdq_dir, stage_precision = None, {key: request.precision for key in stage_keys(manifest)}
            if request.qdq:
                qdq_dir = os.path.join(work, "qdq")
                os.makedirs(qdq_dir)
                quant = _int8_decisions(request.bundle, manifest, ranges, request.fallback, request.max_ap_drop,  # type: ignore[arg-type]
                                        eval_data, request.sensitivity, progress, qdq_dir)
                stage_precision = quant.pop("stage_precision")
                provenance["quantization"] = report["quantization"] = dict(quant, format="qdq",
                                                                           max_ap_drop=request.max_ap_drop)
            if trt is None:
                _write_onnxruntime_bundle(request.bundle, manifest, tmp, qdq_dir, stage_precision,
                                          provenance)
            else:
                report["tensorrt"] = _write_tensorrt_bundle(trt, request, manifest, tmp, work, qdq_dir, stage_precision,
                                                            ranges, provenance)
            report["stage_precision"] = stage_precision
            report["seconds"] = round(time.time() - started, 1)
            with open(os.path.join(tmp, REPORT_FILE), "w", encoding="utf-8") as f:
                json.dump(report, f, indent=1)
                f.write("\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    what = ", ".join(f"{k} {v}" for k, v in stage_precision.items())
    logger.info(f"wrote {request.output}: {report['backend']} engine bundle ({what}) in {report['seconds']:g} s")
    return report


def _check_source(request: BuildRequest) -> Manifest:
    """The source bundle (FP32 ONNX graphs that match their manifest) and the output's place."""
    manifest = load_manifest(request.bundle)
    require_fp32_onnx(request.bundle, manifest, "build")
    verify_onnx_stages(request.bundle, manifest)
    check_output_dir(request.output, request.force)
    if request.timing_cache is not None and not os.path.isdir(os.path.dirname(os.path.abspath(request.timing_cache))):
        raise EdgeFpnError(f"the directory of --timing-cache {request.timing_cache!r} does not exist; create it first")
    return manifest


def _load_calibration(request: BuildRequest, manifest: Manifest, source_hash: str) -> Optional[CalibrationRanges]:
    if request.precision != "int8":
        if request.calibration is not None:
            logger.info("note: --calibration is used by --precision int8 only; ignored")
        return None
    return load_ranges(request.calibration, bundle_dir=request.bundle, manifest=manifest,  # type: ignore[arg-type]
                       expected_hash=source_hash)


def _where_onnxruntime_runs() -> str:
    """Where this machine's ONNX Runtime runs a bundle by default (--device auto), in words: the
    runtime's own provider choice."""
    from ..runtime.backends.onnxruntime_backend import CUDA, select_providers
    try:
        import onnxruntime as ort
    except ImportError:
        return "where ONNX Runtime is installed"
    if CUDA in select_providers(ort, "auto", tensorrt=False).providers:
        return "on the GPU here, by onnxruntime-gpu's CUDA provider"
    return "on the CPU here; on a GPU with onnxruntime-gpu"


def _choose_backend(request: BuildRequest) -> Any:
    """The tensorrt module to build with (its options and parser checked first), or None for an
    ONNX Runtime bundle (said where the user asked for auto)."""
    trt, why_not = _resolve_backend(request.backend, request.dla_core, request.precision)
    if trt is not None:
        _tensorrt_precheck(trt, request)
        return trt
    if request.backend == "auto":
        logger.info(f"TensorRT not found ({why_not}); building an ONNX Runtime {request.precision.upper()} bundle "
                    f"instead (it runs {_where_onnxruntime_runs()})")
    ignored = [flag for flag, value in (("--workspace", request.workspace_mib), ("--timing-cache", request.timing_cache))
               if value is not None]
    if ignored:
        logger.info(f"note: {' and '.join(ignored)} apply to TensorRT only; ignored")
    if request.implicit_int8:
        raise EdgeFpnError("--implicit-int8 is a TensorRT path; ONNX Runtime builds INT8 from Q/DQ graphs (drop --implicit-int8)")
    return None


def _provenance(request: BuildRequest, report: Dict[str, Any], ranges: Optional[CalibrationRanges]) -> Dict[str, Any]:
    provenance: Dict[str, Any] = {"source_bundle_hash": report["source_bundle_hash"], "precision": request.precision,
                                  "backend": report["backend"]}
    if ranges is not None:
        calibration = str(request.calibration)
        provenance["calibration"] = {
            "ranges_sha256": ranges_hash(os.path.join(calibration, "ranges.json") if os.path.isdir(calibration) else calibration),
            "method": ranges.method, "data_hash": ranges.data.get("hash"), "data": ranges.data.get("spec"),
            "images": ranges.data.get("images")}
        if ranges.percentile is not None:
            provenance["calibration"]["percentile"] = ranges.percentile
    return provenance


def _parse_fallback(value: Any) -> Optional[Any]:
    if value is None or value is False:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "none", "off"):
            return None
        if text == "auto":
            return "auto"
        return [name.strip() for name in text.split(",") if name.strip()]
    return [str(name) for name in value]


def _resolve_backend(backend: str, dla_core: Optional[int], precision: str):
    """(tensorrt module or None, why TensorRT is not used); user errors for impossible requests."""
    from .tensorrt_builder import import_tensorrt

    if backend == "onnxruntime":
        trt, why = None, "--backend onnxruntime"
    else:
        trt, why = import_tensorrt()
        if trt is None and backend == "tensorrt":
            raise EdgeFpnError(f"--backend tensorrt, but TensorRT cannot be imported here ({why}); build on the Jetson "
                               "(JetPack's python3-libnvinfer), or use --backend onnxruntime")
    if trt is None:
        if dla_core is not None:
            raise EdgeFpnError(f"--dla-core {dla_core} needs TensorRT on a Jetson with a DLA, and this machine has no TensorRT; drop --dla-core")
        if precision == "fp16":
            raise EdgeFpnError("FP16 is not supported by the ONNX Runtime CPU backend (it would run in FP32, only slower); "
                               "build FP16 with TensorRT on the device, or use --precision fp32 or int8 here")
    return trt, why


def _usable_eval_data(eval_data: Optional[str], manifest: Manifest) -> Optional[str]:
    """The eval data spec, or None where AP cannot be measured (said in one line). A usable spec
    needs pycocotools (evaluate.coco_metrics scores with it): without it, one line now, rather than a
    traceback after the whole FP32 evaluation."""
    from .data import parse_synthetic
    from ..evaluate import classes_match_synthetic

    if not eval_data:
        return None
    if parse_synthetic(eval_data) is not None and not classes_match_synthetic(manifest.class_names):
        logger.info("note: AP not measured: synthetic evaluation scenes hold the shapes classes, not this bundle's "
                    f"({', '.join(manifest.class_names[1:4])}, ...); give --eval-data DIR with COCO annotations.json")
        return None
    try:
        import pycocotools.coco  # noqa: F401  (what evaluate.coco_metrics imports)
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        raise EdgeFpnError("the INT8 accuracy report needs pycocotools: pip3 install pycocotools, or pass "
                           "--eval-data none to build without it") from None
    return eval_data


def _int8_decisions(bundle: str, manifest: Manifest, ranges: CalibrationRanges, fallback: Optional[Any],
                    max_ap_drop: float, eval_data: Optional[str], want_sensitivity: bool, progress: bool,
                    qdq_dir: str) -> Dict[str, Any]:
    """Write the final Q/DQ stages into `qdq_dir`, after the AP report, sensitivity and fallback."""
    from ..evaluate import evaluate_bundle
    from .precision import QuantizedStages, choose_fallback

    stages = QuantizedStages(bundle, manifest, ranges)
    result: Dict[str, Any] = {"layers": len(stages.layers)}
    kept: List[str] = []
    if isinstance(fallback, list):
        kept = stages.resolve(fallback)
    spec = _usable_eval_data(eval_data, manifest)
    if spec is None and (fallback == "auto" or want_sensitivity):
        raise EdgeFpnError("--fp16-fallback auto and --sensitivity measure AP, but there is no evaluation data for this "
                           "bundle; give --eval-data (synthetic:N for the shapes model, else a directory with annotations.json)")

    def evaluate(directory: str) -> Dict[str, float]:
        return evaluate_bundle(directory, spec)  # type: ignore[arg-type]

    def evaluate_shown(directory: str) -> Dict[str, float]:
        return evaluate_bundle(directory, spec, progress=progress)  # type: ignore[arg-type]

    if spec is not None:
        fp32 = evaluate_shown(bundle)
        int8 = stages.evaluate(evaluate_shown, exclude=kept)
        result["ap"] = {"data": spec, "fp32": fp32, "int8": int8}
        logger.info(_ap_line("FP32", fp32))
        logger.info(_ap_line("INT8" + (f" ({len(kept)} layers kept in higher precision)" if kept else ""), int8, fp32))
        ranking = None
        if want_sensitivity or (fallback == "auto" and fp32["AP"] - int8["AP"] > max_ap_drop):
            ranking = _sensitivity_shown(stages, evaluate, fp32["AP"], progress)
            result["sensitivity"] = [entry.to_dict() for entry in ranking]
            logger.info(f"layer sensitivity (AP lost with only that layer in INT8), worst first, of {len(ranking)} layers:")
            for entry in ranking[:10]:
                logger.info(f"  {entry.drop:+.4f}  {entry.layer}")
        if fallback == "auto":
            chosen = choose_fallback(stages, evaluate, fp32["AP"], int8["AP"], ranking or [], max_ap_drop)
            kept = chosen.kept
            final = stages.evaluate(evaluate, exclude=kept) if kept else int8
            result["ap"]["int8"] = final
            within = fp32["AP"] - final["AP"] <= max_ap_drop
            logger.info(f"FP16 fallback: {len(kept)} layer(s) kept in higher precision; "
                        + _ap_line("INT8", final, fp32) + ("" if within else f" (still more than {max_ap_drop} below FP32)"))
    result["fp16_fallback"] = kept
    result["stage_precision"] = stages.write(qdq_dir, exclude=kept)
    return result


def _sensitivity_shown(stages: Any, evaluate: Any, fp32_ap: float, progress: bool) -> List[Any]:
    """sensitivity() with a bar of the layers scanned (one evaluation each: minutes on a CPU)."""
    from .precision import sensitivity

    bar = progress_bar(None, "sensitivity", "layer", enabled=progress)

    def tick(index: int, total: int, layer: str) -> None:
        bar.total = total
        bar.update(1 if index else 0)

    try:
        return sensitivity(stages, evaluate, fp32_ap, progress=tick)
    finally:
        bar.close()


def _ap_line(label: str, metrics: Dict[str, float], reference: Optional[Dict[str, float]] = None) -> str:
    line = f"{label}: AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  AP75 {metrics['AP75']:.4f}"
    if reference is not None:
        drop = reference["AP"] - metrics["AP"]
        share = f", {metrics['AP'] / reference['AP'] * 100:.1f}% of its AP" if reference["AP"] > 0 else ""
        line += f"  ({drop:+.4f} below FP32{share})"
    return line


def _write_onnxruntime_bundle(bundle: str, manifest: Manifest, tmp: str, qdq_dir: Optional[str],
                              stage_precision: Dict[str, str], provenance: Dict[str, Any]) -> None:
    stages: Dict[str, StageSpec] = {}
    for key in stage_keys(manifest):  # the layout (and its stage names) stays the source's
        spec = manifest.stages[key]
        source_dir = qdq_dir if qdq_dir is not None else bundle
        shutil.copyfile(os.path.join(source_dir, spec.file), os.path.join(tmp, spec.file))
        stages[key] = StageSpec(spec.file, "onnxruntime", stage_precision[key], spec.inputs, spec.outputs, spec.dynamic_axes)
    provenance["stage_precision"] = dict(stage_precision)
    write_manifest(tmp, manifest.replace(stages=stages, provenance=dict(manifest.provenance, build=provenance)))
    if qdq_dir is not None:
        from ..export.check import require_lint_clean
        require_lint_clean(tmp, "Q/DQ graphs")


def _tensorrt_precheck(trt: Any, request: BuildRequest) -> None:
    """Before any calibration or TensorRT work: the options this TensorRT refuses (implicit INT8 on
    11, --dla-core on 11.0-11.3, ...), and the first finding `edge-fpn check` would print for the
    graphs, as that same sentence. With --dla-core, the lint's notes say which layers stay on the GPU."""
    from ..export.check import require_bundle_buildable
    from ..export.nvidia_parser import parser_for
    from .tensorrt_builder import api_version, capabilities, plan_build

    plan_build(capabilities(api_version(trt)), _trt_options(request))
    # the table's rules, then this TensorRT's own parser: a graph it rejects stops the build here,
    # before calibration, Q/DQ or AP work
    notes = require_bundle_buildable(request.bundle, str(trt.__version__), nvidia=parser_for(trt))
    if request.dla_core is not None:
        for note in notes:
            logger.info(f"note: {note}")


def _trt_options(request: BuildRequest) -> Any:
    from .tensorrt_builder import TrtOptions

    return TrtOptions(precision=request.precision, implicit_int8=request.implicit_int8,
                      workspace_mib=request.workspace_mib, dla_core=request.dla_core,
                      timing_cache=request.timing_cache)


def _write_tensorrt_bundle(trt: Any, request: BuildRequest, manifest: Manifest, tmp: str, work: str,
                           qdq_dir: Optional[str], stage_precision: Dict[str, str],
                           ranges: Optional[CalibrationRanges], provenance: Dict[str, Any]) -> Dict[str, Any]:
    import onnx

    from .cache import ALGORITHMS, format_cache
    from .fp16 import convert_to_fp16
    from .tensorrt_builder import api_version, build_engines, capabilities, plan_build

    bundle, precision = request.bundle, request.precision
    options = _trt_options(request)
    plan = plan_build(capabilities(api_version(trt)), options)
    keys = list(manifest.stages)  # "stage1", "stage2" (host layout) or "detector" (engine layout)
    if qdq_dir is not None:  # the Q/DQ graphs TensorRT will parse pass the same lint as the exported ones
        from ..export.check import require_bundle_buildable
        require_bundle_buildable(bundle, str(trt.__version__), stage_dir=qdq_dir)
    sources = {"fp32": bundle, "qdq": qdq_dir, "fp16": bundle, "qdq_fp16": qdq_dir}
    onnx_paths: Dict[str, str] = {}
    for key in keys:
        spec = manifest.stages[key]
        source = os.path.join(sources[plan.onnx_variant] or bundle, spec.file)
        if plan.onnx_variant in ("fp16", "qdq_fp16"):
            converted = os.path.join(work, f"{key}.fp16.onnx")
            onnx.save(convert_to_fp16(onnx.load(source)), converted)
            source = converted
        onnx_paths[key] = source
    caches = None
    if plan.use_calibrator and ranges is not None:
        if ranges.extra.get("tensors") != "all":
            raise EdgeFpnError("implicit INT8 needs the range of every layer, but this calibration measured only the Q/DQ "
                               "inputs; re-run `edge-fpn calibrate` with --tensors all")
        algorithm = ALGORITHMS[ranges.method]
        caches = {key: (format_cache(ranges.amax(key), trt.__version__, ranges.method), algorithm) for key in keys}
    facts = build_engines(trt, {k: manifest.stages[k] for k in keys}, onnx_paths, options, tmp,
                          calibration_caches=caches)
    stages: Dict[str, StageSpec] = {}
    for key in keys:
        spec = manifest.stages[key]
        stages[key] = StageSpec(facts["files"][key], "tensorrt", stage_precision.get(key, precision), spec.inputs,
                                spec.outputs, spec.dynamic_axes)
    provenance["stage_precision"] = dict(stage_precision)
    provenance["int8_mode"] = "implicit" if request.implicit_int8 else ("explicit" if precision == "int8" else None)
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "jetpack", "l4t", "dla_core",
                "postprocess_fp32_layers"):
        if key in facts:
            provenance[key] = facts[key]
    provenance["tensorrt_flags"] = {"builder": facts["builder_flags"], "network": facts["network_flags"],
                                    "onnx": facts["onnx_variant"]}
    top = dict(manifest.provenance, build=provenance)
    # the facts the runtime checks before loading an engine (dla_core: the runtime's DLA core before
    # deserializing), at the top level of the provenance
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "jetpack", "dla_core"):
        if key in facts:
            top[key] = facts[key]
    write_manifest(tmp, manifest.replace(stages=stages, provenance=top))
    return facts
