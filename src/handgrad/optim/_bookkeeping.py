"""Bookkeeping of Adagrad, Adadelta, Rprop and ASGD that _common.py does not already hold.

Nothing here is arithmetic of an update rule: group flags that older pickles lack, and
torch's refusal of ``capturable=True`` off graph-capturable devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from handgrad.optim._common import restore_tensor_steps

# Where torch allows ``capturable=True``; elsewhere its step asserts.
_CAPTURABLE_DEVICES = ("cuda", "xpu", "hpu", "xla", torch._C._get_privateuse1_backend_name())


def restore_group_flags(optimizer: torch.optim.Optimizer, flags: dict[str, Any]) -> None:
    """``__setstate__``: fill group flags an older pickle lacks; make a float ``step`` a tensor."""
    for group in optimizer.param_groups:
        for name, default in flags.items():
            group.setdefault(name, default)
    restore_tensor_steps(optimizer)


def check_capturable(capturable: bool, tensors: Sequence[Tensor]) -> None:
    """torch's check that ``capturable=True`` is only used on graph-capturable devices."""
    if capturable and not all(t.device.type in _CAPTURABLE_DEVICES for t in tensors):
        raise AssertionError(
            "If capturable=True, params and state_steps must be on supported devices: "
            f"{list(_CAPTURABLE_DEVICES)}."
        )
