"""Learning-rate schedules by name: ``--schedule cosine|step:...|warmup:...``, built from
``torch.optim.lr_scheduler`` and stepped once per epoch.

A schedule is one part or several joined by ``+`` (run one after the other,
``SequentialLR``), each ``NAME[:key=value,...]``:

- ``cosine[:eta_min=0]`` — ``CosineAnnealingLR`` over the epochs left to it: the rate falls
  from its base value to ``eta_min`` along half a cosine;
- ``step:step_size=N[,gamma=0.1]`` — ``StepLR``: the rate times ``gamma`` every N epochs;
- ``exponential:gamma=G`` — ``ExponentialLR``: the rate times ``gamma`` every epoch;
- ``warmup:epochs=N[,start_factor=0.1]`` — ``LinearLR``: from ``start_factor`` times the
  base rate up to the base rate over N epochs, then (alone) constant;
- ``constant`` — no schedule.

``warmup:epochs=2+cosine`` warms up for two epochs and then anneals over the rest. The
rate of epoch e is the scheduler's after e − 1 steps: the first epoch trains at the
schedule's first value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch.optim import Optimizer, lr_scheduler

from handgrad.train.settings import parse_scalar


@dataclass(frozen=True)
class _Kind:
    options: Mapping[str, Any]  # option → default (REQUIRED: must be given)
    help: str


REQUIRED = object()
_KINDS: dict[str, _Kind] = {
    "constant": _Kind({}, "no schedule"),
    "cosine": _Kind({"eta_min": 0.0}, "CosineAnnealingLR over the epochs left"),
    "step": _Kind({"step_size": REQUIRED, "gamma": 0.1}, "StepLR"),
    "exponential": _Kind({"gamma": REQUIRED}, "ExponentialLR"),
    "warmup": _Kind({"epochs": REQUIRED, "start_factor": 0.1}, "LinearLR up to the base rate"),
}


@dataclass(frozen=True)
class SchedulePart:
    """One part of a schedule: its kind and its options, defaults filled in."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.kind
        return self.kind + ":" + ",".join(f"{key}={value:g}" if isinstance(value, float)
                                          else f"{key}={value}"
                                          for key, value in self.options.items())


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; ``str()`` gives it back in the command line's syntax (all options)."""

    parts: tuple[SchedulePart, ...]

    def __str__(self) -> str:
        return "+".join(str(part) for part in self.parts)

    @property
    def is_constant(self) -> bool:
        return all(part.kind == "constant" for part in self.parts)


def parse_schedule(text: str | Schedule | None) -> Schedule:
    """A :class:`Schedule` from ``"cosine"``, ``"step:step_size=10,gamma=0.5"``,
    ``"warmup:epochs=2+cosine"``, ...; ``None`` is ``constant``. Unknown kinds and options,
    missing required options and values of the wrong kind are one-line ``ValueError``s."""
    if isinstance(text, Schedule):
        return text
    if text is None:
        return Schedule((SchedulePart("constant"),))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"schedule must be a name like 'cosine', got {text!r}")
    parts = tuple(_parse_part(text, item) for item in text.split("+"))
    for part in parts[:-1]:
        if part.kind != "warmup":
            raise ValueError(
                f"schedule {text!r}: only a warmup can come before another part, "
                f"not {part.kind}"
            )
    return Schedule(parts)


def _parse_part(text: str, item: str) -> SchedulePart:
    kind_text, _, rest = item.strip().partition(":")
    kind = kind_text.strip().lower()
    spec = _KINDS.get(kind)
    if spec is None:
        raise ValueError(
            f"schedule {text!r}: unknown schedule {kind_text.strip()!r}; expected one of: "
            + ", ".join(_KINDS)
        )
    given: dict[str, Any] = {}
    for option in filter(None, (piece.strip() for piece in rest.split(","))):
        key, equals, value = (s.strip() for s in option.partition("="))
        if key not in spec.options:
            known = ", ".join(spec.options) or "none"
            raise ValueError(
                f"schedule {text!r}: {kind} has no option {key!r}; its options are: {known}"
            )
        if not equals or not value:
            raise ValueError(f"schedule {text!r}: expected {key}=VALUE")
        number = parse_scalar(value)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ValueError(f"schedule {text!r}: {key}={value!r} is not a number")
        # torch checks none of these: a negative eta_min or gamma would turn the learning
        # rate negative (gradient ascent) part-way through the run.
        if not math.isfinite(number):
            raise ValueError(f"schedule {text!r}: {key}={value!r} is not a finite number")
        if key == "eta_min" and number < 0:
            raise ValueError(f"schedule {text!r}: eta_min must be >= 0, got {value}")
        if key == "gamma" and number <= 0:
            raise ValueError(f"schedule {text!r}: gamma must be > 0, got {value}")
        given[key] = number
    missing = [key for key, default in spec.options.items()
               if default is REQUIRED and key not in given]
    if missing:
        raise ValueError(
            f"schedule {text!r}: {kind} needs {', '.join(f'{key}=N' for key in missing)}"
        )
    options = {key: given.get(key, default) for key, default in spec.options.items()}
    for key in ("step_size", "epochs"):
        if key in options and (not isinstance(options[key], int) or options[key] < 1):
            raise ValueError(f"schedule {text!r}: {key} must be a positive integer")
    return SchedulePart(kind, options)


Scheduler = lr_scheduler.LRScheduler


def make_scheduler(schedule: str | Schedule | None, optimizer: Optimizer,
                   epochs: int) -> Scheduler | None:
    """The torch scheduler for ``schedule`` over ``epochs`` epochs (stepped once after each
    epoch), or None for ``constant``. torch's own errors (a gamma it refuses, ...) come
    back as one-line ``ValueError``s naming the schedule; a warmup as long as the run is one
    too."""
    parsed = parse_schedule(schedule)
    if parsed.is_constant:
        return None
    builders: list[Callable[[Optimizer], Scheduler]] = []
    milestones: list[int] = []
    left = epochs
    for part in parsed.parts:
        if part is not parsed.parts[-1]:
            length = int(part.options["epochs"])
            if length >= left:
                raise ValueError(
                    f"schedule {parsed}: a warmup of {length} epochs leaves none of the "
                    f"{epochs} epochs for what follows"
                )
            milestones.append(epochs - left + length)
            builders.append(_builder(part, length))
            left -= length
        else:
            builders.append(_builder(part, left))
    try:
        if len(builders) == 1:
            return builders[0](optimizer)
        return lr_scheduler.SequentialLR(
            optimizer, [build(optimizer) for build in builders], milestones=milestones
        )
    except (ValueError, TypeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(f"schedule {parsed}: {reason}") from None


def _builder(part: SchedulePart, epochs: int) -> Callable[[Optimizer], Scheduler]:
    options = dict(part.options)
    if part.kind == "cosine":
        return lambda opt: lr_scheduler.CosineAnnealingLR(
            opt, T_max=epochs, eta_min=options["eta_min"])
    if part.kind == "step":
        return lambda opt: lr_scheduler.StepLR(
            opt, step_size=options["step_size"], gamma=options["gamma"])
    if part.kind == "exponential":
        return lambda opt: lr_scheduler.ExponentialLR(opt, gamma=options["gamma"])
    if part.kind == "warmup":
        return lambda opt: lr_scheduler.LinearLR(
            opt, start_factor=options["start_factor"], end_factor=1.0,
            total_iters=options["epochs"])
    return lambda opt: lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


__all__ = ["Schedule", "SchedulePart", "make_scheduler", "parse_schedule"]
