"""The files of a comparison: metrics.json, the loss curves, the predictions (regression)."""

from __future__ import annotations

import os
from pathlib import Path

from handgrad.train.compare import ComparisonResult
from handgrad.train.metrics import write_metrics

METRICS = "metrics.json"
LOSS_CURVES = "loss_curves.png"
PREDICTIONS = "predictions.png"
CHECKPOINT = "checkpoint.pt"


def write_outputs(result: ComparisonResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``metrics.json``, ``loss_curves.png`` and, for regression, ``predictions.png``
    into ``out_dir`` (created if needed); returns their paths."""
    from handgrad.plots.training import plot_loss_curves, plot_predictions

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / METRICS, directory / LOSS_CURVES]
    write_metrics(written[0], result.task.name, result.runs)
    plot_loss_curves(result, written[1])
    if result.task.kind == "regression":
        written.append(directory / PREDICTIONS)
        plot_predictions(result, written[2])
    return written
