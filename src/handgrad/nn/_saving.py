"""What the transformer layers share: keeping less between forward and backward, and
handing gradients on in the right dtype.

``Module._remember(ctx, out)`` keeps ``out`` so that ``_recall`` can check a gradient's
shape, dtype and device against it; for a layer whose output is large and not otherwise
needed, that alone keeps a tensor the backward never reads alive until the next forward.
:func:`stand_in` gives a one-element tensor with the same shape, dtype and device (an
expanded scalar) for ``_remember`` to keep instead.

A layer's backward also sets ``self._saved = None`` once it has read its ctx: the ctx is
spent, and its tensors are freed during the backward, as autograd frees a graph — not at the
next forward.

:func:`required` turns a child's optional input gradient into a tensor for composite
modules; :func:`accumulate` hands a parameter its gradient in its own dtype (mixed precision).
"""

from __future__ import annotations

from torch import Tensor

from handgrad.nn.gradients import accumulate_grad


def stand_in(out: Tensor) -> Tensor:
    """A tensor with ``out``'s shape, dtype and device holding one element (a broadcast view)."""
    return out.new_empty(()).expand(out.shape)


def required(grad: Tensor | None) -> Tensor:
    """The input gradient a child's ``backward`` returned where the caller needs one.

    ``backward(..., input_grad=True)`` never returns None; this says so to the type checker
    (and raises plainly if a child breaks that promise).
    """
    if grad is None:
        raise RuntimeError("a layer's backward returned None where an input gradient was needed")
    return grad


def accumulate(param: Tensor, grad: Tensor) -> None:
    """:func:`handgrad.nn.accumulate_grad` of ``grad`` in the parameter's dtype.

    Under ``torch.autocast`` a layer computes in bfloat16 from float32 (master) weights; its
    weight gradient comes out in bfloat16 and lands on the float32 weight in float32, as
    autograd's backward of the cast does. (``.to`` returns ``grad`` itself when the dtypes
    already agree.)
    """
    accumulate_grad(param, grad.to(param.dtype))
