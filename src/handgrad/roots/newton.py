"""The "newton" method: textbook Newton's method on f, x <- x - f(x)/f'(x), for comparison.

Same scaling, classification and starts as the default "gd" method (whose normalised gradient
step is Newton's step written as η L'), but f is evaluated by plain Horner in floating point.
That is the classical algorithm, and it shows why "gd" compensates: next to a double root the
rounding error of f limits Newton to about sqrt(eps) relative accuracy. A complex pair is found
on the vertical line through the vertex, as in "gd", with a plain (not compensated) f.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.roots.descent import UNIT_ROUNDOFF, descend_roots
from handgrad.roots.exact import horner
from handgrad.roots.problem import MethodResult, ScaledQuadratic


def newton_real_step(y: Tensor, params: tuple[Tensor, ...]) -> Tensor:
    """f(y) / f'(y), f by plain Horner."""
    a, b, c = params
    f = horner(a, b, c, y)
    slope = 2.0 * a * y + b
    return torch.where((f == 0) | (slope == 0), 0.0, f / torch.where(slope == 0, 1.0, slope))


def newton_imag_step(w: Tensor, params: tuple[Tensor, ...]) -> Tensor:
    """g(w) / g'(w) for g(w) = f(v + i w) = -(D + (2 a w)²) / 4a, in plain floating point."""
    a, disc_hi, _ = params
    value = -(disc_hi + (2.0 * a * w) ** 2) / (4.0 * a)
    return torch.where(value == 0, 0.0, value / (-2.0 * a * w))


def newton(
    problem: ScaledQuadratic, *, tol: float | None, max_iter: int | None, record_path: bool
) -> MethodResult:
    """Roots (scaled, unordered) of every equation by Newton's method from v ± R."""
    return descend_roots(
        problem,
        newton_real_step,
        newton_imag_step,
        tol=UNIT_ROUNDOFF if tol is None else tol,
        max_iter=100 if max_iter is None else max_iter,
        record_path=record_path,
    )
