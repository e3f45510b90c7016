"""Error-free transformations and power-of-two scaling: exact identities, checked in rationals.

On every device: each identity holds in IEEE float64 whatever the hardware, as long as every
operation rounds once (a kernel contracting a·b + c into an FMA would break two_prod's split).
Property tests take the device as a direct parameter (Hypothesis refuses function-scoped
fixtures); strategies fill the rightmost arguments."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from handgrad.roots.exact import compensated_horner, discriminant, horner, two_prod, two_sum
from handgrad.roots.scaling import ldexp, pow2, scale_quadratic
from tests.conftest import DEVICES

moderate = st.floats(min_value=-(2.0**400), max_value=2.0**400, allow_nan=False).filter(
    lambda v: v == 0 or abs(v) > 2.0**-400
)


ON_EVERY_DEVICE = pytest.mark.parametrize("device", DEVICES)


def t(*values: float, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=device)


@ON_EVERY_DEVICE
@given(moderate, moderate)
def test_two_sum_is_exact(device: str, a: float, b: float) -> None:
    s, e = two_sum(t(a, device=device), t(b, device=device))
    assert Fraction(float(s)) + Fraction(float(e)) == Fraction(a) + Fraction(b)
    assert float(s) == a + b


@ON_EVERY_DEVICE
@given(moderate, moderate)
def test_two_prod_is_exact(device: str, a: float, b: float) -> None:
    p, e = two_prod(t(a, device=device), t(b, device=device))
    assert Fraction(float(p)) + Fraction(float(e)) == Fraction(a) * Fraction(b)
    assert float(p) == a * b


def test_two_prod_splits_huge_factors_without_overflow(device: torch.device) -> None:
    a, b = 2.0**1000 * 1.2345678901234567, 0.7654321098765432
    p, e = two_prod(t(a, device=device), t(b, device=device))
    assert math.isfinite(float(e))
    assert Fraction(float(p)) + Fraction(float(e)) == Fraction(a) * Fraction(b)


@ON_EVERY_DEVICE
@given(moderate.map(lambda v: v * 2.0**-200), moderate, moderate.map(lambda v: v * 2.0**-200))
def test_discriminant_sign_is_exact_and_value_accurate(
    device: str, a: float, b: float, c: float
) -> None:
    hi, lo, sign = discriminant(t(a, device=device), t(b, device=device), t(c, device=device))
    exact = Fraction(b) ** 2 - 4 * Fraction(a) * Fraction(c)
    assert int(sign) == (exact > 0) - (exact < 0)
    if exact != 0:
        assert abs(Fraction(float(hi)) + Fraction(float(lo)) - exact) <= abs(exact) * 2**-100


def test_discriminant_of_a_double_root_is_zero_and_of_one_ulp_apart_positive(
    device: torch.device,
) -> None:
    a = t(2.0**52 - 1, 2.0**52 - 1, device=device)
    b = t(2.0**53 - 2, 2.0**53 - 1, device=device)
    c = t(2.0**52 - 1, 2.0**52, device=device)
    hi, lo, sign = discriminant(a, b, c)
    assert sign.tolist() == [0.0, 1.0]
    assert hi.tolist() == [0.0, 1.0]  # b² - 4ac is exactly 0 and 1 here
    assert lo.tolist() == [0.0, 0.0]
    # The plain formula cannot tell: both b² and 4ac round to the same float.
    assert float(b[1] * b[1] - 4 * a[1] * c[1]) == 0.0


def test_compensated_horner_beats_plain_horner_next_to_a_double_root(
    device: torch.device,
) -> None:
    # f(x) = (x - 1)² - 2^-52 near its roots 1 ± 2^-26, where f's terms cancel to 1e-16.
    a, b, c = (t(v, device=device) for v in (1.0, -2.0, 1.0 - 2.0**-52))
    x = t(1.0000000123456789, device=device)
    exact = (Fraction(float(x)) - 1) ** 2 - Fraction(2) ** -52
    compensated = Fraction(float(compensated_horner(a, b, c, x)))
    plain = Fraction(float(horner(a, b, c, x)))
    assert abs(compensated - exact) <= abs(exact) * 2**-52
    assert abs(plain - exact) > abs(exact) * 2**-10


def test_pow2_and_ldexp_are_exact_over_the_whole_range(device: torch.device) -> None:
    e = torch.tensor([-1022, -1, 0, 1, 1023], device=device)
    assert pow2(e).tolist() == [2.0**-1022, 0.5, 1.0, 2.0, 2.0**1023]
    x = t(1.5, 1.5, 5e-324, 1.5, device=device)
    scaled = ldexp(x, torch.tensor([-1070, 1000, 1074 + 1000, -2000], device=device))
    assert scaled.tolist() == [math.ldexp(1.5, -1070), math.ldexp(1.5, 1000), 2.0**1000, 0.0]


@ON_EVERY_DEVICE
@given(
    st.floats(min_value=-1e300, max_value=1e300).filter(lambda v: v != 0),
    st.floats(min_value=-1e300, max_value=1e300),
    st.floats(min_value=-1e300, max_value=1e300),
)
def test_scaling_is_exact_and_lands_the_largest_coefficient_in_half_to_one(
    device: str, a: float, b: float, c: float
) -> None:
    big_a, big_b, big_c, k = scale_quadratic(
        t(a, device=device), t(b, device=device), t(c, device=device)
    )
    largest = max(abs(float(big_a)), abs(float(big_b)), abs(float(big_c)))
    assert 0.5 <= largest < 1.0
    # A/a = 2^(2k - s) and C/c = 2^-s, B/b = 2^(k - s): consistent powers of two.
    ratios = [
        Fraction(float(big)) / Fraction(v)
        for big, v in ((big_a, a), (big_b, b), (big_c, c))
        if v != 0 and abs(float(big)) >= 2.0**-1022
    ]
    for ratio in ratios:
        assert ratio.numerator == 1 or ratio.denominator == 1  # a power of two
    if c != 0 and abs(float(big_c)) >= 2.0**-1022:
        s_factor = Fraction(float(big_c)) / Fraction(c)
        if abs(float(big_a)) >= 2.0**-1022:
            assert Fraction(float(big_a)) / Fraction(a) == s_factor * Fraction(2) ** (2 * int(k))
