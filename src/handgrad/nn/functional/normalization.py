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

float16 and bfloat16 inputs compute in float32 and round y, dx, dγ, dβ (and batch norm's
updated running statistics) once, as torch's CPU kernels do
(:func:`~handgrad.nn.functional.half_in_float32`); the ctx is then a ``Float32Ctx``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn.functional._common import (
    Ctx,
    half_in_float32,
    half_in_float32_backward,
    half_in_float32_updating,
)


def _per_channel(values: Tensor, dim: int) -> Tensor:
    """A (C,) vector shaped to broadcast along axis 1 of a tensor with ``dim`` axes."""
    return values.view(-1, *([1] * (dim - 2)))


def channel_affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """y[:, c] = scale[c] · x[:, c] + shift[c]: a per-channel affine map in one pass.

    It is torch's batch-norm kernel in evaluation mode with mean 0, variance 1 and ε = 0,
    (x − 0)/√(1 + 0) · scale + shift, whose division is by exactly 1: torch's fastest
    per-channel multiply-add (addcmul with broadcast (C, 1, 1) operands measured ~4x slower
    on (32, 64, 32, 32) float32), any memory layout, differentiable in x, scale and shift.
    """
    zeros = torch.zeros_like(scale)
    ones = torch.ones_like(scale)
    return torch.batch_norm(x, scale, shift, zeros, ones, False, 0.0, 0.0, False)


# Elements per slice of the batch in channel_dot: the product's temporary stays this small.
_DOT_SLICE = 1 << 18


def channel_dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ a·b per channel (axis 1), over every other axis.

    Summed over slices of the batch, so that the temporary product is at most ~2^18
    elements (1 MiB in float32) rather than as large as a (a training step's peak memory
    is what its backward allocates on top of the saved activations); as fast as one product.
    """
    dims = [0, *range(2, a.dim())]
    per_sample = max(1, a[0].numel()) if a.shape[0] else 1
    step = max(1, _DOT_SLICE // per_sample)
    if step >= a.shape[0]:
        return (a * b).sum(dims)
    total = None
    for part_a, part_b in zip(a.split(step), b.split(step), strict=True):
        partial = (part_a * part_b).sum(dims)
        total = partial if total is None else total.add_(partial)
    assert total is not None
    return total


@half_in_float32_updating(0, 1)  # running_mean, running_var
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
    per channel), two-pass (σ² from the centred values, exact also when |μ| ≫ σ), and the
    running statistics, when given, move towards them in place as
    torch.nn.functional.batch_norm moves them: running_mean ← (1 − m)·running_mean + m·μ,
    running_var ← (1 − m)·running_var + m·σ²·M/(M − 1) (the unbiased variance). Otherwise
    μ and σ² are the running statistics. Built from differentiable torch operations only,
    so that autograd can check it; the backward keeps x − μ (as large as x, which it
    replaces) and 1/√(σ² + ε).
    """
    dims = [0, *range(2, x.dim())]
    if not training:
        assert running_mean is not None
        assert running_var is not None
        mean, invstd = running_mean.clone(), torch.rsqrt(running_var + eps)
        scale = invstd if weight is None else weight * invstd
        shift = -mean * scale if bias is None else bias - mean * scale
        out = channel_affine(x, scale, shift)
        return out, (x, mean, invstd, weight, bias is not None, False)
    count = x.numel() // x.shape[1]
    mean = x.mean(dims)
    centered = channel_affine(x, torch.ones_like(mean), -mean)  # x − μ
    var = channel_dot(centered, centered) / count
    invstd = torch.rsqrt(var + eps)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():  # the running statistics are not part of any gradient
            running_mean.mul_(1 - momentum).add_(mean * momentum)
            running_var.mul_(1 - momentum).add_(var * (momentum * count / (count - 1)))
    scale = invstd if weight is None else weight * invstd
    out = channel_affine(centered, scale, torch.zeros_like(scale) if bias is None else bias)
    return out, (centered, None, invstd, weight, bias is not None, True)


@half_in_float32_backward
def batch_norm_backward(
    grad_out: Tensor, ctx: Ctx, input_grad: bool = True
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(dx, dγ, dβ) of batch normalisation (module docstring), per channel over M values:

    dβ = Σ g,  dγ = Σ g x̂ = r Σ g (x − μ),
    dx = γ r (g − dβ/M − x̂ · dγ/M) = γ r · g − γ r³ Σg(x − μ)/M · (x − μ) − γ r Σg/M
    with batch statistics (a per-channel a·g + b·(x − μ) + c: two passes); dx = γ r g with
    running ones. dγ, dβ are None without an affine weight or bias.
    """
    saved, mean, invstd, weight, has_bias, training = ctx
    dims = [0, *range(2, saved.dim())]
    grad_sum = grad_out.sum(dims) if has_bias or training else None
    scale = invstd if weight is None else weight * invstd  # γ r
    if training:
        centered = saved
    elif weight is not None:
        centered = channel_affine(saved, torch.ones_like(mean), -mean)
    else:
        centered = None
    grad_dot = None if centered is None else channel_dot(grad_out, centered)  # Σ g (x − μ)
    grad_weight = grad_dot * invstd if weight is not None and grad_dot is not None else None
    grad_bias = grad_sum if has_bias else None
    grad_x = None
    if input_grad:
        if training:
            assert grad_sum is not None
            assert grad_dot is not None
            count = saved.numel() // saved.shape[1]
            along_centered = -scale * invstd * invstd * grad_dot / count
            grad_x = channel_affine(saved, along_centered, -scale * grad_sum / count)
            grad_x.addcmul_(grad_out, _per_channel(scale, saved.dim()))
        else:
            grad_x = channel_affine(grad_out, scale, torch.zeros_like(scale))
    return grad_x, grad_weight, grad_bias


@half_in_float32
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


@half_in_float32_backward
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
