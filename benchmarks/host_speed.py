"""Host speed: edge-fpn's Detector (ONNX Runtime, FP32) vs torchvision eager vs the naive path
(torchvision's whole-model ONNX export in ONNX Runtime), measured side by side in one run.

    python benchmarks/host_speed.py [--frames 20] [--models mobilenet320,resnet50]

Prints median per-frame latency of each path, the ratios, and the split of the Detector's frame
time into preprocess / stage 1 / per-level postprocess / stage 2 / final postprocess.
Weights are random but made meaningful (tests/reference_models.py), as the speed of these
models does not depend on what the weights learned, except through the number of proposals.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

MODELS = {
    "mobilenet320": ("fasterrcnn_mobilenet_v3_large_320_fpn", (320, 320)),
    "resnet50": ("fasterrcnn_resnet50_fpn", (800, 800)),
}
CLASSES = ["__background__"] + [f"class_{i}" for i in range(1, 91)]


def median_ms(fn, frames: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(frames):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def naive_whole_model(model, size, path):
    """torchvision's own whole-model ONNX export, as a user would try first."""
    import torch
    x = torch.rand(3, *size)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, ([x],), path, dynamo=False, opset_version=17)
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image})


def bench_model(key: str, frames: int, workdir: str) -> dict:
    import torch
    from conftest import textured_image
    from reference_models import meaningful_model
    from edge_fpn import Detector
    from edge_fpn.export.onnx_export import export_bundle

    arch, size = MODELS[key]
    model = meaningful_model(arch, len(CLASSES), size, seed=0)
    bundle = os.path.join(workdir, key)
    export_bundle(model, arch, CLASSES, size, bundle, progress=False)
    detector = Detector(bundle)
    image = textured_image(3, *size)
    tensor = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    naive = naive_whole_model(model, size, os.path.join(workdir, key + "_whole.onnx"))
    naive_input = tensor.numpy()

    def eager():
        with torch.no_grad():
            model([tensor])

    # interleave the three paths so that machine noise hits them alike
    results = {"edge-fpn": [], "eager": [], "naive-onnx": []}
    split = {}
    for _ in range(3):
        results["edge-fpn"].append(median_ms(lambda: detector(image), max(1, frames // 3)))
        for name, value in detector.timer.last.items():
            split.setdefault(name, []).append(value * 1000)
        results["eager"].append(median_ms(eager, max(1, frames // 3)))
        results["naive-onnx"].append(median_ms(lambda: naive(naive_input), max(1, frames // 3)))
    samples = []
    for _ in range(frames):
        detector(image)
        samples.append(detector.timer.last)
    split = {k: statistics.median(s[k] for s in samples) * 1000 for k in samples[0]}
    return {"model": f"{arch} {size[0]}x{size[1]}", **{k: statistics.median(v) for k, v in results.items()}, "split": split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--models", default="mobilenet320,resnet50")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        rows = [bench_model(key, args.frames, workdir) for key in args.models.split(",")]
    print(f"\n{'model':42} {'edge-fpn':>9} {'eager':>9} {'naive-onnx':>11} {'eager/edge':>11} {'naive/edge':>11}")
    for r in rows:
        print(f"{r['model']:42} {r['edge-fpn']:8.1f}ms {r['eager']:8.1f}ms {r['naive-onnx']:10.1f}ms "
              f"{r['eager'] / r['edge-fpn']:10.2f}x {r['naive-onnx'] / r['edge-fpn']:10.2f}x")
    print("\nDetector frame time split (median ms, share):")
    for r in rows:
        total = sum(r["split"].values())
        post = r["split"]["proposals"] + r["split"]["detections"]
        parts = "  ".join(f"{k} {v:.1f} ({v / total:.0%})" for k, v in r["split"].items())
        print(f"  {r['model']}: {parts}  | postprocessing {post / total:.1%}")


if __name__ == "__main__":
    main()
