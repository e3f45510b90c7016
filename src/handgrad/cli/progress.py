"""Progress of a long command on stderr, in the form the reader can use.

- on a terminal: a tqdm bar, redrawn in place;
- anywhere else (a log file, a pipe, CI): one line per epoch, so that a log shows how far a
  run got and what its losses were (a bar's carriage returns would be one unreadable line);
- ``--quiet``: nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any, Protocol


class _Run(Protocol):
    optimizer: str
    history: list[Any]
    status: Any


class EpochProgress:
    """Progress of a comparison of ``names`` over ``epochs`` epochs, written to ``stream``
    (default: stderr). ``mode``: ``"auto"`` (a bar on a terminal, lines elsewhere),
    ``"bar"``, ``"lines"`` or ``"quiet"``. A context manager: the bar is closed on exit."""

    def __init__(self, label: str, names: Sequence[str], epochs: int, *,
                 mode: str = "auto", stream: IO[str] | None = None) -> None:
        if mode not in ("auto", "bar", "lines", "quiet"):
            raise ValueError(f"mode must be auto, bar, lines or quiet, got {mode!r}")
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if callable(isatty) and isatty() else "lines"
        self.mode = mode
        self.label = label
        self.names = list(names)
        self.epochs = epochs
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=max(epochs, 1) * len(self.names), unit="epoch",
                             file=self.stream, desc=label)

    def run_done(self, optimizer: str, record: Any) -> None:
        """One run finished an epoch (``record``: its EpochRecord)."""
        if self._bar is None:
            return
        # Position from the epoch itself, so that a resumed run starts the bar part-way.
        self._bar.n = (record.epoch - 1) * len(self.names) + self.names.index(optimizer) + 1
        self._bar.set_postfix_str(f"{optimizer} test loss {record.test_loss:.4g}",
                                  refresh=False)
        self._bar.refresh()

    def epoch_done(self, epoch: int, runs: Sequence[_Run]) -> None:
        """Every run finished ``epoch``: in line mode, one line with each run's losses."""
        if self.mode != "lines":
            return
        parts = []
        for run in runs:
            record = run.history[-1] if run.history else None
            if run.status is not None and getattr(run.status, "state", "") == "diverged":
                parts.append(f"{run.optimizer} {run.status.short()}")
            elif record is not None and record.epoch == epoch:
                figures = f"train {record.train_loss:.4g} test {record.test_loss:.4g}"
                if record.test_accuracy is not None:
                    figures += f" acc {record.test_accuracy:.3f}"
                parts.append(f"{run.optimizer} {figures}")
        print(f"{self.label}: epoch {epoch}/{self.epochs}: " + " | ".join(parts),
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


__all__ = ["EpochProgress"]
