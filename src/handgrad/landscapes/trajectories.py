"""Optimizer trajectories on a 2-D test function: the path each optimizer takes from one start.

Each run is the whole optimizer loop written out, with the gradient supplied by hand::

    p = start                                   # a (2,) float64 tensor, requires_grad=False
    repeat steps times:
        p.grad = ∇f(p)                          # the function's hand-written gradient
        optimizer.step()                        # p ← update(p, p.grad, state)

and the path p₀, p₁, … is recorded. A run that leaves the finite numbers (a learning rate
beyond the stability limit) stops at the step where that happened and says so, keeping the
finite part of its path.

Optimizer names are those of :mod:`handgrad.optim.names`: the lowercase torch.optim class
names, plus ``momentum`` (SGD with momentum 0.9) and ``nesterov`` (the same with Nesterov's
look-ahead), the names of the pictures in textbooks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from handgrad.landscapes.functions2d import Function2D, Point
from handgrad.optim import names
from handgrad.optim.names import OptimizerLookup

# Which of the function's learning rates (Function2D.learning_rates) an optimizer takes.
# RAdam's first steps, before its variance estimate is trusted, are un-normalised gradient
# steps: they need the plain-gradient lr, or they throw the point far off the map.
_FAMILY = {
    "sgd": "sgd",
    "asgd": "sgd",
    "radam": "sgd",
    "momentum": "momentum",
    "nesterov": "momentum",
    "sgdschedulefree": "sgd",
}
# Adagrad's steps shrink like lr/√t, so it needs a larger lr to cover the same ground.
_ADAPTIVE_LR_FACTOR = {"adagrad": 10.0}
# Adadelta learns its own step scale; its lr is a multiplier, torch's default being 1.
# Prodigy estimates its step size d; lr (1 by default) only scales that estimate.
_FIXED_LR = {"adadelta": 1.0, "prodigy": 1.0}

_UNSUPPORTED = {
    "lbfgs": "it needs a closure that re-evaluates the function",
    "sparseadam": "it needs sparse gradients",
    "muon": "it updates matrices only",
}


@dataclass(frozen=True)
class Trajectory:
    """One optimizer's path: ``points`` is (n, 2) with the start first, ``values`` is f there.

    ``diverged_at`` is the step (counted from 1) whose update left the finite numbers; the
    path then ends at the last finite point. None when every step stayed finite.
    """

    optimizer: str
    lr: float
    points: Tensor
    values: Tensor
    diverged_at: int | None = None

    @property
    def final_point(self) -> Point:
        x, y = self.points[-1].tolist()
        return float(x), float(y)

    @property
    def final_value(self) -> float:
        return float(self.values[-1])

    @property
    def steps_taken(self) -> int:
        return len(self.points) - 1


def _canonical(name: str) -> str:
    return name.strip().lower()


def resolve_optimizer(
    name: str, lookup: OptimizerLookup | None = None
) -> tuple[type[Any], dict[str, Any]]:
    """The optimizer class and the extra constructor arguments for a trajectory name
    (:func:`handgrad.optim.names.resolve_optimizer`).

    ``lookup`` maps a lowercase torch.optim name to a class; it defaults to handgrad's.
    Raises ``ValueError`` naming the input for an unknown name or an optimizer that cannot
    run on a plain 2-D point.
    """
    key = _canonical(name)
    if key in _UNSUPPORTED:
        raise ValueError(f"optimizer {name!r} cannot draw a trajectory: {_UNSUPPORTED[key]}")
    return names.resolve_optimizer(key, lookup)


def default_lr(function: Function2D, optimizer: str) -> float:
    """The learning rate ``optimizer`` gets on ``function`` unless the caller gives one."""
    key = _canonical(optimizer)
    if key in _FIXED_LR:
        return _FIXED_LR[key]
    family = _FAMILY.get(key, "adaptive")
    return function.learning_rates[family] * _ADAPTIVE_LR_FACTOR.get(key, 1.0)


def _check_positive_finite(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def run_trajectory(
    function: Function2D,
    optimizer: str,
    *,
    steps: int | None = None,
    lr: float | None = None,
    start: Point | None = None,
    lookup: OptimizerLookup | None = None,
) -> Trajectory:
    """Run ``optimizer`` on ``function`` for ``steps`` steps and record its path.

    Defaults: the function's ``steps`` and ``start``, and :func:`default_lr`. The gradient is
    the function's hand-written one, written into ``p.grad`` before every ``step()``.
    """
    steps = function.steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    lr = default_lr(function, optimizer) if lr is None else float(lr)
    _check_positive_finite("lr", lr)
    start = function.start if start is None else start
    if len(start) != 2 or not all(math.isfinite(c) for c in start):
        raise ValueError(f"start must be two finite numbers (x, y), got {start!r}")

    cls, extra = resolve_optimizer(optimizer, lookup)
    p = torch.tensor(start, dtype=torch.float64)
    opt = cls([p], lr=lr, **extra)
    # A schedule-free optimizer (one with train()/eval()) steps in train mode, where p holds
    # the point its gradients are taken at; the path drawn is its averaged point, which
    # eval() puts in p (and train() takes back out) after every step.
    schedule_free = callable(getattr(opt, "train", None))
    if schedule_free:
        opt.train()

    points = torch.empty(steps + 1, 2, dtype=torch.float64)
    values = torch.empty(steps + 1, dtype=torch.float64)
    points[0] = p
    values[0] = function.value(p[0], p[1])
    diverged_at = None
    for step in range(1, steps + 1):
        p.grad = torch.stack(function.gradient(p[0], p[1]))
        opt.step()
        if schedule_free:
            opt.eval()
        value = function.value(p[0], p[1])
        if not (bool(torch.isfinite(p).all()) and math.isfinite(float(value))):
            diverged_at = step
            break
        points[step] = p
        values[step] = value
        if schedule_free:
            opt.train()
    kept = steps + 1 if diverged_at is None else diverged_at
    return Trajectory(
        optimizer=_canonical(optimizer),
        lr=lr,
        points=points[:kept].clone(),
        values=values[:kept].clone(),
        diverged_at=diverged_at,
    )


def run_trajectories(
    function: Function2D,
    optimizers: Sequence[str],
    *,
    steps: int | None = None,
    lr: float | None = None,
    start: Point | None = None,
    lookup: OptimizerLookup | None = None,
) -> list[Trajectory]:
    """One :func:`run_trajectory` per optimizer, all from the same start.

    Every name is resolved before the first run, so a typo fails at once.
    """
    if not optimizers:
        raise ValueError("optimizers must name at least one optimizer, got none")
    for name in optimizers:
        resolve_optimizer(name, lookup)
    return [
        run_trajectory(function, name, steps=steps, lr=lr, start=start, lookup=lookup)
        for name in optimizers
    ]
