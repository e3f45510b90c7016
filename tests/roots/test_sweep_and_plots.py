"""The learning-rate sweep's numbers and the figures drawn from them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from handgrad.plots.roots import plot_descent, plot_sweep
from handgrad.roots import solve_quadratic
from handgrad.roots.sweep import (
    default_learning_rates,
    default_start_grid,
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
            assert point.outcome == "converged"
            assert point.root.real == pytest.approx(root, rel=1e-11)
    for lr in lrs[3:]:  # beyond 1/D the root repels: a cycle, or off to infinity
        for start in (ROOTS[0] - 0.01, ROOTS[1] + 0.01):
            assert not outcome[(lr, start)].converged
    # 1/2D is the fastest: the linear rate |1 - 2 lr D| vanishes there (0.1/D and 0.9/D both
    # contract by 0.8 per step).
    steps = {lr: outcome[(lr, ROOTS[1] + 0.01)].steps for lr in lrs[:3]}
    assert steps[0.5 / d] < steps[0.9 / d]
    assert steps[0.5 / d] < steps[0.1 / d]


def test_too_small_a_rate_is_reported_as_stalled_not_diverged() -> None:
    (point,) = sweep_learning_rates(1.0, -6.0, 4.0, [1e-6], x0=(6.0, math.nan), max_iter=50)
    assert point.outcome == "stalled"
    assert point.steps == 50
    assert math.isnan(point.root.real)


def test_default_grids() -> None:
    assert default_learning_rates(1.0, -6.0, 4.0)[-1] == pytest.approx(2.0 / 20.0)
    assert default_learning_rates(1.0, -2.0, 1.0) == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    starts = default_start_grid(1.0, -6.0, 4.0)
    assert min(starts) == pytest.approx(3 - 3 * (3 + 2))
    assert 3.0 not in starts
    points = sweep_starts(1.0, -6.0, 4.0, 0.0125)
    assert len(points) == len(starts)
    converged = [p for p in points if p.converged]
    assert converged
    assert {round(p.root.real, 9) for p in converged} <= {round(r, 9) for r in ROOTS}


def test_sweep_rejects_equations_without_roots() -> None:
    with pytest.raises(ValueError, match="has no root to descend to"):
        sweep_learning_rates(0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    "subject",
    [
        solve_quadratic(1.0, -6.0, 4.0),  # no path: drawn after solving again with one
        (1.0, 2.0, 5.0),
        solve_quadratic(1.0, -6.0, 4.0, lr=0.01, return_path=True),
    ],
    ids=["result-without-path", "complex-coefficients", "fixed-step"],
)
def test_plot_descent_writes_png(subject: object, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "descent.png"
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
