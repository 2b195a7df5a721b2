"""The `edge-fpn` command: subcommands that map one-to-one to API functions.

Bad input is an EdgeFpnError: printed as one line, exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

from .errors import EdgeFpnError
from .runtime.options import add_cuda_argument, add_device_argument

EVAL_SEED = 12345  # eval's synthetic images: a seed never trained on
# eval --track's shortest sequence: half a second, 5 frames at every third (a track shows its ID from
# its third frame: with 1 or 2 frames every tracker scores 0)
MIN_TRACK_EVAL_FRAMES = 15


def _export(args: argparse.Namespace) -> int:
    import os

    from .builder.commands import ENGINES_DIR, output_or_default
    from .bundle import refuse_output_over_inputs
    from .export.onnx_export import ExportOptions, export_bundle, parse_input_size
    from .model.architectures import build_architecture, load_checkpoint, read_class_names

    if args.model:
        if args.arch:
            raise EdgeFpnError("give either --model or --arch, not both (--model shapes --checkpoint FILE exports a "
                               "retrained shapes model)")
        if args.num_classes is not None or args.classes:
            raise EdgeFpnError(f"--model {args.model} brings its own classes; drop --num-classes/--classes (they go "
                               "with --arch and --checkpoint)")
        from .model.loading import load_shipped_model
        model, meta = load_shipped_model(args.model, args.checkpoint)
        class_names = meta["class_names"]
        input_size = parse_input_size(args.input_size) if args.input_size else tuple(meta["input_size"])
        arch = meta["architecture"]
        provenance = {"source_checkpoint": meta["checkpoint"], "source_checkpoint_sha256": meta["checkpoint_sha256"]}
    else:
        if args.num_classes is not None and args.num_classes < 2:
            raise EdgeFpnError(f"--num-classes counts the background too (torchvision's num_classes), so it is at "
                               f"least 2, not {args.num_classes}")
        if not (args.arch and args.checkpoint and args.num_classes):
            raise EdgeFpnError("export needs --arch, --checkpoint and --num-classes (or --model shapes for the shipped model)")
        if not args.input_size:
            raise EdgeFpnError("export needs --input-size HxW (a multiple of 32, e.g. 800x800)")
        input_size = parse_input_size(args.input_size)
        class_names = read_class_names(args.classes, args.num_classes)
        model = load_checkpoint(build_architecture(args.arch, args.num_classes), args.checkpoint, args.arch)
        arch = args.arch
        from .bundle import file_sha256
        provenance = {"source_checkpoint": args.checkpoint, "source_checkpoint_sha256": file_sha256(args.checkpoint)}
    with output_or_default(args.output, os.path.join(ENGINES_DIR, args.model or arch)) as output:
        refuse_output_over_inputs(output, [args.checkpoint, args.classes])
        options = ExportOptions(force=args.force, provenance=provenance, progress=not args.quiet,
                                layout=args.postprocess, detection_candidates=args.detection_candidates,
                                batch=args.batch)
        manifest = export_bundle(model, arch, class_names, input_size, output, options)
    files = " + ".join(spec.file for spec in manifest.stages.values())
    print(f"wrote {output}: {arch} at {input_size[0]}x{input_size[1]}, {manifest.num_classes - 1} classes, "
          f"{manifest.layout} layout ({files}; check: clean)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .export.check import check_path_report, layouts_line
    from .export.nvidia_parser import find_parser

    parser, warning = find_parser()
    if warning:
        print(f"warning: {warning}; checking with edge-fpn's table only")
    report = check_path_report(args.path, args.target, dla=args.dla, nvidia=parser)
    for finding in report.findings:
        print(finding)
    if not report.findings:
        print(f"{args.path}: clean for {args.target}")
    for note in report.notes:
        print(f"note: {note}")
    if parser is not None:
        print(f"parsed by NVIDIA's parser ({parser.label}) after edge-fpn's rules for {args.target}")
    elif not warning:
        print("note: no NVIDIA parser here (tensorrt, or tensorrt-rtx on an x86-64 host): checked with edge-fpn's "
              "table of TensorRT rules only")
    print(layouts_line(args.target))
    return 1 if report.findings else 0


def _detect(args: argparse.Namespace) -> int:
    from .runtime.app import detect

    sources, sinks = args.source, list(args.sinks)
    if args.sources:  # with --source, every positional after the bundle is a sink
        sinks = ([args.source] if args.source else []) + sinks
        sources = list(args.sources)
    elif not args.source:
        raise EdgeFpnError("detect needs a source: edge-fpn detect BUNDLE SOURCE [SINKS...], or --source URI (repeatable)")
    track = _tracker_from_args(args)
    detect(args.bundle, sources, sinks, max_frames=args.max_frames, score_threshold=args.score_threshold,
           classes=_split(args.classes), quiet=args.quiet, device=args.device, force=args.force, cuda=args.cuda,
           track=track, keep_tracks=args.keep_tracks, track_state=args.track_state)
    return 0


def _eval_tracking(args: argparse.Namespace) -> int:
    """`eval --track`: the bundle's detections on the synthetic tracking sequences (crossing,
    occlusion, objects leaving, fast objects), tracked, scored by py-motmetrics (MOTA, IDF1, ID
    switches) at 30 FPS and at every third frame, beside the reference ByteTrack where installed."""
    import importlib.util
    import json

    from .bundle import load_manifest
    from .evaluate import classes_match_synthetic
    from .tracking_eval import HELD_OUT_SEEDS, evaluate_bundle_tracking, format_drops, idf1_drops

    if args.coco or args.images or args.reference:
        raise EdgeFpnError("eval --track scores the synthetic tracking sequences only; drop --coco, --images and --reference")
    if not classes_match_synthetic(load_manifest(args.bundle).class_names):
        raise EdgeFpnError(f"eval --track needs a bundle of the synthetic scenes' classes (the shapes model); "
                           f"{args.bundle!r} has others")
    if importlib.util.find_spec("motmetrics") is None:
        raise EdgeFpnError("eval --track scores with py-motmetrics: pip install motmetrics")
    frames = args.synthetic or 150
    seeds = HELD_OUT_SEEDS if args.seed is None else (args.seed,)
    if frames < MIN_TRACK_EVAL_FRAMES:
        raise EdgeFpnError(f"eval --track needs --synthetic {MIN_TRACK_EVAL_FRAMES} or more frames a sequence (half a "
                           f"second), not {frames}: a track shows its ID from its third frame, so shorter sequences score "
                           "every tracker near 0")
    reference = importlib.util.find_spec("cjm_byte_track") is not None
    if not args.json:
        print(f"tracking {frames} frames of each synthetic scene (seed{'s' if len(seeds) > 1 else ''} "
              f"{', '.join(map(str, seeds))}{': the mean, with the lowest and highest IDF1' if len(seeds) > 1 else ''}) "
              "at 30 FPS and at every third frame (10 FPS); 'ideal' is perfect IDs on the same boxes, the most any "
              "tracker that reports them can score")
        if not reference:
            print("note: the reference ByteTrack (pip install cjm-byte-track) is not installed: edge-fpn's tracker only")
    report = evaluate_bundle_tracking(args.bundle, frames=frames, seeds=seeds, device=args.device,
                                      reference=reference, progress=None if args.json else print)
    if args.json:
        print(json.dumps(report))
    else:
        drops = idf1_drops(report)  # (the 10 FPS goal's figure, per scene; text only: --json holds both rates)
        if drops:
            print(format_drops(drops, "ours"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from .evaluate import (bundle_detect_fn, check_categories, coco_folder_data, evaluate, format_metrics,
                           synthetic_data, torch_detect_fn)

    if args.synthetic is not None and args.synthetic < 1:  # before the bundle loads: a typo fails at once
        raise EdgeFpnError(f"--synthetic N must be at least 1, not {args.synthetic}")
    if args.track:
        return _eval_tracking(args)
    detect, class_names, input_size = bundle_detect_fn(args.bundle, device=args.device)
    model = None
    if args.reference:  # loaded before any evaluation: a wrong reference fails at once
        from .model.loading import load_reference_model
        model = load_reference_model(args.reference, args.bundle)
    if args.coco or args.images:
        if not (args.coco and args.images) or args.synthetic:
            raise EdgeFpnError("give either --synthetic N [--seed S] or both --coco ANNOTATIONS.json and --images DIR")
        make_data = lambda: coco_folder_data(args.coco, args.images)  # noqa: E731
        total = None
    else:
        count = args.synthetic or 100
        seed = EVAL_SEED if args.seed is None else args.seed
        make_data = lambda: synthetic_data(count, seed, input_size)  # noqa: E731
        total = count
    images, coco = make_data()
    check_categories(coco, class_names, f"bundle {args.bundle!r}")
    result = {"bundle": evaluate(detect, images, coco, progress=not args.json, total=total)}
    if model is not None:
        images, coco = make_data()
        result["reference"] = evaluate(torch_detect_fn(model, input_size), images, coco, progress=not args.json, total=total)
        result["difference"] = {k: round(result["bundle"][k] - result["reference"][k], 4) for k in result["bundle"]}
    if args.json:
        print(json.dumps(result["bundle"] if not args.reference else result))
    else:
        for key, metrics in result.items():
            print(f"{key:>10}: {format_metrics(metrics)}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import os

    # set before torch loads: busy-waiting OpenMP threads slow training >10x when the cores are shared
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .model.train import TrainConfig, check_checkpoint_output, train

    # options left out take TrainConfig's defaults; it refuses a value out of range in one line
    given = {"camera_share": args.camera_share, "lr": args.lr, "rois_per_image": args.rois_per_image,
             "positive_fraction": args.positive_fraction}
    config = TrainConfig(iterations=args.iterations, seed=args.seed, batch_size=args.batch_size, init=args.init,
                         **{name: value for name, value in given.items() if value is not None})
    check_checkpoint_output(args.output, args.force, init=args.init)
    try:
        train(args.output, config, progress=not args.quiet)
    except KeyboardInterrupt:
        return 130  # train() has said where the last completed checkpoint is
    print(f"wrote {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    run_demo(args.output, DemoOptions(seconds=args.seconds, precision=args.precision, force=args.force,
                                      eval_images=args.eval_images, calibration_images=args.calibration_images,
                                      progress=not args.quiet, device=args.device,
                                      score_threshold=args.score_threshold, track=_tracker_from_args(args)))
    return 0


def _tracker_from_args(args: argparse.Namespace) -> Any:
    """--track and --track-option: False, True or a TrackerConfig (checked before anything loads:
    a typo fails at once)."""
    if not args.track_options:
        return args.track
    if not args.track:
        raise EdgeFpnError("--track-option sets the tracker; it needs --track")
    from .runtime.tracking.config import tracker_config_from_options
    return tracker_config_from_options(args.track_options)


def _add_track_option_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track-option", dest="track_options", action="append", default=[], metavar="KEY=VALUE",
                   help="with --track: a tracker setting, repeatable; any field of TrackerConfig, e.g. min_hits=2 "
                        "(matches before an ID), lost_seconds=3 (how long a lost object keeps its ID), "
                        "high_threshold=0.6 and new_track_threshold=0.7 (scores that match and start tracks), "
                        "per_class=false (IDs across a detector's class flips), appearance_veto=0 (boxes only)")


def _split(text: Optional[str]) -> Optional[List[str]]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _add_export_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="torch checkpoint -> bundle of static ONNX + manifest")
    p.add_argument("--model", help="a model shipped with edge-fpn instead of --arch: 'shapes' (with --checkpoint: "
                                   "a shapes model retrained by edge-fpn train)")
    p.add_argument("--arch", help="fasterrcnn_resnet50_fpn | fasterrcnn_resnet50_fpn_v2 | fasterrcnn_mobilenet_v3_large_fpn | fasterrcnn_mobilenet_v3_large_320_fpn")
    p.add_argument("--checkpoint", help="state-dict file (torch.save(model.state_dict(), path)), of --arch or --model")
    p.add_argument("--num-classes", type=int, help="number of classes including the background")
    p.add_argument("--classes", help="text file with one class name a line (background optional)")
    p.add_argument("--input-size", help="engine input HxW, multiples of 32 (default for --model: its training size)")
    p.add_argument("--output", default=None,
                   help="bundle directory to write (default engines/<model>, e.g. engines/shapes, or engines/<arch>; "
                        "the folder is created if missing)")
    p.add_argument("--postprocess", choices=["engine", "host"], default="engine",
                   help="engine (default): one graph from pixels to detections, NMS and top-k inside; "
                        "host: two graphs with the per-level postprocessing in numpy between them "
                        "(for a TensorRT that rejects the engine layout, and as a reference)")
    p.add_argument("--detection-candidates", type=int, default=None,
                   help="engine layout: (proposal, class) pairs sent to the final NMS, best first (default 2000, at most "
                        "3840, TensorRT's largest top-k); torchvision sends all above the score threshold")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="images per engine call (engine layout): a static batch-N graph that runs the newest frame "
                        "of up to N cameras in one call (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_export)


def _add_check_parser(subparsers: Any) -> None:
    from .export.check import DEFAULT_TARGET, TARGETS

    p = subparsers.add_parser("check", help="TensorRT lint of an ONNX file or a bundle (no GPU needed), then NVIDIA's own "
                                           "ONNX parser where one is importable (tensorrt, or tensorrt-rtx on a host)")
    p.add_argument("path", help="an .onnx file or a bundle directory")
    p.add_argument("--target", default=DEFAULT_TARGET, choices=sorted(TARGETS),
                   help=f"JetPack release whose TensorRT must import the graphs (default {DEFAULT_TARGET})")
    p.add_argument("--dla", action="store_true",
                   help="the engine must run on the DLA alone: plugin layers (RoiAlign), which never run on the DLA, "
                        "are findings. Other layers' DLA support is decided by TensorRT at build time (with GPU "
                        "fallback), so check does not list them")
    p.set_defaults(func=_check)


def _add_detect_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("detect", help="run a bundle on a source (images, directory, video, camera URI) into sinks")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("source", nargs="?", default=None,
                   help="image, directory, glob, video file, test://, /dev/videoN, csi://N, rtsp://..., or a "
                        ".streams/.txt file of sources, one a line")
    p.add_argument("sinks", nargs="*", default=[],
                   help="out.jsonl, out.mp4/.avi, a directory, display://0, http://HOST:PORT; with several sources "
                        "{source} in a path gives one sink per source (out_{source}.mp4)")
    p.add_argument("--source", dest="sources", action="append", default=[], metavar="URI",
                   help="a source; repeat it for several cameras on one engine (then every positional after the "
                        "bundle is a sink)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--score-threshold", type=float, default=None, metavar="T",
                   help="show and write detections scoring at least T (default 0.5; 0.05 shows all the model keeps)")
    p.add_argument("--classes", default=None, help="comma-separated class names to keep")
    p.add_argument("--quiet", action="store_true", help="no periodic statistics")
    p.add_argument("--track", action="store_true",
                   help="persistent object IDs (ByteTrack-style tracker): drawn as #ID, written as track_id")
    p.add_argument("--keep-tracks", action="store_true",
                   help="with --track: a live source that reconnects keeps its tracks and IDs (default: it starts "
                        "fresh tracks, since the scene may have changed during the outage; IDs never repeat)")
    p.add_argument("--track-state", default=None, metavar="FILE",
                   help="with --track: resume the IDs saved in FILE (where it exists) and save them there when "
                        "the run ends, also on Ctrl-C: an object seen before a restart keeps its ID (if it is "
                        "back within lost_seconds of the save, or recall_seconds where its colours match)")
    _add_track_option_argument(p)
    p.add_argument("--force", action="store_true",
                   help="replace existing output files (an output that is an input is refused even so)")
    add_device_argument(p)
    add_cuda_argument(p)
    p.set_defaults(func=_detect)


def _add_eval_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="COCO box AP of a bundle (and of the PyTorch reference) on synthetic or COCO data")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--synthetic", type=int, metavar="N", help="N held-out synthetic images (default 100)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the synthetic images (default 12345, never trained on); with --track, of the "
                        "sequences (default: the mean of seeds 1, 2 and 3, held out from the tracker's tuning)")
    p.add_argument("--coco", metavar="ANNOTATIONS.json", help="COCO annotation file")
    p.add_argument("--images", metavar="DIR", help="directory of the images the annotations name")
    p.add_argument("--reference", metavar="CKPT_OR_MODEL", help="also evaluate the PyTorch model: 'shapes' or a checkpoint of the bundle's architecture")
    p.add_argument("--track", action="store_true",
                   help="tracking metrics instead of AP: MOTA, IDF1 and ID switches of the bundle's detections, "
                        "tracked, on the synthetic sequences (--synthetic N frames each, default 150; the README's "
                        "table: 300)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_device_argument(p)
    p.set_defaults(func=_eval)


def _add_train_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train the shipped 'shapes' detector on synthetic scenes (CPU)",
        description="Train the shapes detector on synthetic scenes, from scratch or fine-tuned from --init. The shipped "
                    "model is a base run (the defaults, --seed 0) fine-tuned with --init BASE --iterations 500 --seed 7 "
                    "--lr 5e-4 --camera-share 0.5 --rois-per-image 512 --positive-fraction 0.25 "
                    "(edge_fpn/model/assets/shapes.json, train_command).")
    p.add_argument("--output", required=True, help="checkpoint file to write (float16 state dict + .json metadata)")
    p.add_argument("--iterations", type=int, default=1500, help="training iterations (default 1500, as the shipped model's base run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic training scenes (default 0)")
    p.add_argument("--batch-size", type=int, default=4, help="images per iteration (default 4)")
    p.add_argument("--camera-share", type=float, default=None, metavar="S",
                   help="share of the training images that are synthetic camera frames (640x480, the test:// "
                        "source's motions), the rest 320x320 scenes (default 0, as the shipped model's base run; its fine-tune 0.5)")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (fine-tune; 'edge_fpn/model/assets/shapes.pt' is the "
                        "shipped one) instead of random ones")
    p.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="base learning rate of the warmup + cosine schedule (default 2e-3; a fine-tune wants less)")
    p.add_argument("--rois-per-image", type=int, default=None, metavar="N",
                   help="RoIs the box head learns from per image (default 128; 512 shows it more background)")
    p.add_argument("--positive-fraction", type=float, default=None, metavar="F",
                   help="at most this share of those RoIs are objects (default 0.5)")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint (and its .json metadata)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _add_demo_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="export, calibrate, build and run the shipped model live on a synthetic camera")
    p.add_argument("--output", default="demo-out", help="directory for demo.mp4, detections.jsonl, report.json (default demo-out)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to run live (default 10)")
    p.add_argument("--precision", default="int8", choices=["fp32", "int8"], help="engine precision (default int8)")
    p.add_argument("--eval-images", type=int, default=100, help="held-out images for the AP report (default 100)")
    p.add_argument("--calibration-images", type=int, default=32, help="synthetic calibration images for INT8 (default 32)")
    p.add_argument("--score-threshold", type=float, default=None, metavar="T",
                   help="draw and write live detections scoring at least T (default 0.5; the AP report uses all)")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--track", action="store_true", help="persistent object IDs in the live run (drawn and written)")
    _add_track_option_argument(p)
    add_device_argument(p)
    p.set_defaults(func=_demo)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="edge-fpn", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"edge-fpn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_export_parser(sub)
    _add_check_parser(sub)
    _add_detect_parser(sub)
    _add_eval_parser(sub)
    _add_train_parser(sub)
    _add_demo_parser(sub)

    from .builder.commands import register as register_build
    from .runtime.commands import register as register_runtime
    register_build(sub)
    register_runtime(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # detect's sinks may follow its options (`detect B --source a --source b out.jsonl`), which
    # argparse does not match to a positional once the options began
    if getattr(args, "command", None) == "detect" and extra and not any(e.startswith("-") and len(e) > 1 for e in extra):
        if args.source is None:
            args.source, extra = extra[0], extra[1:]
        args.sinks = list(args.sinks) + extra
        extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .logs import show_messages
    show_messages()  # the builder's lines on stdout, warnings on stderr, as each message alone
    try:
        return int(args.func(args) or 0)
    except EdgeFpnError as exc:
        print(f"edge-fpn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-fpn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
