"""The "newton" method: textbook Newton's method on f, x <- x - f(x)/f'(x), for comparison.

Same scaling, classification and starts as "gauss-newton" (whose normalised gradient step is
Newton's step written as η L'), but f is evaluated by plain Horner in floating point. That is
the classical algorithm, and it shows why "gauss-newton" compensates: Horner's f carries an
error up to about 4u (|A| y² + |B y| + |C|) (u = 2^-53), and next to a double root that noise
hides the root within about sqrt(eps). A complex pair is found on the vertical line through the
vertex, as in "gauss-newton", with a plain (not compensated) f.

Stopping: a start stops when its step is at most ``tol`` · |y|, or when |f(y)| is below one
rounding of its terms (the plain f can no longer tell y from a root: further steps follow the
noise).

Converged, honestly: the stopping rule cannot tell how far a root is, so afterwards every root
is checked against the compensated residual f̂ (:func:`handgrad.roots.exact.compensated_horner`).
For a quadratic, f'(y)² - 4A f(y) = D for every y, so the distance from y to the nearest root
is exactly |2 f(y)| / (|f'(y)| + sqrt|D|) (the small root of f(y + t) = 0 in t, in its stable
form). ``converged`` means that distance is at most ACCURATE · |y| for every root: near a
double root Newton stops 1e-8 away in plain floating point and reports converged=False.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.roots.descent import UNIT_ROUNDOFF, descend_roots
from handgrad.roots.exact import compensated_horner, horner
from handgrad.roots.problem import MethodResult, RootKind, ScaledQuadratic

# Below one rounding of f's terms, u (|A| y² + |B y| + |C|), Horner's f says nothing about
# where the root is (its error bound is 4u times that; stopping there cost up to 10 ulp on
# standard-normal equations, stopping at 1u about as much as never: measured).
NOISE = UNIT_ROUNDOFF
# A root counts as found when it is within 2^-50 of its size: 4 ulp at most, 2 at least.
ACCURATE = 2.0**-50


def newton_real_step(y: Tensor, params: tuple[Tensor, ...]) -> Tensor:
    """f(y) / f'(y), f by plain Horner; 0 where |f| is below NOISE times its terms."""
    a, b, c = params
    f = horner(a, b, c, y)
    noise = NOISE * ((a.abs() * y.abs() + b.abs()) * y.abs() + c.abs())
    slope = 2.0 * a * y + b
    quiet = (f.abs() <= noise) | (slope == 0)
    return torch.where(quiet, 0.0, f / torch.where(slope == 0, 1.0, slope))


def newton_imag_step(w: Tensor, params: tuple[Tensor, ...]) -> Tensor:
    """g(w) / g'(w) for g(w) = f(v + i w) = -(D + (2 a w)²) / 4a, in plain floating point;
    0 where |g| is below NOISE times its terms."""
    a, disc_hi, _ = params
    square = (2.0 * a * w) ** 2
    value = -(disc_hi + square) / (4.0 * a)
    noise = NOISE * (disc_hi.abs() + square) / (4.0 * a.abs())
    return torch.where(value.abs() <= noise, 0.0, value / (-2.0 * a * w))


def root_distance(problem: ScaledQuadratic, roots: Tensor) -> Tensor:
    """(n, 2): the distance from each root (scaled, complex) to the equation's nearest true
    root, relative to the root's size, from the compensated residual (NaN where no root).

    Real roots: |2 f̂(y)| / (|f'(y)| + sqrt|D|) / |y|. A complex pair v ± i w, in t = 2|A| w,
    solves P(t) = t² + D = 0 (see lanes.py); the same formula, for P, relative to |t|.
    """
    a, b, c = problem.a[:, None], problem.b[:, None], problem.c[:, None]
    disc_hi, disc_lo = problem.disc_hi[:, None], problem.disc_lo[:, None]
    root_of_d = torch.sqrt(disc_hi.abs())
    y = roots.real
    value = compensated_horner(a, b, c, y).abs()
    real = 2.0 * value / ((2.0 * a * y + b).abs() + root_of_d)
    real = real / torch.where(y == 0, 1.0, y.abs())
    t = 2.0 * a.abs() * roots.imag
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    pair_value = compensated_horner(one, zero, disc_hi.expand_as(t), t, disc_lo).abs()
    pair = 2.0 * pair_value / (2.0 * t.abs() + 2.0 * root_of_d)
    pair = pair / torch.where(t == 0, 1.0, t.abs())
    complex_pair = (problem.kind == int(RootKind.COMPLEX_PAIR))[:, None]
    return torch.where(complex_pair, pair, real)


def newton(
    problem: ScaledQuadratic, *, tol: float | None, max_iter: int | None, record_path: bool
) -> MethodResult:
    """Roots (scaled, unordered) of every equation by Newton's method from v ± R; converged
    where every root is within ACCURATE of a true root (see the module docstring)."""
    result = descend_roots(
        problem,
        newton_real_step,
        newton_imag_step,
        tol=UNIT_ROUNDOFF if tol is None else tol,
        max_iter=100 if max_iter is None else max_iter,
        record_path=record_path,
    )
    kind = problem.kind
    distance = root_distance(problem, result.roots)
    found = (distance <= ACCURATE) | torch.isnan(result.roots.real)  # NaN: no root in the slot
    accurate = found.all(dim=1)
    # Roots too far apart for the scaling are replaced by -c/b and -b/a afterwards (finish.py).
    accurate = accurate | problem.separated
    solvable = kind <= int(RootKind.LINEAR)
    has_roots = torch.isfinite(result.roots.real).any(dim=1)
    converged = torch.where(solvable, accurate & has_roots, result.converged)
    return MethodResult(result.roots, result.iterations, converged, True, result.path)
