"""The live pipeline: capture, preprocess, inference, postprocess and sinks overlap on threads.

::

    capture ─▶ [slot] ─▶ preprocess ─▶ [slot] ─▶ inference ─▶ [q] ─▶ postprocess ─▶ [q] ─▶ sinks ─▶ you
                             (the engine; or stage 1 + proposals + stage 2 in the host layout)

Each stage is one thread and the queues between them are small and bounded, so at most a few
frames are in flight and memory stays flat. With a *live* source (camera, RTSP, realtime test://)
the two queues before inference are one-frame slots that keep only the newest frame: a robot
wants the present, not a backlog, so inference always starts on the newest frame (latency is about
one frame's age plus the stages' times); replaced frames are counted as dropped. A *file* source
feeds small blocking queues: nothing is dropped and the order is kept. numpy, OpenCV and the engines release the GIL in their heavy
parts, which is what lets the threads overlap.

What the pipeline delivers (to its sinks, callbacks and iterator) are the detections scoring at
least ``score_threshold``: by default the Detector's own threshold where it was given one, else
``DISPLAY_SCORE_THRESHOLD`` (0.5), so that a viewer or a robot sees confident detections, not the
long tail a detector keeps for evaluation (a Detector called directly returns everything; pass
``score_threshold=0.05`` here to see that tail).

A frame that cannot be used (None, empty, wrong dtype or shape) is counted and skipped;
grayscale and 4-channel frames are converted to BGR; a frame of another size is letterboxed like
any other. End of stream, ``max_frames``, Ctrl-C and ``close()`` all shut the threads down and
close (flush) the sinks. An exception in a stage thread stops the pipeline and is raised again
in the thread that iterates (or calls ``run``/``wait``).

Use::

    with Pipeline(Detector("engines/shapes"), "csi://0", ["http://0.0.0.0:8080"]) as pipeline:
        for result in pipeline:            # Result: frame, detections, index, timestamp, ...
            print(result.index, len(result.detections))

or in the background, for a control loop at its own rate::

    pipeline = Pipeline(detector, "csi://0", on_result=callback).start()
    newest = pipeline.latest()             # the newest Result, or None
    pipeline.close()
"""
from __future__ import annotations

import collections
import dataclasses
import inspect
import logging
import sys
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .detector import Detector
from .preprocess import FrameError, to_bgr
from .scheduling import ENDED, SourceEnd, SourceSlots
from .sinks import Sink, abort_sinks, annotate, apply_source_fps, draw_trails, open_sinks
from .sources import END, OK, Source
from .sources.pending import open_sources
from .stats import PipelineStats, format_line, format_summary, stages_for
from .trails import Trails

logger = logging.getLogger("edge_fpn.runtime")

_END = object()  # end of stream marker inside the queues

# the score from which detections are shown and written (detect, demo, Detector.stream, sinks)
DISPLAY_SCORE_THRESHOLD = 0.5


def display_threshold(detector: Any, requested: Optional[float] = None) -> float:
    """The score threshold a pipeline shows from: `requested` if given, else the Detector's own
    ``score_threshold`` if it has one, else DISPLAY_SCORE_THRESHOLD."""
    if requested is None:
        requested = getattr(detector, "score_threshold", None)
    threshold = DISPLAY_SCORE_THRESHOLD if requested is None else float(requested)
    if not 0.0 <= threshold <= 1.0:
        from ..errors import EdgeFpnError
        raise EdgeFpnError(f"score threshold must be between 0 and 1, not {requested}")
    return threshold


def filter_scores(detections: Any, threshold: float) -> Any:
    """The detections scoring at least `threshold` (vectorized; the same object when all pass)."""
    scores = detections.scores
    keep = np.flatnonzero(scores >= threshold)
    if keep.shape[0] == scores.shape[0]:
        return detections
    names = np.asarray(detections.names, dtype=object)[keep].tolist() if keep.shape[0] else []
    extra = {}
    track_ids = getattr(detections, "track_ids", None)
    if track_ids is not None:
        extra["track_ids"] = track_ids[keep]
    return dataclasses.replace(detections, boxes=detections.boxes[keep], scores=scores[keep],
                               labels=detections.labels[keep], names=names, **extra)


