"""The one progress helper: bars only on a terminal, nothing in pipes and logs."""
from __future__ import annotations

import io
import logging

from edge_fpn import progress
from edge_fpn.progress import NoBar, log_above_bars, progress_bar, progress_iter


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress_bar(10, "work", "img"), NoBar)


def test_a_bar_on_a_terminal_and_none_when_disabled(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = progress_bar(4, "work", "img")
    bar.update(4)
    bar.close()
    assert "work:" in terminal.getvalue() and "/4 " in terminal.getvalue()
    assert isinstance(progress_bar(4, "work", "img", enabled=False), NoBar)


def test_progress_iter_yields_every_item_and_closes_its_bar(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(progress_iter(iter(range(5)), 5, "evaluate", "img")) == [0, 1, 2, 3, 4]
    assert "evaluate:" in terminal.getvalue() and "/5 " in terminal.getvalue()


def test_log_above_bars_reaches_the_logger(caplog):
    with caplog.at_level("INFO", logger="edge_fpn.test"):
        log_above_bars(logging.getLogger("edge_fpn.test"), "iter 3/3 loss=0.1")
    assert [r.getMessage() for r in caplog.records] == ["iter 3/3 loss=0.1"]


def test_a_closed_stderr_means_no_bar(monkeypatch):
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr("sys.stderr", closed)
    assert not progress._is_terminal()
