"""Kernels that move or mask values: dropout and flatten."""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn.functional._common import Ctx


def dropout_forward(
    x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None
) -> tuple[Tensor, Ctx]:
    """Inverted dropout: y = x · m / (1 − p), m_i ~ Bernoulli(1 − p), in training only.

    The mask is drawn like torch's own dropout (``bernoulli_(1 − p)`` on a tensor like x), so
    with the same RNG state both draw the same mask. p = 1 zeroes everything; p = 0 or
    ``training=False`` is the identity and draws nothing.
    """
    if not training or p == 0.0:
        return x, (None,)
    if p == 1.0:
        scale = torch.zeros_like(x)
    else:
        scale = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator) / (1.0 - p)
    return x * scale, (scale,)


def dropout_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g · m / (1 − p): the same scaled mask as the forward."""
    (scale,) = ctx
    return grad_out if scale is None else grad_out * scale


def flatten_forward(x: Tensor, start_dim: int = 1, end_dim: int = -1) -> tuple[Tensor, Ctx]:
    """Merge dims start_dim..end_dim into one."""
    return x.flatten(start_dim, end_dim), (x.shape,)


def flatten_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g reshaped back to the input's shape."""
    (shape,) = ctx
    return grad_out.reshape(shape)
