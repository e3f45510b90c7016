"""Normalization kernels: batch normalization and group normalization, and their gradients.

Both normalise a set S of M values to zero mean and unit variance, then scale and shift per
channel:

    μ = (1/M) Σ_S x,   σ² = (1/M) Σ_S (x − μ)²,   x̂ = (x − μ)·r with r = 1/√(σ² + ε),
    y = γ x̂ + β.

Batch norm takes S = one channel over the batch and every spatial position; group norm takes
S = one sample's channels of one group, over every spatial position.

**The gradient** (derived once; both kernels use it). With g = dL/dy and ĝ = γ g:

    dβ = Σ g,   dγ = Σ g x̂     (per channel, over everything the channel is applied to)

and for x, μ and r depend on every x in S: ∂μ/∂x_j = 1/M and ∂r/∂x_j = −r³(x_j − μ)/M (the
Σ(x − μ) term of ∂σ²/∂x_j vanishes), so ∂x̂_i/∂x_j = r([i = j] − 1/M − x̂_i x̂_j / M) and

    dx_j = Σ_i ĝ_i ∂x̂_i/∂x_j = r (ĝ_j − mean_S(ĝ) − x̂_j · mean_S(ĝ x̂)),

the three-term input gradient: the gradient itself, minus its mean (μ moves with every x),
minus its projection on x̂ (σ does too). With batch statistics from running averages (batch
norm in eval mode) μ and r are constants and dx = r ĝ.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn.functional._common import Ctx


def _per_channel(values: Tensor, dim: int) -> Tensor:
    """A (C,) vector shaped to broadcast along axis 1 of a tensor with ``dim`` axes."""
    return values.view(-1, *([1] * (dim - 2)))


def batch_norm_forward(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[Tensor, Ctx]:
    """y = γ (x − μ)/√(σ² + ε) + β per channel (axis 1) of x of shape (N, C, *spatial).

    ``training``: μ and σ² are the batch's, over every axis but 1 (M = N · spatial values
    per channel), and the running statistics, when given, move towards them in place, as
    torch.nn.functional.batch_norm moves them:
    running_mean ← (1 − m)·running_mean + m·μ, running_var ← (1 − m)·running_var +
    m·σ²·M/(M − 1) (the unbiased variance). Otherwise μ and σ² are the running statistics.
    Built from differentiable torch operations only, so that autograd can check it.
    """
    if training:
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x, dims, correction=0)
        if running_mean is not None and running_var is not None:
            count = x.numel() // x.shape[1]
            with torch.no_grad():  # the running statistics are not part of any gradient
                running_mean.mul_(1 - momentum).add_(mean * momentum)
                running_var.mul_(1 - momentum).add_(var * (momentum * count / (count - 1)))
    else:
        assert running_mean is not None
        assert running_var is not None
        mean, var = running_mean.clone(), running_var
    invstd = torch.rsqrt(var + eps)
    # y = x·(γ r) + (β − μ γ r): one pass over x, per-channel coefficients.
    scale = invstd if weight is None else weight * invstd
    shift = -mean * scale if bias is None else bias - mean * scale
    out = torch.addcmul(_per_channel(shift, x.dim()), x, _per_channel(scale, x.dim()))
    return out, (x, mean, invstd, weight, bias is not None, training)


def batch_norm_backward(
    grad_out: Tensor, ctx: Ctx, input_grad: bool = True
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(dx, dγ, dβ) of batch normalisation (module docstring), per channel over M values:

    dβ = Σ g,  dγ = Σ g x̂,  dx = γ r (g − dβ/M − x̂ · dγ/M)  with batch statistics;
    dx = γ r g with running ones. dγ, dβ are None without an affine weight or bias.
    """
    x, mean, invstd, weight, has_bias, training = ctx
    dims = [0, *range(2, x.dim())]
    count = x.numel() // x.shape[1]
    centered = x - _per_channel(mean, x.dim())
    grad_sum = grad_out.sum(dims)
    # Σ g x̂ = r Σ g (x − μ): the centred values keep this sum accurate when |μ| ≫ σ.
    grad_dot = (grad_out * centered).sum(dims)
    grad_weight = grad_dot * invstd if weight is not None else None
    grad_bias = grad_sum if has_bias else None
    grad_x = None
    if input_grad:
        scale = invstd if weight is None else weight * invstd  # γ r
        if training:
            # γ r (g − Σg/M − (x − μ) r² Σg(x − μ)/M)
            projection = _per_channel(invstd * invstd * grad_dot / count, x.dim())
            grad_x = grad_out - _per_channel(grad_sum / count, x.dim()) - centered * projection
            grad_x.mul_(_per_channel(scale, x.dim()))
        else:
            grad_x = grad_out * _per_channel(scale, x.dim())
    return grad_x, grad_weight, grad_bias


def group_norm_forward(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Ctx]:
    """y = γ x̂ + β: each sample's channels fall in ``num_groups`` consecutive groups, each
    normalised over its channels and every spatial position (M = C/G · spatial values)."""
    batch = x.shape[0]
    grouped = x.reshape(batch, num_groups, -1)
    var, mean = torch.var_mean(grouped, 2, correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    normalized = ((grouped - mean) * rstd).view(x.shape)
    out = normalized
    if weight is not None:
        out = out * _per_channel(weight, x.dim())
    if bias is not None:
        out = out + _per_channel(bias, x.dim())
    return out, (x, mean, rstd, weight, bias is not None, num_groups)


def group_norm_backward(
    grad_out: Tensor, ctx: Ctx, input_grad: bool = True
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(dx, dγ, dβ) of group normalisation (module docstring): per channel dβ = Σ_{n, sp} g,
    dγ = Σ_{n, sp} g x̂; per sample and group, with ĝ = γ g,
    dx = r (ĝ − mean(ĝ) − x̂ · mean(ĝ x̂))."""
    x, mean, rstd, weight, has_bias, num_groups = ctx
    batch = x.shape[0]
    normalized = ((x.reshape(batch, num_groups, -1) - mean) * rstd).view(x.shape)
    dims = [0, *range(2, x.dim())]
    grad_weight = (grad_out * normalized).sum(dims) if weight is not None else None
    grad_bias = grad_out.sum(dims) if has_bias else None
    grad_x = None
    if input_grad:
        scaled = grad_out if weight is None else grad_out * _per_channel(weight, x.dim())
        scaled_groups = scaled.reshape(batch, num_groups, -1)
        normalized_groups = normalized.reshape(batch, num_groups, -1)
        mean_grad = scaled_groups.mean(2, keepdim=True)
        mean_projection = (scaled_groups * normalized_groups).mean(2, keepdim=True)
        grad_x = (scaled_groups - mean_grad - normalized_groups * mean_projection) * rstd
        grad_x = grad_x.view(x.shape)
    return grad_x, grad_weight, grad_bias
