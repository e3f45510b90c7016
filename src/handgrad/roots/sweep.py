"""The classroom's questions, answered with numbers: how many fixed-lr steps, and when it fails.

Gradient descent with a fixed learning rate on L(x) = f(x)² converges near a root x* exactly
for 0 < lr < 1/f'(x*)² = 1/|D| (D = b² - 4ac; near x* the error is multiplied by
1 - 2 lr f'(x*)² per step), fastest at lr = 1/2|D|; from a start far away the cubic growth of
L' can throw it off even below 1/|D| (see :mod:`handgrad.roots.fixed_step`).
:func:`sweep_learning_rates` and :func:`sweep_starts` run the fixed-step descent for many
learning rates or starts at once (one batch); each run ends with a
:class:`~handgrad.roots.StartOutcome`. :func:`summarize` reads the facts a table of them shows
(which rates converged from every start, which was fastest), so that what is said about a
sweep is what the sweep found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from handgrad.roots.fixed_step import (
    StartOutcome,
    default_starts,
    describe_outcome,
    fixed_step,
    outcome_label,
)
from handgrad.roots.problem import RootKind, prepare
from handgrad.roots.quadratic import (
    check_max_iter,
    check_positive,
    solve_quadratic,
    stability_limit,
)

# Learning rates as multiples of 1/|D|: both sides of the 1/2|D| optimum and of the 1/|D| limit.
LR_MULTIPLES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.01, 1.1, 1.5, 2.0)


@dataclass(frozen=True)
class SweepPoint:
    """One fixed-step descent: its learning rate and start, and how it ended.

    ``steps``: the step at which it stopped (see :class:`~handgrad.roots.StartReport`);
    ``final``: where; ``root``: the root it converged to (NaN otherwise); ``which``: 0 for
    x1, 1 for x2, -1 if it did not converge; ``period``: a cycle's period (else 0).
    """

    lr: float
    start: complex
    steps: int
    outcome: StartOutcome
    final: complex
    period: int
    which: int
    max_iter: int

    @property
    def converged(self) -> bool:
        """Whether this run converged."""
        return self.outcome == StartOutcome.CONVERGED

    @property
    def root(self) -> complex:
        """The root it converged to; NaN if it did not converge."""
        return self.final if self.converged else complex(math.nan, math.nan)

    def describe(self) -> str:
        """The outcome in words ('diverged at step 7 (x = -3.1e+94)')."""
        return describe_outcome(
            self.outcome, self.steps, self.final, self.period, self.which, self.max_iter
        )

    def label(self) -> str:
        """The outcome in a few words, for a table column ('converged to x1', 'cycling')."""
        return outcome_label(self.outcome, self.steps, self.period, self.which)


@dataclass(frozen=True)
class SweepSummary:
    """What a learning-rate sweep found, read from its points.

    ``converging``: the rates at which every start converged, ascending; ``failing``: the
    others; ``stable_up_to``: the largest rate below which every rate of the table converged
    (None if the smallest did not); ``first_failure``: the smallest rate that did not;
    ``fastest``: the converging rate with the fewest steps (most steps over its starts), and
    ``fastest_steps`` that count.
    """

    converging: tuple[float, ...]
    failing: tuple[float, ...]
    stable_up_to: float | None
    first_failure: float | None
    fastest: float | None
    fastest_steps: int | None


def summarize(points: Sequence[SweepPoint]) -> SweepSummary:
    """The facts of a learning-rate sweep (see :class:`SweepSummary`)."""
    by_rate: dict[float, list[SweepPoint]] = {}
    for point in points:
        by_rate.setdefault(point.lr, []).append(point)
    rates = sorted(by_rate)
    converging = [lr for lr in rates if all(p.converged for p in by_rate[lr])]
    failing = [lr for lr in rates if lr not in converging]
    first_failure = failing[0] if failing else None
    below = [lr for lr in converging if first_failure is None or lr < first_failure]
    stable_up_to = below[-1] if below else None
    fastest, fastest_steps = None, None
    for lr in converging:
        steps = max(p.steps for p in by_rate[lr])
        if fastest_steps is None or steps < fastest_steps:
            fastest, fastest_steps = lr, steps
    return SweepSummary(
        tuple(converging), tuple(failing), stable_up_to, first_failure, fastest, fastest_steps
    )


def _equation(a: Any, b: Any, c: Any) -> tuple[float, float, float]:
    """The coefficients as floats, checked: finite numbers of an equation with a root."""
    values = []
    for name, value in zip("abc", (a, b, c), strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number; got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number; got {value!r}")
        values.append(float(value))
    kind = RootKind(int(_prepare(*values).kind))
    if kind in (RootKind.NO_SOLUTION, RootKind.ANY_X):
        raise ValueError(
            f"the equation {a}x² + {b}x + {c} = 0 has no root to descend to ({kind.name})"
        )
    return values[0], values[1], values[2]


def _prepare(a: float, b: float, c: float) -> Any:
    return prepare(*(torch.tensor([v], dtype=torch.float64) for v in (a, b, c)))


def learning_rate_scale(a: float, b: float, c: float) -> float:
    """1/|D|, the stability limit the default rates are multiples of; for a double root
    (no limit) 1/(b² + 4|ac|), the same with D's terms in place of D."""
    limit = float(stability_limit(a, b, c))
    if math.isfinite(limit):
        return limit
    terms = b * b + 4.0 * abs(a * c)
    return 1.0 / terms if 0 < terms < math.inf else 1.0


