"""How the convolutional and transformer layers keep (and let go of) what their backward
needs, and hand on gradients.

``Module._remember(ctx, out)`` keeps the context and the output itself (so that ``_recall``
can check grad_output's shape, dtype and device) until the module's next forward. For a
convolutional network that is costly: each layer's output and context are as large as an
activation, and they stay alive through the backward and between steps. Measured on a ResNet
training step (stem + 4 basic blocks, batch 32): 1.5x the peak memory of torch autograd,
which keeps only the tensors its backward formulas use and frees each as soon as that part of
the backward has run. So the layers of this family

- hand ``_remember`` a stand-in for the output (:func:`output_stand_in`: one element expanded
  to the output's shape, with its dtype and device; the same checks pass, 4-8 bytes kept);
- release their context in backward (:func:`recall_once`), as autograd frees its graph: a
  second backward of one forward is a ValueError that says so.

:func:`required` turns a child's optional input gradient into a tensor for composite
modules; :func:`accumulate` hands a parameter its gradient in its own dtype (mixed precision).
"""

from __future__ import annotations

from torch import Tensor

from handgrad.nn.functional import Ctx
from handgrad.nn.gradients import accumulate_grad
from handgrad.nn.module import Module


class _Released:
    """The context of a module whose backward has already run (a marker)."""

    def __repr__(self) -> str:
        return "<released>"


RELEASED = _Released()


def output_stand_in(out: Tensor) -> Tensor:
    """A tensor with ``out``'s shape, dtype and device that stores a single element."""
    return out.new_empty(()).expand(out.shape)


def recall_once(module: Module, grad_output: Tensor) -> Ctx:
    """``module._recall(grad_output)``, releasing the context: the tensors it holds are freed
    as soon as the backward that calls this is done with them."""
    ctx = module._recall(grad_output)
    if ctx is RELEASED:
        raise ValueError(
            f"{module._get_name()}.backward() called twice for one forward: the first backward "
            "released what the forward saved (as autograd frees its graph); run forward again"
        )
    saved = module._saved
    assert saved is not None
    object.__setattr__(module, "_saved", (RELEASED, saved[1]))
    return ctx


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
    autograd's backward of the cast does. (``.to`` returns ``grad`` itself when the dtypes
    already agree.)
    """
    accumulate_grad(param, grad.to(param.dtype))
