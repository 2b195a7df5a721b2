"""Host speed: edge-fpn's Detector (ONNX Runtime on the CPU, FP32) per bundle layout vs torchvision eager
vs the naive path (torchvision's whole-model ONNX export in ONNX Runtime), measured side by side in one run,
and the Detector's time per frame outside the engine calls.

    python benchmarks/host_speed.py [--frames 15] [--warmup 2] [--models mobilenet320,resnet50,shapes]
                                    [--layouts engine,host] [--sections compare,host]

compare: per-frame latency of each path on an image of the model's input size, the paths
interleaved frame by frame (edge-fpn engine, edge-fpn host, eager, naive, edge-fpn engine, ...) so
that machine noise hits them alike; min / median / max, the ratios of the medians, and the split
of the Detector's frame time into its steps.

host: per model and layout, the time per frame spent outside the engine calls (frame time minus
the steps named "stage*"/"engine*" in ``detector.last_timings``: letterbox, the numpy
postprocessing, scaling boxes back), from a camera-sized frame: 640x480 for the 320 models,
1280x720 for ResNet-50 at 800. Goals: <= 1 ms for the shipped model, <= 4 ms for ResNet-50.

Weights of the torchvision models are random but made meaningful (tests/reference_models.py), as
the speed of these models does not depend on what the weights learned, except through the number
of proposals; `shapes` is the shipped model with its trained weights, on synthetic scenes.
"""
from __future__ import annotations

import argparse
import inspect
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]


@dataclass(frozen=True)
class ModelSpec:
    arch: str  # torchvision architecture, or "shapes" for the shipped model
    size: Tuple[int, int]  # engine input (H, W)
    frame: Tuple[int, int]  # camera frame (H, W) for the host-time measurement
    host_goal_ms: Optional[float]  # goal for the time per frame outside the engine calls


MODELS = {
    "mobilenet320": ModelSpec("fasterrcnn_mobilenet_v3_large_320_fpn", (320, 320), (480, 640), None),
    "resnet50": ModelSpec("fasterrcnn_resnet50_fpn", (800, 800), (720, 1280), 4.0),
    "shapes": ModelSpec("shapes", (320, 320), (480, 640), 1.0),
}
CLASSES = ["__background__"] + [f"class_{i}" for i in range(1, 91)]
LAYOUTS = ("engine", "host")


# ---------------------------------------------------------------- shared with gpu_speed.py

def make_model(key: str) -> Tuple[Any, str, List[str]]:
    """(eval-mode torch model on the CPU, architecture name, class names) of a benchmark model."""
    spec = MODELS[key]
    if spec.arch == "shapes":
        from edge_fpn.model.loading import load_shipped_model
        model, meta = load_shipped_model("shapes")
        return model.float().eval(), meta["architecture"], list(meta["class_names"])
    from reference_models import meaningful_model
    return meaningful_model(spec.arch, len(CLASSES), spec.size, seed=0).eval(), spec.arch, CLASSES


def test_image(key: str, height: int, width: int, seed: int = 3) -> np.ndarray:
    """A BGR uint8 frame the model responds to: a synthetic scene for `shapes`, a textured image otherwise."""
    if MODELS[key].arch == "shapes":
        from edge_fpn.runtime.synthetic import make_scene
        return make_scene(1000 + seed, 0, width, height)[0]
    from conftest import textured_image
    return textured_image(seed, height, width)


