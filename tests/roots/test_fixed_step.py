"""The "gd" method (a fixed learning rate): starts, each start's outcome, x1/x2, the stable
learning rates (derived in fixed_step.py, checked here numerically)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from handgrad.roots import (
    RootKind,
    StartOutcome,
    default_learning_rate,
    solve_quadratic,
    stability_limit,
)
from handgrad.roots.fixed_step import default_starts
from handgrad.roots.problem import prepare
from tests.roots.reference import on

X1, X2 = 0.7639320225002103, 5.23606797749979  # x² - 6x + 4 = 0, D = 20
CONVERGED, DIVERGED, AT_VERTEX = (
    StartOutcome.CONVERGED,
    StartOutcome.DIVERGED,
    StartOutcome.AT_VERTEX,
)


def outcomes(result: object) -> list[StartOutcome]:
    report = result.per_start  # type: ignore[attr-defined]
    assert report is not None
    return [StartOutcome(int(o)) for o in report.outcome.reshape(-1).tolist()]


def test_the_classroom_starts_land_on_the_vertex_or_cycle_and_say_so() -> None:
    """From -2 and 8 (|s| = √5 in the scaled picture) lr = 1/4D lands exactly on the vertex in
    one step, lr = 1/2D jumps between -2 and 8 forever: both used to be reported as 'NO'."""
    vertex = solve_quadratic(1.0, -6.0, 4.0, lr=0.0125, x0=(-2.0, 8.0))
    assert outcomes(vertex) == [AT_VERTEX, AT_VERTEX]
    assert vertex.per_start is not None
    assert vertex.per_start.steps.tolist() == [1, 1]
    assert vertex.per_start.final.real.tolist() == [3.0, 3.0]
    assert not bool(vertex.converged)
    assert int(vertex.iterations) == 1  # stopped at once, not after max_iter steps
    cycle = solve_quadratic(1.0, -6.0, 4.0, lr=0.025, x0=(-2.0, 8.0))
    assert outcomes(cycle) == [StartOutcome.CYCLING] * 2
    assert cycle.per_start is not None
    assert cycle.per_start.period.tolist() == [2, 2]
    assert set(cycle.per_start.final.real.tolist()) == {-2.0, 8.0}
    assert "cycling with period 2" in str(cycle)


def test_a_start_on_the_vertex_stops_at_step_zero() -> None:
    result = solve_quadratic(1.0, -6.0, 4.0, lr=0.01, x0=(3.0, 3.0))
    assert outcomes(result) == [AT_VERTEX, AT_VERTEX]
    assert result.per_start is not None
    assert result.per_start.steps.tolist() == [0, 0]
    assert bool(result.roots.real.isnan().all())
    assert "stopped at the vertex x = 3 at step 0" in str(result)


def test_divergence_names_its_step_and_iterate_and_x1_x2_keep_their_meaning() -> None:
    """-10 diverges; 10 overshoots the vertex and converges to the SMALLER root: that root is
    x1, and x2 (which no start found) is NaN — not 0.7639 in the x2 column."""
    result = solve_quadratic(1.0, -6.0, 4.0, lr=0.01, x0=(-10.0, 10.0))
    report = result.per_start
    assert report is not None
    assert outcomes(result) == [DIVERGED, CONVERGED]
    assert report.root.tolist() == [-1, 0]
    steps = int(report.steps[0])
    assert 3 <= steps <= 10
    last = float(report.final[0].real)
    assert math.isfinite(last)
    assert last < -1e100  # where it was heading when it left the finite numbers
    assert result.roots[0].real.item() == pytest.approx(X1, rel=1e-11)
    assert math.isnan(result.roots[1].real.item())
    assert not bool(result.converged)
    assert f"start 1: x0 = -10 -> diverged at step {steps} (x = " in str(result)
    assert "start 2: x0 = 10 -> converged to x1 = 0.7639320225" in str(result)


def test_both_starts_on_one_root_fill_only_its_column() -> None:
    result = solve_quadratic(1.0, -6.0, 4.0, lr=0.01, x0=(0.5, 1.0))
    assert outcomes(result) == [CONVERGED, CONVERGED]
    assert result.per_start is not None
    assert result.per_start.root.tolist() == [0, 0]
    assert result.roots[0].real.item() == pytest.approx(X1, rel=1e-11)
    assert math.isnan(result.roots[1].real.item())
    assert bool(result.converged)  # every start converged, to the same root


def test_outcomes_stuck_slow_erratic_and_an_approached_cycle() -> None:
    stuck = solve_quadratic(1.0, -6.0, 4.0, lr=1e-30, x0=(0.5, 5.5))
    assert outcomes(stuck) == [StartOutcome.STUCK] * 2
    assert stuck.per_start is not None
    assert stuck.per_start.steps.tolist() == [1, 1]
    # A double root: f'(x*) = 0, the error falls like 1/sqrt(k): still falling at max_iter.
    slow = solve_quadratic(1.0, -2.0, 1.0, lr=0.01, max_iter=500)
    assert outcomes(slow) == [StartOutcome.SLOW] * 2
    assert slow.per_start is not None
    assert slow.per_start.steps.tolist() == [500, 500]
    # lr = 1.5/D: the scaled map s <- s (1 + θ - θ s²) is chaotic at θ = 1.5.
    erratic = solve_quadratic(1.0, -6.0, 4.0, lr=1.5 / 20, max_iter=2000)
    assert outcomes(erratic) == [StartOutcome.ERRATIC] * 2
    # Just above 1/D the iterates approach a 2-cycle only slowly: not yet exact at max_iter.
    approach = solve_quadratic(1.0, -6.0, 4.0, lr=1.001 / 20, max_iter=3000)
    assert outcomes(approach) == [StartOutcome.CYCLING] * 2
    assert approach.per_start is not None
    assert approach.per_start.period.tolist() == [2, 2]
    assert approach.per_start.steps.tolist() == [3000, 3000]
    assert "approaching a cycle of period 2 after 3000 steps" in str(approach)


def test_a_real_start_for_a_complex_pair_ends_at_the_vertex() -> None:
    """On the real line |f| is smallest at the vertex, a saddle of |f|² in the plane."""
    result = solve_quadratic(1.0, 2.0, 5.0, lr=0.01, x0=(0.0, 1.0))
    assert outcomes(result) == [AT_VERTEX, AT_VERTEX]
    assert result.per_start is not None
    assert result.per_start.final.real.tolist() == pytest.approx([-1.0, -1.0], abs=1e-6)


def test_an_optimizer_run_is_judged_from_its_last_iterates() -> None:
    slow = solve_quadratic(1.0, -6.0, 4.0, optimizer=torch.optim.Adam, lr=1e-6, max_iter=50)
    assert outcomes(slow) == [StartOutcome.SLOW] * 2
    assert slow.per_start is not None
    assert math.isnan(float(slow.per_start.lr[()])) is False
    fast = solve_quadratic(1.0, -6.0, 4.0, optimizer=torch.optim.Adam, lr=0.05)
    assert outcomes(fast) == [CONVERGED, CONVERGED]


@pytest.mark.parametrize(
    "coefficients",
    [
        (1.0, -6.0, 4.0),
        (1.0, 0.0, 1.0),  # used to start on the roots ±i and "converge in 1 iteration"
        (1.0, 0.0, -4.0),  # v ± (|v| + sqrt|c/a|) = ±2: the roots
        (1.0, -2.0, 0.0),  # c = 0: the same; a root at 0, converged by |x| <= tol |b/a|
        (1.0, -2.0, 1.0),  # double root
        (0.0, 2.0, 0.0),  # linear, root 0
        (0.0, 2.0, -3.0),
        (2.0**52 - 1, 2.0**53 - 1, 2.0**52),  # roots an ulp apart
        (1.0, -2.0, 1.0 - 2.0**-52),
    ],
)
def test_default_starts_are_never_on_a_root_or_the_vertex(
    coefficients: tuple[float, float, float],
) -> None:
    a, b, c = coefficients
    result = solve_quadratic(a, b, c, lr=float(default_learning_rate(a, b, c)), max_iter=500)
    report = result.per_start
    assert report is not None
    starts = [z for z in report.start.tolist() if not math.isnan(z.real)]
    exact = [z for z in solve_quadratic(a, b, c, "closed").roots.tolist() if not math.isnan(z.real)]
    assert starts
    for start in starts:
        assert start not in exact
        if a != 0:
            assert start != complex(-b / (2 * a))
    # Each start that ran converged (the default rate suits every kind but a double root,
    # where no rate is fast) in at least one step: none began on its root.
    ran = report.outcome != int(StartOutcome.NOT_RUN)
    wanted = StartOutcome.SLOW if (a, b, c) == (1.0, -2.0, 1.0) else CONVERGED
    assert set(report.outcome[ran].tolist()) == {int(wanted)}
    # Roots 2^-26 apart or closer: at the starts the backward error is already below tol.
    well_posed = len(exact) < 2 or abs(exact[0] - exact[1]) > 1e-6 * abs(exact[1])
    if well_posed:
        assert bool((report.steps[ran] >= 2).all())


@given(
    st.floats(-1e6, 1e6).filter(lambda v: abs(v) > 1e-6),
    st.floats(-1e6, 1e6),
    st.floats(-1e6, 1e6),
)
def test_default_starts_never_hit_a_root_or_the_vertex_property(
    a: float, b: float, c: float
) -> None:
    columns = [torch.tensor([v], dtype=torch.float64) for v in (a, b, c)]
    problem = prepare(*columns)
    starts = default_starts(problem)[0].tolist()
    exact = solve_quadratic(a, b, c, "closed").roots.tolist()
    vertex = -b / (2 * a)
    for start in starts:
        assert start not in exact
        assert start != complex(vertex)


def test_nan_starts_are_refused_and_converged_never_comes_with_a_nan_root() -> None:
    with pytest.raises(ValueError, match="x0 must be finite numbers"):
        solve_quadratic(1.0, -6.0, 4.0, lr=0.01, x0=(math.nan, 0.0))
    generator = torch.Generator().manual_seed(3)
    a, b, c = torch.randn(3, 64, dtype=torch.float64, generator=generator)
    result = solve_quadratic(a, b, c, lr=default_learning_rate(a, b, c))
    report = result.per_start
    assert report is not None
    reached = report.outcome == int(CONVERGED)
    assert bool(torch.isfinite(report.final[reached]).all())
    # Every root a start reached is in the roots, in the column the report names.
    for column in (0, 1):
        here = reached & (report.root == column)
        rows = here.any(dim=1)
        assert bool(torch.isfinite(result.roots[rows, column]).all())


def test_per_equation_learning_rates_and_batch_reports() -> None:
    a = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([-6.0, 2.0, 2.0], dtype=torch.float64)
    c = torch.tensor([4.0, 5.0, -3.0], dtype=torch.float64)
    rates = default_learning_rate(a, b, c)
    assert rates.tolist() == pytest.approx([1 / 80, 1 / 64, 1 / 16])
    result = solve_quadratic(a, b, c, lr=rates)
    report = result.per_start
    assert report is not None
    assert report.outcome.shape == (3, 2)
    assert report.lr.tolist() == rates.tolist()
    assert result.converged.tolist() == [True, True, True]
    assert report.outcome[2].tolist() == [int(CONVERGED), int(StartOutcome.NOT_RUN)]
    expected = [[X1, X2], [complex(-1, -2), complex(-1, 2)], [1.5, math.nan]]
    torch.testing.assert_close(
        result.roots,
        torch.tensor(expected, dtype=torch.complex128),
        rtol=1e-10,
        atol=0,
        equal_nan=True,
    )


# The stable learning rates, derived in handgrad.roots.fixed_step: near a root x*,
# e_{k+1} ≈ (1 - 2 lr f'(x*)²) e_k, so a fixed step converges iff lr < 1/f'(x*)² = 1/|D|.
EQUATIONS = {
    "two_real": (1.0, -6.0, 4.0),
    "scaled_a": (3.0, -1.0, -2.0),
    "complex_pair": (2.0, 2.0, 5.0),
    "linear": (0.0, 4.0, -1.0),
    "negative_a": (-0.5, 1.0, 1.5),
}


@pytest.mark.parametrize("name", list(EQUATIONS))
def test_the_stability_limit_is_one_over_f_prime_squared(name: str) -> None:
    a, b, c = EQUATIONS[name]
    limit = float(stability_limit(a, b, c))
    roots = [z for z in solve_quadratic(a, b, c, "closed").roots.tolist() if not math.isnan(z.real)]
    for root in roots:
        slope = 2 * a * root + b
        assert limit == pytest.approx(1 / abs(slope) ** 2, rel=1e-12)
        # L''(x*) = 2 f'(x*)² (the curvature the derivation uses), by autograd.
        x = torch.tensor(root.real, dtype=torch.float64, requires_grad=True)
        if root.imag == 0:
            (grad,) = torch.autograd.grad(((a * x + b) * x + c) ** 2, x, create_graph=True)
            (curvature,) = torch.autograd.grad(grad, x)
            assert float(curvature) == pytest.approx(2 / limit, rel=1e-9)
        # Just below the limit a start near the root converges, just above it does not.
        offset = 1e-3 * max(abs(root), 1.0)
        start = root + offset * (1 if root.imag == 0 else 1j)
        x0 = (start, start)
        below = solve_quadratic(a, b, c, lr=0.98 * limit, x0=x0, max_iter=1000)
        above = solve_quadratic(a, b, c, lr=1.02 * limit, x0=x0, max_iter=1000)
        assert outcomes(below)[0] == CONVERGED
        assert outcomes(above)[0] != CONVERGED


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.7, 0.9])
def test_the_error_shrinks_by_one_minus_two_lr_f_prime_squared(fraction: float) -> None:
    a, b, c = 3.0, -1.0, -2.0  # roots -2/3 and 1, D = 25
    limit = float(stability_limit(a, b, c))
    lr = fraction * limit
    result = solve_quadratic(a, b, c, lr=lr, x0=(-2 / 3 - 1e-4, 1 + 1e-4), return_path=True)
    assert result.path is not None
    errors = (result.path[:12, 1].real - 1.0).abs()
    ratios = (errors[6:] / errors[5:-1]).tolist()
    assert ratios == pytest.approx([abs(1 - 2 * fraction)] * len(ratios), rel=1e-3)


def test_stability_limit_and_default_rate_for_the_other_kinds() -> None:
    limits = stability_limit([1.0, 0.0, 0.0, 1e200], [-2.0, 0.0, 0.0, 1e200], [1.0, 1.0, 0.0, 1.0])
    assert math.isinf(limits[0])  # double root: no limit
    assert math.isnan(limits[1])  # no roots
    assert math.isnan(limits[2])
    assert float(limits[3]) == 0.0  # 1/|D| = 1e-400: below float64, computed without overflow
    assert float(default_learning_rate(1.0, -2.0, 1.0)) == pytest.approx(1 / 32)
    kind = RootKind(int(solve_quadratic(1.0, -2.0, 1.0, "closed").kind))
    assert kind == RootKind.DOUBLE


def test_default_starts_sit_a_quarter_of_the_half_width_outside_the_roots(
    device: torch.device,
) -> None:
    result = solve_quadratic(*on(device, 1.0, -6.0, 4.0), lr=0.01)
    report = result.per_start
    assert report is not None
    half_width = math.sqrt(5.0)
    expected = [3.0 - 1.25 * half_width, 3.0 + 1.25 * half_width]
    assert report.start.real.cpu().tolist() == pytest.approx(expected, rel=1e-15)
    pair = solve_quadratic(*on(device, 1.0, 2.0, 5.0), lr=0.01).per_start
    assert pair is not None
    assert pair.start.cpu().tolist() == pytest.approx([complex(-1, -2.5), complex(-1, 2.5)])
