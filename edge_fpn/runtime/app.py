"""What the ``edge-fpn detect`` and ``edge-fpn bench`` commands run (also callable from Python)."""
from __future__ import annotations

import json as json_module
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import EdgeFpnError

DEFAULT_BENCH_SOURCE = "test://?width=640&height=480&realtime=0"


def detect(bundle: str, source: Any, sinks: Sequence[Any] = (), max_frames: Optional[int] = None,
           score_threshold: Optional[float] = None, classes: Optional[Sequence[str]] = None,
           quiet: bool = False, stats_interval: float = 5.0, device: str = "auto", force: bool = False,
           cuda: str = "auto", track: Any = False, **source_options: Any) -> Dict[str, Any]:
    """Run a bundle on a source (or several: a list, or a ``.streams``/``.txt`` file of URIs, one a
    line) into sinks; returns the pipeline statistics.

    With several sources, ``{source}`` in a sink path makes one sink per source (``out_{source}.mp4``),
    a directory gets one folder per source, and a JSON-lines file without it holds every source's
    records (``source_index``); a video without it is refused. Every source opens before any work.

    track: persistent object IDs (True, a TrackerConfig or a Tracker; runtime/tracking.py), drawn
    by the image sinks and written as ``track_id`` by the JSON-lines sink.

    Detections scoring under `score_threshold` are neither shown nor written (default: 0.5, the
    pipeline's DISPLAY_SCORE_THRESHOLD; 0.05 shows what the model keeps). With no sink, one line a
    frame is printed (index, source, detections). Ctrl-C stops cleanly: the sinks are flushed and
    the statistics printed, as at the end of the stream. A run that fails before its first frame
    (a bundle that cannot load, a source that cannot open, a sink that cannot be written) leaves no
    output file behind. An output that is an input (the same file, the source images' folder, also
    through `..` or a symlink) is refused before anything is written; an existing output file is
    replaced only with `force`. A file source none of whose images can be read is an error.
    """
    from ..bundle import load_manifest
    from .detector import Detector
    from .pipeline import Pipeline, check_source_list
    from .output_guard import refuse_outputs_over_inputs
    from .sinks import abort_sinks, apply_source_fps, check_sinks, open_sinks, per_source_specs
    from .sources import ImageSource, open_source

    if max_frames is not None and max_frames < 1:
        raise EdgeFpnError(f"--max-frames must be at least 1, not {max_frames}")
    if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise EdgeFpnError(f"--score-threshold must be between 0 and 1, not {score_threshold}")
    # cheap checks first: a typo in a sink or source should not wait for the engines to load
    load_manifest(bundle)
    specs = source_list(source)
    check_source_list(specs)
    check_sinks(list(sinks))
    expanded = [part for spec in sinks for part in (per_source_specs(spec, len(specs)) or [spec])]
    opened_sinks: List[Any] = []
    opened_sources: List[Any] = []
    detector = None
    try:
        for spec in specs:  # every source opens up front: a missing file is an error before any work
            opened_sources.append(open_source(spec, **source_options))
        opened_source = opened_sources[0]
        refuse_outputs_over_inputs([path for opened in opened_sources for path in opened.input_files()],
                                   expanded, force)
        # the Detector returns all the model keeps; the pipeline shows from the display threshold
        detector = Detector(bundle, classes=list(classes) if classes else None, device=device, cuda=cuda)
        # sinks open last, once the bundle and the source are open (and create their files with
        # the first frame): a run that fails to start leaves nothing behind
        opened_sinks = open_sinks(list(sinks), sources=len(opened_sources))
        apply_source_fps(opened_sinks, [opened.fps for opened in opened_sources])
        pipeline = Pipeline(detector, opened_sources if len(opened_sources) > 1 else opened_source, opened_sinks,
                            max_frames=max_frames, quiet=quiet,
                            stats_interval=stats_interval, score_threshold=score_threshold,
                            tracker=track or None)
        with pipeline:
            for sink in pipeline.sinks:
                if getattr(sink, "url", None) and not quiet:
                    print(f"[edge-fpn] web viewer on {sink.url}", file=sys.stderr, flush=True)
            if not sinks and not quiet:
                pipeline.add_callback(_print_result)
            with _terminate_as_interrupt():
                pipeline.start()
                try:
                    while not pipeline.wait(0.1):
                        pass
                except KeyboardInterrupt:
                    if not quiet:
                        print("[edge-fpn] stopped (Ctrl-C)", file=sys.stderr, flush=True)
        unread = [opened for opened in opened_sources if isinstance(opened, ImageSource) and opened.paths and not opened.frames]
        if len(unread) == len(opened_sources):
            paths = [path for opened in unread for path in opened.paths]
            count = len(paths)
            what = f"the image {paths[0]!r}" if count == 1 else f"any of the {count} images"
            raise EdgeFpnError(f"cannot read {what} (empty, truncated or not an image); nothing was written: "
                               "check the files")
        return pipeline.stats.snapshot()
    except BaseException:
        abort_sinks(opened_sinks)  # the pipeline did it if it ran; a sink that wrote nothing leaves nothing
        raise
    finally:
        for opened in opened_sources:
            opened.close()
        for sink in opened_sinks:  # closed already by the pipeline when it ran; closing twice is harmless
            try:
                sink.close()
            except Exception:
                pass
        if detector is not None:
            detector.close()


