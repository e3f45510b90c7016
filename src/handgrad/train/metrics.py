"""``metrics.json``: what a comparison found, how it was set up, and where it ran.

    {"task": "cubic",
     "format": "handgrad-train-metrics", "version": 2,
     "summary": {"trained": ["adam"], "diverged": ["sgd"], "not learning": []},
     "config": {...every setting, resolved...},
     "environment": {"handgrad": ..., "torch": ..., "python": ..., "numpy": ...,
                     "device": ..., "threads": ...},
     "privacy": {...},                   # --dp only: its settings, schedule and epsilon
     "runs": [{"optimizer": "adam", "status": "trained",
               "outcome": {"reason": ..., "initial_train_loss": ..., ...},
               "lr": ..., "train_loss": ..., "test_loss": ...,
               "test_accuracy": ...,            # classification only, a fraction in [0, 1]
               "epsilon": ...,                  # --dp only: ε at δ (null: no noise)
               "seconds": ..., "history": [{"epoch": 1, "train_loss": ..., ...}, ...]}]}

The document's JSON Schema ships with the package, ``metrics.schema.json`` beside this
module (:func:`load_schema`); every field is described there.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Protocol

import numpy as np
import torch

from handgrad.files import write_atomically
from handgrad.train.status import STATES, RunStatus
from handgrad.train.trainer import EpochRecord

METRICS_FILE = "metrics.json"
SCHEMA_FILE = "metrics.schema.json"
FORMAT = "handgrad-train-metrics"
VERSION = 2


class RunFigures(Protocol):
    """What the document needs from one run (``compare.RunResult`` provides it)."""

    optimizer: str
    seconds: float
    history: list[EpochRecord]


def _run_document(run: RunFigures, privacy: Mapping[str, Any] | None) -> dict[str, Any]:
    last = run.history[-1] if run.history else None
    status: RunStatus | None = getattr(run, "status", None)
    document: dict[str, Any] = {"optimizer": run.optimizer}
    if status is not None:
        outcome = status.as_dict()
        document["status"] = outcome.pop("state")
        document["outcome"] = outcome
    lr = getattr(run, "lr", None)
    if lr is not None:
        document["lr"] = lr
    document["train_loss"] = None if last is None else last.train_loss
    document["test_loss"] = None if last is None else last.test_loss
    if last is not None and last.test_accuracy is not None:
        document["test_accuracy"] = last.test_accuracy
    if privacy is not None:
        document["epsilon"] = _finite_or_none(privacy["epsilon"])
    document["seconds"] = run.seconds
    document["history"] = [record.as_dict() for record in run.history]
    return document


def metrics_document(
    task: str,
    runs: Sequence[RunFigures],
    *,
    config: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metrics dictionary; each run's headline figures are those of its last epoch
    (``None`` for a run that diverged in its first epoch).

    A DP-SGD comparison (``privacy``: its settings, schedule and ε) also gives every run its
    ``epsilon``: the same for all (the same Poisson schedule; for a run that diverged, the
    bound of the whole schedule, which covers the steps it took), null when infinite (no
    noise)."""
    documents = [_run_document(run, privacy) for run in runs]
    document: dict[str, Any] = {"task": task, "format": FORMAT, "version": VERSION}
    if all("status" in run for run in documents):
        document["summary"] = {
            state: [run["optimizer"] for run in documents if run["status"] == state]
            for state in STATES
        }
    if config is not None:
        document["config"] = dict(config)
    if environment is not None:
        document["environment"] = dict(environment)
    if privacy is not None:
        document["privacy"] = {**privacy, "epsilon": _finite_or_none(privacy["epsilon"])}
    document["runs"] = documents
    return document


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def environment_document(device: str | torch.device = "cpu",
                         threads: int | None = None) -> dict[str, Any]:
    """Where a run trained: versions of handgrad, torch, Python and numpy; the platform; the
    device (with the GPU's name); torch's intra-op threads while training (``threads``, or
    the current count) and the machine's CPU count."""
    from handgrad import __version__

    target = torch.device(device)
    device_name = platform.processor() or platform.machine()
    if target.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(target)
    return {
        "handgrad": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(target),
        "device_name": device_name,
        "cuda": torch.version.cuda if target.type == "cuda" else None,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def write_document(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write a metrics document to ``path`` as JSON, atomically.

    ``allow_nan=False``: a NaN must never reach the file (the non-finite loss of a diverged
    run is written as a string).
    """
    text = json.dumps(document, indent=2, allow_nan=False)
    write_atomically(path, (text + "\n").encode("utf-8"))


def write_metrics(
    path: str | os.PathLike[str],
    task: str,
    runs: Sequence[RunFigures],
    *,
    config: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> None:
    """Write :func:`metrics_document` to ``path`` (see :func:`write_document`)."""
    document = metrics_document(task, runs, config=config, environment=environment,
                                privacy=privacy)
    write_document(path, document)


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``metrics.json``, shipped with the package."""
    text = resources.files("handgrad.train").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


__all__ = [
    "FORMAT",
    "METRICS_FILE",
    "SCHEMA_FILE",
    "VERSION",
    "environment_document",
    "load_schema",
    "metrics_document",
    "write_document",
    "write_metrics",
]
