"""Progress on stderr: a bar on a terminal, one line per epoch elsewhere, nothing when quiet."""

from __future__ import annotations

import io
import math

import pytest

from handgrad.cli.progress import EpochProgress
from handgrad.train.status import diverged
from handgrad.train.trainer import EpochRecord


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Run:
    def __init__(self, optimizer: str, history: list[EpochRecord], status: object = None):
        self.optimizer, self.history, self.status = optimizer, history, status


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    stream = Terminal()
    with EpochProgress("train cubic", ["sgd", "adam"], 2, stream=stream) as progress:
        assert progress.mode == "bar"
        progress.run_done("sgd", EpochRecord(1, 1.0, 2.0))
        progress.epoch_done(1, [])
    assert "\r" in stream.getvalue()
    assert "train cubic" in stream.getvalue()


def test_a_log_gets_one_line_per_epoch_naming_each_runs_figures() -> None:
    stream = io.StringIO()
    progress = EpochProgress("train digits", ["sgd", "adam"], 3, stream=stream)
    assert progress.mode == "lines"
    runs = [Run("sgd", [], diverged(2.0, 1, 4, math.inf)),
            Run("adam", [EpochRecord(1, 0.5, 0.25, 0.875)])]
    progress.run_done("adam", runs[1].history[0])
    progress.epoch_done(1, runs)
    assert stream.getvalue() == ("train digits: epoch 1/3: sgd diverged e1 s4 | adam train 0.5 "
                                 "test 0.25 acc 0.875\n")


def test_quiet_writes_nothing_and_modes_are_checked() -> None:
    stream = Terminal()
    with EpochProgress("x", ["a"], 1, mode="quiet", stream=stream) as progress:
        progress.run_done("a", EpochRecord(1, 1.0, 1.0))
        progress.epoch_done(1, [Run("a", [EpochRecord(1, 1.0, 1.0)])])
    assert stream.getvalue() == ""
    with pytest.raises(ValueError, match="mode must be auto, bar, lines or quiet"):
        EpochProgress("x", ["a"], 1, mode="loud")
