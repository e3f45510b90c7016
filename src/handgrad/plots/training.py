"""Figures of an optimizer comparison: loss curves, and predictions for regression tasks;
:func:`write_outputs` writes them with ``metrics.json`` (the files of ``handgrad train``).

Built on ``matplotlib.figure.Figure`` without pyplot, so drawing never needs a display, and
saved atomically (a reader never sees half a PNG). This module reads
:class:`~handgrad.train.compare.ComparisonResult`; the training package never imports plots.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure

from handgrad.files import write_atomically
from handgrad.train.compare import ComparisonResult
from handgrad.train.metrics import METRICS_FILE, write_metrics

LOSS_CURVES_FILE = "loss_curves.png"
PREDICTIONS_FILE = "predictions.png"

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def _save(figure: Figure, path: str | os.PathLike[str]) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    write_atomically(path, buffer.getvalue())


def plot_loss_curves(result: ComparisonResult, path: str | os.PathLike[str]) -> None:
    """Per-epoch training loss (dashed) and test loss (solid) of every optimizer, log scale;
    for classification a second panel with the test accuracy."""
    classification = result.task.kind == "classification"
    figure = Figure(figsize=(11 if classification else 7, 4.5), layout="constrained")
    axes = figure.subplots(1, 2 if classification else 1, squeeze=False)[0]
    loss_axes = axes[0]
    for index, run in enumerate(result.runs):
        color = _COLORS[index % len(_COLORS)]
        epochs = [record.epoch for record in run.history]
        loss_axes.plot(epochs, [r.test_loss for r in run.history], color=color,
                       label=f"{run.optimizer} (lr={run.lr:g}) test")
        loss_axes.plot(epochs, [r.train_loss for r in run.history], color=color,
                       linestyle="--", alpha=0.7, label=f"{run.optimizer} train")
        if classification:
            axes[1].plot(epochs, [r.test_accuracy for r in run.history], color=color,
                         label=run.optimizer)
    loss_name = "cross-entropy" if classification else "MSE"
    loss_axes.set(xlabel="epoch", ylabel=loss_name, yscale="log",
                  title=f"{result.task.name}: {loss_name} per epoch")
    loss_axes.grid(True, which="both", alpha=0.3)
    loss_axes.legend(fontsize="small")
    if classification:
        axes[1].set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
        axes[1].grid(True, alpha=0.3)
        axes[1].legend(fontsize="small")
    _save(figure, path)


def plot_predictions(result: ComparisonResult, path: str | os.PathLike[str]) -> None:
    """Regression only. With one input: the noisy training points, the true test curve and
    every optimizer's prediction over the test inputs; with several inputs: predicted against
    true test targets, with the diagonal of perfect predictions."""
    task = result.task
    if task.kind != "regression":
        raise ValueError(f"prediction plots are for regression tasks; {task.name} is {task.kind}")
    predictions = result.predictions()
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    if task.num_inputs == 1:
        axes.scatter(task.x_train[:, 0], task.y_train[:, 0], s=4, color="0.7",
                     label="training data")
        axes.plot(task.x_test[:, 0], task.y_test[:, 0], color="black", linewidth=2,
                  label="test target")
        for index, (name, prediction) in enumerate(predictions.items()):
            axes.plot(task.x_test[:, 0], prediction[:, 0], color=_COLORS[index % len(_COLORS)],
                      label=name)
        axes.set(xlabel="x", ylabel="y", title=f"{task.name}: predictions on the test grid")
    else:
        low, high = float(task.y_test.min()), float(task.y_test.max())
        axes.plot([low, high], [low, high], color="black", linewidth=1, label="perfect")
        for index, (name, prediction) in enumerate(predictions.items()):
            axes.scatter(task.y_test[:, 0], prediction[:, 0], s=10,
                         color=_COLORS[index % len(_COLORS)], label=name)
        axes.set(xlabel="true target", ylabel="prediction",
                 title=f"{task.name}: test predictions")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    _save(figure, path)


def write_outputs(result: ComparisonResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``metrics.json``, ``loss_curves.png`` and, for regression, ``predictions.png``
    into ``out_dir`` (created if needed), each atomically; returns their paths."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / METRICS_FILE, directory / LOSS_CURVES_FILE]
    write_metrics(written[0], result.task.name, result.runs, result.privacy)
    plot_loss_curves(result, written[1])
    if result.task.kind == "regression":
        written.append(directory / PREDICTIONS_FILE)
        plot_predictions(result, written[2])
    return written
