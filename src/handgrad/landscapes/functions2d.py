"""Two-dimensional test functions for optimizers, each with its gradient written by hand.

Every function is stated for tensors ``x`` and ``y`` of any (broadcastable) shape, so the
same code evaluates one point of an optimizer's path and a whole grid for a contour map.
Alongside the formula each :class:`Function2D` carries what a picture of it needs: a start
that shows the function's character, a plot window, its minima, and a step count and
learning rates with which the classic optimizers make that character visible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

Gradient = tuple[Tensor, Tensor]
Point = tuple[float, float]


@dataclass(frozen=True)
class Function2D:
    """A test function f(x, y) with its hand-written gradient and the facts a plot needs.

    ``learning_rates`` maps an optimizer family to its default learning rate on this function:
    ``"sgd"`` (plain gradient steps, kept below 2 / the largest curvature along the path),
    ``"momentum"`` (heavy-ball and Nesterov SGD, momentum 0.9) and ``"adaptive"``
    (per-coordinate normalised steps such as Adam and RMSprop, whose lr is roughly a step
    length in the units of the plot window).
    """

    name: str
    formula: str
    value: Callable[[Tensor, Tensor], Tensor]
    gradient: Callable[[Tensor, Tensor], Gradient]
    start: Point
    window: tuple[Point, Point]
    minima: tuple[Point, ...]
    minimum_value: float | None
    steps: int
    learning_rates: Mapping[str, float]
    saddle_points: tuple[Point, ...] = ()

    def distance_to_minimum(self, point: Point) -> float | None:
        """Euclidean distance from ``point`` to the nearest minimum; None if there is none."""
        if not self.minima:
            return None
        return min(math.dist(point, minimum) for minimum in self.minima)


def rosenbrock_value(x: Tensor, y: Tensor) -> Tensor:
    """f(x, y) = (1 - x)² + 100 (y - x²)²: a curved, narrow valley with its minimum at (1, 1)."""
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosenbrock_gradient(x: Tensor, y: Tensor) -> Gradient:
    """∂f/∂x = -2 (1 - x) - 400 x (y - x²),  ∂f/∂y = 200 (y - x²)."""
    valley = y - x * x
    return -2 * (1 - x) - 400 * x * valley, 200 * valley


def _beale_terms(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return 1.5 - x + x * y, 2.25 - x + x * y * y, 2.625 - x + x * y**3


def beale_value(x: Tensor, y: Tensor) -> Tensor:
    """f(x, y) = (1.5 - x + xy)² + (2.25 - x + xy²)² + (2.625 - x + xy³)²; minimum at (3, 0.5)."""
    t1, t2, t3 = _beale_terms(x, y)
    return t1 * t1 + t2 * t2 + t3 * t3


def beale_gradient(x: Tensor, y: Tensor) -> Gradient:
    """With t₁, t₂, t₃ the three bracketed terms of f:

    ∂f/∂x = 2 t₁ (y - 1) + 2 t₂ (y² - 1) + 2 t₃ (y³ - 1),
    ∂f/∂y = 2 t₁ x + 4 t₂ x y + 6 t₃ x y².
    """
    t1, t2, t3 = _beale_terms(x, y)
    y2 = y * y
    d_dx = 2 * t1 * (y - 1) + 2 * t2 * (y2 - 1) + 2 * t3 * (y2 * y - 1)
    d_dy = 2 * t1 * x + 4 * t2 * x * y + 6 * t3 * x * y2
    return d_dx, d_dy


def saddle_value(x: Tensor, y: Tensor) -> Tensor:
    """f(x, y) = x² - y²: a saddle point at the origin, unbounded below along y."""
    return x * x - y * y


def saddle_gradient(x: Tensor, y: Tensor) -> Gradient:
    """∂f/∂x = 2x,  ∂f/∂y = -2y."""
    # Each part depends on one coordinate only; broadcast so both have the grid's shape.
    d_dx, d_dy = torch.broadcast_tensors(2 * x, -2 * y)
    return d_dx, d_dy


def himmelblau_value(x: Tensor, y: Tensor) -> Tensor:
    """f(x, y) = (x² + y - 11)² + (x + y² - 7)²: four minima, all with f = 0."""
    return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


def himmelblau_gradient(x: Tensor, y: Tensor) -> Gradient:
    """With u = x² + y - 11 and v = x + y² - 7:  ∂f/∂x = 4xu + 2v,  ∂f/∂y = 2u + 4yv."""
    u = x * x + y - 11
    v = x + y * y - 7
    return 4 * x * u + 2 * v, 2 * u + 4 * y * v


ROSENBROCK = Function2D(
    name="rosenbrock",
    formula="(1 − x)² + 100 (y − x²)²",
    value=rosenbrock_value,
    gradient=rosenbrock_gradient,
    start=(-1.5, 2.0),
    window=((-2.0, 2.0), (-1.0, 3.0)),
    minima=((1.0, 1.0),),
    minimum_value=0.0,
    steps=2000,
    # Curvature reaches ~1900 at the start: plain SGD is stable only below ~1e-3.
    learning_rates={"sgd": 1e-3, "momentum": 1e-3, "adaptive": 3e-2},
)

BEALE = Function2D(
    name="beale",
    formula="(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²",
    value=beale_value,
    gradient=beale_gradient,
    start=(1.0, 1.5),
    # The usual [-4.5, 4.5]² hides the paths in a corner; this frames where they go.
    window=((-1.0, 4.5), (-1.5, 2.5)),
    minima=((3.0, 0.5),),
    minimum_value=0.0,
    steps=2000,
    learning_rates={"sgd": 1e-2, "momentum": 1e-3, "adaptive": 3e-2},
)

SADDLE = Function2D(
    name="saddle",
    formula="x² − y²",
    value=saddle_value,
    gradient=saddle_gradient,
    # Almost on the x-axis, where the gradient barely points away from the saddle point.
    start=(1.0, 1e-3),
    window=((-1.5, 1.5), (-1.5, 1.5)),
    minima=(),
    minimum_value=None,
    steps=300,
    learning_rates={"sgd": 1e-2, "momentum": 1e-3, "adaptive": 1e-2},
    saddle_points=((0.0, 0.0),),
)

HIMMELBLAU = Function2D(
    name="himmelblau",
    formula="(x² + y − 11)² + (x + y² − 7)²",
    value=himmelblau_value,
    gradient=himmelblau_gradient,
    # Next to the local maximum at (-0.2708, -0.9230): optimizers fall into different minima.
    start=(-0.3, -0.9),
    window=((-5.0, 5.0), (-5.0, 5.0)),
    minima=(
        (3.0, 2.0),
        (-2.805118086952745, 3.131312518250573),
        (-3.779310253377747, -3.283185991286170),
        (3.584428340330492, -1.848126526964404),
    ),
    minimum_value=0.0,
    steps=1000,
    learning_rates={"sgd": 1e-2, "momentum": 1e-3, "adaptive": 3e-2},
)

FUNCTIONS: dict[str, Function2D] = {
    function.name: function for function in (ROSENBROCK, BEALE, SADDLE, HIMMELBLAU)
}


def get_function(name: str) -> Function2D:
    """The test function called ``name``; ``ValueError`` naming the known ones otherwise."""
    key = name.strip().lower()
    if key not in FUNCTIONS:
        known = ", ".join(sorted(FUNCTIONS))
        raise ValueError(f"unknown function {name!r}; expected one of: {known}")
    return FUNCTIONS[key]
