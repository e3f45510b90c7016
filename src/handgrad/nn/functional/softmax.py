"""Softmax, log-softmax and SiLU: the normalising and gating kernels of attention and GPT MLPs.

Softmax couples every entry of a row, so its backward is a Jacobian-vector product, not an
element-wise product: with y = softmax(x) along ``dim``,

    ∂y_i/∂x_j = y_i (δ_ij − y_j),   so   dx_j = Σ_i g_i y_i (δ_ij − y_j) = y_j (g_j − Σ_i g_i y_i).

The Jacobian (n × n per row) is never formed: one dot product per row, ⟨g, y⟩, is all the
coupling there is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn.functional._common import Ctx, half_in_float32, half_in_float32_backward

# float16 and bfloat16: every kernel here computes in float32 and rounds once, as torch's CPU
# kernels do (half_in_float32; tests/nn/test_half_precision.py measures the errors).


@half_in_float32
def softmax_forward(x: Tensor, dim: int) -> tuple[Tensor, Ctx]:
    """y = softmax(x) = e^(x − m) / Σ e^(x − m) along ``dim`` (m the row max: nothing overflows).

    torch's softmax kernel computes exactly that; the backward needs only y.
    """
    out = torch.softmax(x, dim)
    return out, (out, dim)


@half_in_float32_backward
def softmax_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = y ⊙ (g − ⟨g, y⟩), the dot product taken along ``dim`` (the softmax Jacobian times g).

    Derivation: ∂y_i/∂x_j = y_i(δ_ij − y_j); summing g_i ∂y_i/∂x_j over i gives
    g_j y_j − y_j Σ_i g_i y_i.
    """
    out, dim = ctx
    return out * (grad_out - (grad_out * out).sum(dim, keepdim=True))


@half_in_float32
def log_softmax_forward(x: Tensor, dim: int) -> tuple[Tensor, Ctx]:
    """y = log softmax(x) = x − m − log Σ e^(x − m) along ``dim`` (torch's kernel)."""
    out = torch.log_softmax(x, dim)
    return out, (out, dim)


@half_in_float32_backward
def log_softmax_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g − softmax(x) · Σ g, the sum along ``dim``; softmax(x) = e^y is recomputed from y.

    Derivation: y_i = x_i − log Σ_k e^(x_k), so ∂y_i/∂x_j = δ_ij − softmax(x)_j and
    dx_j = g_j − softmax(x)_j Σ_i g_i.
    """
    out, dim = ctx
    return grad_out - torch.exp(out) * grad_out.sum(dim, keepdim=True)


@half_in_float32
def silu_forward(x: Tensor) -> tuple[Tensor, Ctx]:
    """y = x σ(x) (SiLU, also called swish). Only x is kept: σ(x) is cheap to recompute."""
    return torch.nn.functional.silu(x), (x,)


@half_in_float32_backward
def silu_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g σ(x)(1 + x(1 − σ(x))), by the product rule and σ′ = σ(1 − σ)."""
    (x,) = ctx
    s = torch.sigmoid(x)
    return grad_out * s * (1.0 + x * (1.0 - s))
