"""metrics.json: the schema, accuracy for classification, never a NaN."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from handgrad.train.compare import ComparisonResult, RunResult
from handgrad.train.metrics import write_metrics
from handgrad.train.tasks import cubic_task, digits_task
from handgrad.train.trainer import EpochRecord


def fake_result(kind: str) -> ComparisonResult:
    """A result with known figures, without training."""
    task = cubic_task(num_train=50) if kind == "regression" else digits_task()
    accuracy = 0.5 if kind == "classification" else None
    runs = [
        RunResult(name, 0.01, task.reference_model(seed=0),
                  [EpochRecord(e, 1.0 / e, 2.0 / e, accuracy) for e in (1, 2, 3)], 1.5)
        for name in ("sgd", "adam")
    ]
    return ComparisonResult(task, 3, 32, runs)


def test_metrics_json_schema_regression(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    result = fake_result("regression")
    write_metrics(path, "cubic", result.runs)
    document = json.loads(path.read_text())
    assert document == {
        "task": "cubic",
        "runs": [
            {
                "optimizer": name,
                "train_loss": 1 / 3,
                "test_loss": 2 / 3,
                "seconds": 1.5,
                "history": [
                    {"epoch": e, "train_loss": 1 / e, "test_loss": 2 / e} for e in (1, 2, 3)
                ],
            }
            for name in ("sgd", "adam")
        ],
    }
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_metrics_json_classification_has_accuracy(tmp_path: Path) -> None:
    result = fake_result("classification")
    write_metrics(tmp_path / "m.json", "digits", result.runs)
    run = json.loads((tmp_path / "m.json").read_text())["runs"][0]
    assert run["test_accuracy"] == 0.5
    assert [record["test_accuracy"] for record in run["history"]] == [0.5, 0.5, 0.5]


def test_a_nan_never_reaches_the_file(tmp_path: Path) -> None:
    result = fake_result("regression")
    result.runs[0].history[-1] = EpochRecord(3, math.nan, 1.0)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_metrics(tmp_path / "m.json", "cubic", result.runs)
    assert list(tmp_path.iterdir()) == []
