"""What every kernel file shares: the ctx type and kept scalar operands."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

Ctx = tuple[Any, ...]
"""What a forward hands to its backward."""

# dtypes in which a sum divided by a 0-d tensor of the same dtype holding the count is exactly
# torch's `sum / count` (the count is converted to the dtype once, either way).
_DIVIDE_BY_COUNT_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=256)
def _number(value: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """``value`` as a 0-d CPU tensor, made once and kept.

    torch turns a Python number operand into a 0-d float64 CPU tensor on every call, which
    costs as much as a small kernel. Multiplying a tensor of at least one dimension by this
    one gives the same bits (a 0-d operand changes neither the result's dtype nor how its
    value is converted); with a 0-d operand, pass that operand's dtype.
    """
    with torch.inference_mode(False):  # usable by autograd-recording callers too
        return torch.tensor(value, dtype=dtype)


def _operand(value: float, like: Tensor) -> Tensor:
    """:func:`_number` for a kernel on ``like`` (of at least one dimension): in ``like``'s dtype
    when that is float32 or float64 (kernels compute in it and round a number to it anyway,
    and an operand of another dtype measured ~1 µs slower per call), else float64."""
    dtype = like.dtype
    return _number(value, dtype if dtype in _DIVIDE_BY_COUNT_DTYPES else torch.float64)
