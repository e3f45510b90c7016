"""The learning-rate sweep's numbers and the figures drawn from them."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

from handgrad.plots.roots import draw_descent, plot_descent, plot_sweep
from handgrad.roots import StartOutcome, solve_quadratic
from handgrad.roots.sweep import (
    LR_MULTIPLES,
    default_learning_rates,
    default_start_grid,
    summarize,
    sweep_learning_rates,
    sweep_starts,
)

ROOTS = (0.7639320225002103, 5.23606797749979)  # x² - 6x + 4 = 0; D = 20


def test_near_the_roots_fixed_steps_converge_below_one_over_d_and_diverge_above() -> None:
    d = 20.0
    lrs = [0.1 / d, 0.5 / d, 0.9 / d, 1.1 / d, 1.5 / d]
    points = sweep_learning_rates(1.0, -6.0, 4.0, lrs, x0=(ROOTS[0] - 0.01, ROOTS[1] + 0.01))
    outcome = {(p.lr, p.start.real): p for p in points}
    for lr in lrs[:3]:
        for start, root in zip((ROOTS[0] - 0.01, ROOTS[1] + 0.01), ROOTS, strict=True):
            point = outcome[(lr, start)]
            assert point.outcome == StartOutcome.CONVERGED
            assert point.root.real == pytest.approx(root, rel=1e-11)
    for lr in lrs[3:]:  # beyond 1/D the root repels: a cycle, or off to infinity
        for start in (ROOTS[0] - 0.01, ROOTS[1] + 0.01):
            assert not outcome[(lr, start)].converged
    # 1/2D is the fastest: the linear rate |1 - 2 lr D| vanishes there (0.1/D and 0.9/D both
    # contract by 0.8 per step).
    steps = {lr: outcome[(lr, ROOTS[1] + 0.01)].steps for lr in lrs[:3]}
    assert steps[0.5 / d] < steps[0.9 / d]
    assert steps[0.5 / d] < steps[0.1 / d]


def test_too_small_a_rate_is_reported_as_slow_not_stalled_or_diverged() -> None:
    (point,) = sweep_starts(1.0, -6.0, 4.0, 1e-6, [6.0], max_iter=50)
    assert point.outcome == StartOutcome.SLOW
    assert point.label() == "slow"
    assert point.steps == 50
    assert math.isnan(point.root.real)
    assert point.describe() == "still descending after 50 steps (max_iter), at x = " + (
        f"{point.final.real:.10g}"
    )


def test_default_grids() -> None:
    assert default_learning_rates(1.0, -6.0, 4.0)[-1] == pytest.approx(2.0 / 20.0)
    # A double root has no limit: the rates scale with 1/(b² + 4|ac|) = 1/8 instead.
    assert default_learning_rates(1.0, -2.0, 1.0) == pytest.approx([m / 8 for m in LR_MULTIPLES])
    starts = default_start_grid(1.0, -6.0, 4.0)
    assert min(starts) == pytest.approx(3 - 3 * (3 + 2))
    assert 3.0 not in starts
    points = sweep_starts(1.0, -6.0, 4.0, 0.0125)
    assert len(points) == len(starts)
    converged = [p for p in points if p.converged]
    assert converged
    assert {round(p.root.real, 9) for p in converged} <= {round(r, 9) for r in ROOTS}


def test_the_default_sweep_shows_the_theory() -> None:
    """From the default starts every rate below 1/D converges, none above; the fastest is
    1/2D: summarize reads that from the points."""
    points = sweep_learning_rates(1.0, -6.0, 4.0)
    summary = summarize(points)
    below = [m / 20 for m in LR_MULTIPLES if m < 1]
    above = [m / 20 for m in LR_MULTIPLES if m > 1]
    assert summary.converging == pytest.approx(tuple(below))
    assert summary.failing == pytest.approx(tuple(above))
    assert summary.stable_up_to == pytest.approx(0.99 / 20)
    assert summary.first_failure == pytest.approx(1.01 / 20)
    assert summary.fastest == pytest.approx(0.5 / 20)
    fastest = [p.steps for p in points if p.lr == summary.fastest]
    assert summary.fastest_steps == max(fastest)
    assert all(p.which == (0 if p.start.real < 3 else 1) for p in points if p.converged)


def test_summarize_from_the_classroom_starts() -> None:
    """-2 and 8 hit the vertex at 1/4D and cycle at 1/2D: the table says so, and its summary
    says the fastest converging rate is not 1/2D there."""
    points = sweep_learning_rates(1.0, -6.0, 4.0, x0=(-2.0, 8.0))
    by_lr = {(p.lr, p.start.real): p for p in points}
    assert by_lr[(0.25 / 20, -2.0)].outcome == StartOutcome.AT_VERTEX
    assert by_lr[(0.5 / 20, 8.0)].outcome == StartOutcome.CYCLING
    summary = summarize(points)
    assert summary.stable_up_to == pytest.approx(0.1 / 20)
    assert summary.first_failure == pytest.approx(0.25 / 20)
    assert summary.fastest == pytest.approx(0.1 / 20)


def test_summarize_a_table_where_nothing_converged() -> None:
    summary = summarize(sweep_learning_rates(1.0, -6.0, 4.0, [0.2, 0.3], max_iter=50))
    assert summary.converging == ()
    assert summary.stable_up_to is None
    assert summary.fastest is None


@pytest.mark.parametrize(
    ("call", "exception", "match"),
    [
        (lambda: sweep_learning_rates(1.0, -6.0, 4.0, [0.01, -1.0]), ValueError, "lr must be"),
        (lambda: sweep_learning_rates(1.0, -6.0, 4.0, []), ValueError, "at least one"),
        (lambda: sweep_learning_rates(1.0, -6.0, 4.0, max_iter=-5), ValueError, "max_iter"),
        (lambda: sweep_learning_rates(1.0, -6.0, 4.0, max_iter=True), TypeError, "max_iter"),
        (lambda: sweep_learning_rates(1.0, -6.0, 4.0, tol=-1.0), ValueError, "tol must be"),
        (lambda: sweep_learning_rates(1.0, -6.0, 4.0, x0=(math.nan, 1.0)), ValueError, "x0"),
        (lambda: sweep_learning_rates(1.0, -6.0, 4.0, x0=("a", 1.0)), TypeError, "x0"),
        (lambda: sweep_learning_rates(1.0, math.nan, 4.0), ValueError, "b must be a finite"),
        (lambda: sweep_starts(1.0, -6.0, 4.0, -1.0), ValueError, "lr must be"),
        (lambda: sweep_starts(1.0, -6.0, 4.0, True), TypeError, "lr must be a number"),
        (lambda: sweep_starts(1.0, -6.0, 4.0, 0.01, max_iter=10**30), ValueError, "max_iter"),
    ],
)
def test_sweeps_validate_every_option(call: object, exception: type, match: str) -> None:
    with pytest.raises(exception, match=match):
        call()  # type: ignore[operator]


def test_sweep_rejects_equations_without_roots() -> None:
    with pytest.raises(ValueError, match="has no root to descend to"):
        sweep_learning_rates(0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    "subject",
    [
        solve_quadratic(1.0, -6.0, 4.0),  # no path: drawn after solving again with one
        (1.0, 2.0, 5.0),
        solve_quadratic(1.0, -6.0, 4.0, lr=0.01, return_path=True),
        solve_quadratic(1.0, -6.0, 4.0, lr=0.01, x0=(-10.0, 10.0)),  # diverges; no path
        solve_quadratic(1.0, 2.0, 5.0, lr=0.01, return_path=True),
        solve_quadratic(0.0, 2.0, -3.0, lr=0.1),
    ],
    ids=[
        "result-without-path",
        "complex-coefficients",
        "fixed-step",
        "fixed-step-diverging",
        "fixed-step-complex",
        "fixed-step-linear",
    ],
)
def test_plot_descent_writes_png(subject: object, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "descent.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warnings, whatever the iterates do
        written = plot_descent(subject, target)  # type: ignore[arg-type]
    assert written == target
    assert target.read_bytes().startswith(b"\x89PNG")
    assert not list(target.parent.glob("*.tmp"))


def test_plot_descent_refuses_a_batch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"plot_descent draws one equation; got a batch"):
        plot_descent(solve_quadratic([1.0, 1.0], [2.0, 3.0], [1.0, 1.0]), tmp_path / "x.png")


def test_plot_sweep_writes_png(tmp_path: Path) -> None:
    by_lr = sweep_learning_rates(1.0, -6.0, 4.0, [0.005, 0.06], max_iter=200)
    by_start = sweep_starts(1.0, -6.0, 4.0, 0.0125, [0.0, 6.0, 20.0], max_iter=200)
    target = plot_sweep(1.0, -6.0, 4.0, by_lr, by_start, tmp_path / "sweep.png")
    assert target.read_bytes().startswith(b"\x89PNG")


def test_a_diverging_descent_is_drawn_in_the_region_of_interest_and_marked() -> None:
    """x0 = -10 leaves for 1e282: the x axis still spans the roots, vertex and starts (not
    1e94 as it used to), and an arrow names the step at which it diverged."""
    result = solve_quadratic(1.0, -6.0, 4.0, lr=0.01, x0=(-10.0, 10.0), return_path=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = draw_descent(result)
    parabola, loss, per_step = figure.axes
    low, high = parabola.get_xlim()
    assert -20 < low < -10
    assert 10 < high < 20
    assert loss.get_xlim() == (low, high)
    assert result.per_start is not None
    steps = int(result.per_start.steps[0])
    texts = [text.get_text() for text in parabola.texts]
    assert f"start 1 diverged at step {steps}" in texts
    labels = parabola.get_legend_handles_labels()[1]
    assert any(f"diverged at step {steps}" in label for label in labels)
    assert any("converged to x1 after" in label for label in labels)
    assert per_step.get_ylim()[1] < 1e300


def test_plot_sweep_draws_every_outcome_without_warnings(tmp_path: Path) -> None:
    by_lr = sweep_learning_rates(1.0, -6.0, 4.0, x0=(-2.0, 8.0), max_iter=300)
    by_start = sweep_starts(1.0, -6.0, 4.0, 0.0125, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        target = plot_sweep(1.0, -6.0, 4.0, by_lr, by_start, tmp_path / "sweep.png")
    assert target.read_bytes().startswith(b"\x89PNG")
    double = sweep_learning_rates(1.0, -2.0, 1.0, max_iter=50)
    plot_sweep(1.0, -2.0, 1.0, double, double, tmp_path / "double.png")