@dataclasses.dataclass(eq=False, repr=False)
class Result:
    """One processed frame. ``frame`` is the BGR frame the detections refer to."""

    frame: np.ndarray
    detections: Any
    index: int  # the source's frame number
    timestamp: float  # time.monotonic() at capture
    source: str  # the image file it came from, else the source URI
    name: str  # the image file it came from ("" for streams)
    timings: Dict[str, float]  # seconds spent in each stage
    latency: float  # capture -> detections, seconds
    done: float  # time.monotonic() when the detections were ready
    # which of the pipeline's sources (0, 1, ... in the order given); None outside a pipeline
    source_index: Optional[int] = None
    # with a tracker: this frame's trails (trails.TrailLines), recorded once by the pipeline
    trails: Any = None
    # with a tracker: its confirmed tracks after this frame (Tracker.tracks(frame size): IDs, boxes,
    # velocities, lost and hidden ones too: where an object not seen this frame probably is)
    tracks: Optional[Dict[str, np.ndarray]] = None
    _annotated: Optional[np.ndarray] = dataclasses.field(default=None, init=False)

    def annotated(self) -> np.ndarray:
        """The frame with the detections (and their tracks' trails) drawn: computed once, shared
        by all sinks."""
        image = self._annotated
        if image is None:
            image = annotate(self.frame, self.detections)
            if self.trails is not None:
                draw_trails(image, self.trails)
            self._annotated = image
        return image

    def __iter__(self) -> Iterator[Any]:  # ``frame, detections = result``
        return iter((self.frame, self.detections))

    def __repr__(self) -> str:
        where = "" if self.source_index is None else f"source={self.source_index}, "
        return f"Result({where}index={self.index}, detections={len(self.detections)}, latency={self.latency * 1000:.1f} ms)"


class _Work:
    """A frame on its way through the stages."""

    __slots__ = ("index", "frame", "timestamp", "name", "tensor", "letterbox", "outputs", "timings", "source")

    def __init__(self, index: int, frame: Any, timestamp: float, name: str, source: int = 0):
        self.index, self.frame, self.timestamp, self.name = index, frame, timestamp, name
        self.source = source
        self.tensor: Any = None
        self.letterbox: Any = None
        self.outputs: Any = None
        self.timings: Dict[str, float] = {}


class _Channel:
    """A small bounded FIFO between two stage threads; ``latest`` mode keeps only the newest item."""

    def __init__(self, capacity: int = 1, latest: bool = False):
        self.capacity = max(1, int(capacity))
        self.latest = latest
        self._items: Deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, stop: threading.Event) -> int:
        """Blocking put (or replace, in latest mode). Returns the number of items replaced, -1 if stopped."""
        with self._cond:
            if self.latest:
                replaced = len(self._items)
                self._items.clear()
                self._items.append(item)
                self._cond.notify_all()
                return replaced
            while len(self._items) >= self.capacity:
                if stop.is_set():
                    return -1
                self._cond.wait(0.1)
            self._items.append(item)
            self._cond.notify_all()
            return 0

    def get(self, stop: threading.Event, timeout: float = 0.1) -> Any:
        """The next item; ``_END`` once closed and drained, or at once when stopped; None on timeout."""
        with self._cond:
            if not self._items and not self._closed and not stop.is_set():
                self._cond.wait(timeout)
            if stop.is_set():
                return _END  # stopping: what is still queued is dropped
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return _END if self._closed else None

    def items(self, stop: threading.Event) -> Iterator[Any]:
        """Every item until the channel is closed and drained (or ``stop`` is set)."""
        while True:
            item = self.get(stop)
            if item is _END:
                return
            if item is not None:
                yield item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _check_max_frames(max_frames: Optional[int]) -> Optional[int]:
    from ..errors import EdgeFpnError
    if max_frames is not None and int(max_frames) < 1:
        raise EdgeFpnError(f"max_frames must be at least 1, not {max_frames}")
    return None if max_frames is None else int(max_frames)


