"""Pieces the optimizers beyond torch.optim share (Lion, the schedule-free pair, Prodigy,
Adan, Lamb, ADOPT, SOAP): what their reference implementations do that torch's optimizers
do not, on top of :class:`handgrad.optim.Optimizer`.

- :class:`GroupStepped`: counters kept in the parameter group (pytorch-optimizer's
  ``group["step"]``, schedule-free's ``k`` and its averaging weights), advanced once per
  ``step()`` for every group, with or without gradients, before any parameter moves:
  :meth:`GroupStepped.begin_group`.
- :meth:`GroupStepped.flat_allowed`: a group whose options make an element-wise rule look
  at whole tensors (ADOPT's ``cautious``) stays off the flat path.
- :class:`HyperparameterError`: where a reference refuses a hyperparameter with ``assert``
  (lion-pytorch, adan-pytorch), a ValueError that is also an AssertionError: code written
  for the reference catches it, and so does code written for torch's ValueError.

The base has no hook for either counter (issue 17's report asks for one); the two methods
of the base overridden here, ``_step`` and ``_recognise``, are the narrowest place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._base import FlatStepper, Optimizer


class HyperparameterError(ValueError, AssertionError):
    """A bad hyperparameter, refused where the reference asserts (see the module docstring)."""


def require(condition: bool, message: str) -> None:
    """``HyperparameterError(message)`` unless ``condition`` (an ``assert`` that stays under
    ``python -O`` and says what was wrong)."""
    if not condition:
        raise HyperparameterError(message)


def check_finite_number(name: str, value: Any, *, low: float = 0.0, low_open: bool = False,
                        high: float | None = None, high_open: bool = False) -> None:  # fmt: skip
    """ValueError naming ``name``, ``value`` and the interval unless value lies in it (for
    hyperparameters the reference takes unchecked)."""
    ok = (value > low if low_open else value >= low) and (
        high is None or (value < high if high_open else value <= high)
    )
    if not ok:
        left = "(" if low_open else "["
        right = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        interval = f"{left}{low}, {right}"
        raise ValueError(f"Invalid {name} value: {value} (expected a number in {interval})")


def check_lr_and_betas(lr: float, betas: tuple[float, ...], *, high_open: bool = True) -> None:
    """pytorch-optimizer's checks of ``lr`` (>= 0) and each beta (in [0, 1), or [0, 1] with
    ``high_open=False``), a ValueError naming the value and the interval."""
    check_finite_number("learning rate", lr)
    for index, beta in enumerate(betas):
        check_finite_number(f"beta parameter at index {index}", beta, high=1.0,
                            high_open=high_open)  # fmt: skip


def one_tensor_at_a_time(optimizer: Any, group: dict[str, Any], params: list[Tensor],
                         grads: list[Tensor], state: dict[str, list[Any]]) -> None:  # fmt: skip
    """``optimizer.update`` on one tensor at a time, so that each tensor's temporaries are
    freed (and their memory reused) before the next: the same operations, the same bits.
    A class sets ``update_large = one_tensor_at_a_time`` where it measured faster
    (bench_new_optim, "4 params of 1M", one thread, paired against the multi-tensor body:
    Lion 0.52x, Lamb 0.67x, Adan 0.67x; ADOPT and SOAP now keep their temporaries in reused
    buffers instead, see theirs)."""
    for index, (p, g) in enumerate(zip(params, grads, strict=True)):
        optimizer.update(group, [p], [g], {key: [v[index]] for key, v in state.items()})


class GroupStepped(Optimizer):
    """The base with per-group counters: :meth:`begin_group` runs for every group at every
    ``step()``, after the closure and before any update, in group order."""

    def begin_step(self) -> None:
        """Once per ``step()``, before :meth:`begin_group` (default: nothing; Lamb measures
        the global gradient norm here)."""

    def begin_group(self, group: dict[str, Any]) -> None:
        """Advance the group's own counters (default: nothing)."""

    def check_step(self) -> None:
        """Refuse a step before anything runs (default: nothing; the schedule-free
        optimizers refuse a step outside train mode)."""

    def flat_allowed(self, group: dict[str, Any]) -> bool:
        """Whether this group may take the flat path (default: yes, for an element-wise rule)."""
        return True

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        self.check_step()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.begin_step()
        for group in self.param_groups:
            self.begin_group(group)
        super()._step(None)
        return loss

    def flat_stepper(self) -> FlatStepper | None:
        """The base's (:meth:`Optimizer.flat_stepper`), each update preceded by what
        :meth:`_step` runs before it: ``check_step``, ``begin_step`` and ``begin_group``."""
        if type(self)._step is not GroupStepped._step:
            return None
        stepper = self._flat_stepper()
        if stepper is None:
            return None
        group = self.param_groups[0]
        flat_update = stepper.update

        def update() -> None:
            self.check_step()
            self.begin_step()
            self.begin_group(group)
            flat_update()

        stepper.update = update
        return stepper

    # The base binds its hook wrapper to its own _step; ours must run there too.
    # (typed for torch.optim.Optimizer methods; a subclass method is one)
    _hooked_step = torch.optim.Optimizer.profile_hook_step(_step)  # type: ignore[arg-type]

    def _recognise(self, group: dict[str, Any]) -> None:
        if self.flat_allowed(group):
            super()._recognise(group)


__all__ = ["GroupStepped", "HyperparameterError", "check_finite_number", "check_lr_and_betas",
           "one_tensor_at_a_time", "require"]
