"""What the ``edge-fpn detect`` and ``edge-fpn bench`` commands run (also callable from Python)."""
from __future__ import annotations

import dataclasses
import json as json_module
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgeFpnError

DEFAULT_BENCH_SOURCE = "test://?width=640&height=480&realtime=0"


@dataclasses.dataclass(frozen=True)
class DetectOptions:
    """How ``detect`` runs (see ``detect``); keyword arguments to ``detect`` override these fields."""

    max_frames: Optional[int] = None
    score_threshold: Optional[float] = None
    classes: Optional[Sequence[str]] = None
    quiet: bool = False
    stats_interval: float = 5.0
    device: str = "auto"
    force: bool = False
    cuda: str = "auto"
    track: Any = False
    keep_tracks: bool = False  # with track: a live source that reconnects keeps its tracks (default: fresh ones)
    track_state: Optional[str] = None  # with track: a file the trackers resume from and are saved to (IDs across restarts)


def detect(bundle: str, source: Any, sinks: Sequence[Any] = (), options: Optional[DetectOptions] = None,
           **overrides: Any) -> Dict[str, Any]:
    """Run a bundle on a source (or several: a list, or a ``.streams``/``.txt`` file of URIs, one a
    line) into sinks; returns the pipeline statistics.

    options: a ``DetectOptions``; keyword arguments named like its fields (``max_frames=``,
    ``score_threshold=``, ``classes=``, ``quiet=``, ``stats_interval=``, ``device=``, ``force=``,
    ``cuda=``, ``track=``, ``keep_tracks=``, ``track_state=``) override them, and any other keyword argument is an option of
    ``open_source`` (``open_timeout=10`` for an RTSP stream).

    With several sources, ``{source}`` in a sink path makes one sink per source (``out_{source}.mp4``),
    a directory gets one folder per source, and a JSON-lines file without it holds every source's
    records (``source_index``); a video without it is refused. Every source opens before any work.

    track: persistent object IDs (True, a TrackerConfig or a Tracker; runtime/tracking/), drawn
    by the image sinks and written as ``track_id`` by the JSON-lines sink. track_state: a file
    (runtime/tracking/state_file.py) the trackers resume from where it exists and are saved to
    when the run ends, also on Ctrl-C: IDs carried across restarts.

    Detections scoring under `score_threshold` are neither shown nor written (default: 0.5, the
    pipeline's DISPLAY_SCORE_THRESHOLD; 0.05 shows what the model keeps). With no sink, one line a
    frame is printed (index, source, detections). Ctrl-C stops cleanly: the sinks are flushed and
    the statistics printed, as at the end of the stream. A run that fails before its first frame
    (a bundle that cannot load, a source that cannot open, a sink that cannot be written) leaves no
    output file behind. An output that is an input (the same file, the source images' folder, also
    through `..` or a symlink) is refused before anything is written; an existing output file is
    replaced only with `force`. A file source none of whose images can be read is an error.
    """
    from .sinks import abort_sinks
    from .tracking.state_file import read_state_file, resume, source_names, write_state_file

    fields = {f.name for f in dataclasses.fields(DetectOptions)}
    source_options = {key: value for key, value in overrides.items() if key not in fields}
    options = dataclasses.replace(options if options is not None else DetectOptions(),
                                  **{key: value for key, value in overrides.items() if key in fields})
    specs = _check_detect_request(bundle, source, sinks, options)
    saved = read_state_file(options.track_state, source_names(specs)) if options.track_state is not None else None
    run = _DetectRun()
    try:
        pipeline = run.open(bundle, specs, sinks, options, source_options)
        trackers = [feed.tracker for feed in pipeline.feeds]
        if saved is not None:
            resume(trackers, saved)
        _run_to_the_end(pipeline, bool(sinks), options.quiet)
        _refuse_all_unreadable(run.sources)
        if options.track_state is not None:
            write_state_file(options.track_state, trackers, source_names(specs))
        return pipeline.stats.snapshot()
    except BaseException:
        abort_sinks(run.sinks)  # the pipeline did it if it ran; a sink that wrote nothing leaves nothing
        raise
    finally:
        run.close()


