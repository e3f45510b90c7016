"""Channel dropout (Dropout1d/2d/3d's kernel): whole feature maps are kept or zeroed.

(Element-wise dropout is in :mod:`handgrad.nn.functional.shape`.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn.functional._common import Ctx


def feature_dropout_forward(
    x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None
) -> tuple[Tensor, Ctx]:
    """y[n, c, …] = x[n, c, …] · m[n, c] / (1 − p), m[n, c] ~ Bernoulli(1 − p), in training.

    One draw per (sample, channel), broadcast over the spatial positions: the mask is drawn
    as torch's feature dropout draws it (``bernoulli_(1 − p)`` on an (N, C, 1, …) tensor,
    then divided by 1 − p), so with the same RNG state both zero the same channels. p = 1
    zeroes everything; p = 0 or ``training=False`` is the identity and draws nothing.
    """
    if not training or p == 0.0 or x.numel() == 0:
        return x, (None,)
    if p == 1.0:
        scale = x.new_zeros(())
    else:
        noise_shape = (*x.shape[:2], *([1] * (x.dim() - 2)))
        scale = x.new_empty(noise_shape).bernoulli_(1.0 - p, generator=generator)
        scale.div_(1.0 - p)
    return x * scale, (scale,)


def feature_dropout_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g · m / (1 − p): the forward's mask, broadcast over the spatial positions."""
    (scale,) = ctx
    return grad_out if scale is None else grad_out * scale
