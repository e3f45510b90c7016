"""Power-of-two scaling of a quadratic equation, so that nothing overflows or underflows.

The substitution x = 2^k y and a division of the whole equation by 2^s turn
a x² + b x + c = 0 into A y² + B y + C = 0 with

    A = a · 2^(2k - s),   B = b · 2^(k - s),   C = c · 2^(-s).

Multiplying by a power of two is exact, so the scaled equation has exactly the roots y = x / 2^k.
k balances |A| against |C| (the product of the roots, C/A, becomes about 1) and s makes the
largest scaled coefficient lie in [1/2, 1); the roots y then lie near 1 unless they are
separated by hundreds of orders of magnitude (Goualard 2023: scaling the coefficients alone is
not enough, x must be scaled too).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Exponent given to a zero coefficient, so that it never wins a max().
_ZERO_EXPONENT = -(1 << 20)


def pow2(e: Tensor) -> Tensor:
    """2^e in float64 for integer e, built from its bits (exact); clamped to [2^-1022, 2^1023]."""
    biased = (e.to(torch.int64).clamp(-1022, 1023) + 1023) << 52
    return biased.view(torch.float64)


def ldexp_factors(e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Three exact powers of two whose product is 2^e, for any integer e up to about ±3000.

    2^e itself may not be representable, so the factor is applied in three parts; the
    intermediate results lie between x and x · 2^e, so they neither overflow nor underflow
    when those two do not.
    """
    e = e.to(torch.int64)
    third = torch.div(e, 3, rounding_mode="floor")
    return pow2(third), pow2(third), pow2(e - 2 * third)


def ldexp(x: Tensor, e: Tensor) -> Tensor:
    """x · 2^e for float64 x and any integer e, rounded once where the result is normal."""
    first, second, third = ldexp_factors(e)
    return ((x * first) * second) * third


def exponent(x: Tensor) -> Tensor:
    """The binary exponent e with x = m · 2^e, 1/2 <= |m| < 1 (int64); a large negative for 0.

    Read from the bits (as frexp would give it; subnormals are first scaled by 2^54), which
    also compiles where frexp's int32 output does not.
    """
    subnormal = x.abs() < 2.0**-1022  # zero too: its exponent is replaced below
    bits = torch.where(subnormal, x * 2.0**54, x).view(torch.int64)
    e = ((bits >> 52) & 0x7FF) - 1022
    e = torch.where(subnormal, e - 54, e)
    return torch.where(x == 0, _ZERO_EXPONENT, e)


def scale_quadratic(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scaled coefficients A, B, C and the root scale k (x = 2^k y) of a x² + b x + c = 0.

    Quadratic (a != 0): k = floor((e_c - e_a) / 2), or e_b - e_a when c = 0. Linear (a = 0):
    k = e_c - e_b, so that the root is about 1. Then s = max(e_a + 2k, e_b + k, e_c) over the
    non-zero coefficients. All inputs must be finite float64 tensors of one shape.
    """
    ea, eb, ec = exponent(a), exponent(b), exponent(c)
    quadratic = a != 0
    k_balanced = torch.div(ec - ea, 2, rounding_mode="floor")
    k_quadratic = torch.where(c != 0, k_balanced, torch.where(b != 0, eb - ea, 0))
    k_linear = torch.where(b != 0, torch.where(c != 0, ec - eb, 0), 0)
    k = torch.where(quadratic, k_quadratic, k_linear)
    sa = torch.where(quadratic, ea + 2 * k, _ZERO_EXPONENT)
    sb = torch.where(b != 0, eb + k, _ZERO_EXPONENT)
    sc = torch.where(c != 0, ec, _ZERO_EXPONENT)
    s = torch.maximum(torch.maximum(sa, sb), sc)
    s = torch.where(s == _ZERO_EXPONENT, 0, s)
    big_a = ldexp(a, 2 * k - s)
    big_b = ldexp(b, k - s)
    big_c = ldexp(c, -s)
    return big_a, big_b, big_c, k