def _check_detect_request(bundle: str, source: Any, sinks: Sequence[Any], options: DetectOptions) -> List[Any]:
    """The cheap checks, first: a typo in a sink or source should not wait for the engines to load."""
    from ..bundle import load_manifest
    from .detector import check_score_threshold
    from .pipeline import check_source_list
    from .sinks import check_sinks

    max_frames, score_threshold = options.max_frames, options.score_threshold
    if max_frames is not None and max_frames < 1:
        raise EdgeFpnError(f"--max-frames must be at least 1, not {max_frames}")
    check_score_threshold(score_threshold, "--score-threshold")
    if options.keep_tracks and not options.track:
        raise EdgeFpnError("--keep-tracks keeps the tracker's state across reconnects; it needs --track")
    if options.track_state is not None and not options.track:
        raise EdgeFpnError("--track-state carries the tracker's IDs across runs; it needs --track")
    load_manifest(bundle)
    specs = source_list(source)
    check_source_list(specs)
    check_sinks(list(sinks))
    if options.track_state is not None:
        from .sinks import sink_path
        from .tracking.state_file import refuse_state_over_outputs
        refuse_state_over_outputs(options.track_state, [path for spec in sinks for path in [sink_path(spec)[1]] if path])
    return specs


class _DetectRun:
    """What a detect run opened (sources, detector, sinks), in the order that leaves nothing behind
    when a step fails; ``close`` closes whatever was opened."""

    def __init__(self) -> None:
        self.sources: List[Any] = []
        self.sinks: List[Any] = []
        self.detector: Any = None

    def open(self, bundle: str, specs: List[Any], sinks: Sequence[Any], options: DetectOptions,
             source_options: Dict[str, Any]) -> Any:
        from .detector import Detector
        from .output_guard import refuse_outputs_over_inputs
        from .pipeline import Pipeline
        from .sinks import apply_source_fps, open_sinks, per_source_specs
        from .sources.pending import open_sources

        expanded = [part for spec in sinks for part in (per_source_specs(spec, len(specs)) or [spec])]
        self.sources = open_sources(specs, source_options)  # up front: a missing file fails before any work
        refuse_outputs_over_inputs([path for opened in self.sources for path in opened.input_files()],
                                   expanded, options.force)
        # the Detector returns all the model keeps; the pipeline shows from the display threshold
        classes = options.classes
        self.detector = Detector(bundle, classes=list(classes) if classes else None, device=options.device,
                                 cuda=options.cuda)
        # sinks open last, once the bundle and the source are open (and create their files with
        # the first frame): a run that fails to start leaves nothing behind
        self.sinks = open_sinks(list(sinks), sources=len(self.sources))
        apply_source_fps(self.sinks, [opened.fps for opened in self.sources])
        return Pipeline(self.detector, self.sources if len(self.sources) > 1 else self.sources[0], self.sinks,
                        max_frames=options.max_frames, quiet=options.quiet,
                        stats_interval=options.stats_interval, score_threshold=options.score_threshold,
                        tracker=options.track or None, reset_tracker_on_reconnect=not options.keep_tracks)

    def close(self) -> None:
        for opened in self.sources:
            opened.close()
        for sink in self.sinks:  # closed already by the pipeline when it ran; closing twice is harmless
            try:
                sink.close()
            except Exception:
                pass
        if self.detector is not None:
            self.detector.close()


def _run_to_the_end(pipeline: Any, has_sinks: bool, quiet: bool) -> None:
    """Run the pipeline to the end of its sources, or until Ctrl-C (or SIGTERM)."""
    with pipeline:
        for sink in pipeline.sinks:
            if getattr(sink, "url", None) and not quiet:
                print(f"[edge-fpn] web viewer on {sink.url}", file=sys.stderr, flush=True)
        if not has_sinks and not quiet:
            pipeline.add_callback(_print_result)
        with _StopSignals() as stop:
            pipeline.start()
            try:
                while not pipeline.wait(0.1):
                    if stop.requested:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                if not quiet:
                    print("[edge-fpn] stopped (Ctrl-C)", file=sys.stderr, flush=True)


def _refuse_all_unreadable(opened_sources: List[Any]) -> None:
    """An error when no source gave a frame because none of their image files could be read."""
    from .sources import ImageSource

    unread = [opened for opened in opened_sources if isinstance(opened, ImageSource) and opened.paths and not opened.frames]
    if len(unread) == len(opened_sources):
        paths = [path for opened in unread for path in opened.paths]
        count = len(paths)
        what = f"the image {paths[0]!r}" if count == 1 else f"any of the {count} images"
        raise EdgeFpnError(f"cannot read {what} (empty, truncated or not an image); nothing was written: "
                           "check the files")


