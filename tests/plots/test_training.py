"""The figures of a comparison, and write_outputs: metrics.json with the PNGs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from handgrad.plots.training import plot_loss_curves, plot_predictions, write_outputs
from handgrad.train.compare import TrainConfig, compare_optimizers
from handgrad.train.tasks import cubic_task
from tests.train.test_metrics import fake_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_outputs_regression_and_classification(tmp_path: Path) -> None:
    written = write_outputs(fake_result("regression"), tmp_path / "r")
    assert [p.name for p in written] == ["metrics.json", "loss_curves.png", "predictions.png"]
    for path in written[1:]:
        assert path.read_bytes().startswith(PNG_MAGIC)
    written = write_outputs(fake_result("classification"), tmp_path / "c")
    assert [p.name for p in written] == ["metrics.json", "loss_curves.png"]


def test_prediction_plot_is_for_regression_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prediction plots are for regression tasks; digits"):
        plot_predictions(fake_result("classification"), tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_prediction_plot_with_several_inputs(tmp_path: Path) -> None:
    base = cubic_task(num_train=40, num_test=11)
    task = dataclasses.replace(
        base, x_train=base.x_train.repeat(1, 3), x_test=base.x_test.repeat(1, 3)
    )
    result = compare_optimizers(task, "adam", TrainConfig(epochs=1, backend="torch"))
    plot_predictions(result, tmp_path / "p.png")
    plot_loss_curves(result, tmp_path / "l.png")
    assert (tmp_path / "p.png").read_bytes().startswith(PNG_MAGIC)
    assert torch.equal(result.predictions()["adam"],
                       result.runs[0].model(task.x_test).detach())
