"""A live source that cannot be opened when a multi-source pipeline starts: said once, then opened
again in the background with back-off (as a lost stream is reconnected), while the other sources
run. A file that cannot be opened stays an error up front: it will not appear later."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ...errors import EdgeFpnError
from .base import END, TIMEOUT, FrameRead, Source, logger
from .uri import SCHEME

LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "csi", "v4l2")


def is_live_uri(uri: Any) -> bool:
    """A camera or network stream (which can come back), as opposed to a file or test://."""
    if not isinstance(uri, str):
        return False
    match = SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    return scheme in LIVE_SCHEMES or (not scheme and uri.startswith("/dev/video"))


class PendingSource(Source):
    """Reads TIMEOUT until `opener` succeeds on its own thread, then is the opened source."""

    live = True

    def __init__(self, uri: str, opener: Callable[[], Source], first_error: str,
                 backoff: Tuple[float, float] = (0.25, 5.0)):
        super().__init__(uri)
        self._opener, self._backoff = opener, backoff
        self._inner: Optional[Source] = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.outages = 1
        self._since = time.monotonic()
        logger.warning("%s: %s; the other sources go on, and this one is retried with back-off (said once)",
                       uri, first_error)
        self._thread = threading.Thread(target=self._open_loop, name=f"edge-fpn-open {uri}", daemon=True)
        self._thread.start()

    def _open_loop(self) -> None:
        delay = self._backoff[0]
        while not self._stop.wait(delay):
            try:
                opened = self._opener()
            except EdgeFpnError:
                delay = min(delay * 2.0, self._backoff[1])
                continue
            except Exception:  # an opener bug must not hang the pipeline: log it and stay closed
                logger.exception("%s: opening failed", self.uri)
                return
            with self._cond:
                if self._stop.is_set():
                    opened.close()
                    return
                self._inner, self.fps = opened, opened.fps
                self._cond.notify_all()
            logger.warning("%s: opened after %.1f s", self.uri, time.monotonic() - self._since)
            return

    def read(self, timeout: Optional[float] = None) -> FrameRead:
        with self._cond:
            if self._inner is None and not self._stop.is_set():
                self._cond.wait_for(lambda: self._inner is not None or self._stop.is_set(), timeout)
            inner = self._inner
        if inner is None:
            return FrameRead(END if self._stop.is_set() else TIMEOUT)
        return inner.read(timeout)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        if self._inner is not None:
            self._inner.close()

    def stats(self) -> Dict[str, Any]:
        if self._inner is None:
            info = super().stats()
            info.update(outages=self.outages, waiting=True)
            return info
        info = self._inner.stats()
        info["outages"] = int(info.get("outages", 0)) + self.outages
        return info


def open_or_retry(uri: Any, opener: Callable[[], Source], retry: bool) -> Source:
    """`opener()`; where it fails on a live URI and `retry` is on, a PendingSource that keeps trying."""
    try:
        return opener()
    except EdgeFpnError as exc:
        if not retry or not is_live_uri(uri):
            raise
        return PendingSource(uri, opener, str(exc))


def open_sources(specs: Sequence[Any], options: Dict[str, Any]) -> List[Source]:
    """Every source of a list, opened up front (a missing file is an error before any work; the
    ones opened before it are closed again). With several sources, a camera or stream that is not
    there yet is retried while the others run, unless ``reconnect=False``."""
    from . import open_source

    retry = len(specs) > 1 and options.get("reconnect", True) is not False
    opened: List[Source] = []
    try:
        for spec in specs:
            opened.append(open_or_retry(spec, lambda spec=spec: open_source(spec, **options), retry))
    except BaseException:
        for source, spec in zip(opened, specs):
            if source is not spec:  # the caller's own Source objects stay open
                source.close()
        raise
    return opened
