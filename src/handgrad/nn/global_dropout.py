"""Dropout for data-parallel training: each rank applies its slice of the global batch's mask.

A data-parallel run splits every global batch of N examples into one contiguous shard per
rank (:class:`ShardWindow` says which rows are this rank's). Ordinary dropout would draw a
mask per shard, so the result would depend on the number of processes. Here every rank draws
the mask of the whole global batch — as one process would, from the global RNG that every
rank seeds alike — and keeps its rows of it:

    m ~ Bernoulli(1 − p) of shape (N, ...),   y = x · m[start : start + n] / (1 − p),
    dL/dx = dL/dy · m[start : start + n] / (1 − p).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from handgrad.nn.module import Module


@dataclass
class ShardWindow:
    """The rows ``[start, start + count)`` of a global batch of ``global_size`` that this rank
    trains on; the data-parallel trainer moves it every step, the dropout layers read it."""

    global_size: int = 0
    start: int = 0


def global_mask(p: float, window: ShardWindow, like: Tensor) -> Tensor:
    """The scaled mask m/(1 − p) of the whole global batch, sliced to this rank's rows.

    Drawn as one process draws it for the global batch (``bernoulli_(1 − p)`` on a tensor of
    the global shape), so each rank keeps its slice of the very mask a single process uses.
    """
    shape = (window.global_size, *like.shape[1:])
    if p == 1.0:
        full = torch.zeros(shape, dtype=like.dtype, device=like.device)
    else:
        full = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1.0 - p)
        full = full / (1.0 - p)
    return full[window.start : window.start + len(like)]


class GlobalBatchDropout(Module):
    """handgrad's inverted dropout, with this rank's slice of the global batch's mask.

    Forward y = x · m/(1 − p); backward dx = g · m/(1 − p) with the same slice.
    """

    def __init__(self, p: float, window: ShardWindow) -> None:
        super().__init__()
        self.p = float(p)
        self.window = window

    def extra_repr(self) -> str:
        return f"p={self.p}, global batch"

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return self._remember((None,), input)
        scale = global_mask(self.p, self.window, input)
        return self._remember((scale,), input * scale)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        (scale,) = self._recall(grad_output)
        if not input_grad:
            return None
        return grad_output if scale is None else grad_output * scale


class TorchGlobalBatchDropout(torch.nn.Module):
    """The same for a torch.nn model trained by autograd (the reference backend)."""

    def __init__(self, p: float, window: ShardWindow) -> None:
        super().__init__()
        self.p = float(p)
        self.window = window

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return input
        return input * global_mask(self.p, self.window, input)


__all__ = ["GlobalBatchDropout", "ShardWindow", "TorchGlobalBatchDropout", "global_mask"]
