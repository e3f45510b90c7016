"""Unflatten: one axis split into several, as torch.nn.Unflatten — (N, 64) → (N, 1, 8, 8),
the way a table of pixels becomes the images a convolution takes. Flatten's inverse."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from handgrad.nn import functional as F
from handgrad.nn.convert import register_conversion
from handgrad.nn.module import Module


class Unflatten(Module):
    """y = x with axis ``dim`` split into ``unflattened_size`` (one entry may be −1);
    dx = g reshaped back to x's shape."""

    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        super().__init__()
        if not isinstance(unflattened_size, tuple | list):
            raise TypeError(
                "unflattened_size must be a tuple of ints, but found type "
                f"{type(unflattened_size).__name__}"
            )
        for index, size in enumerate(unflattened_size):
            if not isinstance(size, int):
                raise TypeError(
                    "unflattened_size must be tuple of ints, but found element of type "
                    f"{type(size).__name__} at pos {index}"
                )
        self.dim = dim
        self.unflattened_size = unflattened_size

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"

    def forward(self, input: Tensor) -> Tensor:
        x = self._check_tensor(input)
        try:
            out = x.unflatten(self.dim, tuple(self.unflattened_size))
        except (IndexError, RuntimeError) as error:
            raise RuntimeError(
                f"{self!r}: cannot unflatten an input of shape {tuple(x.shape)}: {error}"
            ) from error
        self._remember((x.shape,), out)
        return out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.flatten_backward(grad_output, ctx) if input_grad else None


register_conversion(
    torch.nn.Unflatten,
    Unflatten,
    lambda m: {"dim": m.dim, "unflattened_size": m.unflattened_size},
)