def to_tensor(frame: np.ndarray):
    """torchvision's input: RGB float CHW in [0, 1]."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(frame[:, :, ::-1])).permute(2, 0, 1).float() / 255


def export_layouts(model: Any, arch: str, class_names: Sequence[str], size: Tuple[int, int], workdir: str,
                   key: str, layouts: Sequence[str]) -> Dict[str, str]:
    """Bundle directory per layout; a layout that this edge-fpn cannot export is reported and left out."""
    from edge_fpn.export.onnx_export import export_bundle

    parameters = inspect.signature(export_bundle).parameters
    accepts_layout = "layout" in parameters or "options" in parameters
    bundles = {}
    for layout in layouts:
        if not accepts_layout and layout != "host":
            print(f"[{key}] layout {layout!r}: export_bundle has no layout keyword yet; skipped", flush=True)
            continue
        path = os.path.join(workdir, f"{key}-{layout}")
        kwargs = {"layout": layout} if accepts_layout else {}
        try:
            _export(export_bundle, model, arch, class_names, size, path, progress=False, force=True, **kwargs)
        except Exception as exc:
            if "lint" not in str(exc):  # report and go on with the other layouts
                print(f"[{key}] layout {layout!r}: export failed ({type(exc).__name__}: {first_line(exc)}); skipped", flush=True)
                continue
            # the TensorRT lint does not concern ONNX Runtime: measure it anyway, and say so
            print(f"[{key}] layout {layout!r}: {first_line(exc)[:160]}...; measured without the lint", flush=True)
            _export(export_bundle, model, arch, class_names, size, path, progress=False, force=True, check=False,
                    **kwargs)
        bundles[layout] = path
    return bundles


def _export(export_bundle: Any, model: Any, arch: str, class_names: Any, size: Any, path: str, **options: Any) -> None:
    """export_bundle with its options as an ExportOptions, or as keywords for an edge-fpn before it."""
    try:
        from edge_fpn.export.onnx_export import ExportOptions
    except ImportError:
        export_bundle(model, arch, class_names, size, path, **options)
    else:
        export_bundle(model, arch, class_names, size, path, ExportOptions(**options))


def open_detector(bundle: str, device: str, key: str = "", layout: str = ""):
    """A Detector on `device` (where the Detector takes the keyword), or None with the reason printed."""
    from edge_fpn import Detector

    kwargs = {"device": device} if "device" in inspect.signature(Detector.__init__).parameters else {}
    if not kwargs and device == "cuda":
        print(f"[{key}] layout {layout!r}: this Detector has no device keyword, so it cannot be put on CUDA; skipped", flush=True)
        return None
    try:
        return Detector(bundle, **kwargs)
    except Exception as exc:
        print(f"[{key}] layout {layout!r}: the Detector cannot open it ({type(exc).__name__}: {first_line(exc)}); skipped", flush=True)
        return None


def detector_providers(detector: Any) -> List[str]:
    found: List[str] = []
    backends = detector.backends() if hasattr(detector, "backends") else list(vars(detector).values())
    for backend in backends:
        provider = getattr(backend, "provider", None)
        if isinstance(provider, str) and provider not in found:
            found.append(provider)
    return found


def is_engine_step(name: str, detector: Any = None) -> bool:
    steps = getattr(detector, "engine_steps", None)
    return name in steps if steps else ("stage" in name or "engine" in name)


def engine_seconds(detector: Any) -> float:
    """Seconds of the Detector's last call spent in engine calls."""
    return sum(v for k, v in detector.last_timings.items() if is_engine_step(k, detector))


def naive_whole_model(model: Any, example, path: str, providers: Optional[List[Any]] = None) -> Callable[[np.ndarray], Any]:
    """torchvision's own whole-model ONNX export, as a user would try first; `example` is a CHW float tensor."""
    import onnxruntime as ort
    import torch
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, ([example],), path, dynamo=False, opset_version=17)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, sess_options=options, providers=providers or ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run = lambda image: session.run(None, {name: image})  # noqa: E731
    run.session = session  # type: ignore[attr-defined]
    return run


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def spread(values: Sequence[float]) -> Tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def fmt_spread(values: Sequence[float], width: int = 7) -> str:
    if not values:
        return f"{'n/a':>{3 * width + 2}}"
    lo, mid, hi = spread(values)
    return f"{lo:{width}.1f}/{mid:{width}.1f}/{hi:{width}.1f}" if mid >= 10 else f"{lo:{width}.2f}/{mid:{width}.2f}/{hi:{width}.2f}"


QUIET_GAP_S = 0.3


def interleave(paths: Dict[str, Callable[[], Any]], frames: int, warmup: int,
               after: Optional[Dict[str, Callable[[float], None]]] = None) -> Dict[str, List[float]]:
    """Milliseconds per call of each path, the paths taking turns frame by frame; warm-up calls dropped.
    after[name](seconds) runs after each timed call of that path (outside the timing)."""
    times: Dict[str, List[float]] = {name: [] for name in paths}
    for i in range(warmup + frames):
        for name, fn in paths.items():
            # a quiet start for every call: the previous path's idle threads (OpenMP's, ONNX Runtime's
            # with spinning on) busy-wait for a while after it returns and would bill the next path
            time.sleep(QUIET_GAP_S)
            t = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t
            if i >= warmup:
                times[name].append(seconds * 1000)
                if after and name in after:
                    after[name](seconds)
    return times


# ---------------------------------------------------------------- the CPU measurements

