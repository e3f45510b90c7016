"""Every root within 4 eps of a 200-bit reference, on the hard cases of the literature.

On every device: the error-free arithmetic is plain IEEE float64 (separate kernels, no
contraction into FMA), so a GPU's roots meet the same bound. Property tests take the device
as a direct parameter (Hypothesis refuses function-scoped fixtures)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from handgrad.roots import RootKind, solve_quadratic
from tests.conftest import DEVICES
from tests.roots.reference import assert_close, on, reference

ULP = 2.0**-52

HARD_CASES = {
    # Kahan (2004): p x² - 2 q x + r with q² - p r tiny next to q²; roots 1 and r/p.
    "kahan_near_double": (94906265.625, -2 * 94906267.0, 94906268.375),
    "kahan_near_double_2": (94906266.375, -2 * 94906267.375, 94906268.375),
    # Catastrophic cancellation: b² >> 4ac.
    "cancellation_1e8": (1.0, -1e8, 1.0),
    "cancellation_1e15": (1.0, 1e15, 3.0),
    # Goualard (2023): overflow and underflow of the naive formula.
    "b_squared_overflows": (1.0, 1e200, 1.0),
    "b_is_1e300": (1.0, 1e300, 1.0),
    "ac_overflows": (1e300, -3e300, 2e300),
    "all_underflow": (1e-300, -3e-300, 2e-300),
    "roots_far_apart": (1e-300, 1.0, 1e-300),
    "huge_a_tiny_c": (1e300, -1.0, 1e-300),
    "subnormal_coefficients": (5e-324, -1.5e-323, 1e-323),
    "subnormal_double": (5e-324, 1e-323, 5e-324),
    "mixed_subnormal": (1e-310, 1.0, 1e-310),
    "small_root_underflows": (4.2111624448834355e19, -6.59710528342421e242, -2.04526418e-160),
    "big_root_overflows": (1.5038174299220293e-254, -9.743789399046132e279, -3.57356363857e198),
    # Near-double and one-ulp-apart roots (exactly representable coefficients).
    "near_double_2^-26": (1.0, -2.0, 1.0 - 2.0**-52),
    "one_ulp_apart": (2.0**52 - 1, 2.0**53 - 1, 2.0**52),
    "double_near_2^53": (2.0**52 - 1, 2.0**53 - 2, 2.0**52 - 1),
    "roots_2^-40_apart": (1.0, -(2.0 + 2.0**-40), 1.0 + 2.0**-40),
    "double_at_3": (1.0, -6.0, 9.0),
    "double_scaled": (2.0**-600, -(2.0**-599) * 3.0, 9 * 2.0**-600),
    # Complex pairs.
    "unit_imaginary": (1.0, 0.0, 1.0),
    "near_double_complex": (1.0, -2.0, 1.0 + ULP),
    "complex_huge": (1e300, 1e300, 1e300),
    "complex_tiny_imag": (1.0, -2e10, 1e20 + 1e5),
    # GSL poly tests (test.c): gsl_poly_solve_quadratic and its complex twin.
    "gsl_complex": (4.0, -20.0, 26.0),
    "gsl_double": (4.0, -20.0, 25.0),
    "gsl_two_real": (4.0, -20.0, 21.0),
    "gsl_zero_root": (4.0, 7.0, 0.0),
    "gsl_symmetric": (5.0, 0.0, -20.0),
    "gsl_imaginary": (5.0, 0.0, 20.0),
    "gsl_linear": (0.0, 3.0, -21.0),
    "gsl_double_zero": (3.0, 0.0, 0.0),
    # The classroom equation.
    "classroom": (1.0, -6.0, 4.0),
    "linear_third": (0.0, 3.0, -1.0),
}


def hard_case_columns(
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hard cases as three float64 columns a, b, c on ``device``."""
    columns = zip(*HARD_CASES.values(), strict=True)
    a, b, c = (torch.tensor(column, dtype=torch.float64, device=device) for column in columns)
    return a, b, c


def check_against_reference(
    a: float, b: float, c: float, method: str, device: torch.device | str = "cpu"
) -> None:
    kind, exact = reference(a, b, c)
    result = solve_quadratic(*on(device, a, b, c), method)
    assert RootKind(int(result.kind)) == kind
    roots = result.roots.tolist()
    for got, want in zip(roots, exact, strict=False):
        assert_close(got, want)
    if kind == RootKind.LINEAR:
        assert math.isnan(roots[1].real)
    assert bool(result.converged)
    if method == "gd":
        assert int(result.iterations) <= 60


@pytest.mark.parametrize("method", ["gd", "closed"])
@pytest.mark.parametrize("case", list(HARD_CASES), ids=list(HARD_CASES))
def test_hard_cases_within_4_eps(case: str, method: str, device: torch.device) -> None:
    check_against_reference(*HARD_CASES[case], method, device)


