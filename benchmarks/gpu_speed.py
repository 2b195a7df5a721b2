"""GPU speed: edge-fpn's Detector on ONNX Runtime's CUDA provider, per bundle layout, against
torchvision eager on CUDA (FP32 and FP16 autocast) and torchvision's own whole-model ONNX export
on the same CUDA provider; with the Detector's host share, `edge-fpn bench`'s ratio and fidelity.

    python benchmarks/gpu_speed.py [--frames 30] [--warmup 5] [--models mobilenet320,resnet50,shapes]
                                   [--layouts engine,host] [--bench-frames 100] [--fidelity-images 5]

Needs a CUDA GPU, onnxruntime-gpu (its CUDA provider) and torch with CUDA; elsewhere it prints
one line saying what is missing and exits 0.

Per model (MobileNetV3-Large-320 FPN at 320 and ResNet-50 FPN at 800, 91 classes, random weights
made meaningful as in host_speed.py; the shipped `shapes` model at 320):

* latency per frame from a camera-sized BGR uint8 frame (640x480 for the 320 models, 1280x720
  for ResNet-50) to detections in host memory, every path doing its own resize and upload:
  the Detector per layout (``Detector(bundle, device="cuda")``), torchvision eager FP32 and FP16
  (autocast), and the naive path (torchvision's ``torch.onnx.export`` of the whole model, run on
  the CUDA provider). The paths take turns frame by frame (ours, eager, naive, ours, ...), after
  --warmup untimed turns; min / median / max over --frames, and the ratios of the medians.
* host share: the Detector's time per frame outside the engine calls (frame time minus the steps
  named "stage*"/"engine*" in ``detector.last_timings``) over its frame time.
* bench ratio: ``edge-fpn bench --device cuda`` (pipeline FPS / engine-only FPS on test:// 640x480).
* fidelity: on --fidelity-images images of the model's input size, the share of torchvision's
  detections (eager FP32 on CUDA, score >= 0.05) that the Detector matches one-to-one with the same
  label, IoU >= 0.99 and |score difference| <= 1e-3 (tests/detection_matching.py). FP32 is strict
  on both sides: TF32 is off in torch here, and the Detector's FP32 stages ask the CUDA provider
  for no TF32 either (edge_fpn/runtime/backends/onnxruntime_backend.py).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

from ort_profile import format_profile  # noqa: E402
from host_speed import (MODELS, detector_providers, engine_seconds, export_layouts, first_line,  # noqa: E402
                        fmt_spread, interleave, make_model, naive_whole_model, open_detector, test_image, to_tensor)

CUDA = "CUDAExecutionProvider"
MIN_SCORE = 0.05


def gpu_missing() -> Optional[str]:
    """Why this machine cannot run the benchmark, or None."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed (install onnxruntime-gpu matching the CUDA version)"
    if CUDA not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} has no CUDA provider ({', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu matching the CUDA version")
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


def torch_path(model_gpu: Any, frame: np.ndarray, fp16: bool) -> Callable[[], Dict[str, np.ndarray]]:
    """torchvision eager from the BGR uint8 frame: upload, BGR->RGB, scale, model, detections to the host."""
    import torch

    def run() -> Dict[str, np.ndarray]:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
            x = torch.from_numpy(frame).cuda().flip(-1).permute(2, 0, 1).float() / 255
            out = model_gpu([x])[0]
            return {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for k, v in out.items()}
    return run


def torch_detections(model_gpu: Any, image: np.ndarray, fp16: bool = False):
    out = torch_path(model_gpu, image, fp16)()
    return out["boxes"], out["scores"], out["labels"]


def fidelity(reference: List[Any], ours: List[Any]) -> float:
    """Share of all reference detections (score >= 0.05) over the images matched by ours."""
    from detection_matching import matched_share
    wanted = matched = 0.0
    for ref, mine in zip(reference, ours):
        count = int((ref[1] >= MIN_SCORE).sum())
        wanted += count
        matched += matched_share(ref, mine, MIN_SCORE) * count
    return matched / wanted if wanted else 1.0


def bench_ratio(bundle: str, frames: int, device: str = "cuda") -> str:
    """`edge-fpn bench`'s pipeline FPS over engine-only FPS, as the README quotes it, or why not."""
    from edge_fpn.runtime.app import bench
    try:
        report = bench(bundle, frames=frames, warmup=5, quiet=True, device=device)
    except Exception as exc:
        return f"n/a ({type(exc).__name__}: {first_line(exc)[:80]})"
    return f"{report['ratio']:.3f} ({report['pipeline_fps']:.0f}/{report['engine_only_fps']:.0f} FPS)"


def naive_input(frame: np.ndarray) -> np.ndarray:
    """The naive path's own preprocessing: BGR uint8 HWC -> RGB float CHW in 0-1 (the whole-model graph resizes)."""
    return np.ascontiguousarray(frame[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255


def profile_paths(detectors: Dict[str, Any], bundles: Dict[str, str], naive_path: str, frame: np.ndarray,
                  runs: int) -> Dict[str, Dict[str, Any]]:
    """ONNX Runtime's own profile of the engine layout's graph and of the naive whole-model graph,
    each on the CUDA provider with the inputs its path gives it: time per op type, nodes per provider."""
    import onnxruntime as ort
    from edge_fpn.runtime.backends.onnxruntime_backend import provider_options
    from ort_profile import profile_session

    providers = [(CUDA, provider_options(ort, CUDA)), "CPUExecutionProvider"]
    jobs = {}
    if "engine" in detectors:
        inputs, _ = detectors["engine"].layout.preprocess(frame)
        jobs["edge-fpn engine"] = (os.path.join(bundles["engine"], "detector.onnx"), inputs)
    jobs["naive onnx"] = (naive_path, naive_input(frame))
    found = {}
    for name, (path, inputs) in jobs.items():
        try:
            found[name] = profile_session(path, inputs, providers, runs=runs)
        except Exception as exc:  # a profile is a diagnosis: its failure must not lose the timings
            print(f"  profile of {name} failed: {type(exc).__name__}: {first_line(exc)}", flush=True)
    return found


def measure_model(key: str, args: argparse.Namespace, workdir: str) -> Optional[Dict[str, Any]]:
    import onnxruntime as ort
    import torch
    from edge_fpn.runtime.backends.onnxruntime_backend import provider_options

    spec = MODELS[key]
    print(f"[{key}] model, export ({', '.join(args.layouts)}), naive export ...", flush=True)
    model, arch, class_names = make_model(key)
    bundles = export_layouts(model, arch, class_names, spec.size, workdir, key, args.layouts)
    frame = test_image(key, *spec.frame)
    naive_path = os.path.join(workdir, key + "_whole.onnx")
    naive = naive_whole_model(model, to_tensor(test_image(key, *spec.frame, seed=4)), naive_path,
                              providers=[(CUDA, provider_options(ort, CUDA)), "CPUExecutionProvider"])
    naive_provider = naive.session.get_providers()[0]  # type: ignore[attr-defined]
    model_gpu = copy.deepcopy(model).cuda().eval()
    detectors = {layout: d for layout, path in bundles.items()
                 if (d := open_detector(path, "cuda", key, layout)) is not None}
    providers = {layout: ", ".join(detector_providers(d)) or "?" for layout, d in detectors.items()}

    paths: Dict[str, Callable[[], Any]] = {}
    host_ms: Dict[str, List[float]] = {}
    after: Dict[str, Callable[[float], None]] = {}
    eager32, eager16 = torch_path(model_gpu, frame, False), torch_path(model_gpu, frame, True)
    naive_run = lambda: naive(naive_input(frame))  # noqa: E731  (its preprocessing timed, every frame)
    # turns: ours (each layout), eager FP32, eager FP16, naive, ours, ...
    for layout, d in detectors.items():
        name = f"edge-fpn {layout}"
        paths[name] = lambda d=d: d(frame)
        host_ms[name] = []
        after[name] = lambda s, name=name, d=d: host_ms[name].append((s - engine_seconds(d)) * 1000)
    paths["eager fp32"] = eager32
    paths["eager fp16"] = eager16
    paths[f"naive onnx ({naive_provider.replace('ExecutionProvider', '')})"] = naive_run
    print(f"[{key}] timing {len(paths)} paths, {args.warmup} warm-up + {args.frames} frames each, interleaved ...", flush=True)
    times = interleave(paths, args.frames, args.warmup, after)

    print(f"[{key}] fidelity on {args.fidelity_images} images, bench ratio ...", flush=True)
    images = [test_image(key, *spec.size, seed=10 + i) for i in range(args.fidelity_images)]
    reference = [torch_detections(model_gpu, image) for image in images]
    fid = {}
    for layout, d in detectors.items():
        ours = []
        for image in images:
            found = d(image)
            ours.append((found.boxes, found.scores, found.labels))
        fid[f"edge-fpn {layout}"] = fidelity(reference, ours)
    fid["eager fp16"] = fidelity(reference, [torch_detections(model_gpu, image, fp16=True) for image in images])
    profiles = profile_paths(detectors, bundles, naive_path, frame, args.profile_runs) if args.profile_runs else {}
    for d in detectors.values():
        d.close()
    ratios = {f"edge-fpn {layout}": (bench_ratio(path, args.bench_frames) if args.bench_frames else "skipped")
              for layout, path in bundles.items() if layout in detectors}
    del model_gpu
    torch.cuda.empty_cache()
    return {"model": f"{key}: {arch} {spec.size[0]}x{spec.size[1]}, frame {spec.frame[1]}x{spec.frame[0]}",
            "times": times, "host_ms": host_ms, "fidelity": fid, "bench": ratios,
            "providers": {f"edge-fpn {k}": v for k, v in providers.items()}, "profiles": profiles}


def report(rows: List[Dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nLatency per frame, ms as min/median/max over {args.frames} interleaved frames ({args.warmup} warm-up):")
    for r in rows:
        times = r["times"]
        med = {name: statistics.median(v) for name, v in times.items()}
        naive_name = next(n for n in times if n.startswith("naive"))
        print(f"\n  {r['model']}")
        print(f"    {'path':22} {'min/median/max ms':>26} {'eager32/this':>13} {'eager16/this':>13} {'naive/this':>11} "
              f"{'host ms (share)':>16} {'bench ratio':>24} {'fidelity':>9}  provider")
        for name, values in times.items():
            host = ""
            if name in r["host_ms"] and r["host_ms"][name]:
                h = statistics.median(r["host_ms"][name])
                host = f"{h:.2f} ({h / med[name]:.0%})"
            fid = f"{r['fidelity'][name]:.1%}" if name in r["fidelity"] else ""
            print(f"    {name:22} {fmt_spread(values):>26} {med['eager fp32'] / med[name]:12.2f}x "
                  f"{med['eager fp16'] / med[name]:12.2f}x {med[naive_name] / med[name]:10.2f}x {host:>16} "
                  f"{r['bench'].get(name, ''):>24} {fid:>9}  {r['providers'].get(name, '')}")
    for r in rows:
        if r.get("profiles"):
            print(f"\n  ONNX Runtime profile on the CUDA provider, {r['model']} (host-side time per node: a "
                  "kernel that waits for the GPU or copies to the host shows its wait; nodes off CUDA are named):")
            for name, summary in r["profiles"].items():
                print(format_profile(name, summary))
    print(f"\nfidelity: share of torchvision eager FP32 (CUDA, no TF32) detections with score >= {MIN_SCORE} matched at "
          "IoU >= 0.99 and |score diff| <= 1e-3 (eager fp16's row: autocast against the same reference)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="timed frames per path (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames per path first (default 5)")
    parser.add_argument("--models", default="mobilenet320,resnet50,shapes", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--layouts", default="engine,host", help="bundle layouts to measure (default engine,host)")
    parser.add_argument("--bench-frames", type=int, default=100, help="frames of `edge-fpn bench` per layout (0: skip)")
    parser.add_argument("--profile-runs", type=int, default=20,
                        help="runs of ONNX Runtime's profiler per graph, engine layout and naive (0: skip)")
    parser.add_argument("--fidelity-images", type=int, default=5, help="images for the fidelity check (default 5)")
    args = parser.parse_args()
    args.layouts = [layout for layout in args.layouts.split(",") if layout]
    keys = [k for k in args.models.split(",") if k]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.frames < 1 or args.warmup < 0 or args.fidelity_images < 1 or args.profile_runs < 0:
        parser.error("--frames and --fidelity-images must be at least 1, --warmup and --profile-runs at least 0")
    missing = gpu_missing()
    if missing:
        print(f"gpu_speed: nothing measured: {missing}")
        return 0

    import onnxruntime as ort
    import torch
    # strict FP32 on the torch side, as the Detector's FP32 stages on the CUDA provider (no TF32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    print(f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, onnxruntime {ort.__version__} "
          f"({', '.join(ort.get_available_providers())})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for key in keys:
            try:
                row = measure_model(key, args, workdir)
            except Exception as exc:  # one model's failure should not lose the others' numbers
                print(f"[{key}] failed: {type(exc).__name__}: {first_line(exc)}", flush=True)
                continue
            if row:
                rows.append(row)
                report([row], args)  # as soon as it is known, in case a later model runs out of time
    if len(rows) > 1:
        print("\n==================== all models")
        report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
