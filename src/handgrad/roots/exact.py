"""Error-free transformations in float64: sums and products returned with their rounding error.

Every function works elementwise on float64 tensors and relies only on IEEE round-to-nearest
arithmetic, one operation at a time (eager torch never contracts a*b+c into an fma). With
``s, e = two_sum(a, b)`` the identity ``a + b = s + e`` holds exactly; likewise for
``two_prod``, as long as nothing overflows or underflows (callers scale the operands into
[2^-500, 2^500] first, see :mod:`handgrad.roots.scaling`).

References: Knuth (TAOCP vol. 2, 4.2.2) for two_sum; Dekker (1971) and Veltkamp for the split
and two_prod; Shewchuk (1997) for expansions and their exact sign; Graillat, Langlois and Louvet
(2005) for the compensated Horner scheme.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Veltkamp's constant for float64 (53-bit significand): 2^ceil(53/2) + 1.
_SPLITTER = 134217729.0
_SPLIT_LIMIT = 2.0**995


def two_sum(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """s = fl(a + b) and e with a + b = s + e exactly (Knuth; no ordering of |a|, |b| needed)."""
    s = a + b
    b_virtual = s - a
    a_virtual = s - b_virtual
    e = (a - a_virtual) + (b - b_virtual)
    return s, e


def split(a: Tensor, guard: bool = True) -> tuple[Tensor, Tensor]:
    """Veltkamp's split a = hi + lo exactly, hi and lo with at most 26 significant bits each.

    Above 2^995 the product with the splitting constant would overflow, so such a is split
    after an exact scaling by 2^-28 (the iterates for roots about 2^1000 apart get there);
    ``guard=False`` skips that check for operands known to be smaller.
    """
    if not guard:
        t = _SPLITTER * a
        hi = t - (t - a)
        return hi, a - hi
    huge = a.abs() > _SPLIT_LIMIT
    scaled = torch.where(huge, a * 2.0**-28, a)
    t = _SPLITTER * scaled
    hi = t - (t - scaled)
    hi = torch.where(huge, hi * 2.0**28, hi)
    return hi, a - hi


def _dekker(
    a: Tensor, b: Tensor, p: Tensor, a_parts: tuple[Tensor, Tensor], b_parts: tuple[Tensor, Tensor]
) -> Tensor:
    """The rounding error of p = fl(a b) from the splits of a and b (Dekker)."""
    (a_hi, a_lo), (b_hi, b_lo) = a_parts, b_parts
    return ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


def two_prod(
    a: Tensor, b: Tensor, *, guard_a: bool = True, guard_b: bool = True
) -> tuple[Tensor, Tensor]:
    """p = fl(a * b) and e with a * b = p + e exactly (Dekker's product, no fma needed).

    ``guard_a``/``guard_b`` False: that operand is known to be below 2^995 (see split).
    """
    p = a * b
    return p, _dekker(a, b, p, split(a, guard_a), split(b, guard_b))


def two_square(a: Tensor, *, guard: bool = True) -> tuple[Tensor, Tensor]:
    """p = fl(a²) and e with a² = p + e exactly (two_prod with one split)."""
    p = a * a
    parts = split(a, guard)
    return p, _dekker(a, a, p, parts, parts)


def discriminant(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """D = b² - 4ac as a double-double hi + lo (hi within an ulp), and its exact sign (-1, 0, 1).

    b² = p1 + e1 and 4ac = p2 + e2 exactly (two_prod), so D = p1 + e1 - p2 - e2 exactly: four
    floats. Adding them one by one with two_sum (Shewchuk's grow-expansion) gives an expansion
    of non-overlapping components in increasing magnitude whose sum is exactly D; the sign of D
    is the sign of its largest non-zero component, and hi + lo is D to about eps². So a double
    root gets D = 0 and roots one ulp apart get D > 0.
    """
    # Callers pass scaled coefficients (below 4): no overflow guard needed in the splits.
    p1, e1 = two_square(b, guard=False)
    p2, e2 = two_prod(4.0 * a, c, guard_a=False, guard_b=False)
    # Expansion [e1, p1] grown by -e2, then by -p2.
    q, h0 = two_sum(-e2, e1)
    q, h1 = two_sum(q, p1)
    top, g0 = two_sum(-p2, h0)
    top, g1 = two_sum(top, h1)
    top, g2 = two_sum(top, q)
    hi, lo = two_sum(top, g2 + (g1 + g0))
    sign = torch.sign(top)
    for component in (g2, g1, g0):
        sign = torch.where(sign == 0, torch.sign(component), sign)
    return hi, lo, sign


def horner(a: Tensor, b: Tensor, c: Tensor, x: Tensor) -> Tensor:
    """f(x) = a x² + b x + c by Horner's rule in plain floating point: (a x + b) x + c."""
    return (a * x + b) * x + c


def compensated_horner(
    a: Tensor, b: Tensor, c: Tensor, x: Tensor, c_lo: Tensor | None = None
) -> Tensor:
    """f(x) = a x² + b x + c as accurate as if computed in twice the working precision.

    Horner's rule with each product and sum replaced by its error-free transformation; the
    rounding errors are summed on the side and added back at the end (Graillat, Langlois and
    Louvet 2005). Near a double root plain Horner has an absolute error of about eps·(|a|x² +
    |b x| + |c|), which limits any root finder to sqrt(eps) relative accuracy; this one's error
    is eps·|f(x)| + O(eps²)·(|a|x² + |b x| + |c|), which leaves the last bits of the root.

    ``c_lo``: an optional low part of the constant term (c + c_lo as a double-double), added
    with the rounding errors.
    """
    x_parts = split(x)  # shared by both products
    p1 = a * x
    pi1 = _dekker(a, x, p1, split(a, guard=False), x_parts)  # a: scaled, below 1
    s1, sigma1 = two_sum(p1, b)
    p0 = s1 * x
    pi0 = _dekker(s1, x, p0, split(s1), x_parts)
    s0, sigma0 = two_sum(p0, c)
    low = pi0 + sigma0 if c_lo is None else (pi0 + sigma0) + c_lo
    correction = (pi1 + sigma1) * x + low
    return s0 + correction
