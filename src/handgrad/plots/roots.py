"""Figures for the quadratic root finder: the descent on f², and the learning-rate sweep.

Built on matplotlib's Figure without pyplot, so drawing never needs a display.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from handgrad.files import write_atomically
from handgrad.roots import QuadraticRoots, RootKind, solve_quadratic
from handgrad.roots.sweep import SweepPoint, discriminant_value

_START_COLORS = ("#d62728", "#1f77b4")


def _save(figure: Figure, path: str | os.PathLike[str]) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    write_atomically(path, buffer.getvalue())
    return Path(path)


def _as_result(result_or_coeffs: QuadraticRoots | Sequence[float]) -> QuadraticRoots:
    """A scalar result with its descent path (solving again with the path if needed)."""
    if isinstance(result_or_coeffs, QuadraticRoots):
        result = result_or_coeffs
        if not result.is_scalar:
            raise ValueError(
                f"plot_descent draws one equation; got a batch of shape {tuple(result.kind.shape)}"
            )
        if result.path is None:
            a, b, c = (float(t) for t in result.coefficients)
            result = solve_quadratic(a, b, c, return_path=True)
        return result
    coefficients = [float(v) for v in result_or_coeffs]
    if len(coefficients) != 3:
        raise ValueError(
            f"expected a result or the coefficients (a, b, c); got {result_or_coeffs!r}"
        )
    a, b, c = coefficients
    return solve_quadratic(a, b, c, return_path=True)


def _draw_curve(axes: Axes, xs: np.ndarray, ys: np.ndarray, label: str, log: bool) -> None:
    axes.plot(xs, ys, color="0.3", linewidth=1.5, label=label)
    if log:
        axes.set_yscale("log")
    else:
        axes.axhline(0.0, color="0.7", linewidth=0.8)


def plot_descent(
    result_or_coeffs: QuadraticRoots | Sequence[float], path: str | os.PathLike[str]
) -> Path:
    """Draw the parabola f, the loss f² and the descent from each start; save to ``path``.

    ``result_or_coeffs``: the result of one equation (re-solved with ``return_path=True`` when
    it has no path) or the coefficients (a, b, c). Returns the path written (atomically).
    """
    result = _as_result(result_or_coeffs)
    assert result.path is not None
    a, b, c = (float(t) for t in result.coefficients)
    kind = RootKind(int(result.kind))
    trail = result.path.numpy()  # (steps + 1, 2) complex

    def f(x: np.ndarray) -> np.ndarray:
        return (a * x + b) * x + c

    finite = trail[np.isfinite(trail.real)]
    roots = result.roots.numpy()
    roots = roots[np.isfinite(roots.real)]
    xs_all = np.concatenate([finite.real, roots.real]) if finite.size or roots.size else np.zeros(1)
    low, high = float(xs_all.min()), float(xs_all.max())
    margin = 0.15 * (high - low) or 1.0
    xs = np.linspace(low - margin, high + margin, 600)

    figure = Figure(figsize=(15, 4.6))
    left, middle, right = figure.subplots(1, 3)
    title = str(result).splitlines()[0]
    figure.suptitle(f"{title}  —  {result.method}: {int(result.iterations)} steps")

    _draw_curve(left, xs, f(xs), "f(x)", log=False)
    left.set_title("the parabola f(x) and the iterates")
    # Losses below 1e-36 of the largest drawn are drawn at that floor: an exact zero (or a
    # 1e-300) would squash the picture.
    floor = float(np.max(f(xs) ** 2)) * 1e-36 or 1e-300
    _draw_curve(middle, xs, np.maximum(f(xs) ** 2, floor), "loss L(x) = f(x)²", log=True)
    middle.set_title("the loss f(x)² (log scale): each start slides down to a zero")
    for column in range(trail.shape[1]):
        points = trail[:, column]
        points = points[np.isfinite(points.real)]
        if points.size == 0:
            continue
        color = _START_COLORS[column % 2]
        name = f"start {column + 1}: x0 = {points[0].real:.6g}"
        if kind == RootKind.COMPLEX_PAIR:
            name = f"start {column + 1}: z0 = {points[0]:.4g}"
        if kind == RootKind.COMPLEX_PAIR:
            right.plot(points.real, points.imag, "o-", color=color, markersize=4, label=name)
            continue
        xr = points.real
        left.plot(xr, f(xr), "o-", color=color, markersize=4, linewidth=0.8, label=name)
        loss = np.maximum(f(xr) ** 2, floor)
        middle.plot(xr, loss, "o", color=color, markersize=4)
        right.semilogy(np.arange(points.size), loss, "o-", color=color, label=name)
    for root in roots:
        if root.imag == 0:
            left.plot([root.real], [0.0], "k*", markersize=12)
    if kind == RootKind.COMPLEX_PAIR:
        right.plot(roots.real, roots.imag, "k*", markersize=12, label="roots")
        right.axvline(float(roots.real[0]), color="0.7", linewidth=0.8)
        right.set_xlabel("Re z")
        right.set_ylabel("Im z")
        right.set_title("complex pair: descent on |f|² down the line Re z = vertex")
    else:
        right.set_xlabel("step k")
        right.set_ylabel("loss f(x_k)²")
        right.set_title("loss per step")
    left.set_xlabel("x")
    middle.set_xlabel("x")
    left.legend(loc="best", fontsize=8)
    right.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_sweep(
    a: float,
    b: float,
    c: float,
    by_lr: Sequence[SweepPoint],
    by_start: Sequence[SweepPoint],
    path: str | os.PathLike[str],
) -> Path:
    """Steps to converge vs fixed learning rate (with 1/2D and 1/D marked) and vs start."""
    figure = Figure(figsize=(12, 4.6))
    left, right = figure.subplots(1, 2)
    d = abs(discriminant_value(a, b, c))
    figure.suptitle(f"fixed-step gradient descent on ({a:g}x² + {b:g}x + {c:g})², |D| = {d:g}")
    for axes, points, key, label in (
        (left, by_lr, "lr", "learning rate"),
        (right, by_start, "start", "start x0"),
    ):
        xs = np.array([p.lr if key == "lr" else p.start.real for p in points])
        steps = np.array([p.steps for p in points], dtype=float)
        outcomes = np.array([p.outcome for p in points])
        for outcome, marker, color in (
            ("converged", "o", "#2ca02c"),
            ("diverged", "x", "#d62728"),
            ("stalled", "s", "#ff7f0e"),
        ):
            chosen = outcomes == outcome
            if chosen.any():
                axes.plot(xs[chosen], steps[chosen], marker, color=color, label=outcome)
        axes.set_xlabel(label)
        axes.set_ylabel("steps")
        axes.set_yscale("log")
        axes.legend(loc="best", fontsize=8)
    left.set_xscale("log")
    if d > 0 and math.isfinite(d):
        left.axvline(1 / (2 * d), color="0.5", linestyle=":", label="1/2D (fastest)")
        left.axvline(1 / d, color="0.2", linestyle="--", label="1/D (limit)")
        left.legend(loc="best", fontsize=8)
    left.set_title("steps to converge vs learning rate")
    lr = by_start[0].lr if by_start else math.nan
    right.set_title(f"steps to converge vs start (lr = {lr:.3g})")
    figure.tight_layout()
    return _save(figure, path)