def test_hard_cases_as_one_batch_match_the_scalar_results(device: torch.device) -> None:
    a, b, c = hard_case_columns(device)
    batch = solve_quadratic(a, b, c)
    for i, case in enumerate(HARD_CASES.values()):
        single = solve_quadratic(*on(device, *case))
        assert torch.equal(batch.roots[i].isnan(), single.roots.isnan())
        torch.testing.assert_close(batch.roots[i], single.roots, rtol=0, atol=0, equal_nan=True)
        assert int(batch.kind[i]) == int(single.kind)
        assert int(batch.iterations[i]) == int(single.iterations)


def test_gd_takes_at_most_60_steps_on_the_hard_cases(device: torch.device) -> None:
    a, b, c = hard_case_columns(device)
    result = solve_quadratic(a, b, c)
    quadratic = a != 0
    assert bool(result.converged.all())
    assert int(result.iterations.max()) <= 60
    assert bool((result.iterations[quadratic] >= 1).all())


def test_double_root_and_roots_one_ulp_apart_are_told_apart(device: torch.device) -> None:
    # Integer coefficients near 2^53: b² - 4ac is 0, then 1, while b² and 4ac are ~2^106,
    # so only an error-free discriminant sees the difference. Roots -1 (double), and -1 and
    # -2^53/(2^53 - 2), which is within half an ulp of -(1 + 2^-52).
    a = [2.0**52 - 1, 2.0**52 - 1]
    b = [2.0**53 - 2, 2.0**53 - 1]
    c = [2.0**52 - 1, 2.0**52]
    for method in ("gd", "closed", "newton"):
        result = solve_quadratic(*on(device, a, b, c), method)
        assert result.kind.tolist() == [RootKind.DOUBLE, RootKind.TWO_REAL]
        if method == "closed":
            assert result.roots[0].real.tolist() == [-1.0, -1.0]
            assert result.roots[1].real.tolist() == [-(1.0 + ULP), -1.0]
    # The descent settles within an ulp of them (plain Newton only within sqrt(eps)).
    for triple in zip(a, b, c, strict=True):
        check_against_reference(*triple, "gd", device)


def _full_range_float(draw: st.DrawFn) -> float:
    kind = draw(st.sampled_from(["normal", "normal", "normal", "subnormal", "zero", "small_int"]))
    if kind == "zero":
        return 0.0
    if kind == "small_int":
        return float(draw(st.integers(-20, 20)))
    if kind == "subnormal":
        return draw(st.integers(1, 2**52 - 1)) * 2.0**-1074 * draw(st.sampled_from([-1, 1]))
    mantissa = draw(st.floats(1.0, 2.0, exclude_max=True))
    sign = draw(st.sampled_from([-1.0, 1.0]))
    return sign * math.ldexp(mantissa, draw(st.integers(-1000, 1000)))


@st.composite
def triples(draw: st.DrawFn) -> tuple[float, float, float]:
    return (_full_range_float(draw), _full_range_float(draw), _full_range_float(draw))


@pytest.mark.parametrize("device", DEVICES)
@given(triples())
def test_random_full_range_triples_within_4_eps(
    device: str, triple: tuple[float, float, float]
) -> None:
    check_against_reference(*triple, "gd", device)


@st.composite
def near_double(draw: st.DrawFn) -> tuple[float, float, float]:
    """(x - r)(x - r(1 + d)) with a few-bit r and small d, coefficients exact."""
    r = draw(st.integers(1, 2**20)) * 2.0 ** draw(st.integers(-60, 60))
    d = draw(st.integers(-(2**10), 2**10)) * 2.0 ** draw(st.integers(-52, -30))
    s = r * (1 + d)
    a = draw(st.sampled_from([1.0, 3.0, -0.5]))
    return a, -a * (r + s), a * r * s


@pytest.mark.parametrize("device", DEVICES)
@given(near_double())
def test_near_double_roots_within_4_eps(device: str, triple: tuple[float, float, float]) -> None:
    check_against_reference(*triple, "gd", device)


@pytest.mark.parametrize("device", DEVICES)
@given(triples())
def test_closed_form_within_4_eps(device: str, triple: tuple[float, float, float]) -> None:
    check_against_reference(*triple, "closed", device)


def test_float32_input_gives_float32_roots_rounded_from_float64(device: torch.device) -> None:
    a = torch.tensor([1.0, 3.0, 1e-20], dtype=torch.float32, device=device)
    b = torch.tensor([-6.0, 1.0, 1.0], dtype=torch.float32, device=device)
    c = torch.tensor([4.0, 5.0, 1e-20], dtype=torch.float32, device=device)
    result = solve_quadratic(a, b, c)
    assert result.roots.dtype == torch.complex64
    exact = solve_quadratic(a.double(), b.double(), c.double()).roots.to(torch.complex64)
    assert torch.equal(result.roots, exact)
