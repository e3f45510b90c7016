"""The one test of the compiled path: error-free arithmetic survives torch.compile bit for bit.

Inductor could break two_sum/two_prod by reassociating or contracting a*b+c into an fma; it
compiles with -ffp-contract=off and without unsafe math, and this checks the outcome, and that
a lane step (its where-chains and stopping outcome) compiles to the eager bits too. The whole
compiled solver (handgrad.roots.compiled) is compared with the eager one, bitwise, by
benchmarks/bench_roots.py, where its compile time is paid once.
"""

from __future__ import annotations

import functools
import math
import shutil
from fractions import Fraction

import pytest
import torch

from handgrad.roots import solve_quadratic
from handgrad.roots.descent import CONVERGED, FAILED, RUNNING, advance
from handgrad.roots.exact import discriminant, two_prod, two_sum
from handgrad.roots.lanes import ROUGH_STEPS, descent_step, rough_descent_step
from handgrad.roots.scaling import exponent, ldexp


def error_free_kernels(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    s, e = two_sum(a, b)
    p, q = two_prod(a, b)
    hi, lo, sign = discriminant(a, b, c)
    # One lane step as the fused solver takes it: compensated Horner (with a low part of c),
    # the normalised step, the barrier and the stopping outcome.
    step = descent_step(b, (a, b, c, lo))
    barrier = torch.where(sign > 0, hi, math.inf)  # an infinite barrier: a linear lane
    moved, outcome = advance(step, b, barrier, sign, tol=2.0**-53, settle=True)
    rough = rough_descent_step(b, (a, b, c, lo))  # plain Horner: an fma would change it
    return (
        step,
        moved,
        outcome,
        rough,
        s,
        e,
        p,
        q,
        hi,
        lo,
        sign,
        exponent(a),
        ldexp(a, -exponent(a)),
    )


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compiled_error_free_arithmetic_is_bitwise_eager() -> None:
    generator = torch.Generator().manual_seed(3)
    n = 4096
    mantissas = torch.rand(3, n, dtype=torch.float64, generator=generator) + 0.5
    exponents = torch.randint(-60, 60, (3, n), generator=generator)
    signs = torch.where(torch.rand(3, n, generator=generator) < 0.5, -1.0, 1.0)
    a, b, c = signs * torch.ldexp(mantissas, exponents.double())
    # Near-double-root rows, where the error terms decide the sign of the discriminant.
    c[:8] = b[:8] * b[:8] / (4 * a[:8])
    b[8:12] = torch.tensor([0.0, math.nan, math.inf, 2.0**-1070])  # zero, failed, tiny steps
    compiled = torch.compile(error_free_kernels, dynamic=False, fullgraph=True)
    eager = error_free_kernels(a, b, c)
    for eager_value, compiled_value in zip(eager, compiled(a, b, c), strict=True):
        torch.testing.assert_close(compiled_value, eager_value, rtol=0, atol=0, equal_nan=True)
    assert set(eager[2].tolist()) == {RUNNING, CONVERGED, FAILED}  # every stopping outcome
    s, e, p, q = (t[:20].tolist() for t in compiled(a, b, c)[4:8])
    for i in (*range(8), *range(12, 20)):  # finite rows
        x, y = Fraction(float(a[i])), Fraction(float(b[i]))
        assert Fraction(s[i]) + Fraction(e[i]) == x + y
        assert Fraction(p[i]) + Fraction(q[i]) == x * y


def test_compiled_driver_matches_eager_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    """solve_gauss_newton_compiled's fused function and straggler re-solve, with torch.compile
    replaced by the identity (so this runs eagerly): bitwise the eager solver, every field."""
    from handgrad.roots import compiled

    monkeypatch.setattr(
        compiled, "_compile", lambda tol, steps: functools.partial(compiled._solve, tol, steps)
    )
    generator = torch.Generator().manual_seed(5)
    n = 700
    a, b, c = torch.randn(3, n, dtype=torch.float64, generator=generator)
    a[:4], b[:4], c[:4] = (
        0.0,
        torch.tensor([2.0, 0.0, 0.0, math.inf]),
        torch.tensor([1.0, 1.0, 0.0, 1.0]),
    )
    c[4:8] = b[4:8] * b[4:8] / (4 * a[4:8])  # near-double roots: the slowest descents
    b[8], c[8] = 2.0 * a[8], a[8]  # an exact double root
    eager = solve_quadratic(a, b, c)
    # No fused step leaves every lane running (the straggler path does all the work); the
    # default leaves the near-double ones; a hundred none.
    for fused_steps in (0, compiled.FUSED_STEPS, 100):
        got = compiled.solve_gauss_newton_compiled(a, b, c, fused_steps=fused_steps)
        assert got.roots.shape == (n, 2)
        assert got.roots.dtype == torch.complex128
        for field in ("roots", "kind", "iterations", "converged", "residual"):
            exact = {"rtol": 0.0, "atol": 0.0, "equal_nan": True}
            torch.testing.assert_close(getattr(got, field), getattr(eager, field), **exact)
    assert int(eager.iterations[8]) > 2
    assert int(eager.iterations[0]) == ROUGH_STEPS + 1  # linear: lands, then one polish
    assert bool(eager.converged[4:].all())
    assert bool((eager.iterations[8:] >= 1).all())


def test_the_first_name_of_the_compiled_solver_still_works() -> None:
    from handgrad.roots import compiled

    assert compiled.solve_gd_compiled is compiled.solve_gauss_newton_compiled
    with pytest.raises(ValueError, match="max_iter must be an integer from 1"):
        compiled.solve_gauss_newton_compiled(*torch.ones(3, 4, dtype=torch.float64), max_iter=0)