def bench_model(key: str, frames: int, warmup: int, layouts: Sequence[str], sections: Sequence[str],
                workdir: str) -> Dict[str, Any]:
    import torch

    spec = MODELS[key]
    model, arch, class_names = make_model(key)
    bundles = export_layouts(model, arch, class_names, spec.size, workdir, key, layouts)
    detectors = {layout: d for layout, path in bundles.items()
                 if (d := open_detector(path, "cpu", key, layout)) is not None}
    result: Dict[str, Any] = {"key": key, "model": f"{arch} {spec.size[0]}x{spec.size[1]}", "spec": spec,
                              "layouts": list(detectors)}

    if "compare" in sections:
        image = test_image(key, *spec.size)
        tensor = to_tensor(image)
        naive = naive_whole_model(model, to_tensor(test_image(key, *spec.size, seed=4)),
                                  os.path.join(workdir, key + "_whole.onnx"))
        naive_input = tensor.numpy()

        def eager():
            with torch.no_grad():
                model([tensor])

        paths: Dict[str, Callable[[], Any]] = {f"edge-fpn {layout}": (lambda d=d: d(image)) for layout, d in detectors.items()}
        paths["eager"] = eager
        paths["naive-onnx"] = lambda: naive(naive_input)
        splits: Dict[str, List[Dict[str, float]]] = {layout: [] for layout in detectors}
        after = {f"edge-fpn {layout}": (lambda _s, layout=layout, d=d: splits[layout].append(dict(d.last_timings)))
                 for layout, d in detectors.items()}
        result["compare"] = interleave(paths, frames, warmup, after)
        result["split"] = {layout: {k: statistics.median(s[k] for s in samples) * 1000 for k in samples[0]}
                           for layout, samples in splits.items() if samples}

    if "host" in sections and detectors:
        frame = test_image(key, *spec.frame)
        host: Dict[str, List[float]] = {layout: [] for layout in detectors}
        paths = {layout: (lambda d=d: d(frame)) for layout, d in detectors.items()}
        after = {layout: (lambda s, layout=layout, d=d: host[layout].append((s - engine_seconds(d)) * 1000))
                 for layout, d in detectors.items()}
        frame_ms = interleave(paths, frames, warmup, after)
        result["host"] = {layout: {"host_ms": host[layout], "frame_ms": frame_ms[layout]} for layout in detectors}
    for d in detectors.values():
        d.close()
    return result


def report(rows: List[Dict[str, Any]], frames: int) -> None:
    compared = [r for r in rows if "compare" in r]
    if compared:
        print(f"\nPer-frame latency, ms as min/median/max over {frames} interleaved frames (image at the model's input size):")
        print(f"  {'model':46} {'path':18} {'min/median/max ms':>26} {'eager/this':>11} {'naive/this':>11}")
        for r in compared:
            eager = statistics.median(r["compare"]["eager"])
            naive = statistics.median(r["compare"]["naive-onnx"])
            for name, values in r["compare"].items():
                mid = statistics.median(values)
                print(f"  {r['model']:46} {name:18} {fmt_spread(values):>26} {eager / mid:10.2f}x {naive / mid:10.2f}x")
        print("\nDetector frame time split (median ms, share):")
        for r in compared:
            for layout, split in r["split"].items():
                total = sum(split.values())
                host = sum(v for k, v in split.items() if not is_engine_step(k))
                parts = "  ".join(f"{k} {v:.1f} ({v / total:.0%})" for k, v in split.items())
                print(f"  {r['model']} [{layout}]: {parts}  | outside the engines {host / total:.1%}")
    hosted = [r for r in rows if "host" in r]
    if hosted:
        print(f"\nTime per frame outside the engine calls (camera frame; ms as min/median/max over {frames} frames):")
        print(f"  {'model':46} {'frame':>9} {'layout':7} {'outside engines':>26} {'frame time':>26} {'share':>6}  goal")
        for r in hosted:
            spec = r["spec"]
            for layout, m in r["host"].items():
                share = statistics.median(m["host_ms"]) / statistics.median(m["frame_ms"])
                goal = "-"
                if spec.host_goal_ms is not None:
                    ok = statistics.median(m["host_ms"]) <= spec.host_goal_ms
                    goal = f"<= {spec.host_goal_ms:g} ms: {'met' if ok else 'NOT met'}"
                print(f"  {r['model']:46} {spec.frame[1]:>4}x{spec.frame[0]:<4} {layout:7} {fmt_spread(m['host_ms']):>26} "
                      f"{fmt_spread(m['frame_ms']):>26} {share:6.1%}  {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=15, help="timed frames per path (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames per path first (default 2)")
    parser.add_argument("--models", default="mobilenet320,resnet50,shapes", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--layouts", default="engine,host", help="bundle layouts to measure (default engine,host)")
    parser.add_argument("--sections", default="compare,host", help="compare, host, or both (default)")
    args = parser.parse_args()
    keys = [k for k in args.models.split(",") if k]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    layouts = [layout for layout in args.layouts.split(",") if layout]
    sections = [s for s in args.sections.split(",") if s]
    with tempfile.TemporaryDirectory() as workdir:
        rows = [bench_model(key, args.frames, args.warmup, layouts, sections, workdir) for key in keys]
    report(rows, args.frames)


if __name__ == "__main__":
    main()
