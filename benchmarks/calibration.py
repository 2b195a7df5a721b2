"""Calibration time and peak memory: `edge-fpn calibrate` (+ writing the Q/DQ stages) per method,
next to onnxruntime's `quantize_static` doing the same job on the same images.

    python benchmarks/calibration.py                       # fasterrcnn_resnet50_fpn, 800x800, 128 images
    python benchmarks/calibration.py --images 16 --size 512 --methods entropy,minmax --ort-methods entropy

    python benchmarks/calibration.py --accuracy [--weights shapes.pt] [--eval 500] [--images 128]

--layout engine (default, what `edge-fpn export` writes: one graph from the uint8 frame to
detections) or host (stage 1 + numpy proposals + stage 2) picks the exported bundle's layout.

--accuracy measures instead what each method costs in accuracy on the shipped `shapes` model (or
another checkpoint of it): COCO AP of the INT8 Q/DQ bundle next to the FP32 bundle, both run
through the runtime on --eval held-out synthetic images, calibrated on --images synthetic ones.

Every run is its own subprocess, so that each peak resident memory (ru_maxrss from wait4) is that
run's alone. The same PNG images feed both tools, through the runtime's preprocessing; on the host
layout, for stage 2 onnxruntime's data reader runs the FP32 stage 1 and the runtime's proposal
postprocessing, as `edge-fpn calibrate` does, image by image; on the engine layout it feeds the
letterboxed uint8 frame to the one graph, whose postprocessing nodes it is told to leave alone. onnxruntime is configured for what TensorRT needs
(QDQ, symmetric INT8, per-channel weights, Conv/Gemm only); its entropy method runs with its own
defaults (128 bins) unless --ort-bins is given. The weights are random but made meaningful
(tests/reference_models.py): calibration cost does not depend on what the weights learned, except
through the number of proposals stage 2 sees.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

ARCH = "fasterrcnn_resnet50_fpn"
CLASSES = ["__background__"] + [f"class_{i}" for i in range(1, 91)]


# ---------------------------------------------------------------- children (one job each)

def child_ours(bundle: str, data: str, method: str, out: str) -> dict:
    from edge_fpn.bundle import load_manifest
    from edge_fpn.builder.calibrate import CalibrationRequest, calibrate, load_ranges
    from edge_fpn.builder.precision import QuantizedStages

    started = time.perf_counter()
    calibrate(CalibrationRequest(bundle, data, method=method, output=os.path.join(out, "cal"), force=True),
              progress=False)
    calibrated = time.perf_counter()
    qdq = os.path.join(out, "qdq")
    os.makedirs(qdq, exist_ok=True)
    QuantizedStages(bundle, load_manifest(bundle), load_ranges(os.path.join(out, "cal"), bundle)).write(qdq)
    return {"calibrate_s": calibrated - started, "qdq_s": time.perf_counter() - calibrated}


def child_ort(bundle: str, data: str, method: str, out: str, bins: int) -> dict:
    import glob

    import cv2
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from edge_fpn.graph_names import is_postprocess_node
    from edge_fpn.runtime.detector import Detector

    paths = sorted(glob.glob(os.path.join(data, "*.png")))
    detector = Detector(bundle)

    class FrameReader(CalibrationDataReader):
        """The preprocessed images, as the first graph's feeds (the detector, or stage 1)."""

        def __init__(self, feeds):
            self.paths = iter(paths)
            self.feeds = feeds

        def get_next(self):
            path = next(self.paths, None)
            if path is None:
                return None
            inputs, _ = detector.preprocess(cv2.imread(path))
            return self.feeds(inputs)

    class Stage2Reader(CalibrationDataReader):
        def __init__(self):
            self.paths = iter(paths)

        def get_next(self):
            for path in self.paths:
                tensor, letterbox = detector.preprocess(cv2.imread(path))
                outputs = detector.run_stage1(tensor)
                proposals = detector.propose(outputs, letterbox)
                if len(proposals):
                    feeds = {n: outputs[n] for n in detector.stage2_inputs if n in outputs}
                    feeds["proposals"] = proposals
                    return feeds
            return None

    calibrate_method = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
                        "percentile": CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    if method == "entropy" and bins:
        extra.update(CalibNumBins=bins, CalibNumQuantizedBins=128)
    started = time.perf_counter()
    if detector.manifest.layout == "engine":
        import onnx
        graph = onnx.load(os.path.join(bundle, "detector.onnx"), load_external_data=False).graph
        excluded = [node.name for node in graph.node if is_postprocess_node(node.name)]
        jobs = [("detector", FrameReader(lambda inputs: {k: v.copy() for k, v in inputs.items()}), excluded)]
    else:
        jobs = [("stage1", FrameReader(lambda tensor: {"images": tensor.copy()}), []), ("stage2", Stage2Reader(), [])]
    for stage, reader, excluded in jobs:
        quantize_static(os.path.join(bundle, f"{stage}.onnx"), os.path.join(out, f"{stage}.qdq.onnx"), reader,
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "Gemm"], per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        calibrate_method=calibrate_method, extra_options=extra)
    return {"total_s": time.perf_counter() - started}


