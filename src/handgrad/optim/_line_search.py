"""A line search satisfying the strong Wolfe conditions (Nocedal & Wright, Algorithms 3.5-3.6).

Used by :class:`handgrad.optim.LBFGS` with ``line_search_fn="strong_wolfe"``. Along a descent
direction d from x, with φ(t) = f(x + t d) and φ'(t) = ∇f(x + t d)·d, a step t is accepted when

    φ(t) ≤ φ(0) + c₁ t φ'(0)        (sufficient decrease)
    |φ'(t)| ≤ −c₂ φ'(0)             (curvature: the slope has flattened enough)

The search first walks forward until an interval must contain such a t (bracketing), then
shrinks that interval by safeguarded cubic interpolation (zoom). The arithmetic, including
which quantities are 0-d tensors, follows torch's LBFGS so that both take the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

# Evaluate(t) -> (φ(t) as a float, the flat gradient at x + t d).
Evaluate = Callable[[Any], tuple[float, Tensor]]


@dataclass
class _Trial:
    """One evaluated step length: t, φ(t), the gradient there and the slope φ'(t)."""

    t: Any
    loss: float
    grad: Tensor
    slope: Any


def cubic_minimizer(
    x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: tuple[Any, Any] | None = None
) -> Any:
    """Minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, within bounds.

    With d₁ = g₁ + g₂ − 3 (f₁ − f₂)/(x₁ − x₂) and d₂ = √(d₁² − g₁g₂), the minimiser is
    x₂ − (x₂ − x₁)(g₂ + d₂ − d₁)/(g₂ − g₁ + 2d₂) (for x₁ ≤ x₂), clamped to the bounds
    (default: the interval between x1 and x2). Without a real minimiser: the bounds' midpoint.
    """
    low, high = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square.sqrt()
        if x1 <= x2:
            best = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            best = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(best, low), high)
    return (low + high) / 2.0


def strong_wolfe(
    evaluate: Evaluate,
    t: Any,
    d: Tensor,
    loss: float,
    grad: Tensor,
    slope: Tensor,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, Tensor, Any, int]:
    """Search along d from the current point (φ(0) = loss, ∇f = grad, φ'(0) = slope < 0).

    Starts at step length ``t`` and evaluates at most ``max_ls`` more points after the first.
    Returns (φ(t*), gradient at t*, t*, number of evaluations).
    """
    d_norm = d.abs().max()
    origin = _Trial(0, loss, grad.clone(), slope)

    def trial(step: Any) -> _Trial:
        f_new, g_new = evaluate(step)
        return _Trial(step, f_new, g_new, g_new.dot(d))

    def too_high(point: _Trial) -> bool:
        # Sufficient decrease fails (written this way round so that a NaN loss never fails it).
        return bool(point.loss > loss + c1 * point.t * slope)

    def flat_enough(point: _Trial) -> bool:
        return bool(abs(point.slope) <= -c2 * slope)

    # Bracketing: extrapolate until [previous, new] must hold an acceptable step.
    previous, new = origin, trial(t)
    evaluations, iterations = 1, 0
    bracket: list[_Trial] = []
    done = False
    while iterations < max_ls:
        if too_high(new) or (iterations > 1 and new.loss >= previous.loss):
            bracket = [previous, new]
            break
        if flat_enough(new):
            bracket, done = [new], True
            break
        if new.slope >= 0:
            bracket = [previous, new]
            break
        # Still going down: the next t lies between 1.01 and 10 times further.
        bounds = (new.t + 0.01 * (new.t - previous.t), new.t * 10)
        next_t = cubic_minimizer(
            previous.t, previous.loss, previous.slope, new.t, new.loss, new.slope, bounds
        )
        previous, new = new, trial(next_t)
        evaluations += 1
        iterations += 1
    if iterations == max_ls:
        bracket = [origin, new]

    # Zoom: shrink the bracket around the best point so far ("low") until both conditions hold.
    low, high = (0, 1) if bracket[0].loss <= bracket[-1].loss else (1, 0)
    stalled = False
    while not done and iterations < max_ls:
        if abs(bracket[1].t - bracket[0].t) * d_norm < tolerance_change:
            break
        a, b = bracket[0], bracket[1]
        t = cubic_minimizer(a.t, a.loss, a.slope, b.t, b.loss, b.slope)
        # Safeguard: a point within 10% of an end makes too little progress; after a stall
        # (or outside the bracket) move it to 10% inside the nearer end.
        left, right = min(a.t, b.t), max(a.t, b.t)
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if stalled or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        new = trial(t)
        evaluations += 1
        iterations += 1
        if too_high(new) or new.loss >= bracket[low].loss:
            bracket[high] = new
            low, high = (0, 1) if bracket[0].loss <= bracket[1].loss else (1, 0)
        else:
            if flat_enough(new):
                done = True
            elif new.slope * (bracket[high].t - bracket[low].t) >= 0:
                # The minimum lies on the other side of the new point: keep [low, new].
                bracket[high] = bracket[low]
            bracket[low] = new

    best = bracket[low]
    return best.loss, best.grad, best.t, evaluations
