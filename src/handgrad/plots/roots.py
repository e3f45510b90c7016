"""Figures for the quadratic root finder: the descent on f², and the learning-rate sweep.

Built on matplotlib's Figure without pyplot, so drawing never needs a display. The descent is
drawn over the region of interest — the roots, the vertex and the starts — whatever the
iterates do: a start that leaves it (a diverging fixed step reaches 1e300) is drawn up to the
edge, with an arrow and the step at which it diverged.
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
from handgrad.roots import QuadraticRoots, RootKind, StartOutcome, solve_quadratic
from handgrad.roots.fixed_step import StartReport, outcome_label
from handgrad.roots.sweep import SweepPoint, learning_rate_scale

_START_COLORS = ("#d62728", "#1f77b4")
_OUTCOME_STYLE = {  # marker, colour
    StartOutcome.CONVERGED: ("o", "#2ca02c"),
    StartOutcome.DIVERGED: ("x", "#d62728"),
    StartOutcome.AT_VERTEX: ("v", "#9467bd"),
    StartOutcome.CYCLING: ("s", "#ff7f0e"),
    StartOutcome.STUCK: ("D", "#8c564b"),
    StartOutcome.SLOW: ("^", "#17becf"),
    StartOutcome.ERRATIC: ("*", "#7f7f7f"),
}


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
            if result.per_start is not None:
                starts = result.per_start.start.tolist()
                lr = float(result.per_start.lr)
                if math.isnan(lr):
                    raise ValueError(
                        "plot_descent cannot re-run an optimizer-driven descent: solve it "
                        "with return_path=True"
                    )
                result = solve_quadratic(
                    a,
                    b,
                    c,
                    "gd",
                    lr=lr,
                    x0=_finite_pair(starts, a, b, c),
                    max_iter=result.per_start.max_iter,
                    return_path=True,
                )
            else:
                method = result.method if result.method != "closed" else "gauss-newton"
                result = solve_quadratic(a, b, c, method, return_path=True)
        return result
    coefficients = [float(v) for v in result_or_coeffs]
    if len(coefficients) != 3:
        raise ValueError(
            f"expected a result or the coefficients (a, b, c); got {result_or_coeffs!r}"
        )
    a, b, c = coefficients
    return solve_quadratic(a, b, c, return_path=True)


def _finite_pair(starts: list[complex], a: float, b: float, c: float) -> list[complex] | None:
    """The starts of a report as x0 (a linear equation's NaN second start repeats the first)."""
    finite = [z for z in starts if not math.isnan(z.real)]
    if not finite:
        return None
    return [finite[0], finite[-1]]


def _region(values: list[float]) -> tuple[float, float]:
    """An interval around ``values`` with a margin (a unit one around a single point)."""
    low, high = min(values), max(values)
    width = high - low
    margin = 0.15 * width if width > 0 else max(abs(low), 1.0) * 0.5
    return low - margin, high + margin


def plot_descent(
    result_or_coeffs: QuadraticRoots | Sequence[float], path: str | os.PathLike[str]
) -> Path:
    """Draw the parabola f, the loss f² and the descent from each start (see
    :func:`draw_descent`); save to ``path`` (atomically, with the umask's permissions)."""
    return _save(draw_descent(result_or_coeffs), path)


def draw_descent(result_or_coeffs: QuadraticRoots | Sequence[float]) -> Figure:
    """The figure of :func:`plot_descent`: the parabola, the loss f² and each start's descent.

    ``result_or_coeffs``: the result of one equation (re-solved with ``return_path=True`` when
    it has no path) or the coefficients (a, b, c). The x range is the region of interest: the
    roots, the vertex and the starts, widened to show iterates that overshoot by up to its
    width; a start that leaves it is drawn to the edge, and a diverging one is marked with its
    step. The legend gives each start's outcome.
    """
    result = _as_result(result_or_coeffs)
    assert result.path is not None
    a, b, c = (float(t) for t in result.coefficients)
    kind = RootKind(int(result.kind))
    trail = result.path.cpu().numpy()  # (steps + 1, 2) complex
    report = result.per_start
    roots = result.roots.cpu().numpy()
    roots = roots[np.isfinite(roots.real)]
    exact = solve_quadratic(a, b, c, "closed").roots.numpy()
    exact = exact[np.isfinite(exact.real)]
    in_plane = kind == RootKind.COMPLEX_PAIR and bool(np.any(trail.imag[np.isfinite(trail)] != 0))

    def f(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return (a * x + b) * x + c

    def loss(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.abs(f(x)) ** 2

    starts = trail[0][np.isfinite(trail[0])]
    landmarks = [*exact.real.tolist(), *starts.real.tolist()]
    if a != 0:
        landmarks.append(-b / (2 * a))
    low, high = _region(landmarks)
    width = high - low
    finite = trail[np.isfinite(trail)]
    near = finite.real[(finite.real >= low - width) & (finite.real <= high + width)]
    if near.size:
        low, high = min(low, float(near.min())), max(high, float(near.max()))
    xs = np.linspace(low, high, 600)
    im_low, im_high = _region([*exact.imag.tolist(), *starts.imag.tolist()])
    im_width = im_high - im_low
    inside = (finite.imag >= im_low - im_width) & (finite.imag <= im_high + im_width)
    near_imag = finite.imag[inside]
    if near_imag.size:
        im_low, im_high = min(im_low, float(near_imag.min())), max(im_high, float(near_imag.max()))

    figure = Figure(figsize=(15, 4.8))
    left, middle, right = figure.subplots(1, 3)
    title = str(result).splitlines()[0]
    method = result.method
    if report is not None and math.isfinite(float(report.lr)):
        method += f" (fixed lr = {float(report.lr):.4g})"
    figure.suptitle(f"{title}  —  {method}: {int(result.iterations)} steps")

    left.plot(xs, f(xs), color="0.3", linewidth=1.5, label="f(x)")
    left.axhline(0.0, color="0.7", linewidth=0.8)
    left.set_xlim(low, high)
    left.set_title("the parabola f(x) and the iterates")
    # Losses below 1e-36 of the largest drawn are drawn at that floor: an exact zero (or a
    # 1e-300) would squash the picture.
    curve = loss(xs)
    floor = float(np.max(curve[np.isfinite(curve)], initial=0.0)) * 1e-36 or 1e-300
    middle.plot(xs, np.maximum(curve, floor), color="0.3", linewidth=1.5, label="L(x) = f(x)²")
    middle.set_yscale("log")
    middle.set_xlim(low, high)
    middle.set_title("the loss f(x)² (log scale)")
    for column in range(trail.shape[1]):
        points = trail[:, column]
        ran = ~np.isnan(points.real)
        points = points[ran]
        if points.size == 0:
            continue
        color = _START_COLORS[column % 2]
        name = f"start {column + 1}: x0 = {_short(points[0])}"
        outcome = None
        if report is not None:
            outcome = StartOutcome(int(report.outcome[column]))
            name += f" — {_outcome_label(report, column)}"
        steps = np.arange(points.size)
        shown = np.isfinite(points) & (points.real >= low) & (points.real <= high)
        if in_plane:
            shown &= (points.imag >= im_low) & (points.imag <= im_high)
        if in_plane:
            right.plot(
                points.real[shown], points.imag[shown], "o-", color=color, markersize=4, label=name
            )
        else:
            xr = points.real[shown]
            left.plot(xr, f(xr), "o-", color=color, markersize=4, linewidth=0.8, label=name)
            middle.plot(xr, np.maximum(loss(xr), floor), "o", color=color, markersize=4)
            values = loss(points.real)
            good = np.isfinite(values)
            right.semilogy(
                steps[good],
                np.maximum(values[good], floor),
                "o-",
                color=color,
                markersize=3,
                label=name,
            )
        if not shown.all():
            _mark_exit(left, points, shown, low, high, color, outcome, report, column)
    for root in exact:
        if root.imag == 0:
            left.plot([root.real], [0.0], "k*", markersize=12)
    if in_plane:
        right.plot(exact.real, exact.imag, "k*", markersize=12, label="roots")
        right.axvline(float(exact.real[0]), color="0.7", linewidth=0.8)
        right.set_xlabel("Re z")
        right.set_ylabel("Im z")
        right.set_title("complex pair: the descent on |f|² in the complex plane")
        right.set_xlim(low, high)
        right.set_ylim(im_low, im_high)
    else:
        right.set_xlabel("step k")
        right.set_ylabel("loss f(x_k)²")
        right.set_title("loss per step (finite values)")
    left.set_xlabel("x")
    middle.set_xlabel("x")
    left.legend(loc="upper center", fontsize=7)
    right.legend(loc="best", fontsize=7)
    figure.tight_layout()
    return figure


def _short(z: complex) -> str:
    return f"{z.real:.6g}" if z.imag == 0 else f"{z:.4g}"


def _outcome_label(report: StartReport, column: int) -> str:
    """'converged to x1 in 37 steps', 'diverged at step 6', ... for the legend."""
    outcome = StartOutcome(int(report.outcome[column]))
    steps = int(report.steps[column])
    label = outcome_label(outcome, steps, int(report.period[column]), int(report.root[column]))
    if outcome in (StartOutcome.CONVERGED, StartOutcome.CYCLING):
        label += f" after {steps} steps"
    return label


def _mark_exit(
    axes: Axes,
    points: np.ndarray,
    shown: np.ndarray,
    low: float,
    high: float,
    color: str,
    outcome: StartOutcome | None,
    report: StartReport | None,
    column: int,
) -> None:
    """An arrow at the edge of the region where a start's iterates leave it (diverged, or
    jumped out), with the step at which they did."""
    leaving = int(np.argmax(~shown))
    beyond = points[leaving].real
    centre = (low + high) / 2
    if math.isnan(beyond):
        beyond = points[leaving - 1].real if leaving > 0 else high
    right_side = beyond > centre
    edge = high if right_side else low
    span = high - low
    y_low, y_high = axes.get_ylim()
    y = y_low + (0.45 + 0.1 * column) * (y_high - y_low)
    if outcome == StartOutcome.DIVERGED and report is not None:
        text = f"start {column + 1} diverged at step {int(report.steps[column])}"
    else:
        text = f"start {column + 1} leaves the plot at step {leaving}"
    start_x = edge - 0.12 * span if right_side else edge + 0.12 * span
    axes.plot([edge], [y], "x", color=color, markersize=10, markeredgewidth=2, clip_on=False)
    axes.annotate(
        text,
        xy=(edge, y),
        xytext=(start_x, y),
        color=color,
        fontsize=8,
        ha="right" if right_side else "left",
        va="center",
        arrowprops={"arrowstyle": "->", "color": color},
    )


def plot_sweep(
    a: float,
    b: float,
    c: float,
    by_lr: Sequence[SweepPoint],
    by_start: Sequence[SweepPoint],
    path: str | os.PathLike[str],
) -> Path:
    """Steps vs fixed learning rate (with 1/2|D| and 1/|D| marked) and vs start, one marker
    per outcome (converged, diverged, at the vertex, cycling, stuck, slow, erratic)."""
    figure = Figure(figsize=(12, 4.6))
    left, right = figure.subplots(1, 2)
    limit = 1.0 / abs(b * b - 4 * a * c) if b * b != 4 * a * c else math.inf
    sign_b, sign_c = ("-" if b < 0 else "+"), ("-" if c < 0 else "+")
    figure.suptitle(
        f"fixed-step gradient descent on ({a:g}x² {sign_b} {abs(b):g}x {sign_c} {abs(c):g})², "
        f"stable near a root for lr < 1/|D| = {limit:.4g}"
    )
    for axes, points, key, label in (
        (left, by_lr, "lr", "learning rate"),
        (right, by_start, "start", "start x0"),
    ):
        xs = np.array([p.lr if key == "lr" else p.start.real for p in points])
        steps = np.array([max(p.steps, 1) for p in points], dtype=float)
        outcomes = np.array([int(p.outcome) for p in points])
        for outcome, (marker, color) in _OUTCOME_STYLE.items():
            chosen = outcomes == int(outcome)
            if chosen.any():
                name = outcome.name.lower().replace("_", " ")
                axes.plot(xs[chosen], steps[chosen], marker, color=color, label=name)
        axes.set_xlabel(label)
        axes.set_ylabel("steps (to converge, or to stop)")
        axes.set_yscale("log")
    left.set_xscale("log")
    if math.isfinite(limit):
        left.axvline(limit / 2, color="0.5", linestyle=":", label="1/2|D| (fastest near a root)")
        left.axvline(limit, color="0.2", linestyle="--", label="1/|D| (limit near a root)")
    else:
        scale = learning_rate_scale(a, b, c)
        left.set_title(f"double root: no limit (rates in units of {scale:.3g})")
    left.legend(loc="best", fontsize=8)
    right.legend(loc="best", fontsize=8)
    if math.isfinite(limit):
        left.set_title("steps vs learning rate")
    lr = by_start[0].lr if by_start else math.nan
    right.set_title(f"steps vs start (lr = {lr:.3g})")
    figure.tight_layout()
    return _save(figure, path)
