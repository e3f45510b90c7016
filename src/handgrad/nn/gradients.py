"""accumulate_grad: how every handgrad backward hands a parameter its gradient.

``param.grad += grad``, as autograd's AccumulateGrad does. A layer calls it and knows
nothing else, flat layouts included: an optimizer's flat step gathers the gradients of a
:class:`handgrad.nn.FlatLayout` into the layout's gradient buffer itself, with one call
(see :mod:`handgrad.optim._flat`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def accumulate_grad(param: Tensor, grad: Tensor) -> None:
    """param.grad += grad, as autograd's AccumulateGrad: the first gradient is stored as is.

    A gradient computed under ``torch.inference_mode()`` is an inference tensor, which
    cannot be updated in place outside that mode (where optimizers and the next backward
    run), so it is stored as a normal tensor.
    """
    current = param.grad
    if current is not None:
        current.add_(grad)
        return
    if grad.is_inference():
        with torch.inference_mode(False):
            grad = grad.clone()
    param.grad = grad