def source_list(source: Any) -> List[Any]:
    """The sources `source` names: a list as is, a ``.streams``/``.txt`` file's lines, else itself."""
    from .pipeline import is_source_list, read_source_list
    if isinstance(source, (list, tuple)):
        return [item for spec in source for item in (read_source_list(spec) if is_source_list(spec) else [spec])]
    return read_source_list(source) if is_source_list(source) else [source]


class _StopSignals:
    """While detect runs on the main thread, Ctrl-C (SIGINT) and SIGTERM (systemd, docker stop) ask
    it to stop: the sinks are flushed and closed instead of the process dying with a half-written
    video. The first signal only sets `requested`, which the wait loop turns into a stop: a
    KeyboardInterrupt raised by Python's own handler is lost when it lands in a finalizer (CPython
    prints "Exception ignored" and goes on), and detect then ran on. A second signal interrupts at
    once (a close that hangs)."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            def stop(signum: int, frame: Any) -> None:
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True
            for name in ("SIGINT", "SIGTERM"):
                if hasattr(signal, name):
                    number = getattr(signal, name)
                    self.previous[number] = signal.signal(number, stop)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal
        for number, previous in self.previous.items():
            signal.signal(number, previous)


def _print_result(result: Any) -> None:
    d = result.detections
    found = ", ".join(f"{name} {score:.2f}" for name, score in zip(d.names[:8], d.scores[:8]))
    more = f", ... ({len(d)})" if len(d) > 8 else ""
    print(f"frame {result.index} {result.source}: {len(d)} detection{'s' if len(d) != 1 else ''}"
          f"{': ' + found + more if len(d) else ''}", flush=True)


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """How ``bench`` runs (see ``bench``); keyword arguments to ``bench`` override these fields."""

    frames: int = 100
    json: bool = False
    warmup: int = 5
    threads: int = 0
    quiet: bool = False
    device: str = "auto"
    cuda: str = "auto"


def bench(bundle: str, source: str = DEFAULT_BENCH_SOURCE, options: Optional[BenchOptions] = None,
          **overrides: Any) -> Dict[str, Any]:
    """Pipeline FPS against engine-only FPS (the two stages alone on pre-made inputs), and their ratio.

    options: a ``BenchOptions``; keyword arguments (``frames=``, ``json=``, ``warmup=``,
    ``threads=``, ``quiet=``, ``device=``, ``cuda=``) override its fields.

    Engine-only: the engine call(s) alone on one prepared frame, `frames` times (engine layout: the
    detector engine; host layout: stage 1 and stage 2 back to back on the frame's own proposals).
    Pipeline: the full pipeline (capture, preprocess, engines,
    postprocessing) on `frames` frames of the source, after `warmup` frames. The ratio says how
    much of the engines' speed the pipeline keeps: 1.0 means capture and pre/postprocessing are
    fully hidden behind inference.
    """
    from .detector import Detector

    options = dataclasses.replace(options if options is not None else BenchOptions(), **overrides)
    frames, warmup, threads = options.frames, options.warmup, options.threads
    if frames < 2:
        raise EdgeFpnError(f"--frames must be at least 2, not {frames}")
    if warmup < 0:
        raise EdgeFpnError(f"--warmup must be 0 or more, not {warmup}")
    if threads < 0:
        raise EdgeFpnError(f"--threads must be 0 (ONNX Runtime's own choice) or more, not {threads}")
    detector = Detector(bundle, threads=threads, device=options.device, cuda=options.cuda)
    try:
        engine_fps, engine_times = _time_engines(detector, _first_frame(source), frames, warmup)
        pipeline_fps, snapshot = _time_pipeline(detector, source, frames, warmup)
    finally:
        detector.close()

    report = {
        "bundle": bundle,
        "source": source,
        "frames": frames,
        "warmup": warmup,
        "layout": detector.manifest.layout,
        "engine_only_fps": round(engine_fps, 3),
        "pipeline_fps": round(pipeline_fps, 3),
        "ratio": round(pipeline_fps / engine_fps, 4),
        "engine_only_ms": {step: _ms(times) for step, times in engine_times.items()},
        "pipeline_stages_ms": {name: {"median": info["median_ms"], "p95": info["p95_ms"]}
                               for name, info in snapshot["stages"].items() if info["count"]},
        "pipeline_latency_ms": {"median": snapshot["latency"]["median_ms"], "p95": snapshot["latency"]["p95_ms"]},
        "dropped": snapshot["dropped"],
        "backends": sorted({spec.backend for spec in detector.manifest.stages.values()}),
        "providers": engine_providers(detector),
    }
    if not options.quiet:
        if options.json:
            print(json_module.dumps(report, indent=2))
        else:
            print(format_bench(report))
    return report


def _first_frame(source: str) -> np.ndarray:
    """One frame of the source to time the engines on (waiting up to 30 s for a live one)."""
    from .sources import OK, open_source

    with open_source(source) as probe:
        frame = None
        deadline = time.monotonic() + 30.0
        while frame is None and time.monotonic() < deadline:
            read = probe.read(timeout=1.0)
            if read.status == OK:
                frame = read.frame
            elif read.status != "timeout":
                break
    if frame is None:
        raise EdgeFpnError(f"source {source!r} gave no frame to benchmark with; check it with `edge-fpn detect`")
    return frame


def _time_engines(detector: Any, frame: np.ndarray, frames: int, warmup: int) -> Tuple[float, Dict[str, List[float]]]:
    """Engine only: the engine call(s) alone on one prepared frame; FPS and each step's seconds."""
    inputs, letterbox = detector.preprocess(frame)
    run_engines = detector.engine_runner(inputs, letterbox)
    for _ in range(max(1, warmup)):
        run_engines()
    engine_times: Dict[str, List[float]] = {}
    started = time.perf_counter()
    for _ in range(frames):
        for step, seconds in run_engines().items():
            engine_times.setdefault(step, []).append(seconds)
    engine_seconds = time.perf_counter() - started
    return frames / engine_seconds, engine_times


def _time_pipeline(detector: Any, source: str, frames: int, warmup: int) -> Tuple[float, Dict[str, Any]]:
    """The whole pipeline on `frames` frames after `warmup`; its FPS and its statistics."""
    from .pipeline import Pipeline

    done: List[float] = []
    pipeline = Pipeline(detector, source, max_frames=warmup + frames, quiet=True,
                        on_result=lambda result: done.append(time.perf_counter()))
    pipeline_start = time.perf_counter()
    snapshot = pipeline.run()
    if len(done) < warmup + 2:
        raise EdgeFpnError(f"source {source!r} ended after {len(done)} frames; benchmark a longer source or fewer --frames")
    measured = done[warmup:] if warmup else done
    first = done[warmup - 1] if warmup else pipeline_start
    return len(measured) / (measured[-1] - first), snapshot


def engine_providers(detector: Any) -> List[str]:
    """Where the Detector's engines really run: each backend's ``provider`` (ONNX Runtime's records
    the one that loaded, CUDA or CPU; a TensorRT engine's is "TensorRT"), each once."""
    found: List[str] = []
    for backend in detector.backends():
        provider = getattr(backend, "provider", None)
        if isinstance(provider, str) and provider not in found:
            found.append(provider)
    return found


def _ms(values: List[float]) -> Dict[str, float]:
    data = np.asarray(values, dtype=np.float64) * 1000.0
    return {"median": round(float(np.median(data)), 3), "p95": round(float(np.percentile(data, 95)), 3)}


def format_bench(report: Dict[str, Any]) -> str:
    lines = [
        f"bench {report['bundle']} on {report['source']} ({report['frames']} frames after {report['warmup']} warm-up; "
        f"backend {', '.join(report['backends'])}"
        f"{' on ' + ', '.join(report['providers']) if report.get('providers') else ''})",
        f"  pipeline FPS     {report['pipeline_fps']:8.2f}",
        f"  engine-only FPS  {report['engine_only_fps']:8.2f}   ({' + '.join(report['engine_only_ms'])} alone; {report['layout']} layout)",
        f"  ratio            {report['ratio']:8.3f}   (pipeline / engine-only)",
        f"  end-to-end latency {report['pipeline_latency_ms']['median']:.1f} ms median, "
        f"{report['pipeline_latency_ms']['p95']:.1f} ms p95 (capture -> detections)",
        f"  {'stage':<12} {'pipeline median':>16} {'p95':>8} {'engine-only median':>20}",
    ]
    engine = report["engine_only_ms"]
    for name, info in report["pipeline_stages_ms"].items():
        alone = f"{engine[name]['median']:.2f}" if name in engine else ""
        lines.append(f"  {name:<12} {info['median']:>16.2f} {info['p95']:>8.2f} {alone:>20}")
    return "\n".join(lines)