def source_list(source: Any) -> List[Any]:
    """The sources `source` names: a list as is, a ``.streams``/``.txt`` file's lines, else itself."""
    from .pipeline import is_source_list, read_source_list
    if isinstance(source, (list, tuple)):
        return [item for spec in source for item in (read_source_list(spec) if is_source_list(spec) else [spec])]
    return read_source_list(source) if is_source_list(source) else [source]


class _terminate_as_interrupt:
    """While detect runs on the main thread, SIGTERM (systemd, docker stop) stops it like Ctrl-C:
    the sinks are flushed and closed instead of the process dying with a half-written video."""

    def __enter__(self) -> None:
        import signal
        import threading
        self.previous = None
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
            def interrupt(signum: int, frame: Any) -> None:
                raise KeyboardInterrupt
            self.previous = signal.signal(signal.SIGTERM, interrupt)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            import signal
            signal.signal(signal.SIGTERM, self.previous)


def _print_result(result: Any) -> None:
    d = result.detections
    found = ", ".join(f"{name} {score:.2f}" for name, score in zip(d.names[:8], d.scores[:8]))
    more = f", ... ({len(d)})" if len(d) > 8 else ""
    print(f"frame {result.index} {result.source}: {len(d)} detection{'s' if len(d) != 1 else ''}"
          f"{': ' + found + more if len(d) else ''}", flush=True)


def bench(bundle: str, source: str = DEFAULT_BENCH_SOURCE, frames: int = 100, json: bool = False,
          warmup: int = 5, threads: int = 0, quiet: bool = False, device: str = "auto",
          cuda: str = "auto") -> Dict[str, Any]:
    """Pipeline FPS against engine-only FPS (the two stages alone on pre-made inputs), and their ratio.

    Engine-only: the engine call(s) alone on one prepared frame, `frames` times (engine layout: the
    detector engine; host layout: stage 1 and stage 2 back to back on the frame's own proposals).
    Pipeline: the full pipeline (capture, preprocess, engines,
    postprocessing) on `frames` frames of the source, after `warmup` frames. The ratio says how
    much of the engines' speed the pipeline keeps: 1.0 means capture and pre/postprocessing are
    fully hidden behind inference.
    """
    from .detector import Detector
    from .pipeline import Pipeline
    from .sources import OK, open_source

    if frames < 2:
        raise EdgeFpnError(f"--frames must be at least 2, not {frames}")
    if warmup < 0:
        raise EdgeFpnError(f"--warmup must be 0 or more, not {warmup}")
    if threads < 0:
        raise EdgeFpnError(f"--threads must be 0 (ONNX Runtime's own choice) or more, not {threads}")
    detector = Detector(bundle, threads=threads, device=device, cuda=cuda)
    try:
        # ---------------------------------------------------------------- engine only
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
        inputs, letterbox = detector.preprocess(frame)
        run_engines = detector.engine_only(inputs, letterbox)
        for _ in range(max(1, warmup)):
            run_engines()
        engine_times: Dict[str, List[float]] = {}
        started = time.perf_counter()
        for _ in range(frames):
            for step, seconds in run_engines().items():
                engine_times.setdefault(step, []).append(seconds)
        engine_seconds = time.perf_counter() - started
        engine_fps = frames / engine_seconds

        # ---------------------------------------------------------------- the pipeline
        done: List[float] = []
        pipeline = Pipeline(detector, source, max_frames=warmup + frames, quiet=True,
                            on_result=lambda result: done.append(time.perf_counter()))
        pipeline_start = time.perf_counter()
        snapshot = pipeline.run()
        if len(done) < warmup + 2:
            raise EdgeFpnError(f"source {source!r} ended after {len(done)} frames; benchmark a longer source or fewer --frames")
        measured = done[warmup:] if warmup else done
        first = done[warmup - 1] if warmup else pipeline_start
        pipeline_fps = len(measured) / (measured[-1] - first)
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
        "providers": _providers(detector),
    }
    if not quiet:
        if json:
            print(json_module.dumps(report, indent=2))
        else:
            print(format_bench(report))
    return report


def _providers(detector: Any) -> List[str]:
    """The execution providers the Detector's engines really run on (ONNX Runtime backends record theirs)."""
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
