"""Figures of an optimizer comparison: loss curves, and predictions for regression tasks;
:func:`write_outputs` writes them with ``metrics.json`` and ``predictions.csv`` (the files
of ``handgrad train``).

Made for any number of runs (all 15 of handgrad.optim at once): each run has its own colour
(:func:`distinct_colors`), the legends stand outside the axes so they never cover a curve,
epochs are whole-number ticks, and each run's outcome is in its legend entry — a diverged
run is marked with an ✕ at the top of the axes at the epoch where it diverged.

Built on ``matplotlib.figure.Figure`` without pyplot, so drawing never needs a display, and
saved atomically (a reader never sees half a PNG). This module reads
:class:`~handgrad.train.compare.ComparisonResult`; the training package never imports plots.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.colors as mcolors
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from handgrad.files import write_atomically
from handgrad.tables import spreadsheet_safe
from handgrad.train.compare import ComparisonResult, RunResult
from handgrad.train.metrics import METRICS_FILE, write_document

LOSS_CURVES_FILE = "loss_curves.png"
PREDICTIONS_FILE = "predictions.png"
PREDICTIONS_CSV = "predictions.csv"
LEGEND_ROWS = 16  # entries per legend column before a second column starts


def distinct_colors(count: int) -> list[tuple[float, float, float]]:
    """``count`` colours, all different: matplotlib's ten Tableau colours first, then their
    lighter twins (tab20), then, beyond 20, evenly spaced hues alternating in lightness."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    tab20 = [colormaps["tab20"](index) for index in range(20)]
    palette: list[Any] = [tab20[i] for i in range(0, 20, 2)] + [tab20[i] for i in range(1, 20, 2)]
    if count <= len(palette):
        return [mcolors.to_rgb(color) for color in palette[:count]]
    colors = []
    for index in range(count):
        hue = index / count
        value = 0.85 if index % 2 == 0 else 0.55
        colors.append(tuple(float(c) for c in mcolors.hsv_to_rgb((hue, 0.75, value))))
    return colors  # type: ignore[return-value]


def _save(figure: Figure, path: str | os.PathLike[str]) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    write_atomically(path, buffer.getvalue())


def _label(run: RunResult) -> str:
    label = f"{run.optimizer} (lr={run.lr:g})"
    if run.status is not None and not run.status.trained:
        label += f": {run.status.short()}"
    return label


def _legend_columns(entries: int) -> int:
    return max(1, math.ceil(entries / LEGEND_ROWS))


def _mark_divergence(axes: Any, run: RunResult, color: Any) -> None:
    """An ✕ at the top edge of ``axes``, at the epoch where ``run`` diverged."""
    if not run.diverged or run.status is None or run.status.epoch is None:
        return
    top = blended_transform_factory(axes.transData, axes.transAxes)
    axes.plot([run.status.epoch], [0.97], marker="X", markersize=9, color=color,
              transform=top, clip_on=False, linestyle="none")


def loss_curves_figure(result: ComparisonResult) -> Figure:
    """The loss-curve figure: per-epoch training loss (dashed) and test loss (solid) of every
    run, log scale; for classification a second panel with the test accuracy. One legend
    outside the axes: a line per run (its outcome when it did not train) and the two line
    styles."""
    classification = result.task.kind == "classification"
    runs = result.runs
    colors = distinct_colors(len(runs))
    figure = Figure(figsize=(13 if classification else 9.5, 4.8), layout="constrained")
    axes = figure.subplots(1, 2 if classification else 1, squeeze=False)[0]
    loss_axes = axes[0]
    handles: list[Line2D] = []
    for run, color in zip(runs, colors, strict=True):
        epochs = [record.epoch for record in run.history]
        loss_axes.plot(epochs, [r.test_loss for r in run.history], color=color)
        loss_axes.plot(epochs, [r.train_loss for r in run.history], color=color,
                       linestyle="--", alpha=0.7)
        _mark_divergence(loss_axes, run, color)
        if classification:
            axes[1].plot(epochs, [r.test_accuracy for r in run.history], color=color)
            _mark_divergence(axes[1], run, color)
        marker = "X" if run.diverged else None
        handles.append(Line2D([], [], color=color, marker=marker, label=_label(run)))
    handles += [Line2D([], [], color="0.3", label="test loss"),
                Line2D([], [], color="0.3", linestyle="--", label="training loss")]
    loss_name = "cross-entropy" if classification else "MSE"
    failed = len(result.failed)
    title = f"{result.task.name}: {loss_name} per epoch"
    if failed:
        title += f" ({failed} of {len(runs)} runs did not train)"
    loss_axes.set(xlabel="epoch", ylabel=loss_name, title=title)
    if any(run.history for run in runs):
        loss_axes.set_yscale("log")
    loss_axes.grid(True, which="both", alpha=0.3)
    if classification:
        axes[1].set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
        axes[1].grid(True, alpha=0.3)
    for panel in axes:
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.set_xlim(0.5, max(result.epochs, 1) + 0.5)
    figure.legend(handles=handles, loc="outside right upper", fontsize="small",
                  ncols=_legend_columns(len(handles)))
    return figure


