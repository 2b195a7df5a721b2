"""`edge-fpn demo`: the shipped model from export to live detection on a synthetic camera.

export -> calibrate -> build (INT8 by default; the best engine this machine can run) -> run live
on `test://` through the same pipeline `edge-fpn detect` uses -> report (FPS, latency, AP).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .errors import EdgeFpnError

DEMO_SOURCE = "test://?width=640&height=480&fps=30&seed=7"
MAX_DEMO_SECONDS = 86400  # the live run's longest: a day


def _say(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


def _prepare_output(output: str, force: bool) -> None:
    if os.path.isdir(output) and os.listdir(output) and not force:
        raise EdgeFpnError(f"demo output {output!r} exists and is not empty; choose another --output or pass --force")
    if os.path.exists(output) and not os.path.isdir(output):
        raise EdgeFpnError(f"demo output {output!r} is a file; choose a directory")
    try:
        os.makedirs(os.path.join(output, "bundles"), exist_ok=True)
    except OSError as exc:
        raise EdgeFpnError(f"cannot create the demo output {output!r} ({exc.strerror}); choose a writable --output") from None


def live_choice(int8_bundle: str, fp32_bundle: str) -> Tuple[str, str]:
    """(the bundle to run live, why): the INT8 engine where TensorRT built it; else the FP32 bundle,
    since ONNX Runtime runs Q/DQ graphs as fake quantization (about half FP32's speed on a CPU),
    while the INT8 bundle still gets its AP report."""
    from .bundle import load_manifest

    stages = load_manifest(int8_bundle).stages.values()
    if all(stage.backend == "tensorrt" for stage in stages):
        return int8_bundle, "INT8 TensorRT engine: the fastest this machine has"
    return fp32_bundle, ("FP32: without TensorRT, ONNX Runtime runs the INT8 Q/DQ graph as fake quantization, "
                         "slower than FP32; the INT8 bundle is evaluated for its AP")


@dataclass(frozen=True)
class DemoOptions:
    """How the demo runs; checked once, here (one sentence each). The live run lasts `seconds` and
    draws and writes detections scoring at least `score_threshold` (default 0.5, the pipeline's
    display threshold), with persistent track IDs if `track`; the AP report evaluates
    `eval_images` held-out images, everything the model keeps, as `edge-fpn eval` does."""
    seconds: float = 10.0
    precision: str = "int8"
    force: bool = False
    eval_images: int = 100
    calibration_images: int = 32
    progress: bool = True
    device: str = "auto"
    score_threshold: Optional[float] = None
    track: Any = False  # True, or a TrackerConfig (detect's --track-option)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int8"):
            raise EdgeFpnError(f"--precision must be fp32 or int8, not {self.precision!r}")
        if not 0 < self.seconds <= MAX_DEMO_SECONDS:  # (1e300 got past this, wrote the bundles, then overflowed)
            raise EdgeFpnError(f"--seconds must be a positive number of seconds, at most {MAX_DEMO_SECONDS} (a day), "
                               f"not {self.seconds}")
        if self.eval_images < 1:
            raise EdgeFpnError(f"--eval-images must be at least 1, not {self.eval_images}")
        if self.precision == "int8" and self.calibration_images < 1:
            raise EdgeFpnError(f"--calibration-images must be at least 1, not {self.calibration_images}")
        from .runtime.detector import check_score_threshold
        check_score_threshold(self.score_threshold, "--score-threshold")


def run_demo(output: str = "demo-out", options: Optional[DemoOptions] = None) -> Dict[str, Any]:
    """Export, calibrate, build, run live, report (see DemoOptions); writes report.json in `output`
    and returns the report."""
    from .evaluate import DEFAULT_EVAL_SEED, bundle_detect_fn, evaluate, synthetic_data, torch_detect_fn
    from .runtime.detector import Detector

    options = options or DemoOptions()
    progress, seconds, eval_images, device = options.progress, options.seconds, options.eval_images, options.device
    _prepare_output(output, options.force)
    started = time.time()
    model, fp32, engine = _export_and_build(output, options)

    live, why = live_choice(engine, fp32) if engine != fp32 else (fp32, "FP32, as asked")
    _say(f"4/5 run live on the synthetic camera for {seconds:g} s: {why}")
    detector = Detector(live, device=device)
    stats, shown_from = run_live(detector, output, seconds, progress=progress,
                                 score_threshold=options.score_threshold, track=options.track)

    _say(f"5/5 evaluate on {eval_images} held-out synthetic images (bundle and PyTorch)")
    detect, _, size = bundle_detect_fn(engine, device=device)
    images, coco = synthetic_data(eval_images, DEFAULT_EVAL_SEED, size)
    bundle_ap = evaluate(detect, images, coco, progress=progress, total=eval_images)
    images, coco = synthetic_data(eval_images, DEFAULT_EVAL_SEED, size)
    torch_ap = evaluate(torch_detect_fn(model, size), images, coco, progress=progress, total=eval_images)

    report = _report(output, options, engine, live, why, detector, stats, shown_from)
    report["ap"] = {"bundle": bundle_ap, "pytorch": torch_ap}
    report["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    report["total_seconds"] = round(time.time() - started, 1)
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    detector.close()
    print(summary(report, output))
    return report


def _export_and_build(output: str, options: DemoOptions) -> Tuple[Any, str, str]:
    """Steps 1-3: export the shipped model, and for INT8 calibrate and build; returns (the torch
    model, the FP32 bundle, the bundle asked for)."""
    from .builder.builder import BuildRequest, build_engine
    from .builder.calibrate import CalibrationRequest, calibrate
    from .export.onnx_export import ExportOptions, export_bundle
    from .logs import lines_to
    from .model.loading import load_shipped_model

    progress, bundles = options.progress, os.path.join(output, "bundles")
    _say("1/5 export the shipped 'shapes' model to ONNX")
    model, meta = load_shipped_model("shapes")
    fp32 = os.path.join(bundles, "shapes-fp32")
    export_bundle(model, meta["architecture"], meta["class_names"], tuple(meta["input_size"]), fp32, ExportOptions(
        force=True, progress=progress,
        provenance={"source_checkpoint": meta["checkpoint"], "source_checkpoint_sha256": meta["checkpoint_sha256"]}))
    if options.precision != "int8":
        _say("2/5 and 3/5 skipped: FP32 needs no calibration or build step")
        return model, fp32, fp32
    _say(f"2/5 calibrate INT8 on {options.calibration_images} synthetic images (entropy)")
    cal_dir = os.path.join(output, "calibration")
    calibrate(CalibrationRequest(fp32, f"synthetic:{options.calibration_images}", output=cal_dir, method="entropy",
                                 force=True), progress=progress)
    _say("3/5 build the engine (TensorRT where present, else ONNX Runtime)")
    engine = os.path.join(bundles, "shapes-int8")
    with lines_to(_say, "edge_fpn.builder"):  # the build's lines as the demo's own
        build_engine(BuildRequest(fp32, engine, precision="int8", calibration=cal_dir, force=True, eval_data=None),
                     progress=progress)
    return model, fp32, engine


def _report(output: str, options: DemoOptions, engine: str, live: str, why: str, detector: Any,
            stats: Dict[str, Any], shown_from: float) -> Dict[str, Any]:
    """The report's bundles, live run and timings (the AP and the machine are added by run_demo)."""
    from .bundle import LAYOUT_STAGES, load_manifest
    from .runtime.app import engine_providers

    built = load_manifest(engine)
    stage = built.stages[LAYOUT_STAGES[built.layout][0]]  # "detector", or "stage1" (host)
    live_stage = detector.manifest.stages[LAYOUT_STAGES[detector.manifest.layout][0]]
    return {
        "backend": stage.backend,
        "precision": stage.precision,
        "live_precision": live_stage.precision,
        "bundle": os.path.relpath(engine, output),
        "live_bundle": os.path.relpath(live, output),
        "live_choice": why,
        "live_runs_on": engine_providers(detector),
        "source": DEMO_SOURCE,
        "seconds": options.seconds,
        "score_threshold": shown_from,
        "frames": stats.get("frames", 0),
        "dropped_frames": stats.get("dropped", 0),
        "bad_frames": stats.get("bad_frames", 0),
        "tracking": bool(options.track),
        "fps": stats.get("fps", 0.0),
        "latency_ms": _ms(stats.get("latency", {})),
        "stages_ms": {name: _ms(value) for name, value in stats.get("stages", {}).items()},
        "eval_images": options.eval_images,
    }


def run_live(detector: Any, output: str, seconds: float, progress: bool = True,
             score_threshold: Optional[float] = None, source: str = DEMO_SOURCE,
             track: Any = False) -> Tuple[Dict[str, Any], float]:
    """The demo's live step: `source` through the pipeline for `seconds` into demo.mp4 and
    detections.jsonl in `output`; returns the statistics and the score threshold shown from."""
    from .runtime.pipeline import Pipeline

    sinks = [os.path.join(output, "demo.mp4"), os.path.join(output, "detections.jsonl")]
    with Pipeline(detector, source, sinks, quiet=not progress, stats_interval=max(2.0, seconds / 3),
                  score_threshold=score_threshold, tracker=track or None) as pipeline:
        pipeline.start()
        pipeline.wait(seconds)
    return pipeline.stats.snapshot(), pipeline.score_threshold


def _ms(summary: Dict[str, Any]) -> Dict[str, float]:
    return {"median": round(float(summary.get("median_ms", 0.0)), 2), "p95": round(float(summary.get("p95_ms", 0.0)), 2)}


def summary(report: Dict[str, Any], output: str) -> str:
    stages = report.get("stages_ms", {})
    parts = ", ".join(f"{k} {v.get('median', 0):.1f}" for k, v in stages.items())
    return "\n".join([
        f"edge-fpn demo: live {report['live_precision'].upper()} on {report['backend']} "
        f"({', '.join(report.get('live_runs_on', [])) or '?'}), {report['frames']} frames in "
        f"{report['seconds']:g} s: {report['fps']:.1f} FPS ({report['dropped_frames']} dropped, newest-frame policy)",
        f"  live engine: {report['live_choice']}",
        f"  per-stage median ms: {parts}",
        f"  AP on {report['eval_images']} held-out images: {report['precision'].upper()} bundle "
        f"{report['ap']['bundle']['AP']:.3f}, "
        f"PyTorch {report['ap']['pytorch']['AP']:.3f}",
        f"  wrote {os.path.join(output, 'demo.mp4')}, detections.jsonl, report.json",
    ])