def default_learning_rates(a: float, b: float, c: float) -> list[float]:
    """LR_MULTIPLES times 1/|D| (see :func:`learning_rate_scale`)."""
    scale = learning_rate_scale(a, b, c)
    return [m * scale for m in LR_MULTIPLES]


def default_start_grid(a: float, b: float, c: float, count: int = 12) -> list[float]:
    """Starts spread over v ± 3R (v the vertex, R = |v| + sqrt|c/a|), without the vertex and
    the roots."""
    if a == 0:
        centre, radius = (-c / b if b != 0 else 0.0), 1.0 + abs(c / b if b != 0 else 0.0)
    else:
        centre = -b / (2 * a)
        radius = abs(centre) + math.sqrt(abs(c / a))
    radius = radius or 1.0
    roots = {z.real for z in _closed_roots(a, b, c)}
    starts = [centre + 3 * radius * (2 * i / (count - 1) - 1) for i in range(count)]
    return [x for x in starts if x != centre and x not in roots]


def _closed_roots(a: float, b: float, c: float) -> list[complex]:
    roots = solve_quadratic(a, b, c, "closed").roots.tolist()
    return [z for z in roots if not math.isnan(z.real)]


def _run(
    a: float, b: float, c: float, lrs: list[float], starts: list[complex], max_iter: int, tol: float
) -> list[SweepPoint]:
    """One batch: equation i starts at starts[i] with lrs[i] (its second slot unused)."""
    n = len(lrs)
    ta, tb, tc = (torch.full((n,), v, dtype=torch.float64) for v in (a, b, c))
    nan = complex(math.nan, math.nan)
    pairs = torch.tensor([[z, nan] for z in starts], dtype=torch.complex128).reshape(n, 2)
    lr = torch.tensor(lrs, dtype=torch.float64)[:, None]
    run = fixed_step(
        ta, tb, tc, pairs, lr=lr, optimizer=None, tol=tol, max_iter=max_iter, record_path=False
    )
    exact = solve_quadratic(a, b, c, "closed").roots.tolist()
    points = []
    for i in range(n):
        final = complex(run.final[i, 0])
        outcome = StartOutcome(int(run.outcome[i, 0]))
        which = -1
        if outcome == StartOutcome.CONVERGED:
            gaps = [abs(final - z) if not math.isnan(z.real) else math.inf for z in exact]
            which = 0 if gaps[0] <= gaps[1] else 1
        points.append(
            SweepPoint(
                lrs[i],
                starts[i],
                int(run.steps[i, 0]),
                outcome,
                final,
                int(run.period[i, 0]),
                which,
                max_iter,
            )
        )
    return points


def _check_rates(lrs: Sequence[float], what: str) -> list[float]:
    rates = list(lrs)
    if not rates:
        raise ValueError(f"{what} must hold at least one learning rate")
    for lr in rates:
        check_positive("lr", lr)
    return [float(lr) for lr in rates]


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
    """For each learning rate, the fixed-step descent from both starts (x0, or the default
    starts of "gd"); points in the order lr, then start."""
    a, b, c = _equation(a, b, c)
    check_max_iter(max_iter)
    check_positive("tol", tol)
    rates = _check_rates(lrs, "lrs") if lrs is not None else default_learning_rates(a, b, c)
    if x0 is None:
        pair = [complex(z) for z in default_starts(_prepare(a, b, c))[0].tolist()]
        pair = [z for z in pair if not math.isnan(z.real)]
    else:
        pair = [_start(value) for value in _pair(x0)]
    flat_lrs = [lr for lr in rates for _ in pair]
    flat_starts = [z for _ in rates for z in pair]
    return _run(a, b, c, flat_lrs, flat_starts, max_iter, tol)


def _pair(x0: Any) -> tuple[Any, Any]:
    if isinstance(x0, str) or not isinstance(x0, Sequence) or len(x0) != 2:
        raise ValueError(f"x0 must be a pair of starts; got {x0!r}")
    return x0[0], x0[1]


def _start(value: Any) -> complex:
    if isinstance(value, bool) or not isinstance(value, int | float | complex):
        raise TypeError(f"x0 must hold numbers; got {value!r}")
    z = complex(value)
    if not (math.isfinite(z.real) and math.isfinite(z.imag)):
        raise ValueError(f"x0 must be finite numbers; got {value!r}")
    return z


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
    a, b, c = _equation(a, b, c)
    check_positive("lr", lr)
    check_max_iter(max_iter)
    check_positive("tol", tol)
    points = list(starts) if starts is not None else default_start_grid(a, b, c)
    begins = [_start(x) for x in points]
    return _run(a, b, c, [float(lr)] * len(begins), begins, max_iter, tol)
