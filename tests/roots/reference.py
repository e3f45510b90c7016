"""High-precision reference roots (mpmath, 200-bit significands) for the accuracy tests."""

from __future__ import annotations

import math
from typing import Any

import mpmath
import torch

from handgrad.roots import RootKind

EPS = 2.0**-52
SMALLEST_NORMAL = 2.0**-1022
LARGEST = 1.7976931348623157e308
_CONTEXT = mpmath.MPContext()
_CONTEXT.prec = 200


Exact = tuple[mpmath.mpf, mpmath.mpf]


def on(device: torch.device | str, *values: Any) -> tuple[Any, ...]:
    """Coefficients for ``solve_quadratic`` on ``device``: as given on the CPU (Python numbers
    and lists, the CPU tests' inputs); float64 tensors created on any other device."""
    if torch.device(device).type == "cpu":
        return values
    return tuple(torch.tensor(v, dtype=torch.float64, device=device) for v in values)


def reference(a: float, b: float, c: float) -> tuple[RootKind, list[Exact]]:
    """The kind and the roots as (re, im) pairs (ordered as solve_quadratic orders them)."""
    mp = _CONTEXT
    if not all(math.isfinite(v) for v in (a, b, c)):
        return RootKind.INVALID, []
    ma, mb, mc = mp.mpf(a), mp.mpf(b), mp.mpf(c)
    if a == 0:
        if b == 0:
            return (RootKind.ANY_X if c == 0 else RootKind.NO_SOLUTION), []
        return RootKind.LINEAR, [(-mc / mb, mp.zero)]
    disc = mb * mb - 4 * ma * mc  # exact: the products have 106 bits, the sum's sign is right
    if disc < 0:
        re = -mb / (2 * ma)
        im = mp.sqrt(-disc) / (2 * abs(ma))
        return RootKind.COMPLEX_PAIR, [(re, -im), (re, im)]
    if disc == 0:
        root = -mb / (2 * ma)
        return RootKind.DOUBLE, [(root, mp.zero), (root, mp.zero)]
    q = -(mb + mp.sqrt(disc) * (1 if b >= 0 else -1)) / 2
    roots = sorted([q / ma, mc / q])
    return RootKind.TWO_REAL, [(r, mp.zero) for r in roots]


def assert_close(value: complex, exact: Exact, ulps: float = 4.0) -> None:
    """Each part within ``ulps`` eps relative, where the exact part is a normal float64."""
    for got, want, part in ((value.real, exact[0], "real"), (value.imag, exact[1], "imag")):
        if want == 0:
            assert got == 0, f"{part} part {got!r}, expected 0"
        elif SMALLEST_NORMAL <= abs(want) <= LARGEST:
            error = float(abs(_CONTEXT.mpf(got) - want) / abs(want))
            assert error <= ulps * EPS, (
                f"{part} part {got!r} vs exact {float(want)!r}: relative error "
                f"{error / EPS:.2f} eps"
            )
        elif abs(want) > LARGEST:
            assert math.isinf(got), f"{part} part {got!r}, expected an overflow to inf"