# ---------------------------------------------------------------- the parent

def run_child(args: list, workdir: str) -> dict:
    """Run one job in a fresh interpreter; its own peak RSS comes from wait4's rusage."""
    out_path, err_path = os.path.join(workdir, "child.out"), os.path.join(workdir, "child.err")
    started = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:  # files, not pipes: no deadlock on chatty logs
        process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path) as f:
        stdout = f.read()
    with open(err_path) as f:
        stderr = f.read()
    if process.returncode != 0:
        return {"error": (stderr.strip().splitlines() or ["exit %d" % process.returncode])[-1][:200], "wall_s": wall,
                "peak_mib": usage.ru_maxrss / 1024}
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(wall_s=wall, peak_mib=usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux
    return result


def image_subset(data: str, count: int) -> str:
    """A directory with the first `count` images of `data` (hard links)."""
    subset = f"{data}-first{count}"
    if not os.path.isdir(subset):
        os.makedirs(subset)
        for name in sorted(os.listdir(data))[:count]:
            os.link(os.path.join(data, name), os.path.join(subset, name))
    return subset


def prepare(args: argparse.Namespace, workdir: str) -> tuple:
    from edge_fpn.runtime.synthetic import write_coco_dataset

    bundle = args.bundle
    if bundle is None:
        bundle = os.path.join(workdir, f"r50-{args.size}" + ("" if args.layout == "host" else f"-{args.layout}"))
        if not os.path.isdir(bundle):
            # in a child: a forked child's ru_maxrss starts at its parent's, so the parent must stay small
            print(f"exporting {ARCH} at {args.size}x{args.size} (random weights made meaningful)...", flush=True)
            subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "export", bundle, str(args.size),
                            args.layout], check=True)
    data = os.path.join(workdir, f"images-{args.images}-{args.size}")
    if not os.path.isdir(data):
        write_coco_dataset(data, args.images, 1000, args.size, args.size)
        os.remove(os.path.join(data, "annotations.json"))
    return bundle, data


