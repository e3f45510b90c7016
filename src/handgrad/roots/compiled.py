"""The "gauss-newton" method through torch.compile: the whole solver fused into one loop.

Eager torch runs every elementwise operation as its own pass over memory, and the solver has
hundreds of them (error-free products are 17 operations each). Here one compiled function
takes each equation from its coefficients to its answer: classification and scaling, the starts
of both lanes from their root bounds (:mod:`handgrad.roots.lanes`), ``fused_steps`` steps of
both descents (a stopped lane frozen by a ``where``; the first ``ROUGH_STEPS`` with the plain
residual, as in the eager solver), the roots back in x, ordered, with their residuals. Inductor
fuses all of it into one vectorized loop over the equations, which reads a, b, c once and
writes the answer once. A fused step costs as much for a stopped lane as for a running one,
so their number is a trade: the few equations with a lane still running after them are solved
again, from their start, by the eager solver.

Conditions in the shared code are single comparisons feeding ``where`` (never ``&``/``|`` of
float comparisons): inductor's AVX-512 code converts such boolean masks through memory, which
made the fused loop ten times slower.

Each element goes through exactly the operations of the eager path, and the compiled kernel
keeps IEEE semantics (inductor compiles with -ffp-contract=off and without unsafe math), so the
result is bitwise the same as ``solve_quadratic(a, b, c)`` — which the tests check. Needs a
working C++ compiler; the first call per device compiles (over a minute on a shared 2-core
machine: the fused steps make one large C++ kernel); any batch size then reuses that
compilation (dynamic shapes).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from handgrad.roots.descent import CONVERGED, RUNNING, UNIT_ROUNDOFF, advance
from handgrad.roots.finish import finish_roots
from handgrad.roots.lanes import (
    ROUGH_STEPS,
    descent_step,
    lane_roots,
    lane_values,
    rough_descent_step,
    setup_lanes,
)
from handgrad.roots.problem import RootKind, prepare
from handgrad.roots.quadratic import (
    QuadraticRoots,
    check_max_iter,
    check_positive,
    solve_quadratic,
)

Outputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


# Steps fused into the compiled loop. From the bound starts a standard-normal equation takes
# 3.7 steps on average (its lanes cannot stop during the ROUGH_STEPS plain ones); K fused steps
# leave P(steps > K) of the equations to the eager solver: 7 % for 5, 2 % for 6, 0.5 % for 7,
# 0.1 % for 8. Measured on 1e6 equations (2 shared cores): the fused loop took about the same
# for K = 6 to 10 (54 to 70 ms, within the noise), the eager re-solve of the stragglers 20 ms
# at K = 6 and 10 ms at K = 8 (mostly its fixed cost per operation, whatever their number).
FUSED_STEPS = 8

# A lane that never ran (no root on its side, or no equation).
IDLE = 3


def _solve(tol: float, steps: int, a: Tensor, b: Tensor, c: Tensor) -> Outputs:
    """Flat coefficients to: roots (n, 4) as re₁, im₁, re₂, im₂; residuals (n, 2);
    iterations; converged; ``unfinished`` (a lane still running after ``steps`` steps); kind.

    Each lane's state is its t and an int64 status (RUNNING, CONVERGED, FAILED or IDLE):
    a stopped lane keeps both, as in monotone_descent.
    """
    problem = prepare(a, b, c)
    lanes = setup_lanes(problem)
    re, im, values, iterations, status = [], [], [], [], []
    for lane in (0, 1):
        t = lanes.starts[lane]
        state = torch.where(t - t == 0, RUNNING, IDLE)  # NaN start: idle
        taken = torch.zeros_like(state)
        for step in range(1, steps + 1):
            running = state == RUNNING
            final = step > ROUGH_STEPS
            s = (descent_step if final else rough_descent_step)(t, lanes.polynomial)
            t_next, outcome = advance(
                s,
                t,
                lanes.barriers[lane],
                lanes.directions[lane],
                tol=tol,
                settle=True,
                final=final,
            )
            t = torch.where(running, t_next, t)
            state = torch.where(running, outcome, state)
            taken = taken + torch.where(running, 1, 0)
        lane_re, lane_im = lane_roots(lanes, t)
        re.append(lane_re)
        im.append(lane_im)
        values.append(lane_values(lanes, t))
        iterations.append(taken)
        status.append(state)
    (re1, re2), (im1, im2), residual = finish_roots(
        problem, (re[0], re[1]), (im[0], im[1]), True, a, b, c, (values[0], values[1])
    )
    kind = problem.kind
    second = torch.where(lanes.linear, CONVERGED, status[1])  # a linear equation has one lane
    done = torch.where(status[0] == CONVERGED, second == CONVERGED, False)
    no_roots_to_find = (kind == int(RootKind.NO_SOLUTION)) | (kind == int(RootKind.ANY_X))
    return (
        torch.stack([re1, im1, re2, im2], dim=1),
        torch.stack(residual, dim=1),
        torch.maximum(iterations[0], iterations[1]),
        done | no_roots_to_find,
        (status[0] == RUNNING) | (status[1] == RUNNING),
        kind,
    )


_compiled: dict[tuple[float, int], Any] = {}


def _compile(tol: float, steps: int) -> Any:
    """The compiled solver for one tolerance and number of fused steps (cached)."""
    key = (tol, steps)
    if key not in _compiled:
        function = functools.partial(_solve, tol, steps)
        # Inductor stops fusing at 64 nodes per kernel by default, which splits the solver
        # into several loops with their intermediates stored between them.
        options: dict[str, Any] = {"max_fusion_size": 1 << 16}
        _compiled[key] = torch.compile(function, dynamic=True, fullgraph=True, options=options)
    return _compiled[key]


def solve_gauss_newton_compiled(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    *,
    tol: float | None = None,
    max_iter: int = 100,
    fused_steps: int = FUSED_STEPS,
) -> QuadraticRoots:
    """``solve_quadratic(a, b, c)`` (method "gauss-newton") for flat float64 tensors, compiled.

    Returns the same result, bitwise. Every lane takes ``fused_steps`` steps inside the compiled
    loop; the equations with a lane still running after that are solved again, from their
    start, by the eager solver, whose arithmetic is the same (so are their results). The
    default, FUSED_STEPS, was measured fastest on standard-normal coefficients (see the
    constant).
    """
    if not (a.dtype == b.dtype == c.dtype == torch.float64) or a.dim() != 1:
        raise ValueError(
            "solve_gauss_newton_compiled takes flat float64 tensors a, b, c of one shape"
        )
    if not a.shape == b.shape == c.shape:
        raise ValueError(f"a, b, c must have one shape; got {a.shape}, {b.shape}, {c.shape}")
    check_positive("tol", tol)
    check_max_iter(max_iter)
    tol = UNIT_ROUNDOFF if tol is None else tol
    if a.shape[0] < 2:  # dynamic shapes specialise sizes 0 and 1: not worth a compilation
        return solve_quadratic(a, b, c, tol=tol, max_iter=max_iter)
    solve = _compile(tol, min(fused_steps, max_iter))
    roots, residual, iterations, converged, unfinished, kind = solve(a, b, c)
    rows = torch.nonzero(unfinished).squeeze(1)
    roots = roots.view(-1, 2, 2)
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
        method="gauss-newton",
        coefficients=(a, b, c),
    )


# Its first name, from when the method was called "gd" (see handgrad.roots.descent).
solve_gd_compiled = solve_gauss_newton_compiled
