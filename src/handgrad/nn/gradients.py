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
        if grad is target:  # written in place by a layer that asked gradient_slot()
            param.grad = grad
            return
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


def gradient_slot(param: Tensor) -> Tensor | None:
    """The tensor :func:`accumulate_grad` would store ``param``'s next gradient in, or None.

    Its slot in a :class:`handgrad.nn.FlatLayout`'s gradient buffer, while ``param.grad``
    is None and the layout still holds. Kept for layers written before accumulate_grad
    stored into the slot itself (a layer may write there with ``out=`` and hand the slot to
    accumulate_grad, saving a copy); a layer needs nothing but accumulate_grad.
    """
    slot: FlatSlot | None = param.__dict__.get(FLAT_SLOT)
    if slot is None or param.grad is not None:
        return None
    if not slot.holds(param):
        del param.__dict__[FLAT_SLOT]
        return None
    return slot.grad
