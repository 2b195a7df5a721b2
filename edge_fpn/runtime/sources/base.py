"""What every source is: ``read(timeout) -> FrameRead(status, frame, timestamp, index)``, the three
statuses, and the ``Source`` base class (a context manager and an iterator of OK reads)."""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

logger = logging.getLogger("edge_fpn.runtime")

OK = "ok"
TIMEOUT = "timeout"
END = "end"


class FrameRead:
    """What ``Source.read`` returns; unpacks as ``status, frame, timestamp, index``.

    ``timestamp`` is ``time.monotonic()`` when the frame was captured (what latency is measured
    from); ``index`` numbers the frames the source produced (gaps are frames it dropped);
    ``name`` is the image file a frame came from ("" for streams).
    """
    __slots__ = ("status", "frame", "timestamp", "index", "name")

    def __init__(self, status: str, frame: Optional[np.ndarray] = None, timestamp: float = 0.0,
                 index: int = -1, name: str = ""):
        self.status, self.frame, self.timestamp, self.index, self.name = status, frame, timestamp, index, name

    @property
    def ok(self) -> bool:
        return self.status == OK

    def __iter__(self) -> Iterator[Any]:
        return iter((self.status, self.frame, self.timestamp, self.index))

    def __repr__(self) -> str:
        shape = None if self.frame is None else getattr(self.frame, "shape", "?")
        return f"FrameRead({self.status!r}, frame={shape}, index={self.index})"


class Source:
    """Base class: a context manager and an iterator of OK reads (until END)."""

    live = False  # a live source keeps only the newest frame; a file source drops nothing

    def __init__(self, uri: str):
        self.uri = uri
        self.fps: Optional[float] = None
        self.frames = 0  # frames handed out by read()
        self.dropped = 0  # frames the source produced that nobody read (live sources)
        self.skipped = 0  # unreadable files skipped (image sources)
        self.reconnects = 0

    def read(self, timeout: Optional[float] = None) -> FrameRead:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def input_files(self) -> List[str]:
        """The local files this source reads (none for cameras, streams and test://): what an
        output must never be (output_guard.py)."""
        return []

    def stats(self) -> Dict[str, Any]:
        return {"uri": self.uri, "live": self.live, "frames": self.frames, "dropped": self.dropped,
                "skipped": self.skipped, "reconnects": self.reconnects}

    def __iter__(self) -> Iterator[FrameRead]:
        while True:
            result = self.read(timeout=1.0)
            if result.status == END:
                return
            if result.status == OK:
                yield result

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


