"""metrics.json: its documented schema (shipped in the package), the settings and the
environment on record, each run's status, accuracy for classification, never a NaN."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
import torch

import handgrad
from handgrad.train.compare import ComparisonResult, RunResult, TrainConfig, compare_optimizers
from handgrad.train.metrics import (
    SCHEMA_FILE,
    environment_document,
    load_schema,
    write_document,
    write_metrics,
)
from handgrad.train.status import diverged, judge
from handgrad.train.tasks import cubic_task, digits_task, load_task
from handgrad.train.trainer import EpochRecord

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (.[dev])")

ROOT = Path(__file__).resolve().parents[2]


def fake_result(kind: str) -> ComparisonResult:
    """A result with known figures, without training."""
    task = cubic_task(num_train=50) if kind == "regression" else digits_task()
    accuracy = 0.5 if kind == "classification" else None
    runs = [
        RunResult(name, 0.01, task.reference_model(seed=0),
                  [EpochRecord(e, 1.0 / e, 2.0 / e, accuracy) for e in (1, 2, 3)], 1.5,
                  status=judge(3.0, 1 / 3), initial_loss=3.0)
        for name in ("sgd", "adam")
    ]
    return ComparisonResult(task, 3, 32, runs)


def validate(document: dict[str, Any]) -> None:
    jsonschema.validate(document, load_schema(), cls=jsonschema.Draft202012Validator)


@pytest.fixture(scope="module")
def real_document() -> dict[str, Any]:
    """metrics of a real comparison: one run trains, one diverges in its first epoch."""
    task = cubic_task(num_train=64, num_test=11)
    config = TrainConfig(epochs=2, batch_size=16, backend="torch",
                         options={"sgd": {"lr": 1e4}}, schedule="cosine")
    document = compare_optimizers(task, "sgd,adam", config).metrics()
    return json.loads(json.dumps(document, allow_nan=False))  # as a reader of the file sees it


def test_the_schema_is_valid_and_shipped_as_package_data() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert (Path(handgrad.__file__).parent / "train" / SCHEMA_FILE).is_file()
    with (ROOT / "pyproject.toml").open("rb") as handle:
        package_data = tomllib.load(handle)["tool"]["setuptools"]["package-data"]["handgrad"]
    assert f"train/{SCHEMA_FILE}" in package_data


def test_a_real_document_follows_the_schema(real_document: dict[str, Any]) -> None:
    validate(real_document)
    sgd, adam = real_document["runs"]
    assert sgd["status"] == "diverged"
    assert sgd["outcome"]["epoch"] == 1
    assert sgd["outcome"]["step"] >= 1
    assert sgd["outcome"]["value"] in ("nan", "inf")
    assert sgd["train_loss"] is None
    assert sgd["history"] == []
    assert adam["status"] == "trained"
    assert adam["outcome"]["final_train_loss"] < adam["outcome"]["initial_train_loss"]
    assert real_document["summary"] == {"trained": ["adam"], "diverged": ["sgd"],
                                        "not learning": []}


def test_config_holds_every_setting_resolved(real_document: dict[str, Any]) -> None:
    config = real_document["config"]
    assert config["epochs"] == 2
    assert config["batch_size"] == 16
    assert config["seed"] == 0
    assert config["model"]["options"] == {"hidden": [100], "activation": "relu",
                                          "dropout": 0.0}
    assert config["schedule"] == "cosine:eta_min=0"
    sgd, adam = config["optimizers"]
    assert sgd["lr"] == 1e4
    assert sgd["arguments"]["momentum"] == 0
    assert adam["arguments"]["betas"] == [0.9, 0.999]  # a default, filled in
    assert adam["lr"] == pytest.approx(0.005 * (16 / 64) ** 0.5)  # the batch-size rule
    assert config["lr_rule"]["reference_batch_size"] == 64


def test_environment_names_versions_device_and_threads(real_document: dict[str, Any]) -> None:
    environment = real_document["environment"]
    assert environment["handgrad"] == handgrad.__version__
    assert environment["torch"] == torch.__version__
    assert environment["numpy"] == np.__version__
    assert environment["python"] == platform.python_version()
    assert environment["device"] == "cpu"
    assert environment["threads"] == 1
    assert environment_document("cpu", None)["threads"] == torch.get_num_threads()


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d.pop("config"), "config"),
        (lambda d: d["runs"][1].update(status="fine"), "status"),
        (lambda d: d["runs"][1]["history"][0].update(train_loss=-1.0), "train_loss"),
        (lambda d: d["config"]["optimizers"][0].pop("arguments"), "arguments"),
        (lambda d: d["environment"].pop("torch"), "torch"),
        (lambda d: d["runs"][1].update(test_accuracy=1.5), "test_accuracy"),
    ],
)
def test_the_schema_rejects_broken_documents(
    real_document: dict[str, Any], change: Any, path: str
) -> None:
    broken = copy.deepcopy(real_document)
    change(broken)
    with pytest.raises(jsonschema.ValidationError, match=path):
        validate(broken)


def test_metrics_json_runs_regression(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    result = fake_result("regression")
    write_metrics(path, "cubic", result.runs)
    document = json.loads(path.read_text())
    assert document["task"] == "cubic"
    assert document["runs"] == [
        {
            "optimizer": name,
            "status": "trained",
            "outcome": {"reason": "trained (training loss 3 -> 0.3333)",
                        "initial_train_loss": 3.0, "final_train_loss": 1 / 3},
            "lr": 0.01,
            "train_loss": 1 / 3,
            "test_loss": 2 / 3,
            "seconds": 1.5,
            "history": [
                {"epoch": e, "train_loss": 1 / e, "test_loss": 2 / e} for e in (1, 2, 3)
            ],
        }
        for name in ("sgd", "adam")
    ]
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_metrics_json_classification_has_accuracy(tmp_path: Path) -> None:
    result = fake_result("classification")
    write_metrics(tmp_path / "m.json", "digits", result.runs)
    run = json.loads((tmp_path / "m.json").read_text())["runs"][0]
    assert run["test_accuracy"] == 0.5
    assert [record["test_accuracy"] for record in run["history"]] == [0.5, 0.5, 0.5]


def test_a_diverged_runs_non_finite_loss_is_a_string() -> None:
    status = diverged(2.0, epoch=3, step=7, loss=math.inf)
    assert status.as_dict()["value"] == "inf"
    assert status.reason() == "diverged at epoch 3, step 7 (training loss inf)"
    assert json.dumps(status.as_dict(), allow_nan=False)


def test_a_nan_never_reaches_the_file(tmp_path: Path) -> None:
    result = fake_result("regression")
    result.runs[0].history[-1] = EpochRecord(3, math.nan, 1.0)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_document(tmp_path / "m.json", result.metrics())
    assert list(tmp_path.iterdir()) == []


def test_config_records_the_csv_target_and_the_data(tmp_path: Path) -> None:
    """A csv run's record names the column it predicted and the data it saw (a digest that
    changes with the file's contents)."""
    rows = "\n".join(f"{i},{i % 3},{'ab'[i % 2]}" for i in range(40))
    (tmp_path / "t.csv").write_text("x,z,label\n" + rows + "\n")
    config = TrainConfig(epochs=1, batch_size=8, backend="torch")
    task = load_task(f"csv:{tmp_path / 't.csv'}", target="label")
    document = compare_optimizers(task, "adam", config).metrics()
    validate(json.loads(json.dumps(document, allow_nan=False)))
    assert document["config"]["target"] == "label"
    assert document["config"]["data_digest"] == hashlib.sha256(task.digest().encode()).hexdigest()
    (tmp_path / "t.csv").write_text("x,z,label\n" + rows.replace("39,0", "39,2") + "\n")
    assert load_task(f"csv:{tmp_path / 't.csv'}", target="label").digest() != task.digest()
    assert compare_optimizers("cubic", "adam", TrainConfig(epochs=1, backend="torch")
                              ).metrics()["config"]["target"] is None
