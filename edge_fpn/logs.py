"""One logging path: every edge_fpn module logs to ``logging.getLogger(__name__)``; a program that
embeds edge-fpn configures logging as it likes, and the `edge-fpn` command shows the lines
(`show_messages`, called once by cli.main).

Python 3.8: the builder, which runs on the device, logs through this.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

PACKAGE_LOGGER = "edge_fpn"
# TensorRT's own messages (builder/tensorrt_builder.py maps its severities into this logger); its
# INFO lines are build chatter, so the command shows its warnings and errors only
TENSORRT_LOGGER = "edge_fpn.tensorrt"


class ConsoleHandler(logging.Handler):
    """Each record as its bare message: INFO lines on stdout; warnings and errors on stderr where the
    program has no root handler of its own, as Python's last-resort handler shows them when no
    handler is configured (a handler here would otherwise stop that one). The streams are looked up
    at each line, so that redirections see them."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__(logging.INFO)
        self.prefix = prefix
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING and logging.getLogger().handlers:
            return  # the program's own root handlers show it
        try:
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            stream.write(self.prefix + self.format(record) + "\n")
            stream.flush()
        except Exception:  # a closed stream must not stop the work (logging's own rule)
            self.handleError(record)


def show_messages() -> None:
    """Show edge_fpn's INFO lines on stdout and its warnings on stderr, each as its message; once
    per process, however often called."""
    package = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(handler, ConsoleHandler) for handler in package.handlers):
        package.addHandler(ConsoleHandler())
    if package.level == logging.NOTSET or package.level > logging.INFO:
        package.setLevel(logging.INFO)
    tensorrt = logging.getLogger(TENSORRT_LOGGER)
    if tensorrt.level == logging.NOTSET:
        tensorrt.setLevel(logging.WARNING)


@contextmanager
def lines_to(say: Callable[[str], None], name: str = PACKAGE_LOGGER) -> Iterator[None]:
    """For the time of the block, the INFO lines (and above) of logger `name` and its children go to
    `say` instead of the usual handlers (the demo prints the builder's lines as its own)."""

    class Say(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            say(record.getMessage())

    logger = logging.getLogger(name)
    handler = Say(logging.INFO)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved
