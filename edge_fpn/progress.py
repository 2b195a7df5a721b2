"""One progress helper for every long step (export, calibration, training, evaluation, the
sensitivity scan): a tqdm bar on stderr when stderr is a terminal, nothing otherwise, so that logs
and pipes get the result lines without hundreds of carriage-return updates.

Python 3.8: the builder, which runs on the device, reports progress through this.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Iterable, Iterator, Optional, TypeVar

Item = TypeVar("Item")


class NoBar:
    """What a bar does when progress is off: nothing, with the same methods."""

    def update(self, n: int = 1) -> None: ...
    def set_description(self, text: str) -> None: ...
    def set_postfix(self, **values: Any) -> None: ...
    def close(self) -> None: ...



def progress_bar(total: Optional[int], desc: str, unit: str, enabled: bool = True,
                 leave: bool = False) -> Any:
    """A bar of `total` steps (None: unknown), or a NoBar where progress is off or stderr is not
    a terminal (tqdm's own `disable=None` rule)."""
    if not enabled or not _is_terminal():
        return NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)


def progress_iter(items: Iterable[Item], total: Optional[int], desc: str, unit: str,
                  enabled: bool = True) -> Iterator[Item]:
    """`items`, advancing a bar (as progress_bar) by one per item; the bar closes at the end."""
    bar = progress_bar(total, desc, unit, enabled)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def log_above_bars(logger: logging.Logger, text: str) -> None:
    """An INFO line that does not tear a bar on the terminal: tqdm clears its bars, the line is
    written, the bars are drawn again below it."""
    if "tqdm" not in sys.modules:
        logger.info(text)
        return
    from tqdm import tqdm
    with tqdm.external_write_mode():
        logger.info(text)


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
