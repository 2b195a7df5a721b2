"""The `calibrate` and `build` subcommands (registered by edge_fpn.cli), and the default folders
that `export`, `calibrate` and `build` write into when --output is left out.

Importing this module costs nothing: the work is imported inside the command functions (no
torch, onnx, onnxruntime or tensorrt at import time).
"""
from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any, Iterator, Optional

from .builder import BACKENDS
from .data import DEFAULT_VIDEO_FRAMES
from .tensorrt_builder import PRECISIONS

METHODS = ("entropy", "percentile", "minmax", "mse")

# Where bundles and calibrations go when --output is left out, relative to the working directory:
# export -> engines/<model or arch>, calibrate -> calibration/<bundle>, build -> engines/<bundle>-<precision>.
ENGINES_DIR = "engines"
CALIBRATION_DIR = "calibration"


def bundle_name(path: str) -> str:
    """The name of a bundle directory: its last path component ('engines/shapes/' -> 'shapes')."""
    return os.path.basename(os.path.normpath(os.path.abspath(path)))


@contextlib.contextmanager
def output_or_default(output: Optional[str], default: str) -> Iterator[str]:
    """`output` when given. Otherwise `default`, creating its missing parent folder (engines/,
    calibration/) first, and removing that folder again if the command fails leaving it empty."""
    if output:
        yield output
        return
    parent = os.path.dirname(default)
    created = bool(parent) and not os.path.isdir(parent)
    if created:
        os.makedirs(parent)
    try:
        yield default
    except BaseException:
        if created and os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)
        raise


def _calibrate(args: argparse.Namespace) -> int:
    from .calibrate import CalibrationRequest, calibrate

    with output_or_default(args.output, os.path.join(CALIBRATION_DIR, bundle_name(args.bundle))) as output:
        calibrate(CalibrationRequest(args.bundle, args.data, output=output, num=args.num, method=args.method,
                                     percentile=args.percentile, force=args.force,
                                     tensorrt_version=args.tensorrt_version, tensors=args.tensors),
                  progress=not args.quiet)
    return 0


def _build(args: argparse.Namespace) -> int:
    from .builder import BuildRequest, build_engine

    eval_data: Optional[str] = args.eval_data
    if eval_data is not None and eval_data.strip().lower() in ("", "none", "off"):
        eval_data = None
    default = os.path.join(ENGINES_DIR, f"{bundle_name(args.bundle)}-{args.precision}")
    with output_or_default(args.output, default) as output:
        build_engine(BuildRequest(args.bundle, output, precision=args.precision, calibration=args.calibration,
                                  backend=args.backend, workspace_mib=args.workspace, dla_core=args.dla_core,
                                  timing_cache=args.timing_cache, force=args.force, implicit_int8=args.implicit_int8,
                                  fp16_fallback=args.fp16_fallback, max_ap_drop=args.max_ap_drop, eval_data=eval_data,
                                  sensitivity=args.sensitivity), progress=not args.quiet)
    return 0


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def register(subparsers: Any) -> None:
    """Add `calibrate` and `build` to the `edge-fpn` command."""
    p = subparsers.add_parser(
        "calibrate", help="measure INT8 activation ranges of an exported bundle (ONNX Runtime, CPU)",
        description="Run calibration images through the bundle exactly as the runtime does and write "
                    "CAL_DIR/ranges.json (for `edge-fpn build --precision int8`) and CAL_DIR/calibration.cache "
                    "(TensorRT's own format, for the implicit INT8 path). Statistics are streamed as histograms: "
                    "memory does not grow with the number of images.")
    p.add_argument("bundle", help="the FP32 bundle written by `edge-fpn export`")
    p.add_argument("--data", required=True, metavar="SOURCE",
                   help="calibration images: a directory, a glob (quoted), a video file, or synthetic:N "
                        "(N synthetic scenes, a seed distinct from the evaluation scenes)")
    p.add_argument("--num", type=int, default=None, metavar="N",
                   help=f"use at most N images (default: all; a video: {DEFAULT_VIDEO_FRAMES} evenly spaced frames). "
                        "Unreadable images are skipped; fewer than N/2 readable ones is an error")
    p.add_argument("--method", choices=METHODS, default="entropy",
                   help="how a tensor's range is chosen: entropy (TensorRT's KL-divergence method, 2048 bins; "
                        "default), percentile, minmax, mse")
    p.add_argument("--percentile", type=float, default=99.99, metavar="P", help="the percentile of |x| kept by --method percentile (default 99.99)")
    p.add_argument("--output", default=None, metavar="CAL_DIR",
                   help=f"calibration directory to write (default {CALIBRATION_DIR}/<bundle name>, e.g. "
                        f"{CALIBRATION_DIR}/shapes for {ENGINES_DIR}/shapes; the folder is created if missing)")
    p.add_argument("--tensors", choices=("qdq", "all"), default="qdq",
                   help="qdq: the tensors the Q/DQ graphs quantize (default); all: every activation, so that "
                        "calibration.cache also serves `build --implicit-int8` (TensorRT < 11), about twice the time")
    p.add_argument("--tensorrt-version", default=None, metavar="X.Y.Z",
                   help="TensorRT version written in calibration.cache's header (default: the local TensorRT, "
                        "else 10.3.0 of JetPack 6.1/6.2); `edge-fpn build` rewrites it to the device's anyway")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_calibrate)

    p = subparsers.add_parser(
        "build", help="build an FP32/FP16/INT8 engine bundle (TensorRT on the device, ONNX Runtime elsewhere)",
        description="Build an engine bundle from the FP32 bundle of `edge-fpn export`, written atomically. INT8 "
                    "is explicit quantization (Q/DQ graphs from `edge-fpn calibrate` ranges): its AP is measured "
                    "next to FP32 on held-out images before anything is written.")
    p.add_argument("bundle", help="the FP32 bundle written by `edge-fpn export`")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="engine precision (default fp32)")
    p.add_argument("--calibration", metavar="CAL_DIR", default=None, help="ranges from `edge-fpn calibrate` (needed for int8)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: TensorRT where `import tensorrt` works, else ONNX Runtime (said in one line); default auto")
    p.add_argument("--workspace", type=int, default=None, metavar="MiB", help="TensorRT builder workspace limit in MiB")
    p.add_argument("--dla-core", type=int, default=None, metavar="N",
                   help="build for DLA core N (Jetson AGX/NX), with GPU fallback for layers the DLA cannot run")
    p.add_argument("--timing-cache", default=None, metavar="PATH",
                   help="TensorRT timing cache file: read if present, written back after the build (faster rebuilds)")
    p.add_argument("--implicit-int8", action="store_true",
                   help="TensorRT < 11: INT8 by a calibrator fed from the calibration cache instead of Q/DQ graphs")
    p.add_argument("--fp16-fallback", default=None, metavar="auto|LAYER,...",
                   help="int8: keep layers out of INT8 (FP16 on TensorRT, FP32 on ONNX Runtime); 'auto' keeps the "
                        "layers that cost the most AP until the drop is at most --max-ap-drop")
    p.add_argument("--max-ap-drop", type=_nonnegative_float, default=0.005, metavar="AP",
                   help="largest AP (0..1) the INT8 bundle may lose against FP32 with --fp16-fallback auto (default 0.005)")
    p.add_argument("--eval-data", default="synthetic:100", metavar="DATA",
                   help="held-out data for the INT8 AP report: synthetic:N, or a directory with annotations.json (COCO); "
                        "'none' skips it (default synthetic:100)")
    p.add_argument("--sensitivity", action="store_true",
                   help="int8: rank the layers by the AP lost when only that layer is quantized (one evaluation per layer)")
    p.add_argument("--output", default=None, metavar="ENGINE_DIR",
                   help=f"engine bundle directory to write (default {ENGINES_DIR}/<bundle name>-<precision>, e.g. "
                        f"{ENGINES_DIR}/shapes-int8; the folder is created if missing)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_build)
