"""Dropout2d: channel-wise dropout for convolutional feature maps, as torch.nn.Dropout2d.

(Element-wise ``Dropout`` is in :mod:`handgrad.nn.layers`.)
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from handgrad.nn.convert import register_conversion
from handgrad.nn.functional import dropout as F
from handgrad.nn.module import Module


class Dropout2d(Module):
    """In training, each channel of each sample, x[n, c], is zeroed with probability p and
    the rest scaled by 1/(1 − p); in eval y = x. dx = g · m[n, c]/(1 − p), the same mask.

    Input (N, C, H, W); a 3-D input is treated as (N, C, L) with a warning, as torch does.
    The mask comes from ``generator`` if given, else from torch's global RNG, drawn as
    torch.nn.Dropout2d draws it (same seed, same channels dropped). ``inplace=True``
    overwrites the input with the output, as torch's does (the backward does not need it).
    """

    def __init__(
        self, p: float = 0.5, inplace: bool = False, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace
        self.generator = generator

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

    def forward(self, input: Tensor) -> Tensor:
        x = self._check_tensor(input)
        if x.dim() not in (3, 4):
            warnings.warn(
                f"dropout2d: Received a {x.dim()}-D input to dropout2d, which is deprecated "
                "and will result in an error in a future release. To retain the behavior "
                "and silence this warning, please use dropout instead. Note that dropout2d "
                "exists to provide channel-wise dropout on inputs with 2 spatial dimensions, "
                "a channel dimension, and an optional batch dimension (i.e. 3D or 4D inputs).",
                stacklevel=2,
            )
        if x.dim() == 3:
            warnings.warn(
                "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
                "1D dropout behavior is desired - input is interpreted as shape (N, C, L), "
                "where C is the channel dim. This behavior will change in a future release "
                "to interpret the input as one without a batch dimension, i.e. shape "
                "(C, H, W). To maintain the 1D channel-wise dropout behavior, please switch "
                "to using dropout1d instead.",
                stacklevel=2,
            )
        if x.dim() < 2 and self.training and 0 < self.p < 1 and x.numel() > 0:
            raise RuntimeError(
                f"{self!r}: feature dropout requires at least 2 dimensions (N, C, ...), "
                f"got shape {tuple(x.shape)}"
            )
        out, ctx = F.feature_dropout_forward(x, self.p, self.training, self.generator)
        if self.inplace and out is not x:
            out = x.copy_(out)
        self._remember(ctx, out)
        return out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.feature_dropout_backward(grad_output, ctx) if input_grad else None


register_conversion(torch.nn.Dropout2d, Dropout2d, lambda m: {"p": m.p, "inplace": m.inplace})
