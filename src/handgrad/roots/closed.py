"""The "closed" method: the numerically stable closed form, for comparison with the descent.

On the scaled equation A y² + B y + C = 0 (see :mod:`handgrad.roots.scaling`), with the
discriminant D = B² - 4AC from error-free products (see :func:`handgrad.roots.exact.discriminant`):

    D > 0:  q = -(B + sign(B) sqrt(D)) / 2,   y₁ = q / A,   y₂ = C / q
    D = 0:  y₁ = y₂ = -B / 2A
    D < 0:  y = -B / 2A ± i sqrt(-D) / 2|A|
    A = 0:  y = -C / B

The first line never subtracts numbers of like size (B and sign(B) sqrt(D) have the same sign),
which is what makes it stable against b² >> 4ac (Kahan 2004). Each root is within about 2 ulp.
"""

from __future__ import annotations

import math

import torch

from handgrad.roots.problem import MethodResult, RootKind, ScaledQuadratic


def closed_form(problem: ScaledQuadratic) -> MethodResult:
    """Roots (scaled, unordered) of every equation by the stable closed form; no iterations."""
    kind, a, b, c = problem.kind, problem.a, problem.b, problem.c
    quadratic = (kind == RootKind.TWO_REAL) | (kind == RootKind.DOUBLE)
    quadratic = (quadratic | (kind == RootKind.COMPLEX_PAIR)) & ~problem.separated
    linear = (kind == RootKind.LINEAR) | problem.separated
    safe_a = torch.where(quadratic, a, 1.0)
    root_of_d = torch.sqrt(problem.disc_hi.abs())
    q = -0.5 * (b + torch.copysign(root_of_d, b))
    safe_q = torch.where(q == 0, 1.0, q)
    vertex = -b / (2.0 * safe_a)
    two_real = torch.stack([q / safe_a, c / safe_q], dim=1)
    two_real = torch.where((q == 0)[:, None], 0.0, two_real)  # b = c = 0 cannot be TWO_REAL
    re = torch.where((kind == RootKind.TWO_REAL)[:, None], two_real, vertex[:, None])
    half_width = root_of_d / (2.0 * safe_a.abs())
    im = torch.where(
        (kind == RootKind.COMPLEX_PAIR)[:, None], torch.stack([-half_width, half_width], 1), 0.0
    )
    linear_root = -c / torch.where(linear, b, 1.0)
    nan = torch.full_like(a, math.nan)
    re = torch.where(linear[:, None], torch.stack([linear_root, nan], dim=1), re)
    keep = (quadratic | linear)[:, None]
    roots = torch.complex(torch.where(keep, re, math.nan), torch.where(keep, im, math.nan))
    n = kind.shape[0]
    iterations = torch.zeros(n, dtype=torch.int64, device=a.device)
    converged = kind != RootKind.INVALID
    return MethodResult(roots, iterations, converged, scaled=True)