def accuracy(args: argparse.Namespace) -> int:
    """FP32 vs INT8 AP of the shipped shapes model (or --weights), per calibration method."""
    from edge_fpn.builder.builder import BuildRequest, build_engine
    from edge_fpn.builder.calibrate import CalibrationRequest, calibrate
    from edge_fpn.export.onnx_export import ExportOptions, export_bundle
    from edge_fpn.model.shapes import SHAPES_WEIGHTS, load_shapes_model
    from edge_fpn.runtime.synthetic import CLASS_NAMES

    weights = args.weights or SHAPES_WEIGHTS
    workdir = args.workdir or tempfile.mkdtemp(prefix="edge-fpn-calacc-")
    fp32 = os.path.join(workdir, f"shapes-fp32-{args.layout}")
    if not os.path.isdir(fp32):
        model = load_shapes_model(weights)
        size = int(model.transform.min_size[0])
        export_bundle(model, "shapes", CLASS_NAMES, (size, size), fp32, ExportOptions(progress=False, layout=args.layout))
    rows = []
    for method in [m for m in args.methods.split(",") if m]:
        cal = os.path.join(workdir, f"cal-{method}-{args.images}")
        started = time.perf_counter()
        calibrate(CalibrationRequest(fp32, f"synthetic:{args.images}", method=method, output=cal, force=True),
                  progress=False)
        seconds = time.perf_counter() - started
        report = build_engine(BuildRequest(fp32, os.path.join(workdir, f"int8-{method}-{args.layout}"), precision="int8",
                                           calibration=cal, backend="onnxruntime", force=True,
                                           eval_data=f"synthetic:{args.eval}"), progress=False)
        ap = report["quantization"]["ap"]
        rows.append((method, seconds, ap["fp32"], ap["int8"]))
        print(f"  {method}: FP32 AP {ap['fp32']['AP']:.4f}, INT8 AP {ap['int8']['AP']:.4f}", flush=True)
    print(f"\nshapes model {weights}, {args.layout} layout: calibrated on {args.images} synthetic images, "
          f"evaluated on {args.eval} held-out ones")
    print(f"{'method':<11} {'calib s':>8} {'FP32 AP':>8} {'INT8 AP':>8} {'INT8/FP32':>9} {'AP50 8/32':>10} {'AP75 8/32':>10}")
    for method, seconds, fp, q in rows:
        ratio = lambda k: q[k] / fp[k] * 100 if fp[k] > 0 else float("nan")  # noqa: E731
        print(f"{method:<11} {seconds:>8.1f} {fp['AP']:>8.4f} {q['AP']:>8.4f} {ratio('AP'):>8.2f}% "
              f"{ratio('AP50'):>9.2f}% {ratio('AP75'):>9.2f}%")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--images", type=int, default=128, help="calibration images (default 128)")
    parser.add_argument("--size", type=int, default=800, help="square input size (a multiple of 32)")
    parser.add_argument("--methods", default="entropy,percentile,minmax,mse", help="edge-fpn methods to run")
    parser.add_argument("--ort-methods", default="entropy,minmax", help="onnxruntime methods to run ('' for none)")
    parser.add_argument("--ort-bins", type=int, default=0, help="CalibNumBins for onnxruntime's entropy (0: its default)")
    parser.add_argument("--ort-images", type=int, default=None,
                        help="images for the onnxruntime runs (default: all). Its calibrators keep every activation "
                             "of every image until the end (about 1.4 GiB per 800x800 image for entropy): 128 images "
                             "need far more memory than most machines have")
    parser.add_argument("--bundle", default=None, help="an exported bundle to calibrate instead of exporting ResNet-50")
    parser.add_argument("--layout", choices=("engine", "host"), default="engine",
                        help="layout of the exported bundle (default engine, as `edge-fpn export`)")
    parser.add_argument("--workdir", default=None, help="keep the bundle and images here (reused by later runs)")
    parser.add_argument("--accuracy", action="store_true", help="AP of INT8 vs FP32 on the shipped shapes model instead")
    parser.add_argument("--weights", default=None, help="--accuracy: a shapes checkpoint instead of the shipped one")
    parser.add_argument("--eval", type=int, default=500, help="--accuracy: held-out evaluation images (default 500)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.accuracy:
        return accuracy(args)

    if args.child:
        if args.child[0] == "export":
            from edge_fpn.export.onnx_export import ExportOptions, export_bundle
            from reference_models import meaningful_model
            size = int(args.child[2])
            model = meaningful_model(ARCH, len(CLASSES), (size, size), seed=0)
            export_bundle(model, ARCH, CLASSES, (size, size), args.child[1],
                          ExportOptions(progress=False, layout=args.child[3]))
            return 0
        kind, bundle, data, method, out = args.child[:5]
        if kind == "ours":
            result = child_ours(bundle, data, method, out)
        else:
            result = child_ort(bundle, data, method, out, int(args.child[5]))
        print(json.dumps(result))
        return 0

    workdir = args.workdir or tempfile.mkdtemp(prefix="edge-fpn-calbench-")
    os.makedirs(workdir, exist_ok=True)
    bundle, data = prepare(args, workdir)
    runs = [("edge-fpn", m) for m in args.methods.split(",") if m] + \
           [("onnxruntime", m) for m in args.ort_methods.split(",") if m]
    results = []
    ort_images = min(args.ort_images or args.images, args.images)
    ort_data = data if ort_images == args.images else image_subset(data, ort_images)
    for tool, method in runs:
        out = tempfile.mkdtemp(prefix=f"{tool}-{method}-", dir=workdir)
        images = args.images if tool == "edge-fpn" else ort_images
        print(f"running {tool} {method} on {images} images at {args.size}x{args.size}...", flush=True)
        if tool == "edge-fpn":
            result = run_child(["ours", bundle, data, method, out], out)
        else:
            result = run_child(["ort", bundle, ort_data, method, out, str(args.ort_bins)], out)
        result.update(tool=tool, method=method, images=images)
        results.append(result)
        print("  " + json.dumps(result), flush=True)

    print()
    from edge_fpn.bundle import load_manifest
    layout = load_manifest(bundle).layout
    print(f"{ARCH if args.bundle is None else args.bundle}, {args.size}x{args.size}, {layout} layout, {os.cpu_count()} CPUs")
    print(f"{'tool':<12} {'method':<11} {'images':>6} {'time s':>8} {'s/image':>8} {'peak MiB':>9}   notes")
    for r in results:
        note = r.get("error", "")
        if r["tool"] == "edge-fpn" and "calibrate_s" in r:
            note = f"calibrate {r['calibrate_s']:.1f} s + Q/DQ {r['qdq_s']:.1f} s"
        method = r["method"] + (f" ({args.ort_bins} bins)" if r["tool"] == "onnxruntime" and r["method"] == "entropy" and args.ort_bins else "")
        print(f"{r['tool']:<12} {method:<11} {r['images']:>6} {r['wall_s']:>8.1f} {r['wall_s'] / r['images']:>8.2f} "
              f"{r['peak_mib']:>9.0f}   {note}")
    baseline = next((r for r in results if r["tool"] == "onnxruntime" and r["method"] == "entropy" and "error" not in r), None)
    if baseline:
        print(f"\nratios against onnxruntime entropy ({baseline['wall_s']:.1f} s, {baseline['peak_mib']:.0f} MiB):")
        for r in results:
            if r["tool"] == "edge-fpn" and "error" not in r:
                per_image = (r["wall_s"] / r["images"]) / (baseline["wall_s"] / baseline["images"])
                print(f"  edge-fpn {r['method']:<11} time per image x{per_image:.2f}   "
                      f"peak memory x{r['peak_mib'] / baseline['peak_mib']:.2f}"
                      + ("" if r["images"] == baseline["images"] else
                         f" (edge-fpn on {r['images']} images, onnxruntime on {baseline['images']})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
