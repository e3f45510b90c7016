"""The "gd" method: gradient descent on L(x) = f(x)² with a fixed learning rate, as in class.

For f(x) = a x² + b x + c the loss, its gradient and the update are

    L(x) = f(x)²,        L'(x) = 2 f(x) f'(x),        x_{k+1} = x_k - lr · L'(x_k),

in the user's variable x, exactly (no scaling). A start may also be complex: the gradient of
L = |f|² with respect to (Re z, Im z), written as a complex number, is 2 f(z) conj(f'(z)) (on
the real line, 2 f f'), so the same update finds a complex pair in the complex plane. With an
``optimizer`` (a torch.optim or handgrad.optim class), the optimizer takes the steps from the
same hand-written gradient.

Which learning rates work. Near a root x*, f(x) ≈ f'(x*) (x - x*), so L'(x) ≈ 2 f'(x*)² (x - x*)
and the error e_k = x_k - x* obeys e_{k+1} ≈ (1 - 2 lr f'(x*)²) e_k. The descent converges near
x* exactly when |1 - 2 lr f'(x*)²| < 1:

    0 < lr < 1 / f'(x*)²         (fastest at lr = 1 / (2 f'(x*)²), where the factor is 0).

At both roots f'(x*) = 2a x* + b = ±√D with D = b² - 4ac, so the limit is 1/|D| (for a complex
pair too: at a root the Hessian of |f|² in (Re z, Im z) is 2|f'(z*)|² I = 2|D| I; for a linear
equation D = b²). At a double root f'(x*) = 0: every lr is stable near it, but the error only
falls like 1/√k. :func:`handgrad.roots.stability_limit` gives 1/|D|.

Farther away the cubic growth of L' matters. In s = (x - v)/δ (v the vertex, δ the roots'
distance from it) and θ = lr |D| the update is one map for every equation with two real roots,
s ← s (1 + θ - θ s²) (for a complex pair the same map along the vertical line through the
vertex). From |s| = 1.25 it stays on its side and converges for every θ < 1, which is why the
default starts are v ± 1.25 δ; from the classroom starts -2 and 8 of x² - 6x + 4 (|s| = √5),
θ = 1/4 lands exactly on the vertex and θ = 1/2 jumps between -2 and 8 forever.

So a start does not simply "converge or not": each one ends with a :class:`StartOutcome`.
With a fixed ``lr`` the update depends on x alone, so an iterate that repeats exactly proves a
cycle; exact repeats are found by Brent's power-of-two scheme (one comparison per step). With
an optimizer (which carries state) cycles and stalls are only judged from the last iterates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from handgrad.roots.closed import closed_form
from handgrad.roots.problem import RootKind, ScaledQuadratic
from handgrad.roots.scaling import exponent, ldexp

# Default starts: v ± START_OFFSET · δ (see the module docstring), and for a double root
# v ± DOUBLE_OFFSET · max(|v|, 1) in the scaled variable.
START_OFFSET = 1.25
DOUBLE_OFFSET = 0.25
# The default learning rate, a quarter of the stability limit 1/|D|: linear convergence by a
# factor 1/2 per step near a root, and from the default starts, a few dozen steps.
DEFAULT_LR_FRACTION = 0.25
# Iterates kept at the end of a run to tell a cycle from a slow approach, and how close (as a
# fraction of the last step) an iterate must come back to count as a cycle.
TAIL = 8
CYCLE_CLOSENESS = 1e-6

RUNNING = -1  # internal: a start still taking steps


class StartOutcome(IntEnum):
    """How one start of a fixed-step descent ended."""

    CONVERGED = 0  # |f(x)| <= tol · (|a| |x|² + |b| |x| + |c|) (root 0: see fixed_step)
    DIVERGED = 1  # the iterate or f(x)² left the finite numbers
    AT_VERTEX = 2  # f'(x) = 0 (to rounding) at a point that is no root: no step moves it
    CYCLING = 3  # the iterates repeat (or approach a repeat) with a period >= 2
    STUCK = 4  # x stopped changing: lr · L'(x) is below the rounding of x
    SLOW = 5  # max_iter steps and still descending
    ERRATIC = 6  # max_iter steps, neither descending nor repeating (a chaotic orbit)
    NOT_RUN = 7  # no start here (the second start of a linear equation, no roots, invalid)


_OUTCOME_HELP = {
    StartOutcome.CONVERGED: "the backward error |f(x)| / (|a|x² + |b||x| + |c|) fell below tol",
    StartOutcome.DIVERGED: "x or f(x)² overflowed: lr too large for this start",
    StartOutcome.AT_VERTEX: "f'(x) = 0 there, so the gradient 2 f f' is 0 and no step moves x "
    "(from a real start, a complex pair's descent ends there: the closest f comes to 0)",
    StartOutcome.CYCLING: "the iterates come back to where they were: lr near or above 1/|D|",
    StartOutcome.STUCK: "the step lr · L'(x) rounds to nothing at this x",
    StartOutcome.SLOW: "max_iter steps, the loss still falling: lr too small, or a double root",
    StartOutcome.ERRATIC: "max_iter steps, neither falling nor repeating: lr above 1/|D|",
    StartOutcome.NOT_RUN: "no start here",
}


def outcome_help(outcome: StartOutcome) -> str:
    """One line on what an outcome means and its usual cause."""
    return _OUTCOME_HELP[outcome]


@dataclass(frozen=True)
class FixedStepRun:
    """The raw result of :func:`fixed_step` for n equations, two starts each (shape (n, 2)).

    ``final``: where each start stopped (the root it found; for DIVERGED the last finite
    iterate); ``steps``: the step at which it stopped (max_iter when it ran out); ``period``:
    the cycle length for CYCLING (else 0); ``path``: with ``record_path``, the iterates, one
    (n, 2) tensor per step, NaN once a start has stopped.
    """

    final: Tensor
    outcome: Tensor
    steps: Tensor
    period: Tensor
    path: list[Tensor] | None


@dataclass(frozen=True)
class StartReport:
    """What each start of a fixed-step descent did, for a batch of shape S (tensors (*S, 2)).

    - ``start``: complex, where it started (NaN: no start; see ``outcome`` NOT_RUN).
    - ``outcome``: int64 :class:`StartOutcome` values.
    - ``steps``: int64, the step at which it stopped (DIVERGED: the first step whose iterate
      or loss was not finite; max_iter for SLOW, ERRATIC and an approached cycle).
    - ``final``: complex, where it stopped: the root it found, the last finite iterate before
      it diverged, the vertex, a point of the cycle, the last iterate.
    - ``period``: int64, the cycle's period for CYCLING (else 0).
    - ``root``: int64, for CONVERGED which root it found: 0 for x1, 1 for x2 (else -1).
    - ``lr``: float64 (*S,), the learning rate each equation ran with (NaN when an optimizer
      chose its own).
    - ``max_iter``: the step limit.
    """

    start: Tensor
    outcome: Tensor
    steps: Tensor
    final: Tensor
    period: Tensor
    root: Tensor
    lr: Tensor
    max_iter: int

    def describe(self, index: tuple[int, ...] = ()) -> list[str]:
        """One line per start of the equation at ``index`` ("start 1: x0 = -10 -> ...")."""
        lines = []
        for j in range(2):
            outcome = StartOutcome(int(self.outcome[(*index, j)]))
            if outcome == StartOutcome.NOT_RUN:
                continue
            start = complex(self.start[(*index, j)])
            lines.append(
                f"start {j + 1}: x0 = {_short(start)} -> "
                + describe_outcome(
                    outcome,
                    int(self.steps[(*index, j)]),
                    complex(self.final[(*index, j)]),
                    int(self.period[(*index, j)]),
                    int(self.root[(*index, j)]),
                    self.max_iter,
                )
            )
        return lines


def _short(z: complex, digits: int = 10) -> str:
    """A number in a sentence: ``digits`` significant digits, the imaginary part if any."""
    if z.imag == 0:
        return f"{z.real:.{digits}g}"
    sign = "-" if math.copysign(1.0, z.imag) < 0 else "+"
    return f"{z.real:.{digits}g}{sign}{abs(z.imag):.{digits}g}j"


def outcome_label(outcome: StartOutcome, steps: int, period: int, root: int) -> str:
    """An outcome in a few words, for a table column or a legend ('converged to x1')."""
    if outcome == StartOutcome.CONVERGED:
        return f"converged to x{root + 1}" if root >= 0 else "converged"
    if outcome == StartOutcome.CYCLING:
        return f"cycling (period {period})"
    if outcome == StartOutcome.DIVERGED:
        return f"diverged at step {steps}"
    return outcome.name.lower().replace("_", " ")


def describe_outcome(
    outcome: StartOutcome, steps: int, final: complex, period: int, root: int, max_iter: int
) -> str:
    """An outcome in words, with its step and iterate: 'diverged at step 7 (x = -3.1e+94)'."""
    x = _short(final)
    if outcome == StartOutcome.CONVERGED:
        which = f"x{root + 1}" if root >= 0 else "a root"
        return f"converged to {which} = {x} in {steps} steps"
    if outcome == StartOutcome.DIVERGED:
        return f"diverged at step {steps} (x = {_short(final, 4)})"
    if outcome == StartOutcome.AT_VERTEX:
        return f"stopped at the vertex x = {x} at step {steps} (f'(x) = 0: a zero gradient)"
    if outcome == StartOutcome.CYCLING:
        if steps < max_iter:
            return f"cycling with period {period} (repeats at step {steps}), through x = {x}"
        return f"approaching a cycle of period {period} after {steps} steps, through x = {x}"
    if outcome == StartOutcome.STUCK:
        return f"stuck at x = {x} from step {steps} (the step rounds to nothing)"
    if outcome == StartOutcome.SLOW:
        return f"still descending after {steps} steps (max_iter), at x = {x}"
    if outcome == StartOutcome.ERRATIC:
        return f"erratic after {steps} steps (no convergence, divergence or cycle), at x = {x}"
    return "not run"


def _shift_to_x(problem: ScaledQuadratic, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """e with b = B 2^e (and a = A 2^(e-k), c = C 2^(e+k)): the scaling's s - k, int64.

    Read from the coefficient whose scaled value is largest (a normal number in [1/2, 1),
    so the ratio of exponents is exact)."""
    big_a, big_b, big_c, k = problem.a.abs(), problem.b.abs(), problem.c.abs(), problem.k
    from_b = exponent(b) - exponent(problem.b)
    from_a = exponent(a) + k - exponent(problem.a)
    from_c = exponent(c) - k - exponent(problem.c)
    largest = torch.maximum(torch.maximum(big_a, big_b), big_c)
    return torch.where(big_b == largest, from_b, torch.where(big_a == largest, from_a, from_c))


def discriminant_size(
    problem: ScaledQuadratic, a: Tensor, b: Tensor, c: Tensor
) -> tuple[Tensor, Tensor]:
    """|D| = |b² - 4ac| and b² + 4|ac| of the original equations, without overflow on the way
    (computed on the scaled equation: D = D_y 2^(2(s-k))); inf or 0 beyond float64's range."""
    shift = 2 * _shift_to_x(problem, a, b, c)
    terms = problem.b * problem.b + 4.0 * (problem.a * problem.c).abs()
    return ldexp(problem.disc_hi.abs(), shift), ldexp(terms, shift)


