"""A small learning-rate sweep per optimizer before a comparison: each optimizer compared at a
rate chosen the same way, on the same budget and seeds, and the choice said.

Comparing optimizers at one shared rate, or at rates tuned for some of them only, measures
the rates more than the optimizers. Here every optimizer gets the same treatment:

1. a grid around its starting rate r₀ (the rate given, else the task's tuned default, else
   the optimizer's own default): r₀ · (1/10, 1/3, 1, 3, 10);
2. one training run per rate, with the comparison's epochs, batch size, seed and model, on
   the first 80% of the training split; each scored by its loss on the other 20% (a
   validation split: the test split is kept for the comparison itself);
3. the rate of the lowest validation loss is chosen; a run that diverged scores +inf.

:func:`sweep_learning_rates` returns one :class:`SweepResult` per optimizer (the grid, each
score, the choice and a sentence saying how it was made); :func:`with_chosen_rates` gives a
copy of the task whose default rates are the chosen ones, so that the comparison itself runs
with ``lr=None`` and each optimizer at its own chosen rate.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from handgrad.optim import names

if TYPE_CHECKING:
    from handgrad.train.compare import TrainConfig
    from handgrad.train.tasks import Task

SWEEP_FACTORS: tuple[float, ...] = (0.1, 1 / 3, 1.0, 3.0, 10.0)
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class SweepResult:
    """One optimizer's sweep: ``candidates`` are (lr, validation loss) pairs in grid order
    (+inf where the run diverged), ``chosen`` the rate of the lowest loss."""

    optimizer: str
    candidates: tuple[tuple[float, float], ...]
    chosen: float
    epochs: int
    seed: int

    @property
    def best_loss(self) -> float:
        return min(loss for _, loss in self.candidates)

    def describe(self) -> str:
        """How the rate was chosen, in one sentence (for the report)."""
        rates = ", ".join(f"{lr:.3g}" for lr, _ in self.candidates)
        diverged = [f"{lr:.3g}" for lr, loss in self.candidates if math.isinf(loss)]
        text = (f"{self.optimizer}: lr {self.chosen:.3g}, the lowest validation loss "
                f"({self.best_loss:.4g}) of {rates}, each trained {self.epochs} epochs with "
                f"seed {self.seed} on {1 - VALIDATION_FRACTION:.0%} of the training split")
        if diverged:
            text += f" ({', '.join(diverged)} diverged)"
        return text + "."


def validation_task(task: Task, fraction: float = VALIDATION_FRACTION) -> Task:
    """``task`` with its training split cut in two: the first part to train on, the last
    ``fraction`` as the split the runs are measured on (in place of the test split)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    n = len(task.x_train)
    held = max(1, round(n * fraction))
    if n - held < 1:
        raise ValueError(f"the training split ({n} rows) is too small to hold out {fraction:.0%}")
    return dataclasses.replace(task, x_train=task.x_train[: n - held],
                               y_train=task.y_train[: n - held], x_test=task.x_train[n - held:],
                               y_test=task.y_train[n - held:])  # fmt: skip


def starting_rate(name: str, task: Task, lr: float | None = None) -> float:
    """r₀: ``lr`` if given, else the task's tuned rate for ``name``, else the optimizer's own
    default (its constructor's ``lr``; 1e-3 where it has none)."""
    if lr is not None:
        return float(lr)
    tuned = task.default_lr(name)
    if tuned is not None:
        return float(tuned)
    cls, _ = names.resolve_optimizer(name)
    default = inspect.signature(cls).parameters.get("lr")
    value = None if default is None else default.default
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1e-3


def _score(task: Task, name: str, config: TrainConfig) -> float:
    """The validation loss after training ``name`` with ``config``; +inf if it diverged."""
    from handgrad.train.compare import compare_optimizers

    try:
        run = compare_optimizers(task, [name], config).runs[0]
    except ArithmeticError:  # TrainingDiverged
        return math.inf
    if getattr(run, "diverged", False) or not run.history:
        return math.inf
    loss = float(run.history[-1].test_loss)
    return loss if math.isfinite(loss) else math.inf


def sweep_learning_rates(
    task: Task,
    optimizers: Sequence[str],
    config: TrainConfig,
    *,
    factors: Sequence[float] = SWEEP_FACTORS,
) -> list[SweepResult]:
    """One :class:`SweepResult` per optimizer (see the module docstring). ``config`` is the
    comparison's (its ``lr``, if set, is every optimizer's starting rate); each run of the
    sweep is ``config`` with one rate of the grid, on :func:`validation_task`."""
    if not factors or any(not (f > 0 and math.isfinite(f)) for f in factors):
        raise ValueError(f"factors must be positive finite numbers, got {list(factors)!r}")
    held_out = validation_task(task)
    epochs = config.epochs if config.epochs is not None else task.defaults.epochs
    results = []
    for name in optimizers:
        start = starting_rate(name, task, config.lr)
        candidates = tuple(
            (start * f, _score(held_out, name, dataclasses.replace(config, lr=start * f)))
            for f in factors
        )
        best = min(candidates, key=lambda pair: pair[1])  # the first of equal losses
        chosen = best[0] if math.isfinite(best[1]) else start
        results.append(SweepResult(name, candidates, chosen, epochs, config.seed))
    return results


def with_chosen_rates(task: Task, results: Sequence[SweepResult],
                      batch_size: int | None = None) -> Task:  # fmt: skip
    """A copy of ``task`` whose default learning rates are the chosen ones (a run with
    ``lr=None`` then trains each optimizer at its own). ``batch_size``: the batch size the
    sweep ran at, made the task's reference batch so that no batch-size rule rescales the
    chosen rates."""
    defaults: Any = task.defaults
    rates = {**dict(defaults.lr), **{r.optimizer.lower(): r.chosen for r in results}}
    changes: dict[str, Any] = {"lr": rates}
    if batch_size is not None:
        changes["batch_size"] = batch_size
    return dataclasses.replace(task, defaults=dataclasses.replace(defaults, **changes))


__all__ = [
    "SWEEP_FACTORS",
    "VALIDATION_FRACTION",
    "SweepResult",
    "starting_rate",
    "sweep_learning_rates",
    "validation_task",
    "with_chosen_rates",
]
