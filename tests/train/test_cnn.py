"""handgrad train --model cnn: the convolutional network for digits, built, refused where it
does not fit, and trained to the issue's accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import handgrad.nn as hnn
from handgrad.cli import main
from handgrad.train.models import build_model, parse_model, resolve_model
from handgrad.train.tasks import Task, cubic_task, load_task


@pytest.fixture(scope="module")
def digits() -> Task:
    return load_task("digits")


def test_cnn_is_two_conv_stages_and_a_head(digits: Task) -> None:
    assert str(resolve_model("cnn", digits)) == "cnn:channels=32x64"
    model = build_model("cnn:channels=4x8", digits, seed=0)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Unflatten", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d",
                     "BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]  # fmt: skip
    assert isinstance(model[1], hnn.Conv2d)
    assert model[1].bias is None
    assert model[-1].in_features == 8 * 2 * 2
    assert model[-1].out_features == 10
    twin = build_model("cnn:channels=4x8", digits, seed=0, backend="torch")
    for ours, theirs in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    x = digits.x_train[:16]
    assert model(x).shape == (16, 10)


def test_cnn_refuses_tasks_that_are_not_square_images() -> None:
    with pytest.raises(ValueError, match=r"model cnn needs .* task cubic has 1 regression"):
        build_model("cnn", cubic_task(), seed=0)
    with pytest.raises(ValueError, match="channels"):
        parse_model("cnn:channels=abc")


def test_cnn_takes_two_widths(digits: Task) -> None:
    with pytest.raises(ValueError, match="two widths"):
        build_model("cnn:channels=8", digits, seed=0)


@pytest.mark.slow
def test_acceptance_digits_cnn_reaches_accuracy_0_985(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13's run; its budget, within 60 s on 2 cores, is measured by
    ``python -m benchmarks --only budgets``."""
    status = main(["train", "--task", "digits", "--model", "cnn", "--out", str(tmp_path)])
    capsys.readouterr()
    assert status == 0
    runs = json.loads((tmp_path / "metrics.json").read_text())["runs"]
    assert [run["optimizer"] for run in runs] == ["sgd", "rmsprop", "adam"]
    assert min(run["test_accuracy"] for run in runs) >= 0.985
