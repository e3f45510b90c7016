"""The 2-D test functions: hand-written gradients against autograd and finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from handgrad.landscapes.functions2d import FUNCTIONS, Function2D, get_function

NAMES = sorted(FUNCTIONS)


def _points_in_window(function: Function2D) -> st.SearchStrategy[tuple[float, float]]:
    (x_lo, x_hi), (y_lo, y_hi) = function.window
    return st.tuples(st.floats(x_lo, x_hi, allow_nan=False), st.floats(y_lo, y_hi, allow_nan=False))


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def _autograd_gradient(function: Function2D, x: float, y: float) -> torch.Tensor:
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    gx, gy = torch.autograd.grad(function.value(xt, yt), (xt, yt))
    return torch.stack([gx, gy])


def _hand_gradient(function: Function2D, x: float, y: float) -> torch.Tensor:
    xt = torch.tensor(x, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    return torch.stack(function.gradient(xt, yt))


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_autograd_across_the_window(name: str) -> None:
    function = FUNCTIONS[name]

    @given(_points_in_window(function))
    def check(point: tuple[float, float]) -> None:
        x, y = point
        torch.testing.assert_close(
            _hand_gradient(function, x, y),
            _autograd_gradient(function, x, y),
            rtol=1e-12,
            atol=1e-12,
        )

    check()


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_central_differences(name: str) -> None:
    function = FUNCTIONS[name]
    generator = torch.Generator().manual_seed(1)
    (x_lo, x_hi), (y_lo, y_hi) = function.window
    x = x_lo + (x_hi - x_lo) * torch.rand(64, generator=generator, dtype=torch.float64)
    y = y_lo + (y_hi - y_lo) * torch.rand(64, generator=generator, dtype=torch.float64)
    h = 1e-6
    numeric_x = (function.value(x + h, y) - function.value(x - h, y)) / (2 * h)
    numeric_y = (function.value(x, y + h) - function.value(x, y - h)) / (2 * h)
    gx, gy = function.gradient(x, y)
    # Central differences err by O(h²·f''') plus rounding eps·|f|/h; scale by |f| + 1.
    scale = function.value(x, y).abs() + 1
    assert torch.all((gx - numeric_x).abs() <= 1e-6 * scale)
    assert torch.all((gy - numeric_y).abs() <= 1e-6 * scale)


def test_gradients_at_known_points() -> None:
    # Worked by hand from the formulas in the docstrings.
    def at(name: str, x: float, y: float) -> list[float]:
        return _hand_gradient(FUNCTIONS[name], x, y).tolist()

    assert at("rosenbrock", 0.0, 0.0) == [-2.0, 0.0]
    assert at("rosenbrock", -1.5, 2.0) == [-155.0, -50.0]
    assert at("saddle", 1.5, -2.0) == [3.0, 4.0]
    assert at("himmelblau", 0.0, 0.0) == [-14.0, -22.0]
    assert at("beale", 1.0, 1.0) == pytest.approx([0.0, 27.75])


def test_values_at_known_points() -> None:
    def value(name: str, x: float, y: float) -> float:
        return float(FUNCTIONS[name].value(torch.tensor(x), torch.tensor(y)))

    assert value("rosenbrock", -1.5, 2.0) == pytest.approx(2.5**2 + 100 * 0.25**2)
    assert value("beale", 0.0, 0.0) == pytest.approx(1.5**2 + 2.25**2 + 2.625**2)
    assert value("saddle", 3.0, 2.0) == 5.0
    assert value("himmelblau", 0.0, 0.0) == 170.0


@pytest.mark.parametrize("name", NAMES)
def test_minima_are_stationary_points_with_the_stated_value(name: str) -> None:
    function = FUNCTIONS[name]
    for x, y in function.minima:
        gradient = _hand_gradient(function, x, y)
        assert gradient.abs().max() < 1e-11
        value = float(function.value(_scalar(x), _scalar(y)))
        assert function.minimum_value is not None
        assert value == pytest.approx(function.minimum_value, abs=1e-20)


@pytest.mark.parametrize("name", NAMES)
def test_start_minima_and_saddle_points_lie_in_the_window(name: str) -> None:
    function = FUNCTIONS[name]
    (x_lo, x_hi), (y_lo, y_hi) = function.window
    assert x_lo < x_hi
    assert y_lo < y_hi
    for x, y in (function.start, *function.minima, *function.saddle_points):
        assert x_lo <= x <= x_hi
        assert y_lo <= y <= y_hi
    # The start is not already a stationary point: there is a path to draw.
    assert _hand_gradient(function, *function.start).abs().max() > 1e-3


def test_saddle_has_no_minimum_and_a_stationary_saddle_point() -> None:
    saddle = FUNCTIONS["saddle"]
    assert saddle.minima == ()
    assert saddle.minimum_value is None
    assert saddle.distance_to_minimum((1.0, 2.0)) is None
    assert _hand_gradient(saddle, *saddle.saddle_points[0]).tolist() == [0.0, 0.0]


def test_distance_to_minimum_uses_the_nearest_minimum() -> None:
    himmelblau = FUNCTIONS["himmelblau"]
    assert himmelblau.distance_to_minimum((3.0, 2.0)) == 0.0
    assert himmelblau.distance_to_minimum((3.0, 2.5)) == pytest.approx(0.5)
    rosenbrock = FUNCTIONS["rosenbrock"]
    assert rosenbrock.distance_to_minimum((4.0, 5.0)) == pytest.approx(5.0)


@pytest.mark.parametrize("name", NAMES)
def test_value_and_gradient_broadcast_over_grids(name: str) -> None:
    function = FUNCTIONS[name]
    x = torch.linspace(-1, 1, 5, dtype=torch.float64).reshape(5, 1)
    y = torch.linspace(-1, 1, 3, dtype=torch.float64).reshape(1, 3)
    assert function.value(x, y).shape == (5, 3)
    gx, gy = function.gradient(x, y)
    expected = torch.stack(
        function.gradient(torch.tensor(-1.0).double(), torch.tensor(1.0).double())
    )
    assert gx.shape == gy.shape == (5, 3)
    assert [float(gx[0, 2]), float(gy[0, 2])] == expected.tolist()


@pytest.mark.parametrize("name", NAMES)
def test_learning_rates_name_every_family(name: str) -> None:
    function = FUNCTIONS[name]
    assert set(function.learning_rates) == {"sgd", "momentum", "adaptive"}
    assert all(0 < lr < 1 and math.isfinite(lr) for lr in function.learning_rates.values())
    assert function.steps > 0


def test_get_function_is_case_insensitive_and_names_the_choices_on_error() -> None:
    assert get_function(" Rosenbrock ") is FUNCTIONS["rosenbrock"]
    with pytest.raises(ValueError, match=r"unknown function 'booth'.*beale, himmelblau"):
        get_function("booth")