def plot_loss_curves(result: ComparisonResult, path: str | os.PathLike[str]) -> None:
    """Write :func:`loss_curves_figure` to ``path`` as a PNG."""
    _save(loss_curves_figure(result), path)


def predictions_figure(result: ComparisonResult) -> Figure:
    """Regression only. With one input: the noisy training points, the true test curve and
    every run's prediction over the test inputs; with several inputs: predicted against
    true test targets, with the diagonal of perfect predictions. Diverged runs have no
    prediction to draw; the legend (outside the axes) names them."""
    task = result.task
    if task.kind != "regression":
        raise ValueError(f"prediction plots are for regression tasks; {task.name} is {task.kind}")
    predictions = result.predictions()
    colors = dict(zip((run.optimizer for run in result.runs),
                      distinct_colors(len(result.runs)), strict=True))
    figure = Figure(figsize=(9.5, 4.8), layout="constrained")
    axes = figure.subplots()
    if task.num_inputs == 1:
        axes.scatter(task.x_train[:, 0], task.y_train[:, 0], s=4, color="0.7",
                     label="training data")
        axes.plot(task.x_test[:, 0], task.y_test[:, 0], color="black", linewidth=2,
                  label="test target")
        for run in result.runs:
            if run.optimizer in predictions:
                axes.plot(task.x_test[:, 0], predictions[run.optimizer][:, 0],
                          color=colors[run.optimizer], label=_label(run))
        axes.set(xlabel="x", ylabel="y", title=f"{task.name}: predictions on the test grid")
    else:
        low, high = float(task.y_test.min()), float(task.y_test.max())
        axes.plot([low, high], [low, high], color="black", linewidth=1, label="perfect")
        for run in result.runs:
            if run.optimizer in predictions:
                axes.scatter(task.y_test[:, 0], predictions[run.optimizer][:, 0], s=10,
                             color=colors[run.optimizer], label=_label(run))
        axes.set(xlabel="true target", ylabel="prediction",
                 title=f"{task.name}: test predictions")
    for run in result.runs:
        if run.optimizer not in predictions:  # diverged: named, nothing drawn
            axes.plot([], [], color=colors[run.optimizer], marker="X", label=_label(run))
    axes.grid(True, alpha=0.3)
    entries = len(axes.get_legend_handles_labels()[0])
    figure.legend(loc="outside right upper", fontsize="small", ncols=_legend_columns(entries))
    return figure


def plot_predictions(result: ComparisonResult, path: str | os.PathLike[str]) -> None:
    """Write :func:`predictions_figure` to ``path`` as a PNG."""
    _save(predictions_figure(result), path)


def predictions_table(result: ComparisonResult) -> tuple[list[str], list[list[str]]]:
    """The test split's targets and every run's prediction, as text cells: the header
    (``row``, ``target``, then one column per run) and one row per test example (per
    predicted position, in order, for a sequence task such as text's windows). Class names
    for classification (the csv's own labels, the text's characters), numbers (``repr``:
    exact) for regression. A diverged run's column is empty."""
    task = result.task
    predictions = result.predictions()
    header = ["row", "target", *(run.optimizer for run in result.runs)]
    columns: list[Sequence[str]] = []
    if task.kind == "classification":
        names = task.class_names
        # Classes along dim 1 of the output; a sequence's targets are one per position.
        columns.append([names[int(label)] for label in task.y_test.reshape(-1)])
        for run in result.runs:
            output = predictions.get(run.optimizer)
            columns.append([] if output is None else
                           [names[int(index)] for index in output.argmax(dim=1).reshape(-1)])
    else:
        columns.append([repr(float(value)) for value in task.y_test[:, 0]])
        for run in result.runs:
            output = predictions.get(run.optimizer)
            columns.append([] if output is None else
                           [repr(float(value)) for value in output[:, 0]])
    rows = []
    for index in range(len(columns[0])):
        rows.append([str(index + 1)]
                    + [column[index] if column else "" for column in columns])
    return header, rows


def write_predictions_csv(result: ComparisonResult, path: str | os.PathLike[str]) -> None:
    """Write :func:`predictions_table` to ``path`` as CSV, atomically. Every cell a
    spreadsheet would run as a formula (a class named ``=HYPERLINK(...)`` in the user's csv)
    is neutralised by :func:`handgrad.tables.spreadsheet_safe`."""
    header, rows = predictions_table(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in [header, *rows]:
        writer.writerow([spreadsheet_safe(cell) for cell in row])
    write_atomically(path, buffer.getvalue().encode("utf-8"))


def write_outputs(result: ComparisonResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``metrics.json``, ``loss_curves.png``, for regression ``predictions.png``, and
    ``predictions.csv`` into ``out_dir`` (created if needed), each atomically; returns their
    paths."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    metrics, curves = directory / METRICS_FILE, directory / LOSS_CURVES_FILE
    write_document(metrics, result.metrics())
    plot_loss_curves(result, curves)
    written = [metrics, curves]
    if result.task.kind == "regression":
        written.append(directory / PREDICTIONS_FILE)
        plot_predictions(result, written[-1])
    written.append(directory / PREDICTIONS_CSV)
    write_predictions_csv(result, written[-1])
    return written
