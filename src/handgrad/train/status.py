"""How a training run ended: trained, diverged, or not learning — said, never hidden.

- **trained**: the training loss of the final network is below that of the initial one
  (both measured the same way: the whole training split, eval mode, after and before
  training);
- **diverged**: a loss became NaN or infinite; training of that run stopped at that epoch
  and step (the other runs of a comparison go on);
- **not learning**: every loss stayed finite, but the final training loss is not below the
  first — a learning rate too large (oscillating) or too small, dead units, a bad setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["trained", "diverged", "not learning"]
STATES: tuple[State, ...] = ("trained", "diverged", "not learning")


@dataclass(frozen=True)
class RunStatus:
    """A run's outcome. ``epoch``/``step`` (1-based) locate a divergence (``step`` None: the
    test loss after the epoch's last step); ``loss`` is the non-finite value, or the final
    training loss; ``initial_loss`` the training loss before the first step."""

    state: State
    initial_loss: float | None = None
    loss: float | None = None
    epoch: int | None = None
    step: int | None = None
    what: str = "training loss"

    @property
    def trained(self) -> bool:
        return self.state == "trained"

    def reason(self) -> str:
        """One clause for people: ``diverged at epoch 2, step 17 (training loss nan)``,
        ``not learning (training loss 9.13 -> 10.5, not lower)``."""
        if self.state == "diverged":
            where = f"epoch {self.epoch}" + (f", step {self.step}" if self.step else
                                             ", after its last step")
            return f"diverged at {where} ({self.what} {self.loss})"
        if self.initial_loss is None or self.loss is None:
            return self.state
        change = f"training loss {self.initial_loss:.4g} -> {self.loss:.4g}"
        return f"{self.state} ({change}{'' if self.trained else ', not lower'})"

    def short(self) -> str:
        """For a table cell: ``trained``, ``not learning``, ``diverged e2 s17``."""
        if self.state == "diverged":
            return f"diverged e{self.epoch}" + (f" s{self.step}" if self.step else "")
        return self.state

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite losses as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
        figures: dict[str, Any] = {"state": self.state, "reason": self.reason(),
                                   "initial_train_loss": self.initial_loss}
        if self.state == "diverged":
            figures.update(epoch=self.epoch, step=self.step, quantity=self.what,
                           value=_json_float(self.loss))
        else:
            figures["final_train_loss"] = self.loss
        return figures

    @classmethod
    def from_dict(cls, figures: dict[str, Any]) -> RunStatus:
        state = figures["state"]
        if state not in STATES:
            raise ValueError(f"unknown run status {state!r}")
        diverged = state == "diverged"
        return cls(
            state=state,
            initial_loss=_float_or_none(figures.get("initial_train_loss")),
            loss=_float_or_none(figures.get("value" if diverged else "final_train_loss")),
            epoch=int(figures["epoch"]) if diverged else None,
            step=int(figures["step"]) if diverged and figures.get("step") is not None else None,
            what=str(figures.get("quantity", "training loss")),
        )


def _json_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def judge(initial_loss: float, final_loss: float) -> RunStatus:
    """``trained`` when ``final_loss < initial_loss``, else ``not learning`` (a non-finite
    final loss is a divergence: see :func:`diverged`)."""
    state: State = "trained" if final_loss < initial_loss else "not learning"
    return RunStatus(state, initial_loss=initial_loss, loss=final_loss)


def diverged(initial_loss: float | None, epoch: int, step: int | None, loss: float,
             what: str = "training loss") -> RunStatus:
    """The status of a run whose ``what`` became ``loss`` (NaN or ±inf) at ``epoch``,
    ``step`` (None: after the epoch's last step)."""
    return RunStatus("diverged", initial_loss=initial_loss, loss=loss, epoch=epoch, step=step,
                     what=what)


__all__ = ["STATES", "RunStatus", "State", "diverged", "judge"]
