"""Helpers for layers: gradients handed on.

Every module now keeps only its forward's context and its output's shape, dtype and device
(``Module._remember``), and lets go of the context when its backward takes it
(``Module._recall``): a second backward of one forward is a ValueError, as autograd frees its
graph; layers need nothing here for that.

:func:`required` turns a child's optional input gradient into a tensor for composite
modules; :func:`accumulate` hands a parameter its gradient in its own dtype (mixed precision).
"""

from __future__ import annotations

from torch import Tensor

from handgrad.nn.gradients import accumulate_grad
from handgrad.nn.module import RELEASED

__all__ = ["RELEASED", "accumulate", "required"]


def required(grad: Tensor | None) -> Tensor:
    """The input gradient a child's ``backward`` returned where the caller needs one
    (composite modules: ``backward(..., input_grad=True)`` never returns None; this says so
    to the type checker, and raises plainly if a child breaks that promise)."""
    if grad is None:
        raise RuntimeError("a layer's backward returned None where an input gradient was needed")
    return grad


def accumulate(param: Tensor, grad: Tensor) -> None:
    """:func:`handgrad.nn.accumulate_grad` of ``grad`` in the parameter's dtype.

    Under ``torch.autocast`` a layer computes in bfloat16 from float32 (master) weights; its
    weight gradient comes out in bfloat16 and lands on the float32 weight in float32, as
    autograd's backward of the cast does.
    """
    accumulate_grad(param, grad if grad.dtype == param.dtype else grad.to(param.dtype))
