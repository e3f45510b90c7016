"""The fully connected layer's kernels: y = x Wᵀ + b and its three gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn.functional._common import Ctx


def linear_forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Ctx]:
    """y = x Wᵀ + b, for x of shape (..., in) and W of shape (out, in) (torch's layout).

    torch's own linear kernel, as torch.nn.Linear: one fused addmm for a (batch, in) input.
    """
    return torch.nn.functional.linear(x, weight, bias), (x, weight, bias)


def linear_backward(
    grad_out: Tensor, ctx: Ctx, input_grad: bool = True
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """(dx, dW, db) for y = x Wᵀ + b.

    dx = g W,   dW = Σ_rows gᵀ x,   db = Σ_rows g  (rows = every leading index of x).
    dx is None when ``input_grad`` is False (its matmul is skipped); db is None without bias.
    """
    x, weight, bias = ctx
    if x.dim() == 2:  # the usual (batch, in) case needs no reshaping
        grad_2d, x_2d = grad_out, x
    else:
        grad_2d = grad_out.reshape(-1, weight.shape[0])
        x_2d = x.reshape(-1, weight.shape[1])
    rows, out_features = grad_2d.shape
    if rows != 1:
        grad_weight = torch.mm(grad_2d.t(), x_2d)
    else:
        # One row: gᵀx is an outer product (each entry one exact multiply, the same bits as
        # the GEMM), done as a broadcast multiply, (out, 1) · (1, in); a 1 × 1 gradient is its
        # own transpose (a view costs as much as a small kernel).
        grad_t = grad_2d if out_features == 1 else grad_2d.t()
        grad_weight = torch.mul(grad_t, x_2d)
    grad_bias = None
    if bias is not None:
        grad_bias = grad_2d.sum(0)
    grad_x = None
    if input_grad:
        if out_features != 1 or (rows == 1 and grad_out.dim() == 2):
            # (A single (1, 1) · (1, in) product is also cheapest as a GEMM call: measured
            # ~2x faster than the broadcast multiply below, and the same exact products.)
            grad_x = torch.mm(grad_out, weight) if x_2d is x else grad_out.matmul(weight)
        else:
            # One output feature: g W is an outer product (each entry one exact multiply), done
            # as a broadcast multiply, (..., 1) · (1, in), rather than a GEMM with an inner
            # dimension of 1 (faster from a few rows on).
            grad_x = torch.mul(grad_out, weight if grad_out.dim() > 1 else weight[0])
    return grad_x, grad_weight, grad_bias
