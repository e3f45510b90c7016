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

import functools
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
    tight_starts,
)
from handgrad.roots.finish import finish_roots
from handgrad.roots.problem import RootKind, ScaledQuadratic, prepare
from handgrad.roots.quadratic import QuadraticRoots, solve_quadratic

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


def _begin(a: Tensor, b: Tensor, c: Tensor) -> State:
    """_start, and the bookkeeping of the descents: running, steps taken, converged."""
    start = _start(a, b, c)
    y, w = start[9], start[12]
    active_y, active_w = torch.isfinite(y), torch.isfinite(w)
    iterations_y = torch.zeros(y.shape, dtype=torch.int64, device=y.device)
    iterations_w = torch.zeros(w.shape, dtype=torch.int64, device=w.device)
    converged_y, converged_w = torch.zeros_like(active_y), torch.zeros_like(active_w)
    return (*start, active_y, active_w, iterations_y, iterations_w, converged_y, converged_w)


def _end(state: State, a: Tensor, b: Tensor, c: Tensor) -> State:
    """Roots as (n, 2, 2) (root, re/im), residuals (n, 2), iterations, converged, and
    ``unfinished``: the equations with a descent still running; and the kinds."""
    problem_parts, (y, _, _, w) = state[:8], state[9:13]
    active_y, active_w, iterations_y, iterations_w, converged_y, converged_w = state[13:]
    kind, separated = problem_parts[6], problem_parts[7]
    re, im, residual = _assemble(problem_parts, y, w, a, b, c)
    complex_pair = kind == int(RootKind.COMPLEX_PAIR)
    linear = (kind == int(RootKind.LINEAR)) | separated
    iterations = torch.where(complex_pair, iterations_w, iterations_y.amax(dim=0))
    converged = torch.where(complex_pair, converged_w, converged_y[0] & (converged_y[1] | linear))
    converged = converged | (kind == int(RootKind.NO_SOLUTION)) | (kind == int(RootKind.ANY_X))
    unfinished = active_y[0] | active_y[1] | active_w
    roots = torch.stack([re.T, im.T], dim=2)
    return roots, residual.T, iterations, converged, unfinished, kind


_compiled: dict[str, Any] = {}


def _compile(name: str, function: Any) -> Any:
    if name not in _compiled:
        _compiled[name] = torch.compile(function, dynamic=False, fullgraph=True)
    return _compiled[name]


def _solve_block(tol: float, steps: int, a: Tensor, b: Tensor, c: Tensor) -> State:
    """One block of equations from coefficients to answer (see _end) after ``steps`` steps of
    every descent. Three compiled graphs (one big graph of all steps compiles for too long);
    a block's state stays in the CPU's cache between them."""
    state = _compile("begin", _begin)(a, b, c)
    big_a, big_b, big_c, _, disc_hi, disc_lo, _, _, safe_a, y, direction, barrier, w = state[:13]
    running = state[13:]
    step = _compile("step", _step)
    for _ in range(steps):
        y, w, *running = step(
            big_a, big_b, big_c, safe_a, disc_hi, disc_lo, y, barrier, direction, w, *running, tol
        )
    return _compile("end", _end)((*state[:9], y, direction, barrier, w, *running), a, b, c)


BLOCK = 1 << 16


def solve_gd_compiled(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    *,
    tol: float | None = None,
    max_iter: int = 100,
    fused_steps: int = 6,
) -> QuadraticRoots:
    """``solve_quadratic(a, b, c)`` (method "gd") for flat float64 tensors, compiled.

    Returns the same result, bitwise. The equations go through one compiled graph in blocks of
    ``BLOCK`` (the last one padded with x² - 1 = 0), so every batch size shares one compiled
    shape; each block takes ``fused_steps`` steps of every descent inside the graph. The few
    equations whose descent is still running after that are solved again, from their start,
    by the eager solver, whose arithmetic is the same (so are their results). Six fused steps
    measured fastest on standard-normal coefficients (mean 4.2 steps; 7 % still running
    after 6, 0.5 % after 8): a fused step costs as much for a stopped descent as for a running
    one, so more of them only pays while most descents still run.
    """
    if not (a.dtype == b.dtype == c.dtype == torch.float64) or a.dim() != 1:
        raise ValueError("solve_gd_compiled takes flat float64 tensors a, b, c of one shape")
    tol = UNIT_ROUNDOFF if tol is None else tol
    fused = min(fused_steps, max_iter)
    block = functools.partial(_solve_block, tol, fused)
    n = a.shape[0]
    padded = -(-n // BLOCK) * BLOCK
    roots = torch.empty((padded, 2, 2), dtype=a.dtype, device=a.device)
    residual = torch.empty((padded, 2), dtype=a.dtype, device=a.device)
    iterations = torch.empty((padded,), dtype=torch.int64, device=a.device)
    converged = torch.empty((padded,), dtype=torch.bool, device=a.device)
    unfinished = torch.empty((padded,), dtype=torch.bool, device=a.device)
    kind = torch.empty((padded,), dtype=torch.int64, device=a.device)
    outputs = (roots, residual, iterations, converged, unfinished, kind)
    for start in range(0, padded, BLOCK):
        stop = min(start + BLOCK, n)
        parts = [a[start:stop], b[start:stop], c[start:stop]]
        if stop - start < BLOCK:
            fill = BLOCK - (stop - start)
            parts = [
                torch.cat([t, torch.full((fill,), value, dtype=t.dtype, device=t.device)])
                for t, value in zip(parts, (1.0, 0.0, -1.0), strict=True)
            ]
        for out, value in zip(outputs, block(*parts), strict=True):
            out[start : start + BLOCK] = value
    roots, residual, iterations, converged, unfinished, kind = (t[:n] for t in outputs)
    rows = torch.nonzero(unfinished).squeeze(1)
    if rows.numel() > 0:
        rest = solve_quadratic(a[rows], b[rows], c[rows], tol=tol, max_iter=max_iter)
        roots[rows] = torch.view_as_real(rest.roots)
        residual[rows] = rest.residual
        iterations[rows] = rest.iterations
        converged[rows] = rest.converged
    return QuadraticRoots(
        roots=torch.view_as_complex(roots),
        kind=kind,
        iterations=iterations,
        converged=converged,
        residual=residual,
        method="gd",
        coefficients=(a, b, c),
    )
