"""The ``Sink`` base class, alone: what every sink is (``write``, ``close``, ``abort``, a context
manager). The file sinks (``sinks.py``) and the web viewer (``web/server.py``) both derive from it,
so neither imports the other to get it (``sinks.open_sink`` makes a web viewer on demand)."""
from __future__ import annotations

from typing import Any


class Sink:
    """Base class. ``stop_requested`` asks the pipeline to stop (a window closed with q)."""

    name = "sink"
    stop_requested = False

    def write(self, result: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        """The run failed: close; if nothing was written, leave nothing behind."""
        self.close()

    def describe(self) -> str:
        return self.name

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            self.abort()
        else:
            self.close()
