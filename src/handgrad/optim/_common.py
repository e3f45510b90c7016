"""Small pieces every handgrad optimizer shares: path selection and scalar handling."""

from __future__ import annotations

import torch
from torch import Tensor


def resolve_foreach(foreach: bool | None) -> bool:
    """The body to run: the caller's choice, else the multi-tensor one.

    torch.optim defaults to the single-tensor body on CPU; our multi-tensor body is at least
    as fast on every device we measured (see benchmarks/RESULTS.md), so it is our default.
    """
    return True if foreach is None else bool(foreach)


def as_float(value: float | Tensor) -> float:
    """A Python float from a hyperparameter that may be a 0-d tensor (tensor ``lr``)."""
    if isinstance(value, Tensor):
        return float(value.item())
    return float(value)


def is_tensor_hyperparameter(value: object) -> bool:
    """Whether a hyperparameter was given as a tensor (torch then keeps it on its device)."""
    return isinstance(value, torch.Tensor)