def stability_limit_of(problem: ScaledQuadratic, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """1 / f'(x*)² = 1/|D| per equation: a fixed step converges near a root for lr below it
    (inf for a double root, where every lr is stable and none is fast; NaN without roots)."""
    d, _ = discriminant_size(problem, a, b, c)
    limit = torch.where(d > 0, 1.0 / torch.where(d > 0, d, 1.0), math.inf)
    return torch.where(problem.kind <= int(RootKind.LINEAR), limit, math.nan)


def default_learning_rate_of(problem: ScaledQuadratic, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """A quarter of the stability limit, 1/(4|D|); for a double root 1/(4 (b² + 4|ac|)), the
    same with D's terms in place of D (NaN where there is no root)."""
    d, terms = discriminant_size(problem, a, b, c)
    size = torch.where(d > 0, d, terms)
    lr = DEFAULT_LR_FRACTION / torch.where(size > 0, size, 1.0)
    return torch.where(problem.kind <= int(RootKind.LINEAR), lr, math.nan)


def default_starts(problem: ScaledQuadratic) -> Tensor:
    """Complex (n, 2) starts in x: v ± 1.25 δ for two real roots (δ = √D / 2|a| the roots'
    distance from the vertex v), v ∓ 1.25 i m for a complex pair v ± i m, v ± max(|v|, 1)/4
    (in the scaled variable) for a double root, 0 (1 if 0 is the root) for a linear equation;
    NaN where there is nothing to find.

    Never on a root nor on the vertex: a start that rounds onto a root is moved one ulp out.
    """
    kind, a, b, c = problem.kind, problem.a, problem.b, problem.c
    two_real = kind == int(RootKind.TWO_REAL)
    double = kind == int(RootKind.DOUBLE)
    complex_pair = kind == int(RootKind.COMPLEX_PAIR)
    linear = kind == int(RootKind.LINEAR)
    quadratic = two_real | double | complex_pair
    safe_a = torch.where(quadratic, a, 1.0)
    vertex = torch.where(quadratic, -b / (2.0 * safe_a), 0.0)
    half_width = torch.sqrt(problem.disc_hi.abs()) / (2.0 * safe_a.abs())
    offset = torch.where(
        double, DOUBLE_OFFSET * torch.clamp(vertex.abs(), min=1.0), START_OFFSET * half_width
    )
    # Far below an ulp of v (roots an ulp apart) the offset would vanish: 4 ulps at least.
    offset = torch.maximum(offset, vertex.abs() * 2.0**-50)
    left, right = vertex - offset, vertex + offset
    # A start that rounded onto a root (of the closed form) moves out by an ulp.
    roots = closed_form(problem).roots.real
    down, up = torch.full_like(left, -math.inf), torch.full_like(right, math.inf)
    for column in range(2):
        root = roots[:, column]
        left = torch.where(left == root, torch.nextafter(left, down), left)
        right = torch.where(right == root, torch.nextafter(right, up), right)
    re = torch.stack([left, right], dim=1)
    re = torch.where(complex_pair[:, None], vertex[:, None].expand(-1, 2), re)
    im = torch.where(complex_pair[:, None], torch.stack([-offset, offset], dim=1), 0.0)
    linear_start = torch.where(c == 0, 1.0, 0.0)
    nan = torch.full_like(a, math.nan)
    re = torch.where(linear[:, None], torch.stack([linear_start, nan], dim=1), re)
    keep = (quadratic | linear)[:, None]
    re, im = torch.where(keep, re, math.nan), torch.where(keep, im, math.nan)
    scale = problem.k[:, None].expand(-1, 2)
    return torch.complex(ldexp(re, scale), ldexp(im, scale))


def loss_gradient(a: Tensor, b: Tensor, c: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """f(z) and the gradient of L = |f|² in (Re z, Im z) as a complex number, 2 f conj(f')."""
    f = (a * z + b) * z + c
    slope = 2.0 * a * z + b
    return f, 2.0 * f * slope.conj()


def _flat(a: Tensor, b: Tensor, z: Tensor, root_of_d: Tensor) -> Tensor:
    """f'(z) = 2a (z - v) is zero to rounding, or below 2^-20 of its size at the roots, √|D|:
    z is at the vertex v, or 2^-20 of the roots' distance from it (a descent towards the
    vertex, as from a real start for a complex pair, stops by rounding about there)."""
    slope = (2.0 * a * z + b).abs()
    return slope <= torch.maximum(
        4.0 * 2.0**-53 * ((2.0 * a * z).abs() + b.abs()), 2.0**-20 * root_of_d
    )


def fixed_step(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    starts: Tensor,
    *,
    lr: float | Tensor | None,
    optimizer: Callable[..., torch.optim.Optimizer] | None,
    tol: float | None,
    max_iter: int | None,
    record_path: bool,
) -> FixedStepRun:
    """The classroom descent in x: x <- x - lr L'(x), or ``optimizer`` steps on the same L'.

    ``a, b, c``: flat float64 (n,); ``starts``: complex (n, 2), NaN slots do not run; ``lr`` a
    float, or (without ``optimizer``) an (n, 1) tensor, one learning rate per equation. Each
    start ends with a :class:`StartOutcome` (default tol 1e-12, max_iter 10 000).
    """
    tol = 1e-12 if tol is None else tol
    max_iter = 10_000 if max_iter is None else max_iter
    plain = optimizer is None
    ca, cb, cc = (t[:, None].to(torch.complex128) for t in (a, b, c))
    size_a, size_b, size_c = (t.abs()[:, None] for t in (a, b, c))
    root_of_d = torch.sqrt((b * b - 4.0 * a * c).abs())[:, None]
    root_of_d = torch.where(torch.isfinite(root_of_d), root_of_d, 0.0)

    planned = torch.isfinite(starts)
    # A root at 0 (c = 0): there the backward error below is 1 however close x comes, so such
    # a start converges when |x| <= tol times the problem's length: the other root's size
    # |b/a|, or (bx = 0, ax² = 0) the start's.
    other_root = size_b / torch.where(size_a > 0, size_a, 1.0)
    length = torch.where((size_a > 0) & (size_b > 0), other_root, starts.abs())
    zero_root = (size_c == 0) & (size_b + size_a > 0)

    def evaluate(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The gradient at z, whether z meets the tolerance, whether all of it is finite.

        The tolerance: the backward error |f(z)| / (|a| |z|² + |b| |z| + |c|) <= tol (or the
        rule for a root at 0, above)."""
        f, gradient = loss_gradient(ca, cb, cc, z)
        size = z.abs()
        scale = (size_a * size + size_b) * size + size_c
        residual = f.abs()
        finite = torch.isfinite(residual) & torch.isfinite(scale) & torch.isfinite(gradient)
        finite = finite & torch.isfinite(z)
        met = (residual <= tol * scale) | (zero_root & (size <= tol * length))
        return gradient, met, finite

    z = torch.where(planned, starts, 0.0)
    outcome = torch.where(planned, RUNNING, int(StartOutcome.NOT_RUN))
    steps = torch.zeros(z.shape, dtype=torch.int64, device=z.device)
    period = torch.zeros_like(steps)
    final = torch.where(planned, starts, complex(math.nan, math.nan))
    path = [final.clone()] if record_path else None

    def settle(mask: Tensor, code: StartOutcome, step: int, at: Tensor) -> None:
        nonlocal outcome, steps, final
        outcome = torch.where(mask, int(code), outcome)
        steps = torch.where(mask, step, steps)
        final = torch.where(mask, at, final)

    gradient, met, finite = evaluate(z)
    running = outcome == RUNNING
    settle(running & ~finite, StartOutcome.DIVERGED, 0, z)
    settle(running & finite & met, StartOutcome.CONVERGED, 0, z)
    if plain:
        settle((outcome == RUNNING) & (gradient == 0), StartOutcome.AT_VERTEX, 0, z)

    parameter = z.clone()
    opt = None
    if optimizer is not None:
        opt = optimizer([parameter]) if lr is None else optimizer([parameter], lr=lr)
    saved, saved_step = z.clone(), 0  # Brent: the iterate at the last power-of-two step
    tail = [z.clone()] if max_iter <= TAIL else []
    for step in range(1, max_iter + 1):
        running = outcome == RUNNING
        if not bool(running.any()):
            break
        pushed = torch.where(running, gradient, 0.0)
        if opt is None:
            assert lr is not None
            moved = z - lr * pushed
        else:
            parameter.grad = pushed
            opt.step()
            moved = parameter.detach().clone()
        moved = torch.where(running, moved, z)
        next_gradient, met, finite = evaluate(moved)
        if path is not None:
            path.append(torch.where(running, moved, complex(math.nan, math.nan)))
        last_finite = torch.where(torch.isfinite(moved), moved, z)
        settle(running & ~finite, StartOutcome.DIVERGED, step, last_finite)
        settle(running & finite & met, StartOutcome.CONVERGED, step, moved)
        if plain:
            # With a fixed lr the next iterate depends on this one alone: a zero gradient
            # (f' = 0, the vertex) or an exact repeat means it never goes anywhere else.
            going = outcome == RUNNING
            settle(going & (next_gradient == 0), StartOutcome.AT_VERTEX, step, moved)
            going = outcome == RUNNING
            repeat = going & (moved == saved)
            if step - saved_step == 1:
                flat = _flat(ca, cb, moved, root_of_d)
                settle(repeat & flat, StartOutcome.AT_VERTEX, step, moved)
                settle(repeat & ~flat, StartOutcome.STUCK, step, moved)
            else:
                settle(repeat, StartOutcome.CYCLING, step, moved)
                period = torch.where(repeat, step - saved_step, period)
        kept = running & finite
        z = torch.where(kept, moved, z)
        gradient = torch.where(kept, next_gradient, gradient)
        if opt is not None:
            with torch.no_grad():
                parameter.copy_(z)  # stopped starts stay put, whatever the optimizer's state
        if step & (step - 1) == 0:
            saved, saved_step = z.clone(), step
        if step >= max_iter - TAIL:
            tail.append(z.clone())

    running = outcome == RUNNING
    if bool(running.any()):
        outcome, period = _judge_tail(
            torch.stack(tail), (ca, cb, cc), root_of_d, running, outcome, period
        )
        steps = torch.where(running, max_iter, steps)
        final = torch.where(running, z, final)
    return FixedStepRun(final, outcome, steps, period, path)


def _judge_tail(
    tail: Tensor,
    coefficients: tuple[Tensor, Tensor, Tensor],
    root_of_d: Tensor,
    running: Tensor,
    outcome: Tensor,
    period: Tensor,
) -> tuple[Tensor, Tensor]:
    """Outcomes of the starts still running after max_iter, from their last iterates ``tail``
    (T, n, 2): stuck or at the vertex (no longer moving), approaching a cycle (an iterate
    within CYCLE_CLOSENESS of a step of one p steps back), slow (|f| falling: never above its
    value two steps before, and lower than at the first), or erratic."""
    last = tail[-1]
    f_tail, gradient = loss_gradient(*coefficients, tail)
    size = f_tail.abs()
    judged = torch.full_like(outcome, int(StartOutcome.ERRATIC))
    found_period = torch.zeros_like(period)
    if tail.shape[0] >= 3:
        falling = (size[2:] <= size[:-2]).all(dim=0) & (size[-1] < size[0])
    else:
        falling = size[-1] < size[0]
    judged = torch.where(falling, int(StartOutcome.SLOW), judged)
    if tail.shape[0] >= 3:
        last_step = (last - tail[-2]).abs()
        for p in range(tail.shape[0] - 1, 1, -1):  # the smallest period wins: it is set last
            back = (last - tail[-1 - p]).abs() <= CYCLE_CLOSENESS * last_step
            back = back & (last_step > 0)
            judged = torch.where(back, int(StartOutcome.CYCLING), judged)
            found_period = torch.where(back, p, found_period)
    if tail.shape[0] >= 2:
        still = last == tail[-2]
        flat = _flat(coefficients[0], coefficients[1], last, root_of_d)
        vertex = still & ((gradient[-1] == 0) | flat)
        judged = torch.where(still, int(StartOutcome.STUCK), judged)
        judged = torch.where(vertex, int(StartOutcome.AT_VERTEX), judged)
        found_period = torch.where(still, 0, found_period)
    return torch.where(running, judged, outcome), torch.where(running, found_period, period)
