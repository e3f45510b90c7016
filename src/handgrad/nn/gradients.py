"""accumulate_grad: how every handgrad backward hands a parameter its gradient.

``param.grad += grad``, as autograd's AccumulateGrad does. A layer calls it and knows
nothing else: where the first gradient is stored when the parameters were laid out in one
buffer (:func:`handgrad.nn.flatten_parameters`) is decided here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn.flat import FLAT_SLOT, FlatSlot


def accumulate_grad(param: Tensor, grad: Tensor) -> None:
    """param.grad += grad, as autograd's AccumulateGrad: the first gradient is stored as is.

    A gradient computed under ``torch.inference_mode()`` is an inference tensor, which
    cannot be updated in place outside that mode (where optimizers and the next backward
    run), so it is stored as a normal tensor.

    A parameter of a :class:`handgrad.nn.FlatLayout` stores its first gradient (dense, of
    its shape, dtype and device) in its slot of the layout's gradient buffer instead —
    copied in — so that ``param.grad`` is the slot and all the gradients tile one buffer, as
    the parameters do.
    """
    current = param.grad
    if current is not None:
        current.add_(grad)
        return
    slot: FlatSlot | None = param.__dict__.get(FLAT_SLOT)
    if slot is not None:
        target = slot.grad
        if not slot.holds(param):
            del param.__dict__[FLAT_SLOT]  # the layout is gone: back to a gradient of its own
        elif (
            grad.layout == torch.strided
            and grad.shape == target.shape
            and grad.dtype is target.dtype
            and grad.device == target.device
        ):
            target.copy_(grad)
            param.grad = target
            return
    if grad.is_inference():
        with torch.inference_mode(False):
            grad = grad.clone()
    param.grad = grad
