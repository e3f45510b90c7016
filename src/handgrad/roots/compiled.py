"""The "gd" method through torch.compile: the same arithmetic, fused into a few loops.

Eager torch runs every elementwise operation as its own pass over memory, and the descent has
hundreds of them (error-free products are 17 operations each). torch.compile fuses them: one
compiled function prepares the problem and the starts, one takes a step of every descent at
once (running descents masked, stopped ones frozen), one assembles and orders the roots. After
``fused_steps`` steps the few descents still running continue eagerly on just their rows.

Each element goes through exactly the operations of the eager path, and the compiled kernels
keep IEEE semantics (inductor compiles with -ffp-contract=off and without unsafe math), so the
result is bitwise the same as ``solve_quadratic(a, b, c)`` — which the tests check. Needs a
working C++ compiler; the first call per device and shape compiles (tens of seconds).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from handgrad.roots.descent import (
    START_WIDENING,
    TINY_STEP,
    UNIT_ROUNDOFF,
    gauss_newton_imag_step,
    gauss_newton_real_step,
    monotone_descent,
    tight_starts,
)
from handgrad.roots.finish import finish_roots
from handgrad.roots.problem import RootKind, ScaledQuadratic, prepare
from handgrad.roots.quadratic import QuadraticRoots

State = tuple[Tensor, ...]


def _start(a: Tensor, b: Tensor, c: Tensor) -> State:
    """The prepared problem and the starts, barriers and directions of every descent.

    Real slots are (2, n): row 0 from the left (or a linear equation's single descent), row 1
    from the right (slot-major, so that the kernels vectorize along the equations); the complex
    slot w is (n,). As in descent.descend_roots.
    """
    p = prepare(a, b, c)
    kind = p.kind
    real = ((kind == int(RootKind.TWO_REAL)) | (kind == int(RootKind.DOUBLE))) & ~p.separated
    complex_pair = kind == int(RootKind.COMPLEX_PAIR)
    linear = (kind == int(RootKind.LINEAR)) | p.separated
    quadratic = real | complex_pair
    safe_a = torch.where(quadratic, p.a, 1.0)
    vertex = torch.where(quadratic, -p.b / (2.0 * safe_a), 0.0)
    spread = torch.sqrt((p.c / safe_a).abs())
    left, right = tight_starts(vertex, spread)
    left = torch.where(real, left, torch.where(linear, 0.0, math.nan))
    right = torch.where(real, right, math.nan)
    linear_direction = torch.where(p.c * p.b > 0, 1.0, -1.0)
    y = torch.stack([left, right], dim=0)
    direction = torch.stack([torch.where(linear, linear_direction, -1.0), torch.ones_like(p.a)], 0)
    barrier = torch.stack([torch.where(linear, -linear_direction * math.inf, vertex), vertex], 0)
    w = torch.where(complex_pair, spread * START_WIDENING, math.nan)
    return (
        p.a,
        p.b,
        p.c,
        p.k,
        p.disc_hi,
        p.disc_lo,
        kind,
        p.separated,
        safe_a,
        y,
        direction,
        barrier,
        w,
    )


def _masked(
    s: Tensor, y: Tensor, barrier: Tensor, direction: Tensor, active: Tensor, tol: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of monotone_descent for the running slots: new y, stopped, stopped converged."""
    y_next = y - s
    y_next = torch.where(
        direction > 0, torch.maximum(y_next, barrier), torch.minimum(y_next, barrier)
    )
    failed = ~torch.isfinite(y_next)
    y_next = torch.where(failed, y, y_next)
    small = (s.abs() <= tol * y_next.abs()) | (s.abs() <= TINY_STEP)
    done = failed | small | (s == 0)
    return torch.where(active, y_next, y), active & done, active & done & ~failed


def _step(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    safe_a: Tensor,
    disc_hi: Tensor,
    disc_lo: Tensor,
    y: Tensor,
    barrier: Tensor,
    direction: Tensor,
    w: Tensor,
    active_y: Tensor,
    active_w: Tensor,
    iterations_y: Tensor,
    iterations_w: Tensor,
    converged_y: Tensor,
    converged_w: Tensor,
    tol: float,
) -> State:
    """One step of every descent still running (real slots and complex slots)."""
    s = gauss_newton_real_step(y, (a[None, :], b[None, :], c[None, :]))
    y, stopped_y, good_y = _masked(s, y, barrier, direction, active_y, tol)
    s_w = gauss_newton_imag_step(w, (safe_a, disc_hi, disc_lo))
    w, stopped_w, good_w = _masked(s_w, w, torch.zeros_like(w), torch.ones_like(w), active_w, tol)
    return (
        y,
        w,
        active_y & ~stopped_y,
        active_w & ~stopped_w,
        iterations_y + active_y.long(),
        iterations_w + active_w.long(),
        converged_y | good_y,
        converged_w | good_w,
    )


def _assemble(
    problem_parts: State, y: Tensor, w: Tensor, a: Tensor, b: Tensor, c: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Roots (re, im) in x, ordered, and residuals: descend_roots' combine, then finish."""
    problem = ScaledQuadratic(*problem_parts)
    complex_pair = (problem.kind == int(RootKind.COMPLEX_PAIR))[None, :]
    vertex = -problem.b / (2.0 * torch.where(problem.a == 0, 1.0, problem.a))
    re = torch.where(complex_pair, vertex[None, :], y)
    im = torch.where(complex_pair, torch.stack([-w, w], dim=0), 0.0)
    return finish_roots(problem, re, im, True, a, b, c)


_compiled: dict[str, Any] = {}


def _compile(name: str, function: Any) -> Any:
    if name not in _compiled:
        _compiled[name] = torch.compile(function, dynamic=False, fullgraph=True)
    return _compiled[name]


def solve_gd_compiled(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    *,
    tol: float | None = None,
    max_iter: int = 100,
    fused_steps: int = 7,
) -> QuadraticRoots:
    """``solve_quadratic(a, b, c)`` (method "gd") for flat float64 tensors, compiled.

    Returns the same result, bitwise. ``fused_steps``: steps taken by the compiled step for
    every equation before the stragglers continue eagerly on their own rows.
    """
    if not (a.dtype == b.dtype == c.dtype == torch.float64) or a.dim() != 1:
        raise ValueError("solve_gd_compiled takes flat float64 tensors a, b, c of one shape")
    tol = UNIT_ROUNDOFF if tol is None else tol
    (
        big_a,
        big_b,
        big_c,
        k,
        disc_hi,
        disc_lo,
        kind,
        separated,
        safe_a,
        y,
        direction,
        barrier,
        w,
    ) = _compile("start", _start)(a, b, c)
    active_y, active_w = torch.isfinite(y), torch.isfinite(w)
    iterations_y = torch.zeros(y.shape, dtype=torch.int64, device=y.device)
    iterations_w = torch.zeros(w.shape, dtype=torch.int64, device=w.device)
    converged_y, converged_w = torch.zeros_like(active_y), torch.zeros_like(active_w)
    step = _compile("step", _step)
    for _ in range(min(fused_steps, max_iter)):
        (y, w, active_y, active_w, iterations_y, iterations_w, converged_y, converged_w) = step(
            big_a,
            big_b,
            big_c,
            safe_a,
            disc_hi,
            disc_lo,
            y,
            barrier,
            direction,
            w,
            active_y,
            active_w,
            iterations_y,
            iterations_w,
            converged_y,
            converged_w,
            tol,
        )
    remaining = max_iter - min(fused_steps, max_iter)
    if remaining > 0 and bool(active_y.any()):
        rows, columns = torch.nonzero(active_y, as_tuple=True)
        params = tuple(t[columns] for t in (big_a, big_b, big_c))
        rest = monotone_descent(
            gauss_newton_real_step,
            y[rows, columns],
            params,
            barrier[rows, columns],
            direction[rows, columns],
            tol=tol,
            max_iter=remaining,
            record_path=False,
        )
        y = y.index_put((rows, columns), rest.y)
        iterations_y = iterations_y.index_put((rows, columns), rest.iterations, accumulate=True)
        converged_y = converged_y.index_put((rows, columns), rest.converged)
    if remaining > 0 and bool(active_w.any()):
        rows = torch.nonzero(active_w).squeeze(1)
        rest = monotone_descent(
            gauss_newton_imag_step,
            w[rows],
            (safe_a[rows], disc_hi[rows], disc_lo[rows]),
            torch.zeros_like(rows, dtype=w.dtype),
            torch.ones_like(rows, dtype=w.dtype),
            tol=tol,
            max_iter=remaining,
            record_path=False,
        )
        w = w.index_put((rows,), rest.y)
        iterations_w = iterations_w.index_put((rows,), rest.iterations, accumulate=True)
        converged_w = converged_w.index_put((rows,), rest.converged)
    problem_parts = (big_a, big_b, big_c, k, disc_hi, disc_lo, kind, separated)
    re, im, residual = _compile("assemble", _assemble)(problem_parts, y, w, a, b, c)
    complex_pair = kind == int(RootKind.COMPLEX_PAIR)
    linear = (kind == int(RootKind.LINEAR)) | separated
    iterations = torch.where(complex_pair, iterations_w, iterations_y.amax(dim=0))
    converged = torch.where(complex_pair, converged_w, converged_y[0] & (converged_y[1] | linear))
    converged = converged | (kind == int(RootKind.NO_SOLUTION)) | (kind == int(RootKind.ANY_X))
    return QuadraticRoots(
        roots=torch.complex(re, im).T.contiguous(),
        kind=kind,
        iterations=iterations,
        converged=converged,
        residual=residual.T.contiguous(),
        method="gd",
        coefficients=(a, b, c),
    )
