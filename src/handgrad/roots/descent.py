"""Monotone descents on f(y)² with a step chosen per step: "gauss-newton" and "newton".

For f(y) = A y² + B y + C the loss and its derivative are

    L(y) = f(y)²,        L'(y) = 2 f(y) f'(y),        f'(y) = 2 A y + B,

and every step is y_{k+1} = y_k - η_k L'(y_k) with η_k > 0. No fixed η works for all equations:
near a root L''(y) = 2 f'(y)² = 2D, so a fixed step converges only for η < 1/D (see
:mod:`handgrad.roots.fixed_step`, the "gd" method), and D spans hundreds of orders of
magnitude. Normalising the step per equation and per step, η_k = 1 / (2 f'(y_k)²), is the
Gauss–Newton method for the least-squares loss f², and it makes the step exactly Newton's
f/f': quadratic convergence, linear with ratio 1/2 at a double root. That is why the method is
called "gauss-newton", not "gd" (its first name, which ``solve_quadratic`` still accepts for
it when no ``lr`` is given).

The "gauss-newton" method (:mod:`handgrad.roots.lanes`) runs two such descents per equation on
the scaled equation (x = 2^k y, see :mod:`handgrad.roots.scaling`): one to each real root from
outside it, the vertex between them as a barrier, or, for a complex pair, along the vertical
line through the vertex. :func:`monotone_descent` here runs the descents;
:func:`descend_roots` is the older layout (two real slots and a complex slot), which the
"newton" method keeps.

A start stops when its step is at most ``tol`` · |y| (default: one unit roundoff, 2^-53) or
below 2^-1060 (subnormal noise), or when f vanishes (converged), or when its iterate stops
being finite (not converged); "gauss-newton" also stops a start as soon as its step
predicts that the next one would be that small (see :func:`advance`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from handgrad.roots.problem import MethodResult, RootKind, ScaledQuadratic

StepFunction = Callable[[Tensor, tuple[Tensor, ...]], Tensor]

UNIT_ROUNDOFF = 2.0**-53
# Steps this small are subnormal noise: tol · |y| underflows there, so stop on an absolute floor.
TINY_STEP = 2.0**-1060
START_WIDENING = 1.0 + 2.0**-20


@dataclass(frozen=True)
class Slots:
    """The result of one batch of one-dimensional descents (shape (m,))."""

    y: Tensor
    iterations: Tensor
    converged: Tensor
    path: list[Tensor] | None


# What a step leaves a slot: still running, stopped at its root, stopped on a non-finite step.
RUNNING, CONVERGED, FAILED = 0, 1, 2


def advance(
    s: Tensor,
    y: Tensor,
    barrier: Tensor,
    direction: Tensor,
    *,
    tol: float,
    settle: bool,
    final: bool = True,
) -> tuple[Tensor, Tensor]:
    """One step y - s, held at the barrier: the new y and the outcome (RUNNING, CONVERGED or
    FAILED, int64).

    A slot stops, converged, when its step is at most ``tol`` · |y| or below 2^-1060 (subnormal
    noise; a zero step, where f vanishes, is below both); it fails when the new y is not
    finite (y is kept). ``settle``: it also stops when the step predicts that the next one
    would be that small. For Newton's step on a parabola the error left after a step s that
    lands at distance u from the vertex is s² / (u + δ) <= s² / u (δ: the root's distance from
    the vertex), so if s² / |y| <= tol · u the next step would be at most tol · |y|: at most an
    ulp of polish. (Not for a slot without a barrier: there the equation is linear and the
    second step polishes the rounding of the first.) ``final=False``: a rough step (its
    residual in plain floating point) stops no slot, except by failing.

    Every condition is one comparison feeding a ``where`` (see problem.prepare for why).
    """
    y_next = y - s
    y_next = torch.where(
        direction > 0, torch.maximum(y_next, barrier), torch.minimum(y_next, barrier)
    )
    finite = y_next - y_next == 0
    y_next = torch.where(finite, y_next, y)
    size = s.abs()
    outcome = torch.full_like(y, RUNNING, dtype=torch.int64)
    if not final:
        return y_next, torch.where(finite, outcome, FAILED)
    stopped = torch.full_like(y, CONVERGED, dtype=torch.int64)
    if settle:
        gap = (y_next - barrier).abs()
        settled = (size / y_next.abs()) * size <= tol * gap
        outcome = torch.where(settled, torch.where(gap < math.inf, stopped, outcome), outcome)
    small = size <= torch.maximum(tol * y_next.abs(), torch.full_like(y, TINY_STEP))
    outcome = torch.where(small, stopped, outcome)
    return y_next, torch.where(finite, outcome, FAILED)


def monotone_descent(
    step: StepFunction,
    y0: Tensor,
    params: tuple[Tensor, ...],
    barrier: Tensor,
    direction: Tensor,
    *,
    tol: float,
    max_iter: int,
    record_path: bool,
    settle: bool = False,
    rough_step: StepFunction | None = None,
    rough_steps: int = 0,
) -> Slots:
    """Run y <- y - step(y) for each slot until it stops (see :func:`advance`).

    The first ``rough_steps`` iterations use ``rough_step`` instead (a cheaper, less accurate
    step for while the slots are far from their roots), and stop no slot but a failed one.

    ``direction`` is +1 where the slot must move down (steps >= 0), -1 where it must move up;
    ``barrier`` is the point it may reach but never cross (the vertex). Slots whose start is
    not finite do not run. Each iteration works on the slots still running only.
    """
    y = y0.clone()
    iterations = torch.zeros(y0.shape, dtype=torch.int64, device=y0.device)
    converged = torch.zeros(y0.shape, dtype=torch.bool, device=y0.device)
    active = torch.nonzero(torch.isfinite(y0)).squeeze(1)
    path = [y0.clone()] if record_path else None
    # The running slots' y, parameters, barrier and direction; gathered anew only when some
    # slots stop (or never start), which is rare before the last iteration.
    running = [y0, *params, barrier, direction]
    if active.numel() < y0.numel():
        running = [t[active] for t in running]
    for iteration in range(1, max_iter + 1):
        if active.numel() == 0:
            break
        y_run, b_run, d_run = running[0], running[-2], running[-1]
        rough = rough_step if iteration <= rough_steps else None
        final = rough is None
        s = (step if rough is None else rough)(y_run, tuple(running[1:-2]))
        y_next, outcome = advance(s, y_run, b_run, d_run, tol=tol, settle=settle, final=final)
        done = outcome != RUNNING
        if path is not None:
            snapshot = torch.full_like(y0, math.nan)
            snapshot[active] = y_next
            path.append(snapshot)
        running[0] = y_next
        stopped = torch.nonzero(done).squeeze(1)
        if stopped.numel() == 0:
            continue
        finished = active[stopped]
        y[finished] = y_next[stopped]
        iterations[finished] = iteration
        converged[finished] = outcome[stopped] == CONVERGED
        if stopped.numel() == active.numel():
            running[0], active = y_next[:0], active[:0]
            break
        keep = torch.nonzero(~done).squeeze(1)
        running, active = [t[keep] for t in running], active[keep]
    y[active] = running[0]
    iterations[active] = max_iter
    return Slots(y, iterations, converged, path)


def tight_starts(vertex: Tensor, spread: Tensor) -> tuple[Tensor, Tensor]:
    """v - R and v + R with R = sqrt(v² + s²), s = sqrt|C/A| widened by 2^-20: outside both roots.

    The roots are v ± sqrt(v² - C/A), and v² - C/A <= v² + |C/A|. The start next to the root
    of smaller magnitude, |v| - R in exact arithmetic, is computed as s² / (R + |v|) so that
    it does not cancel: when the roots are far apart it lands right next to that root.
    """
    widened = spread * START_WIDENING
    radius = torch.hypot(vertex, widened)
    far = radius + vertex.abs()
    near = torch.where(far > 0, widened * (widened / torch.where(far > 0, far, 1.0)), 0.0)
    left = torch.where(vertex > 0, -near, -far)
    right = torch.where(vertex > 0, far, near)
    return left, right


def descend_roots(
    problem: ScaledQuadratic,
    real_step: StepFunction,
    imag_step: StepFunction,
    *,
    tol: float,
    max_iter: int,
    record_path: bool,
    starts: Tensor | None = None,
) -> MethodResult:
    """Roots of every equation by monotone descents (real, complex and linear; see above).

    ``starts``: optional (n, 2) real starts in the scaled variable for the real-root equations;
    by default v ± R.
    """
    kind, a, b, c = problem.kind, problem.a, problem.b, problem.c
    n = kind.shape[0]
    nan = torch.full((n,), math.nan, dtype=a.dtype, device=a.device)
    real = ((kind == RootKind.TWO_REAL) | (kind == RootKind.DOUBLE)) & ~problem.separated
    complex_pair = kind == RootKind.COMPLEX_PAIR
    linear = (kind == RootKind.LINEAR) | problem.separated
    quadratic = real | complex_pair
    safe_a = torch.where(quadratic, a, 1.0)
    vertex = torch.where(quadratic, -b / (2.0 * safe_a), 0.0)
    spread = torch.sqrt((c / safe_a).abs())

    # Real slots: column 0 from the left, column 1 from the right; linear equations use
    # column 0 only, starting at 0 and heading towards -C/B.
    if starts is None:
        left, right = tight_starts(vertex, spread)
    else:
        left, right = starts[:, 0], starts[:, 1]
    left = torch.where(real, left, torch.where(linear, 0.0, nan))
    right = torch.where(real, right, nan)
    linear_direction = torch.where(c * b > 0, 1.0, -1.0)
    direction = torch.stack(
        [torch.where(linear, linear_direction, -1.0), torch.ones_like(a)], dim=1
    ).reshape(-1)
    barrier = torch.stack(
        [torch.where(linear, -linear_direction * math.inf, vertex), vertex], dim=1
    ).reshape(-1)
    pair = torch.stack([left, right], dim=1).reshape(-1)
    params = tuple(t.repeat_interleave(2) for t in (a, b, c))
    real_slots = monotone_descent(
        real_step,
        pair,
        params,
        barrier,
        direction,
        tol=tol,
        max_iter=max_iter,
        record_path=record_path,
    )

    # Complex slots: w from sqrt|C/A| down to the imaginary part m.
    w0 = torch.where(complex_pair, spread * START_WIDENING, nan)
    imag_slots = monotone_descent(
        imag_step,
        w0,
        (safe_a, problem.disc_hi, problem.disc_lo),
        torch.zeros_like(a),
        torch.ones_like(a),
        tol=tol,
        max_iter=max_iter,
        record_path=record_path,
    )

    def combine(real_y: Tensor, w: Tensor) -> Tensor:
        from_real = torch.complex(real_y.reshape(n, 2), torch.zeros_like(real_y).reshape(n, 2))
        from_imag = torch.complex(torch.stack([vertex, vertex], dim=1), torch.stack([-w, w], dim=1))
        return torch.where(complex_pair[:, None], from_imag, from_real)

    real_iterations = real_slots.iterations.reshape(n, 2).amax(dim=1)
    iterations = torch.where(complex_pair, imag_slots.iterations, real_iterations)
    real_converged = real_slots.converged.reshape(n, 2)
    real_converged = real_converged[:, 0] & (real_converged[:, 1] | linear)
    converged = torch.where(complex_pair, imag_slots.converged, real_converged)
    converged = converged | (kind == RootKind.NO_SOLUTION) | (kind == RootKind.ANY_X)
    path = None
    if real_slots.path is not None and imag_slots.path is not None:
        steps = max(len(real_slots.path), len(imag_slots.path))
        blank_real = torch.full_like(real_slots.path[-1], math.nan)
        blank_imag = torch.full_like(nan, math.nan)
        path = []
        for i in range(steps):
            r = real_slots.path[i] if i < len(real_slots.path) else blank_real
            w = imag_slots.path[i] if i < len(imag_slots.path) else blank_imag
            path.append(combine(r, w))
    roots = combine(real_slots.y, imag_slots.y)
    return MethodResult(roots, iterations, converged, scaled=True, path=path)
