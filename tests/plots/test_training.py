"""The figures of a comparison, and write_outputs: metrics.json with the PNGs."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from handgrad.plots.training import (
    distinct_colors,
    loss_curves_figure,
    plot_loss_curves,
    plot_predictions,
    predictions_table,
    write_outputs,
)
from handgrad.train.compare import ComparisonResult, RunResult, TrainConfig, compare_optimizers
from handgrad.train.status import diverged, judge
from handgrad.train.tasks import cubic_task, digits_task, load_task
from handgrad.train.trainer import EpochRecord
from tests.train.test_metrics import fake_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_outputs_regression_and_classification(tmp_path: Path) -> None:
    written = write_outputs(fake_result("regression"), tmp_path / "r")
    assert [p.name for p in written] == ["metrics.json", "loss_curves.png", "predictions.png",
                                         "predictions.csv"]
    for path in written[1:3]:
        assert path.read_bytes().startswith(PNG_MAGIC)
    written = write_outputs(fake_result("classification"), tmp_path / "c")
    assert [p.name for p in written] == ["metrics.json", "loss_curves.png", "predictions.csv"]


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


def _many_runs(count: int) -> ComparisonResult:
    """A classification result with ``count`` runs over 3 epochs, the second diverged."""
    task = digits_task()
    runs = []
    for index in range(count):
        history = [EpochRecord(e, 1.0 / (e + index), 2.0 / (e + index), 0.5) for e in (1, 2, 3)]
        status = judge(3.0, history[-1].train_loss)
        if index == 1:
            history, status = history[:1], diverged(3.0, epoch=2, step=5, loss=math.nan)
        runs.append(RunResult(f"opt{index}", 0.01, task.reference_model(seed=0), history,
                              1.0, status=status, initial_loss=3.0))
    return ComparisonResult(task, 3, 32, runs)


def test_colours_are_distinct_for_any_number_of_runs() -> None:
    for count in (1, 3, 10, 13, 20, 21, 40):
        colors = distinct_colors(count)
        assert len(colors) == count
        gaps = [math.dist(a, b) for a, b in itertools.combinations(colors, 2)]
        assert min(gaps, default=1.0) > 0.05, count


def test_loss_curves_legend_stands_outside_every_axes_and_names_outcomes() -> None:
    result = _many_runs(13)
    figure = loss_curves_figure(result)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    (legend,) = figure.legends
    box = legend.get_window_extent(renderer)
    for axes in figure.axes:
        assert not box.overlaps(axes.get_window_extent(renderer))
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels[:2] == ["opt0 (lr=0.01)", "opt1 (lr=0.01): diverged e2 s5"]
    assert labels[-2:] == ["test loss", "training loss"]
    lines = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == "-"]
    assert len({line.get_color() for line in lines}) == 13
    assert "1 of 13 runs did not train" in figure.axes[0].get_title()


def test_epoch_ticks_are_whole_numbers_and_divergence_is_marked() -> None:
    figure = loss_curves_figure(_many_runs(3))
    FigureCanvasAgg(figure).draw()
    for axes in figure.axes:
        ticks = [tick for tick in axes.get_xticks() if 0.5 <= tick <= 3.5]
        assert ticks == [1, 2, 3]
    markers = [line for line in figure.axes[0].get_lines() if line.get_marker() == "X"]
    assert len(markers) == 1
    assert list(markers[0].get_xdata()) == [2]


def test_predictions_csv_neutralises_formulas_from_the_users_labels(tmp_path: Path) -> None:
    rows = [f"{i},{j},{label}" for i, j, label in
            [(0, 0, "=HYPERLINK(\"http://x\")"), (1, 1, "@SUM(A1)"), (0, 1, "-2+3"),
             (1, 0, "plain")] * 6]
    data = tmp_path / "labels.csv"
    data.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    task = load_task(f"csv:{data}", target="label")
    result = compare_optimizers(task, "adam", TrainConfig(epochs=1, backend="torch"))
    written = write_outputs(result, tmp_path / "out")
    assert [p.name for p in written] == ["metrics.json", "loss_curves.png", "predictions.csv"]
    with (tmp_path / "out" / "predictions.csv").open(newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["row", "target", "adam"]
    cells = {cell for row in table[1:] for cell in row[1:]}
    assert cells <= {"'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "'-2+3", "plain"}
    assert "'=HYPERLINK(\"http://x\")" in {row[1] for row in table[1:]}
    assert not any(cell.startswith(("=", "@", "+")) for row in table for cell in row)


def test_predictions_csv_regression_numbers_are_exact(tmp_path: Path) -> None:
    result = fake_result("regression")
    header, rows = predictions_table(result)
    assert header == ["row", "target", "sgd", "adam"]
    assert len(rows) == len(result.task.y_test)
    assert [float(row[1]) for row in rows] == result.task.y_test[:, 0].tolist()
    expected = result.predictions()["adam"][:, 0].tolist()
    assert [float(row[3]) for row in rows] == expected
