"""From a method's raw roots to the answer: back to x, ordered, with their residuals.

Everything here is elementwise on real tensors, the first and the second root of each
equation as a pair of (n,) tensors (real and imaginary parts apart), so that the compiled path
(:mod:`handgrad.roots.compiled`) fuses it into the same loop over the equations as the descent;
the eager path shares it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.roots.exact import compensated_horner
from handgrad.roots.problem import RootKind, ScaledQuadratic
from handgrad.roots.scaling import ldexp_factors

Pair = tuple[Tensor, Tensor]


def backward_error(
    problem: ScaledQuadratic, re: Tensor, im: Tensor, value: Tensor | None = None
) -> Tensor:
    """|f(y)| / (|A| |y|² + |B| |y| + |C|) for roots y = re + i im of the scaled equation.

    ``value``: |f(y)| where the method has it; otherwise real roots use the compensated
    residual, complex ones Horner's rule in complex arithmetic, (A y + B) y + C, written out in
    real and imaginary parts.
    """
    a, b, c = problem.a, problem.b, problem.c
    if value is None:
        real_value = compensated_horner(a, b, c, re).abs()
        t_re, t_im = a * re + b, a * im
        f_re = (t_re * re - t_im * im) + c
        f_im = t_re * im + t_im * re
        value = torch.where(im == 0, real_value, torch.hypot(f_re, f_im))
    size = torch.hypot(re, im)
    scale = a.abs() * size * size + b.abs() * size + c.abs()
    return torch.where(scale > 0, value / torch.where(scale > 0, scale, 1.0), value)


def order(re: Pair, im: Pair, kind: Tensor, *others: Pair) -> tuple[Pair, ...]:
    """Real roots ascending, a complex pair with the negative imaginary part first: (re, im),
    then each of ``others`` (values that belong to the roots) in the same order."""
    real_kind = kind != int(RootKind.COMPLEX_PAIR)
    swap = torch.where(real_kind, re[0], im[0]) > torch.where(real_kind, re[1], im[1])

    def ordered(pair: Pair) -> Pair:
        return torch.where(swap, pair[1], pair[0]), torch.where(swap, pair[0], pair[1])

    return tuple(ordered(pair) for pair in (re, im, *others))


def _times_pow2(values: Pair, factors: tuple[Tensor, Tensor, Tensor]) -> Pair:
    """Both values times 2^e, given as three exact factors (as scaling.ldexp)."""
    first, second, third = factors
    return ((values[0] * first) * second) * third, ((values[1] * first) * second) * third


def finish_roots(
    problem: ScaledQuadratic,
    re: Pair,
    im: Pair,
    scaled: bool,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    values: Pair | None = None,
) -> tuple[Pair, Pair, Pair]:
    """Ordered roots in x (re, im) and their residuals, from a method's roots.

    ``scaled``: the roots are in the scaled variable y (x = 2^k y). ``a, b, c``: the original
    flat coefficients. A complex pair's real part is the vertex -b/2a from the original
    coefficients (one rounding; in y it may have lost bits as a subnormal); equations with
    roots too far apart for the scaling (``problem.separated``) get -c/b and -b/a. Both only
    for ``scaled`` roots: the others (a fixed-step descent in x) are kept as they came.
    ``values``: |f| at each root of the scaled equation, where the method has it.
    """
    if not scaled:
        down = ldexp_factors(-problem.k)
        re, im = _times_pow2(re, down), _times_pow2(im, down)
    if values is None:
        re, im = order(re, im, problem.kind)
        residual = (backward_error(problem, re[0], im[0]), backward_error(problem, re[1], im[1]))
    else:
        re, im, values = order(re, im, problem.kind, values)
        residual = (
            backward_error(problem, re[0], im[0], values[0]),
            backward_error(problem, re[1], im[1], values[1]),
        )
    up = ldexp_factors(problem.k)  # x = 2^k y
    re, im = _times_pow2(re, up), _times_pow2(im, up)
    if scaled:
        safe_a = torch.where(a == 0, 1.0, a)
        vertex = torch.where(b.abs() >= 1.0, (-0.5 * b) / safe_a, (-b / safe_a) * 0.5)
        pair = problem.kind == int(RootKind.COMPLEX_PAIR)
        re = (torch.where(pair, vertex, re[0]), torch.where(pair, vertex, re[1]))
        # Roots too far apart for the scaling: the two linear equations they are.
        safe_a, safe_b = torch.where(a == 0, 1.0, a), torch.where(b == 0, 1.0, b)
        separated = problem.separated
        re = (
            torch.where(separated, -c / safe_b, re[0]),
            torch.where(separated, -b / safe_a, re[1]),
        )
        im = (torch.where(separated, 0.0, im[0]), torch.where(separated, 0.0, im[1]))
    re, im = order(re, im, problem.kind)
    return re, im, residual
