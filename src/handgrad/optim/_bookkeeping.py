"""Bookkeeping shared by Adagrad, Adadelta, Rprop, ASGD, Adafactor, SparseAdam, LBFGS and Muon.

Nothing here is arithmetic of an update rule: only the step counter torch keeps, the checks
every torch optimizer makes of its learning rate and flags, and real views of complex tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

# Where torch allows ``capturable=True``; elsewhere its step asserts.
_CAPTURABLE_DEVICES = ("cuda", "xpu", "hpu", "xla", torch._C._get_privateuse1_backend_name())


def scalar_dtype() -> torch.dtype:
    """The dtype torch gives ``state["step"]``: float64 under a float64 default, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def new_step(device: torch.device | None = None) -> Tensor:
    """A fresh 0-d step counter as torch keeps it (on CPU unless ``capturable`` asks the device)."""
    return torch.zeros((), dtype=scalar_dtype(), device=device)


def check_lr(lr: float | Tensor) -> None:
    """torch's learning-rate checks: a tensor lr has one element, and lr >= 0 (ValueError)."""
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")


def squeeze_lr(lr: float | Tensor) -> float | Tensor:
    """A 1-element tensor lr as a 0-d tensor (as torch computes with it); a float as is."""
    if isinstance(lr, Tensor) and lr.dim() != 0:
        return lr.squeeze()
    return lr


def reject_differentiable(differentiable: bool) -> None:
    """handgrad writes every update by hand and never records one for autograd."""
    if differentiable:
        raise ValueError(
            "differentiable=True is not supported: handgrad optimizers update parameters by "
            "hand under torch.no_grad(); expected differentiable=False"
        )


def check_capturable(capturable: bool, tensors: Sequence[Tensor]) -> None:
    """torch's check that ``capturable=True`` is only used on graph-capturable devices."""
    if capturable and not all(t.device.type in _CAPTURABLE_DEVICES for t in tensors):
        raise AssertionError(
            "If capturable=True, params and state_steps must be on supported devices: "
            f"{list(_CAPTURABLE_DEVICES)}."
        )


def setstate_steps(optimizer: torch.optim.Optimizer, flags: dict[str, Any]) -> None:
    """Fill group flags missing from an older pickle and turn float ``step`` into a tensor."""
    for group in optimizer.param_groups:
        for name, default in flags.items():
            group.setdefault(name, default)
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if len(state) != 0 and "step" in state and not torch.is_tensor(state["step"]):
                device = p.device if group.get("capturable", False) else None
                state["step"] = torch.tensor(
                    float(state["step"]), dtype=scalar_dtype(), device=device
                )


def real_views(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Complex tensors as real ones with a trailing (re, im) axis; real tensors unchanged.

    Elementwise rules that torch applies to complex parameters treat the real and imaginary
    parts as two independent real coordinates.
    """
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def tensors_by_device_and_dtype(
    lists: list[list[Tensor]],
) -> list[list[list[Tensor]]]:
    """Split parallel tensor lists into runs of one device and dtype (what ``_foreach_*`` needs)."""
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(lists)  # type: ignore[arg-type]
    return [
        [[t for t in tensor_list if t is not None] for tensor_list in tensor_lists]
        for tensor_lists, _ in grouped.values()
    ]
