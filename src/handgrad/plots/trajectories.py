"""The optimizer-trajectory picture: each optimizer's path over the function's contour map.

Contours are log-spaced in f - f* (the height above the minimum), so the floor of a narrow
valley such as Rosenbrock's is as visible as its steep walls; a function without a minimum
(the saddle) gets evenly spaced contours on a diverging colour map, zero in white. Figures
are built without pyplot, so drawing never needs a display.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator

from handgrad.files import write_atomically
from handgrad.landscapes.functions2d import Function2D, Point
from handgrad.landscapes.trajectories import Trajectory

# Display names for the lowercase optimizer names.
_DISPLAY = {
    "sgd": "SGD",
    "momentum": "SGD + momentum",
    "nesterov": "SGD + Nesterov",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "adamax": "Adamax",
    "nadam": "NAdam",
    "radam": "RAdam",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "rprop": "Rprop",
    "asgd": "ASGD",
    "adafactor": "Adafactor",
}
# Distinct colours, one per optimizer torch.optim has for a 2-D point; the black outline of
# each path keeps even the pale ones visible on viridis and on red-blue.
_COLORS = (
    "#e6194b",
    "#ff9f1c",
    "#f032e6",
    "#ffffff",
    "#42d4f4",
    "#bfef45",
    "#9a6324",
    "#911eb4",
    "#fabed4",
    "#000075",
    "#469990",
    "#dcbeff",
    "#aaffc3",
    "#808000",
)
_GRID = 400


def display_name(optimizer: str) -> str:
    """How an optimizer is named in legends and tables (``"rmsprop"`` -> ``"RMSprop"``)."""
    return _DISPLAY.get(optimizer, optimizer)


def _grid(function: Function2D) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (x_lo, x_hi), (y_lo, y_hi) = function.window
    x = torch.linspace(x_lo, x_hi, _GRID, dtype=torch.float64)
    y = torch.linspace(y_lo, y_hi, _GRID, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
    z = function.value(grid_x, grid_y)
    return grid_x.numpy(), grid_y.numpy(), z.numpy()


def _draw_contours(ax: Axes, fig: Figure, function: Function2D) -> None:
    gx, gy, z = _grid(function)
    if function.minimum_value is not None:
        height = np.maximum(z - function.minimum_value, 0.0)
        # From just above the lowest grid values up to the highest, in whole decades so that
        # the colour bar reads 10⁻², 10⁻¹, ...; the floor rings the minimum without a crowd.
        floor = max(float(np.percentile(height, 0.05)), float(height.max()) * 1e-9)
        low, high = math.floor(math.log10(floor)), math.ceil(math.log10(height.max()))
        levels = np.logspace(low, high, 3 * (high - low) + 1)
        filled = ax.contourf(
            gx,
            gy,
            np.clip(height, 10.0**low, None),
            levels=levels,
            norm=LogNorm(),
            cmap="viridis",
            alpha=0.9,
        )
        ax.contour(gx, gy, height, levels=levels, colors="white", linewidths=0.4, alpha=0.4)
        colorbar = fig.colorbar(filled, ax=ax, shrink=0.9, ticks=LogLocator())
        colorbar.set_label("f(x, y) − f*   (log scale)")
    else:
        even = MaxNLocator(24, symmetric=True).tick_values(float(z.min()), float(z.max()))
        filled = ax.contourf(
            gx, gy, z, levels=even, norm=TwoSlopeNorm(0.0), cmap="RdBu_r", alpha=0.9
        )
        ax.contour(gx, gy, z, levels=even, colors="black", linewidths=0.3, alpha=0.3)
        colorbar = fig.colorbar(filled, ax=ax, shrink=0.9, ticks=MaxNLocator(9))
        colorbar.set_label("f(x, y)")


def _landmark(
    ax: Axes, points: Sequence[Point], marker: str, color: str, size: float, label: str
) -> None:
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(
            xs,
            ys,
            marker,
            color=color,
            markeredgecolor="black",
            markeredgewidth=1.3,
            markersize=size,
            linestyle="none",
            label=label,
            zorder=5,
        )


def plot_trajectories(
    function: Function2D, trajectories: Sequence[Trajectory], *, title: str | None = None
) -> Figure:
    """The contour map of ``function`` with every trajectory, its start and its minima.

    Each path is a line outlined in black (visible on any colour), dotted every 5% of its
    steps, with a large dot where it ended;
    the legend, below the map so it hides no path, names the optimizer, its lr and where it
    finished: f there, or the step at which it diverged.
    """
    fig = Figure(figsize=(8.0, 8.0), layout="constrained")
    ax = fig.add_subplot()
    _draw_contours(ax, fig, function)

    outline = [patheffects.withStroke(linewidth=3.6, foreground="black")]
    for index, trajectory in enumerate(trajectories):
        color = _COLORS[index % len(_COLORS)]
        xy = trajectory.points.numpy()
        if trajectory.diverged_at is None:
            finish = f"f = {trajectory.final_value:.3g}"
        else:
            finish = f"diverged at step {trajectory.diverged_at}"
        label = f"{display_name(trajectory.optimizer)} (lr {trajectory.lr:g}): {finish}"
        # A dot every 5% of the steps: where they bunch up, the optimizer is slow.
        ax.plot(
            xy[:, 0],
            xy[:, 1],
            color=color,
            linewidth=2.0,
            marker="o",
            markersize=3.5,
            markeredgecolor="black",
            markeredgewidth=0.5,
            markevery=max(1, trajectory.steps_taken // 20),
            label=label,
            path_effects=outline,
            zorder=3,
        )
        ax.plot(
            xy[-1, 0], xy[-1, 1], "o", color=color, markersize=8, markeredgecolor="black", zorder=4
        )

    _landmark(ax, [function.start], "o", "white", 11, "start")
    _landmark(
        ax, function.minima, "*", "gold", 18, "minimum" if len(function.minima) == 1 else "minima"
    )
    _landmark(ax, function.saddle_points, "X", "white", 12, "saddle point")

    (x_lo, x_hi), (y_lo, y_hi) = function.window
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    steps = max((t.steps_taken for t in trajectories), default=0)
    ax.set_title(
        title
        or f"{function.name.capitalize()}, {steps} steps from {function.start}\n"
        f"f(x, y) = {function.formula}"
    )
    fig.legend(loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically: the old file or the new, never half."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_atomically(path, buffer.getvalue())
