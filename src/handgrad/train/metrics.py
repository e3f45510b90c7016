"""``metrics.json``: the figures of a comparison, in the schema the issue fixes.

    {"task": "cubic",
     "runs": [{"optimizer": "adam", "train_loss": ..., "test_loss": ...,
               "test_accuracy": ...,            # classification only, a fraction in [0, 1]
               "seconds": ..., "history": [{"epoch": 1, "train_loss": ..., ...}, ...]}]}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

from handgrad.files import write_atomically
from handgrad.train.trainer import EpochRecord

METRICS_FILE = "metrics.json"


class RunFigures(Protocol):
    """What the document needs from one run (``compare.RunResult`` provides it)."""

    optimizer: str
    seconds: float
    history: list[EpochRecord]


def metrics_document(
    task: str, runs: Sequence[RunFigures], privacy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The metrics dictionary; each run's headline figures are those of its last epoch.

    A DP-SGD run (``privacy``: its settings and ε) also gives every run its ``epsilon`` (the
    same for all: the same schedule), null when infinite (no noise)."""
    documents = []
    for run in runs:
        last = run.history[-1]
        document: dict[str, Any] = {
            "optimizer": run.optimizer,
            "train_loss": last.train_loss,
            "test_loss": last.test_loss,
        }
        if last.test_accuracy is not None:
            document["test_accuracy"] = last.test_accuracy
        if privacy is not None:
            document["epsilon"] = _finite_or_none(privacy["epsilon"])
        document["seconds"] = run.seconds
        document["history"] = [record.as_dict() for record in run.history]
        documents.append(document)
    result: dict[str, Any] = {"task": task, "runs": documents}
    if privacy is not None:
        result["privacy"] = {**privacy, "epsilon": _finite_or_none(privacy["epsilon"])}
    return result


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_metrics(
    path: str | os.PathLike[str],
    task: str,
    runs: Sequence[RunFigures],
    privacy: dict[str, Any] | None = None,
) -> None:
    """Write :func:`metrics_document` to ``path`` as JSON, atomically.

    ``allow_nan=False``: a NaN must never reach the file (the trainer stops before).
    """
    text = json.dumps(metrics_document(task, runs, privacy), indent=2, allow_nan=False)
    write_atomically(path, (text + "\n").encode("utf-8"))
