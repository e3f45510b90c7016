"""The "gauss-newton" method (the default): every equation's two descents as two lanes.

Each solvable equation gets two lanes. A lane is a one-dimensional gradient descent on the
loss L(t) = P(t)² of a quadratic P(t) = α t² + β t + γ, γ a double-double (γ + γ_lo), with the
hand-derived gradient L'(t) = 2 P(t) P'(t) and the normalised step η = 1 / (2 P'(t)²)
(Gauss–Newton, which makes η L' Newton's step P/P'):

- two real roots or a double root: P is the scaled equation, (α, β, γ) = (A, B, C), t = y;
  lane 0 descends to the left root, lane 1 to the right root, the vertex v = -B/2A between
  them as a barrier neither crosses;
- a complex pair v ± i m: on the vertical line through the vertex, z = v + i w, the equation
  is real, f(v + i w) = -(D + (2Aw)²) / 4A, and in t = 2|A| w it reads P(t) = t² + D (times
  -1/4A). So the lanes descend on (α, β, γ) = (1, 0, D) — D the exact discriminant's
  double-double — lane 0 to t = -2|A| m, lane 1 to +2|A| m, barrier 0; w = t / 2|A| at the
  end (one rounding). Newton's step ignores the scale of P and of t: these are the iterates of
  the descent on f(v + i w)² in w;
- a linear equation (A = 0, or roots too far apart for the scaling): lane 0 alone, P = B y + C
  from y = 0, no barrier; the first step lands on -C/B, the last one polishes.

So every equation pays for two descents, whatever its kind, with one evaluation of P per lane
and step: the compensated Horner scheme, accurate to the last bit even next to a double root.

Starts come from a root bound, never from the square root of the discriminant: the roots are
v ± sqrt(v² - C/A) and v² - C/A <= v² + |C/A|, so v ∓ R with R = sqrt(v² + s²), s = sqrt|C/A|
widened by 2^-20, lies outside both roots (:func:`handgrad.roots.descent.tight_starts`, whose
start next to the smaller root does not cancel). For a complex pair, m² = C/A - v² <= |C/A|,
so t = ∓ 2|A| s (the same widened s) lies outside ∓ 2|A| m. From outside, L is convex and each
lane slides monotonically to its root: for a parabola the Newton iterate from u = t - v is
u' = (u + δ²/u)/2 >= δ, δ the root's distance from the vertex, so it never passes the root
(rounding aside, which the barrier and the compensated residual keep harmless). The error
squares at every step once the lane is close, and halves per step next to a double root;
a lane stops as soon as its step predicts a next one below an ulp (see
:func:`handgrad.roots.descent.advance`). The first ROUGH_STEPS steps evaluate P in plain
floating point, and stop no lane: from the bound starts a lane is still far from its root
there, and the compensated steps after them polish. Standard-normal coefficients take 3.7
steps on average (max 14 in a million), coefficients from 1e-300 to 1e300 no more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from handgrad.roots.descent import (
    START_WIDENING,
    UNIT_ROUNDOFF,
    monotone_descent,
    tight_starts,
)
from handgrad.roots.exact import compensated_horner, horner
from handgrad.roots.problem import MethodResult, RootKind, ScaledQuadratic

# The first steps of every lane take P in plain floating point (a quarter of the arithmetic of
# the compensated scheme): from the bound starts a lane is still far from its root there, so
# P's rounding error hardly moves the iterate, and the compensated steps after it polish.
ROUGH_STEPS = 2


@dataclass(frozen=True)
class Lanes:
    """The two descents of each of n equations (every field shape (n,)).

    ``polynomial``: (α, β, γ, γ_lo), shared by both lanes; ``starts``, ``barriers``,
    ``directions``: per lane (direction +1 where the lane moves down, -1 up). A NaN start:
    the lane does not run. ``complex_pair``/``linear`` mark the kinds whose lanes differ from
    the two-real-roots case; ``half_width_scale`` is 2|A| (t = 2|A| w) where complex_pair.
    """

    polynomial: tuple[Tensor, Tensor, Tensor, Tensor]
    starts: tuple[Tensor, Tensor]
    barriers: tuple[Tensor, Tensor]
    directions: tuple[Tensor, Tensor]
    complex_pair: Tensor
    linear: Tensor
    vertex: Tensor
    half_width_scale: Tensor


def setup_lanes(problem: ScaledQuadratic) -> Lanes:
    """Polynomials, starts, barriers and directions of both lanes of every equation."""
    a, b, c = problem.a, problem.b, problem.c
    # The kind as the lanes see it: roots too far apart are two linear equations. Conditions
    # are single comparisons (see problem.prepare) and RootKind orders the kinds:
    # TWO_REAL, DOUBLE, COMPLEX_PAIR, LINEAR, then the equations without roots.
    kind = torch.where(problem.separated, int(RootKind.LINEAR), problem.kind)
    real = kind <= int(RootKind.DOUBLE)
    complex_pair = kind == int(RootKind.COMPLEX_PAIR)
    linear = kind == int(RootKind.LINEAR)
    quadratic = kind <= int(RootKind.COMPLEX_PAIR)
    safe_a = torch.where(quadratic, a, 1.0)
    vertex = torch.where(quadratic, -b / (2.0 * safe_a), 0.0)

    # Starts from a root bound, never from √D: v ∓ R with R = sqrt(v² + s²), s = sqrt|C/A|
    # widened by 2^-20 (descent.tight_starts), outside both real roots; for a complex pair
    # ∓ 2|A| s (1 + 2^-20) in t, outside ∓ 2|A| m as m² = C/A - v² <= |C/A|.
    spread = torch.sqrt((c / safe_a).abs())
    outer_left, outer_right = tight_starts(vertex, spread)
    imaginary = 2.0 * safe_a.abs() * (spread * START_WIDENING)
    left = torch.where(real, outer_left, -imaginary)
    right = torch.where(real, outer_right, imaginary)
    left = torch.where(quadratic, left, torch.where(linear, 0.0, math.nan))
    right = torch.where(quadratic, right, math.nan)

    one, zero = torch.ones_like(a), torch.zeros_like(a)
    polynomial = (
        torch.where(complex_pair, one, a),
        torch.where(complex_pair, zero, b),
        torch.where(complex_pair, problem.disc_hi, c),
        torch.where(complex_pair, problem.disc_lo, zero),
    )
    linear_direction = torch.where(c * b > 0, 1.0, -1.0)
    centre = torch.where(complex_pair, 0.0, vertex)
    return Lanes(
        polynomial=polynomial,
        starts=(left, right),
        barriers=(torch.where(linear, -linear_direction * math.inf, centre), centre),
        directions=(torch.where(linear, linear_direction, -1.0), one),
        complex_pair=complex_pair,
        linear=linear,
        vertex=vertex,
        half_width_scale=2.0 * safe_a.abs(),
    )


def descent_step(t: Tensor, polynomial: tuple[Tensor, ...]) -> Tensor:
    """η L'(t) for L = P(t)²: L' = 2 P P', η = 1 / (2 P'²); P by compensated Horner.

    Zero where P vanishes (the lane is on its root) or P' does (at the vertex: no direction).
    """
    alpha, beta, gamma, gamma_lo = polynomial
    value = compensated_horner(alpha, beta, gamma, t, gamma_lo)
    slope = 2.0 * alpha * t + beta
    gradient = 2.0 * value * slope
    eta = 0.5 / (slope * slope)
    return torch.where(value == 0, 0.0, torch.where(slope == 0, 0.0, eta * gradient))


def rough_descent_step(t: Tensor, polynomial: tuple[Tensor, ...]) -> Tensor:
    """:func:`descent_step` with P by plain Horner (γ_lo dropped): for the first steps, while a
    lane is far from its root and P's rounding error is far below P."""
    alpha, beta, gamma, _ = polynomial
    value = horner(alpha, beta, gamma, t)
    slope = 2.0 * alpha * t + beta
    gradient = 2.0 * value * slope
    eta = 0.5 / (slope * slope)
    return torch.where(value == 0, 0.0, torch.where(slope == 0, 0.0, eta * gradient))