class _Feed:
    """One source of a pipeline: its Source, whether the pipeline opened it, its tracker, counters."""

    def __init__(self, index: int, source: Source, owned: bool, tracker: Any):
        self.index = index
        self.source = source
        self.owned = owned
        self.live = bool(source.live)
        self.tracker = tracker
        # (edge-fpn's Tracker sees the frame, for its appearance veto; a tracker of the user's may not)
        self.tracker_sees_frames = tracker is not None and "image" in inspect.signature(tracker.track).parameters
        self.reconnects_seen = 0
        self.uri = source.uri


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """How a Pipeline runs, apart from what it runs (detector, sources, sinks); see ``Pipeline``.

    ``Pipeline(detector, source, sinks, quiet=True, tracker=True)`` and
    ``Pipeline(detector, source, sinks, options=PipelineOptions(quiet=True, tracker=True))`` are the
    same pipeline; keyword arguments override the fields of ``options``.
    """

    max_frames: Optional[int] = None
    quiet: bool = False
    stats_interval: float = 5.0
    queue_size: int = 2
    on_result: Optional[Callable[[Result], None]] = None
    source_options: Optional[Dict[str, Any]] = None
    stats_window: int = 1000
    printer: Optional[Callable[[str], None]] = None
    score_threshold: Optional[float] = None
    tracker: Any = None
    reset_tracker_on_reconnect: bool = True
    batch_wait: Optional[float] = None

    @classmethod
    def merged(cls, options: Optional["PipelineOptions"], overrides: Dict[str, Any]) -> "PipelineOptions":
        """``options`` (default: the defaults) with ``overrides`` on top; an unknown name is a TypeError,
        as an unknown keyword argument is."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"Pipeline() got an unexpected keyword argument {unknown[0]!r}")
        return dataclasses.replace(options if options is not None else cls(), **overrides)


class Pipeline:
    """Run a Detector on one or several sources into sinks, pipelined; iterate it for Results, or ``run()`` it.

    detector: a Detector (or a bundle directory). source: a URI/path (opened and closed by the
    pipeline) or a Source (left open: its owner closes it), or a list of them: several sources
    share the one engine (see below).
    sinks: sink strings or Sink objects; with several sources a string with ``{source}`` in it
    gives one sink per source (``out_{source}.mp4``), a directory one folder per source.
    options: a ``PipelineOptions`` (the fields below); keyword arguments override its fields, so
    ``Pipeline(detector, source, sinks, quiet=True, tracker=True)`` works as it reads.
    max_frames: stop after this many results (over all sources).
    quiet: no periodic statistics line (every ``stats_interval`` s) and no end summary.
    on_result: called with each Result on the sink thread (keep it short).
    source_options: keyword options for ``open_source`` when ``source`` is a string.
    score_threshold: deliver only detections scoring at least this (default: the Detector's own
    threshold if it has one, else DISPLAY_SCORE_THRESHOLD, 0.5; 0.0 delivers all the Detector returns).
    tracker: True (a Tracker with the default TrackerConfig), a TrackerConfig, or a Tracker: persistent
    IDs in ``detections.track_ids``. It runs on the postprocessing thread in frame order, on all the
    detections (ByteTrack's second stage needs the low scores) before the display threshold; its time
    is each frame's "tracking" stage. Timestamps: the capture time for a live source, the frame index
    / fps for a file source (a video read faster or slower than real time). It also gets the frame
    (``track(detections, timestamp, image=frame)``, for its appearance veto) if its ``track`` takes
    an ``image``. A frame the tracker refuses is counted as a bad frame and delivered untracked (IDs -1). A reconnecting live source
    resets the tracker (its IDs keep counting) unless ``reset_tracker_on_reconnect`` is False.
    With several sources each source gets its own tracker (True or a TrackerConfig; a Tracker
    object serves one source only).

    Several sources: each keeps its own capture thread, newest-frame slot (live) or queue (file),
    dropped and bad-frame counts (``stats.snapshot()["sources"]``) and tracker; Results carry
    ``source_index``. A batch-1 engine serves the sources round-robin on their newest frames; a
    batch-N engine (``detector.batch`` > 1) gets the newest frame of each source in one call,
    waiting for a slow source at most ``batch_wait`` seconds (default: one frame interval of the
    fastest source, else 0.03 s), empty slots padded. A source that ends or fails is reported
    (warning, ``sources[i]["ended"]``/``["error"]``) and the others go on; the pipeline ends when all
    have ended, and raises the first source's error only if every source failed.
    """

    def __init__(self, detector: Any, source: Any, sinks: Sequence[Any] = (),
                 options: Optional[PipelineOptions] = None, **overrides: Any):
        self.options = options = PipelineOptions.merged(options, overrides)
        if isinstance(detector, str):
            detector = Detector(detector)
        self.detector = detector
        self.score_threshold = display_threshold(detector, options.score_threshold)
        self.max_frames = _check_max_frames(options.max_frames)
        specs = list(source) if isinstance(source, (list, tuple)) else [source]
        check_source_list(specs)
        self.multi = len(specs) > 1
        self._check_options(options)
        self.batch = int(getattr(detector, "batch", 1) or 1)
        self.reset_tracker_on_reconnect = bool(options.reset_tracker_on_reconnect)
        self.quiet = options.quiet
        self.stats_interval = float(options.stats_interval)
        self.printer = options.printer or _print_stderr
        self._callbacks: List[Callable[[Result], None]] = [options.on_result] if options.on_result else []
        self.stats = PipelineStats(stages_for(getattr(detector, "engine_steps", ("engine",))), window=options.stats_window,
                                   class_names=list(getattr(detector, "class_names", []) or []))
        self.stats.set_source_count(len(specs))
        self._open_sinks_and_sources(specs, sinks, options)
        fps = [s.fps for s in self.sources if s.live and s.fps]
        batch_wait = options.batch_wait
        self.batch_wait = float(batch_wait) if batch_wait is not None else (1.0 / max(fps) if fps else 0.03)
        self._make_channels(options.queue_size)

    def _check_options(self, options: PipelineOptions) -> None:
        from ..errors import EdgeFpnError
        tracker, batch_wait = options.tracker, options.batch_wait
        if self.multi and tracker is not None and tracker is not False and tracker is not True:
            from .tracking import TrackerConfig
            if not isinstance(tracker, TrackerConfig):
                raise EdgeFpnError("with several sources, give tracker=True or a TrackerConfig (each source gets "
                                   "its own Tracker), not one Tracker object")
        if batch_wait is not None and not batch_wait >= 0:
            raise EdgeFpnError(f"batch_wait must be 0 or more seconds, not {batch_wait}")

    def _open_sinks_and_sources(self, specs: List[Any], sinks: Sequence[Any], options: PipelineOptions) -> None:
        # sinks first: a bad sink path should fail before a camera is opened (opening a sink
        # creates no file: that waits for the first frame)
        self.sinks: List[Sink] = open_sinks(list(sinks), sources=len(specs))
        self._failed = False  # a stage failed, or the consumer's block raised: sinks abort
        try:
            trackers = [_make_tracker(options.tracker) for _ in specs]  # a bad tracker fails before any camera opens
            opened = open_sources(specs, dict(options.source_options or {}))
        except BaseException:
            abort_sinks(self.sinks)
            raise
        self.feeds: List[_Feed] = [_Feed(index, source, not isinstance(spec, Source), tracker)
                                   for index, (spec, source, tracker) in enumerate(zip(specs, opened, trackers))]
        self.sources: List[Source] = [feed.source for feed in self.feeds]
        self.source: Source = self.sources[0]
        self._owns_source = self.feeds[0].owned
        self.tracker = self.feeds[0].tracker
        # one history of track centres for every sink that draws (trails.py), fed in frame order
        self._trails = Trails() if any(feed.tracker is not None for feed in self.feeds) else None
        apply_source_fps(self.sinks, [s.fps for s in self.sources])
        for sink in self.sinks:
            if getattr(sink, "stats_provider", "absent") is None:
                sink.stats_provider = self.stats.snapshot  # type: ignore[attr-defined]
        self.live = any(feed.live for feed in self.feeds)
        for feed in self.feeds:
            self.stats.source_state(feed.index, feed.source.stats())

    def _make_channels(self, queue_size: int) -> None:
        # live: one-frame slots per source up to inference, so that inference always starts on the
        # newest frame (latency = frame age + preprocess + inference), at the price of preprocessing
        # frames that a newer one then replaces; files: small blocking queues, nothing dropped
        lives = [feed.live for feed in self.feeds]
        self._to_preprocess = SourceSlots(lives, 1)
        # preprocessing takes a frame only when the inference slots have room: one lock for both
        self._to_infer = SourceSlots(lives, queue_size, condition=self._to_preprocess.condition)
        self._to_post = _Channel(max(queue_size, self.batch))
        self._to_sinks = _Channel(queue_size)
        self._out = _Channel(queue_size)
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._threads: List[threading.Thread] = []
        self._capturing = len(self.feeds)
        self._capture_lock = threading.Lock()
        self._source_errors: List[BaseException] = []
        self._error: Optional[BaseException] = None
        self._iterate = False
        self._started = False
        self._closed = False
        self._latest: Optional[Result] = None
        self._latest_cond = threading.Condition()
        self._delivered = 0
        self._bad_warned = False
        self._last_print = time.monotonic()

    # ------------------------------------------------------------ public API
    def start(self, iterate: bool = False) -> "Pipeline":
        """Start the threads (``iterate`` queues Results for ``__iter__``; otherwise only ``latest()``)."""
        if self._started:
            return self
        if self._closed:
            raise RuntimeError("this pipeline is closed; make a new one")
        self._started = True
        self._iterate = iterate
        self.stats.started = time.monotonic()
        for feed in self.feeds:
            suffix = f" {feed.index}" if self.multi else ""
            thread = threading.Thread(target=self._capture_guard, args=(feed,), name=f"edge-fpn capture{suffix}",
                                      daemon=True)
            self._threads.append(thread)
        stages = [("preprocess", self._preprocess, self._to_infer),
                  ("inference", self._infer, self._to_post), ("postprocess", self._postprocess, self._to_sinks),
                  ("sinks", self._deliver, self._out)]
        for name, target, output in stages:
            thread = threading.Thread(target=self._guard, args=(target, output), name=f"edge-fpn {name}", daemon=True)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        return self

    def __iter__(self) -> Iterator[Result]:
        self.start(iterate=True)
        if not self._iterate:
            raise RuntimeError("this pipeline was started without iteration; use latest() or run()")
        try:
            yield from self._out.items(self._never)
            self._raise_error()
        finally:
            self.close()

    def run(self) -> Dict[str, Any]:
        """Process the whole source(s) (or ``max_frames``) without iterating; returns the statistics."""
        self.start(iterate=False)
        try:
            while not self._finished.wait(0.1):
                pass
        finally:
            self.close()
        self._raise_error()
        return self.stats.snapshot()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for the end of the stream (or max_frames); True if it ended. Raises a stage's error."""
        ended = self._finished.wait(timeout)
        self._raise_error()
        return ended

    def latest(self, timeout: Optional[float] = None, after: Optional[Result] = None) -> Optional[Result]:
        """The newest Result (optionally waiting up to `timeout` for one newer than `after`)."""
        with self._latest_cond:
            if timeout:
                self._latest_cond.wait_for(lambda: (self._latest is not None and self._latest is not after)
                                           or self._finished.is_set(), timeout)
            return self._latest

    def add_callback(self, callback: Callable[[Result], None]) -> None:
        """Call `callback(result)` for each result, on the sink thread (keep it short)."""
        self._callbacks.append(callback)

    @property
    def running(self) -> bool:
        return self._started and not self._finished.is_set()

    def close(self) -> None:
        """Stop the threads, close the sources (those this pipeline opened) and flush/close the sinks.

        After a failure the sinks are aborted instead: one that got no frame leaves no file behind."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30.0)
        self._finished.set()
        with self._latest_cond:
            self._latest_cond.notify_all()
        for feed in self.feeds:
            if feed.owned:
                feed.source.close()
            self.stats.source_state(feed.index, feed.source.stats())
        self._close_sinks()
        if not self.quiet and self._started and not self._failed:  # a failure is said by its error alone
            self.printer(format_summary(self.stats.snapshot()))
            for sink in self.sinks:
                self.printer(f"[edge-fpn] wrote {sink.describe()}" if not getattr(sink, "url", None)
                             else f"[edge-fpn] served {sink.describe()}")

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            self._failed = True
        self.close()

    # ------------------------------------------------------------ stage threads
    _never = threading.Event()  # the consumer's get() waits for _END, not for the stop flag

    def _guard(self, target: Callable[[Any], None], output: Any) -> None:
        try:
            target(output)
        except BaseException as exc:  # noqa: B902 (re-raised in the consumer's thread)
            self._fail(exc)
        finally:
            output.close()
            if output is self._out:
                self._finished.set()
                with self._latest_cond:
                    self._latest_cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._failed = True
        self._stop.set()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _capture_guard(self, feed: _Feed) -> None:
        """One source's capture thread. With several sources a failing source is reported and ends
        alone; the pipeline fails only when every source failed (one source: its error is the
        pipeline's, as always)."""
        try:
            self._capture(feed)
        except BaseException as exc:  # noqa: B902
            if not self.multi:
                self._fail(exc)
            else:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                logger.warning("source %d (%s) failed: %s; the other sources go on", feed.index, feed.uri, message)
                self.stats.source_state(feed.index, error=message)
                with self._capture_lock:
                    self._source_errors.append(exc)
                    if len(self._source_errors) == len(self.feeds):
                        self._fail(self._source_errors[0])
        finally:
            self.stats.source_state(feed.index, feed.source.stats(), ended=True)
            self._to_preprocess.close(feed.index)
            if self.multi and not self._stop.is_set():
                logger.warning("source %d (%s) ended; %s", feed.index, feed.uri,
                               "the other sources go on" if self._others_running(feed) else "it was the last")

    def _others_running(self, feed: _Feed) -> bool:
        with self._capture_lock:
            self._capturing -= 1
            return self._capturing > 0

    def _capture(self, feed: _Feed) -> None:
        source, stop, live = feed.source, self._stop, feed.live
        output = self._to_preprocess
        captured = 0
        while not stop.is_set():
            if not live and self.max_frames is not None and captured >= self.max_frames:
                break
            started = time.perf_counter()
            read = source.read(timeout=0.1)
            if read.status == END:
                break
            if read.status != OK:
                continue
            work = _Work(read.index, read.frame, read.timestamp, read.name, feed.index)
            if not live:
                work.timings["capture"] = time.perf_counter() - started
            if not self._pass_on(output, work):
                break
            captured += 1

    def _preprocess(self, output: SourceSlots) -> None:
        import cv2
        detector, stop = self.detector, self._stop
        while True:
            # only a frame that can be passed on: a frame taken for a full queue would block this
            # thread while a batch waits for another source's frame behind it (a deadlock)
            work = self._to_preprocess.get(stop, accept=output.has_room)
            if work is ENDED:
                return
            if work is None:
                continue
            if isinstance(work, SourceEnd):
                output.close(work.source)
                continue
            started = time.perf_counter()
            try:
                if work.frame is None:
                    raise FrameError("the source gave no frame (None)")
                frame = to_bgr(work.frame)
                if frame is not work.frame:
                    self.stats.count("converted_frames")
                work.tensor, work.letterbox = detector.preprocess(frame)
                work.frame = frame
            except (FrameError, cv2.error, ValueError) as exc:
                self._bad_frame(work, exc)
                continue
            work.timings["preprocess"] = time.perf_counter() - started
            if not self._pass_on(output, work):
                return

    def _pass_on(self, output: SourceSlots, work: _Work) -> bool:
        """Put `work` into its source's slot; a newer frame replacing older ones counts them as
        dropped. False when the pipeline is stopping."""
        replaced = output.put(work.source, work, self._stop)
        if replaced > 0:
            self.stats.count_source(work.source, "dropped", replaced)
        return replaced >= 0

    def _bad_frame(self, work: _Work, exc: BaseException) -> None:
        self.stats.count_source(work.source, "bad_frames")
        if not self._bad_warned:
            self._bad_warned = True
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            where = f"frame {work.index} of source {work.source}" if self.multi else f"frame {work.index}"
            logger.warning("%s cannot be used (%s); skipping it (further bad frames are only counted)",
                           where, message)

    def _infer(self, output: _Channel) -> None:
        if self.batch > 1:
            self._infer_batches(output)
            return
        detector, stop = self.detector, self._stop
        while True:
            work = self._to_infer.get(stop)
            if work is ENDED:
                return
            if work is None or isinstance(work, SourceEnd):
                continue
            work.outputs, timings = detector.infer(work.tensor, work.letterbox)
            work.tensor = None
            work.timings.update(timings)
            if output.put(work, stop) < 0:
                return

    def _infer_batches(self, output: _Channel) -> None:
        """The newest frame of each source in one engine call (more sources than the batch: several calls)."""
        detector, stop, batch = self.detector, self._stop, self.batch
        while True:
            gathered = self._to_infer.get_batch(stop, self.batch_wait)
            if gathered is ENDED:
                return
            if gathered is None or isinstance(gathered, SourceEnd):
                continue
            works = [work for work in gathered if work is not None]
            for first in range(0, len(works), batch):
                chunk = works[first: first + batch]
                outputs, timings = detector.infer_batch([(w.tensor, w.letterbox) for w in chunk])
                for work, item in zip(chunk, outputs):
                    work.outputs = item
                    work.tensor = None
                    work.timings.update(timings)
                    if output.put(work, stop) < 0:
                        return

    def _postprocess(self, output: _Channel) -> None:
        detector, stop = self.detector, self._stop
        for work in self._to_post.items(stop):
            feed = self.feeds[work.source]
            t0 = time.perf_counter()
            detections = detector.finish(work.outputs, work.letterbox)
            t1 = time.perf_counter()
            tracks = None
            if feed.tracker is not None:
                detections, tracks = self._track(feed, work, detections)
                work.timings["tracking"] = time.perf_counter() - t1
            detections = filter_scores(detections, self.score_threshold)
            work.timings["postprocess"] = time.perf_counter() - t0 - work.timings.get("tracking", 0.0)
            done = time.monotonic()
            result = Result(work.frame, detections, work.index, work.timestamp, work.name or feed.uri,
                            work.name, work.timings, done - work.timestamp, done, work.source, tracks=tracks)
            if output.put(result, stop) < 0:
                return

    def _track(self, feed: _Feed, work: _Work, detections: Any) -> Tuple[Any, Optional[Dict[str, np.ndarray]]]:
        """The source's tracker on one frame: (the detections with IDs, its tracks after it); a frame
        it refuses is a bad frame, delivered with IDs -1 and no tracks."""
        tracker, source = feed.tracker, feed.source
        reconnects = int(getattr(source, "reconnects", 0) or 0)
        if reconnects != feed.reconnects_seen:
            feed.reconnects_seen = reconnects
            if self.reset_tracker_on_reconnect:
                tracker.reset()
        if feed.live or not source.fps:
            timestamp = work.timestamp if feed.live else work.index / 30.0
        else:
            timestamp = work.index / float(source.fps)
        try:
            if feed.tracker_sees_frames:
                detections = tracker.track(detections, timestamp, image=work.frame)
            else:
                detections = tracker.track(detections, timestamp)
            return detections, tracker.tracks(work.frame.shape[1::-1])
        except Exception as exc:  # noqa: B902 (one bad frame never stops the pipeline)
            self._bad_frame(work, exc)
            return dataclasses.replace(detections, track_ids=np.full(len(detections), -1, np.int64)), None

    def _deliver(self, output: _Channel) -> None:
        stop, stats = self._stop, self.stats
        for result in self._to_sinks.items(stop):
            t0 = time.perf_counter()
            if self._trails is not None:
                result.trails = self._trails.update(result.detections, result.source_index or 0)
            for sink in self.sinks:
                sink.write(result)
                if sink.stop_requested:
                    stop.set()
            result.timings["sinks"] = time.perf_counter() - t0
            for name, seconds in result.timings.items():
                stats.add_stage(name, seconds)
            index = result.source_index or 0
            stats.add_result(result.latency, result.detections.names, now=result.done, source=index)
            stats.source_state(index, self.sources[index].stats())
            with self._latest_cond:
                self._latest = result
                self._latest_cond.notify_all()
            for callback in self._callbacks:
                callback(result)
            self._delivered += 1
            if self._iterate and output.put(result, stop) < 0:
                return
            self._maybe_print()
            if self.max_frames is not None and self._delivered >= self.max_frames:
                stop.set()  # enough: the other stages stop, frames still in flight are dropped
                return

    def _maybe_print(self) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last_print >= self.stats_interval:
            self._last_print = now
            self.printer(format_line(self.stats.snapshot()))

    def _close_sinks(self) -> None:
        if self._failed:
            abort_sinks(self.sinks)
            return
        errors: List[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close them all; report the first problem
                errors.append(exc)
        if errors and self._error is None:
            raise errors[0]


def check_source_list(sources: Sequence[Any]) -> None:
    """At least one source, and no URI twice (two captures of one camera fight over it)."""
    from ..errors import EdgeFpnError
    if not sources:
        raise EdgeFpnError("no source given; give at least one image, directory, video file or camera URI")
    seen: Dict[str, int] = {}
    for index, source in enumerate(sources):
        key = source if isinstance(source, str) else None
        if key is None:
            continue
        if key in seen:
            raise EdgeFpnError(f"source {key!r} is given twice (sources {seen[key]} and {index}); give each source once")
        seen[key] = index


def read_source_list(path: str) -> List[str]:
    """The URIs of a text file, one a line (Ultralytics' ``.streams``); blank lines and ``#`` comments skipped."""
    from ..errors import EdgeFpnError
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise EdgeFpnError(f"cannot read the source list {path!r} ({exc.strerror}); check the path") from None
    uris = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not uris:
        raise EdgeFpnError(f"the source list {path!r} names no source; write one URI a line")
    return uris


def is_source_list(path: Any) -> bool:
    """A ``.streams`` or ``.txt`` file: a list of sources, one a line."""
    import os
    return isinstance(path, str) and path.lower().endswith((".streams", ".txt")) and os.path.isfile(path)


def _make_tracker(tracker: Any) -> Any:
    """None, or a Tracker from True / a TrackerConfig / a Tracker (anything with ``track``)."""
    if tracker is None or tracker is False:
        return None
    from .tracking import Tracker, TrackerConfig
    if tracker is True:
        return Tracker()
    if isinstance(tracker, TrackerConfig):
        return Tracker(tracker)
    if hasattr(tracker, "track"):
        return tracker
    from ..errors import EdgeFpnError
    raise EdgeFpnError(f"tracker must be True, a TrackerConfig or a Tracker, not {type(tracker).__name__}")


def _print_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
