"""accumulate_grad: how every handgrad backward hands a parameter its gradient.

``param.grad += grad``, as autograd's AccumulateGrad does, plus where the gradient lives when
the parameters were laid out in one buffer (:func:`handgrad.nn.flatten_parameters`).
"""

from __future__ import annotations

import torch
from torch import Tensor

FLAT_SLOT = "_handgrad_flat_slot"
"""Attribute (in a parameter's ``__dict__``) naming its place in a flat gradient buffer."""


class FlatSlot:
    """Where a parameter's gradient goes while the layout of ``flatten_parameters`` holds.

    ``grad`` is the parameter's view into the flat gradient buffer. The layout holds while the
    parameter still starts at the address it was given, with the same dtype and shape
    (``key``); ``module.to(...)`` or ``p.data = ...`` moves it, and the slot is then
    forgotten. ``buffer`` is the flat parameter buffer, kept alive so that no other tensor
    (on any device) can be given its address: the same address is the same buffer.
    """

    __slots__ = ("buffer", "grad", "key")

    def __init__(self, param: Tensor, grad: Tensor, buffer: Tensor) -> None:
        self.key = (param.data_ptr(), param.dtype, param.shape)
        self.grad = grad
        self.buffer = buffer


def gradient_slot(param: Tensor) -> Tensor | None:
    """The tensor to write ``param``'s next gradient into, or None.

    It is the parameter's view into the flat gradient buffer of
    :func:`handgrad.nn.flatten_parameters` when ``param.grad`` is None (the first gradient
    since ``zero_grad(set_to_none=True)``) and the flat layout still holds. A layer may write
    its gradient there directly (``torch.mm(..., out=slot)``) and hand the slot to
    :func:`accumulate_grad`, saving a copy.
    """
    slot: FlatSlot | None = param.__dict__.get(FLAT_SLOT)
    if slot is None or param.grad is not None:
        return None
    if slot.key != (param.data_ptr(), param.dtype, param.shape):
        del param.__dict__[FLAT_SLOT]  # the layout is gone: back to a gradient of its own
        return None
    return slot.grad


def accumulate_grad(param: Tensor, grad: Tensor) -> None:
    """param.grad += grad, as autograd's AccumulateGrad: the first gradient is stored as is.

    A gradient computed under ``torch.inference_mode()`` is an inference tensor, which
    cannot be updated in place outside that mode (where optimizers and the next backward
    run), so it is stored as a normal tensor.

    A parameter of a flattened module (:func:`handgrad.nn.flatten_parameters`) stores its
    first gradient in its view of the flat gradient buffer instead — copied in, or already
    there when ``grad`` is the :func:`gradient_slot` a layer wrote into — so that all the
    gradients tile one buffer, as the parameters do.
    """
    current = param.grad
    if current is not None:
        current.add_(grad)
        return
    if FLAT_SLOT in param.__dict__:
        slot = param.__dict__[FLAT_SLOT].grad
        if grad is slot:  # written in place by a layer that asked gradient_slot()
            param.grad = grad
            return
        slot = gradient_slot(param)
        if (
            slot is not None
            and grad.layout == torch.strided
            and grad.shape == slot.shape
            and grad.dtype is slot.dtype
            and grad.device == slot.device
        ):
            slot.copy_(grad)
            param.grad = slot
            return
    if grad.is_inference():
        with torch.inference_mode(False):
            grad = grad.clone()
    param.grad = grad