def lane_roots(lanes: Lanes, t: Tensor) -> tuple[Tensor, Tensor]:
    """The root (re, im) in the scaled variable y that a lane's t stands for (same shape).

    ``t`` may carry leading dimensions (lanes stacked in front of the equations).
    """
    complex_pair = lanes.complex_pair
    re = torch.where(complex_pair, torch.where(t == t, lanes.vertex, t), t)  # t == t: not NaN
    im = torch.where(complex_pair, t / lanes.half_width_scale, 0.0)
    return re, im


def lane_values(lanes: Lanes, t: Tensor) -> Tensor:
    """|f| at the root a lane's t stands for (the residual): |P(t)| on the real line, and on
    the vertical line |P(t)| / 4|A|, as f(v + i w) = -P(t) / 4A there."""
    alpha, beta, gamma, gamma_lo = lanes.polynomial
    value = compensated_horner(alpha, beta, gamma, t, gamma_lo).abs()
    return torch.where(lanes.complex_pair, value / (2.0 * lanes.half_width_scale), value)


def descend_lanes(
    problem: ScaledQuadratic, *, tol: float | None, max_iter: int | None, record_path: bool
) -> MethodResult:
    """The "gauss-newton" method, eagerly: both lanes of every equation by monotone_descent."""
    lanes = setup_lanes(problem)
    n = problem.kind.shape[0]
    slots = monotone_descent(
        descent_step,
        torch.cat(lanes.starts),
        tuple(torch.cat([p, p]) for p in lanes.polynomial),
        torch.cat(lanes.barriers),
        torch.cat(lanes.directions),
        tol=UNIT_ROUNDOFF if tol is None else tol,
        max_iter=100 if max_iter is None else max_iter,
        record_path=record_path,
        settle=True,
        rough_step=rough_descent_step,
        rough_steps=ROUGH_STEPS,
    )

    def as_roots(t: Tensor) -> Tensor:
        re, im = lane_roots(lanes, t.reshape(2, n))
        return torch.complex(re, im).T

    iterations = slots.iterations.reshape(2, n).amax(dim=0)
    lane_converged = slots.converged.reshape(2, n)
    converged = lane_converged[0] & (lane_converged[1] | lanes.linear)
    kind = problem.kind
    converged |= (kind == int(RootKind.NO_SOLUTION)) | (kind == int(RootKind.ANY_X))
    path = None if slots.path is None else [as_roots(t) for t in slots.path]
    values = lane_values(lanes, slots.y.reshape(2, n)).T
    return MethodResult(as_roots(slots.y), iterations, converged, True, path, values)
