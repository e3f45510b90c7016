"""The classroom's questions, answered with numbers: how many fixed-lr steps, and when it fails.

Gradient descent with a fixed learning rate on L(x) = f(x)² converges to a root r only if
lr < 1/D (near r, L''(r) = 2 f'(r)² = 2D, and x_{k+1} - r ≈ (1 - 2 lr D)(x_k - r)); it is
fastest at lr = 1/2D, and from a start far away the cubic growth of L' can throw it off even
below 1/D. :func:`sweep_learning_rates` and :func:`sweep_starts` run the fixed-step descent of
:func:`handgrad.roots.solve_quadratic` for many learning rates or starts at once (one batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from handgrad.roots.descent import default_starts, fixed_step
from handgrad.roots.problem import RootKind, prepare

# Learning rates as multiples of 1/D: both sides of the 1/2D optimum and of the 1/D limit.
LR_MULTIPLES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.01, 1.1, 1.5, 2.0)


@dataclass(frozen=True)
class SweepPoint:
    """One fixed-step descent: its learning rate and start, steps taken and where it ended."""

    lr: float
    start: complex
    steps: int
    converged: bool
    root: complex  # NaN when it did not converge
    max_iter: int

    @property
    def outcome(self) -> str:
        """'converged', 'diverged' (left the finite numbers) or 'stalled' (max_iter steps
        without converging: too slow, or trapped in a cycle)."""
        if self.converged:
            return "converged"
        return "stalled" if self.steps >= self.max_iter else "diverged"


def discriminant_value(a: float, b: float, c: float) -> float:
    """b² - 4ac in float64 (for choosing learning rates; inf if it overflows)."""
    return b * b - 4.0 * a * c


def default_learning_rates(a: float, b: float, c: float) -> list[float]:
    """LR_MULTIPLES / |D|, or a decade grid 1e-4 .. 1 when D is 0 or not finite."""
    d = abs(discriminant_value(a, b, c))
    if d == 0 or not math.isfinite(d):
        return [10.0**e for e in range(-4, 1)]
    return [m / d for m in LR_MULTIPLES]


def default_start_grid(a: float, b: float, c: float, count: int = 12) -> list[float]:
    """Starts spread over v ± 3R (v the vertex, R = |v| + sqrt|c/a|), the vertex excluded."""
    if a == 0:
        centre, radius = (-c / b if b != 0 else 0.0), 1.0 + abs(c / b if b != 0 else 0.0)
    else:
        centre = -b / (2 * a)
        radius = abs(centre) + math.sqrt(abs(c / a))
    radius = radius or 1.0
    offsets = [3 * radius * (2 * i / (count - 1) - 1) for i in range(count)]
    return [centre + offset for offset in offsets if offset != 0]


def _run(
    a: float, b: float, c: float, lrs: list[float], starts: list[complex], max_iter: int, tol: float
) -> list[SweepPoint]:
    """One batch: equation i starts at starts[i] with lrs[i] (its second slot unused)."""
    n = len(lrs)
    ta, tb, tc = (torch.full((n,), v, dtype=torch.float64) for v in (a, b, c))
    nan = complex(math.nan, math.nan)
    pairs = torch.tensor([[z, nan] for z in starts], dtype=torch.complex128).reshape(n, 2)
    lr = torch.tensor(lrs, dtype=torch.float64)[:, None]
    result = fixed_step(
        ta,
        tb,
        tc,
        pairs,
        lr=lr,
        optimizer=None,
        tol=tol,
        max_iter=max_iter,
        record_path=False,
    )
    return [
        SweepPoint(
            lrs[i],
            starts[i],
            int(result.iterations[i]),
            bool(result.converged[i]),
            complex(result.roots[i, 0]),
            max_iter,
        )
        for i in range(n)
    ]


def _check_equation(a: float, b: float, c: float) -> None:
    kind = RootKind(int(prepare(*(torch.tensor([v], dtype=torch.float64) for v in (a, b, c))).kind))
    if kind in (RootKind.NO_SOLUTION, RootKind.ANY_X, RootKind.INVALID):
        raise ValueError(
            f"the equation {a}x² + {b}x + {c} = 0 has no root to descend to ({kind.name})"
        )


def sweep_learning_rates(
    a: float,
    b: float,
    c: float,
    lrs: Sequence[float] | None = None,
    *,
    x0: tuple[float, float] | None = None,
    max_iter: int = 2_000,
    tol: float = 1e-12,
) -> list[SweepPoint]:
    """For each learning rate, the fixed-step descent from both starts (x0, or the defaults)."""
    _check_equation(a, b, c)
    rates = list(lrs) if lrs is not None else default_learning_rates(a, b, c)
    if x0 is None:
        problem = prepare(*(torch.tensor([v], dtype=torch.float64) for v in (a, b, c)))
        pair = [complex(z) for z in default_starts(problem)[0].tolist()]
    else:
        pair = [complex(x0[0]), complex(x0[1])]
    pair = [z for z in pair if not math.isnan(z.real)]
    flat_lrs = [lr for lr in rates for _ in pair]
    flat_starts = [z for _ in rates for z in pair]
    return _run(a, b, c, flat_lrs, flat_starts, max_iter, tol)


def sweep_starts(
    a: float,
    b: float,
    c: float,
    lr: float,
    starts: Sequence[float] | None = None,
    *,
    max_iter: int = 2_000,
    tol: float = 1e-12,
) -> list[SweepPoint]:
    """For each start, the fixed-step descent with one learning rate."""
    _check_equation(a, b, c)
    points = list(starts) if starts is not None else default_start_grid(a, b, c)
    return _run(a, b, c, [lr] * len(points), [complex(x) for x in points], max_iter, tol)
