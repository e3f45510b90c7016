"""A batch of quadratic equations, classified and scaled: what every method starts from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from handgrad.roots.exact import discriminant
from handgrad.roots.scaling import scale_quadratic


class RootKind(IntEnum):
    """What the equation a x² + b x + c = 0 has for solutions."""

    TWO_REAL = 0  # a != 0, D > 0
    DOUBLE = 1  # a != 0, D = 0 exactly
    COMPLEX_PAIR = 2  # a != 0, D < 0
    LINEAR = 3  # a = 0 != b: one root, -c/b
    NO_SOLUTION = 4  # a = b = 0 != c
    ANY_X = 5  # a = b = c = 0: every x solves it
    INVALID = 6  # a NaN or an infinity among the coefficients


@dataclass(frozen=True)
class ScaledQuadratic:
    """Flat float64 batch (shape (n,)): the equations A y² + B y + C = 0 with x = 2^k y.

    ``disc_hi + disc_lo`` is the discriminant B² - 4AC of the scaled equation to about eps²,
    ``kind`` the :class:`RootKind` of each equation (from the exact sign of the discriminant).
    Rows that are INVALID hold A = B = C = 0. ``separated`` marks quadratics whose roots are
    so far apart (ratio beyond about 2^2000) that A or C is below 2^-1000: they are solved as
    the two linear equations they are to within 2^-2000, x = -c/b and x = -b/a.
    """

    a: Tensor
    b: Tensor
    c: Tensor
    k: Tensor
    disc_hi: Tensor
    disc_lo: Tensor
    kind: Tensor
    separated: Tensor

    @property
    def vertex(self) -> Tensor:
        """y at the vertex, -B / 2A (NaN for a linear equation)."""
        return -self.b / (2.0 * self.a)


def prepare(a: Tensor, b: Tensor, c: Tensor) -> ScaledQuadratic:
    """Classify and scale flat float64 coefficient tensors of one shape (see RootKind)."""
    # x - x is 0 for a finite x and NaN for NaN and ±inf. (Conditions here are single
    # comparisons: inductor's CPU code turns & and | of float comparisons into slow mask casts.)
    finite = (a - a) + (b - b) + (c - c) == 0
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    a, b, c = (torch.where(finite, t, zero) for t in (a, b, c))
    big_a, big_b, big_c, k = scale_quadratic(a, b, c)
    disc_hi, disc_lo, disc_sign = discriminant(big_a, big_b, big_c)
    kind = torch.full_like(k, int(RootKind.ANY_X))
    kind = torch.where(c != 0, int(RootKind.NO_SOLUTION), kind)
    kind = torch.where(b != 0, int(RootKind.LINEAR), kind)
    by_sign = torch.where(
        disc_sign > 0,
        int(RootKind.TWO_REAL),
        torch.where(disc_sign == 0, int(RootKind.DOUBLE), int(RootKind.COMPLEX_PAIR)),
    )
    kind = torch.where(a != 0, by_sign, kind)
    kind = torch.where(finite, kind, int(RootKind.INVALID))
    # A or C this small (B then dominates by 2^1000 or more) means roots at least 2^2000 apart:
    # their y would near the overflow threshold, A or C may have lost bits as subnormals, and
    # -c/b, -b/a are exact to 2^-2000.
    tiny = 2.0**-1000
    smaller = torch.minimum(big_a.abs(), big_c.abs())
    separated = torch.where(a != 0, torch.where(c != 0, smaller, math.inf), math.inf) < tiny
    return ScaledQuadratic(big_a, big_b, big_c, k, disc_hi, disc_lo, kind, separated)


@dataclass(frozen=True)
class MethodResult:
    """What a method hands back for a flat batch of n equations.

    ``roots``: complex128 (n, 2), in the scaled variable y when ``scaled`` (x = 2^k y), else in
    x; unordered, NaN where none. ``path``: the iterates, one (n, 2) complex tensor per step
    (the first is the starts), NaN once a start has stopped; None when not recorded.
    ``values``: (n, 2) |f| at each root of the scaled equation, where the method has it.
    """

    roots: Tensor
    iterations: Tensor
    converged: Tensor
    scaled: bool
    path: list[Tensor] | None = None
    values: Tensor | None = None
