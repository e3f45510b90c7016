"""From a method's raw roots to the answer: back to x, ordered, with their residuals.

Everything here is elementwise on real tensors (real and imaginary parts apart), laid out
(2, n) — first roots, then second roots — so that the compiled path
(:mod:`handgrad.roots.compiled`) vectorizes along the equations; the eager path shares it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.roots.exact import compensated_horner
from handgrad.roots.problem import RootKind, ScaledQuadratic
from handgrad.roots.scaling import ldexp_factors


def backward_error(problem: ScaledQuadratic, re: Tensor, im: Tensor) -> Tensor:
    """|f(y)| / (|A| |y|² + |B| |y| + |C|) for (2, n) roots y = re + i im of the scaled equation.

    Real roots use the compensated residual; complex ones Horner's rule in complex arithmetic,
    (A y + B) y + C, written out in real and imaginary parts.
    """
    a, b, c = (t[None, :] for t in (problem.a, problem.b, problem.c))
    real_value = compensated_horner(a, b, c, re).abs()
    t_re, t_im = a * re + b, a * im
    f_re = (t_re * re - t_im * im) + c
    f_im = t_re * im + t_im * re
    value = torch.where(im == 0, real_value, torch.hypot(f_re, f_im))
    size = torch.hypot(re, im)
    scale = a.abs() * size * size + b.abs() * size + c.abs()
    return torch.where(scale > 0, value / torch.where(scale > 0, scale, 1.0), value)


def order(re: Tensor, im: Tensor, kind: Tensor) -> tuple[Tensor, Tensor]:
    """Real roots ascending, a complex pair with the negative imaginary part first."""
    key = torch.where((kind != int(RootKind.COMPLEX_PAIR))[None, :], re, im)
    swap = (key[0] > key[1])[None, :]
    return torch.where(swap, re.flip(0), re), torch.where(swap, im.flip(0), im)


def finish_roots(
    problem: ScaledQuadratic,
    re: Tensor,
    im: Tensor,
    scaled: bool,
    a: Tensor,
    b: Tensor,
    c: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Ordered roots in x (re, im) and their residuals, from a method's (2, n) roots.

    ``scaled``: the roots are in the scaled variable y (x = 2^k y). ``a, b, c``: the original
    flat coefficients. A complex pair's real part is the vertex -b/2a from the original
    coefficients (one rounding; in y it may have lost bits as a subnormal); equations with
    roots too far apart for the scaling (``problem.separated``) get -c/b and -b/a.
    """
    if not scaled:
        down = tuple(f[None, :] for f in ldexp_factors(-problem.k))
        re, im = ((re * down[0]) * down[1]) * down[2], ((im * down[0]) * down[1]) * down[2]
    re, im = order(re, im, problem.kind)
    residual = backward_error(problem, re, im)
    up = tuple(f[None, :] for f in ldexp_factors(problem.k))  # x = 2^k y, as scaling.ldexp
    re, im = ((re * up[0]) * up[1]) * up[2], ((im * up[0]) * up[1]) * up[2]
    if scaled:
        safe_a = torch.where(a == 0, 1.0, a)
        vertex = torch.where(b.abs() >= 1.0, (-0.5 * b) / safe_a, (-b / safe_a) * 0.5)
        pair = (problem.kind == int(RootKind.COMPLEX_PAIR))[None, :]
        re = torch.where(pair, vertex[None, :], re)
    safe_a, safe_b = torch.where(a == 0, 1.0, a), torch.where(b == 0, 1.0, b)
    apart = torch.stack([-c / safe_b, -b / safe_a], dim=0)
    separated = problem.separated[None, :]
    re = torch.where(separated, apart, re)
    im = torch.where(separated, 0.0, im)
    re, im = order(re, im, problem.kind)
    return re, im, residual
