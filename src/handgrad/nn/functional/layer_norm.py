"""Layer normalisation and RMS normalisation over the trailing dimensions of an input.

Both normalise each "row" — the last ``len(normalized_shape)`` dimensions taken together, n
numbers — on its own, then scale (and shift) by learned per-feature parameters.

LayerNorm:  μ = mean(x),  σ² = mean((x − μ)²)  (biased),  r = 1/√(σ² + ε),
            x̂ = (x − μ) r,  y = γ ⊙ x̂ + β.
RMSNorm:    r = 1/√(mean(x²) + ε),  x̂ = x r,  y = γ ⊙ x̂.

The backward of both follows from one observation. With h = g ⊙ γ (the gradient reaching
x̂), LayerNorm's x̂ is x − μ divided by its own root-mean-square, so

    dx = r (h − mean(h) − x̂ mean(h ⊙ x̂))                       (LayerNorm)
    dx = r (h − x̂ mean(h ⊙ x̂))                                 (RMSNorm: no mean removed)

Derivation (LayerNorm, one row, n entries): ∂x̂_i/∂x_j = r(δ_ij − 1/n) − x̂_i x̂_j r/n,
because ∂r/∂x_j = −r³ (x_j − μ)/n = −r² x̂_j/n. Then dx_j = Σ_i h_i ∂x̂_i/∂x_j
= r h_j − r mean(h) − r x̂_j mean(h ⊙ x̂). RMSNorm drops the −1/n (no mean subtracted).

The parameter gradients sum over every row: dγ = Σ_rows g ⊙ x̂, dβ = Σ_rows g.

When the layer after LayerNorm is linear, γ and β can be moved into it: z = (γ ⊙ x̂ + β) Wᵀ + b
= x̂ (W diag γ)ᵀ + (W β + b). Then the norm's output is x̂ itself (:func:`layer_norm_normalize`)
and its backward starts from h = dL/dx̂ directly (:func:`layer_norm_backward_normalized`);
:class:`handgrad.nn.GPT` does this (see there for γ's and β's gradients).

float16 and bfloat16 inputs (and parameters) compute in float32, rounding y, dx, dγ and dβ
once, as torch's CPU kernels do (:func:`~handgrad.nn.functional.half_in_float32`):
the ctx then keeps float32 x̂ and r, wrapped in a ``Float32Ctx``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from handgrad.nn.functional._common import Ctx, half_in_float32, half_in_float32_backward


def _row_dims(normalized_ndim: int) -> tuple[int, ...]:
    return tuple(range(-normalized_ndim, 0))


def _sum_over_rows(t: Tensor, normalized_ndim: int) -> Tensor:
    """Σ over every leading (row) dimension: the shape of γ is left."""
    leading = t.dim() - normalized_ndim
    return t.sum(tuple(range(leading))) if leading else t


@half_in_float32
def layer_norm_forward(
    x: Tensor,
    normalized_ndim: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Ctx]:
    """y = γ ⊙ (x − μ)/√(σ² + ε) + β over the last ``normalized_ndim`` dims (see module doc).

    Keeps x̂ and r for the backward (the same size as what torch keeps: x, μ and r).
    x̂ and r come from torch's fused forward kernel where there is one
    (:func:`normalize_fused`, one pass), else from
    :func:`normalize_plain`, the formulas op by op (the two agree to rounding).
    """
    xhat, rstd = _normalize(x, normalized_ndim, eps)
    return layer_norm_output(xhat, weight, bias), (xhat, rstd, weight, bias, normalized_ndim)


def layer_norm_normalize(
    x: Tensor,
    normalized_ndim: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Ctx]:
    """x̂ = (x − μ)/√(σ² + ε) over the last ``normalized_ndim`` dims: LayerNorm without γ and β
    (for a following layer that holds them, module docstring), and the ctx
    :func:`layer_norm_forward` gives (γ and β in it, so that y = γ ⊙ x̂ + β can be rebuilt).
    float32 and float64 only (a half input's x̂ would be float32)."""
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"layer_norm_normalize: expected float32 or float64, got {x.dtype}")
    xhat, rstd = _normalize(x, normalized_ndim, eps)
    return xhat, (xhat, rstd, weight, bias, normalized_ndim)


def _normalize(x: Tensor, normalized_ndim: int, eps: float) -> tuple[Tensor, Tensor]:
    """x̂ and r: from torch's fused kernel where there is one, else op by op."""
    fused = normalize_fused(x, x.shape[x.dim() - normalized_ndim :], eps)
    return normalize_plain(x, normalized_ndim, eps) if fused is None else fused


_NATIVE_LAYER_NORM: Callable[..., Any] | None = getattr(torch, "native_layer_norm", None)
"""torch's fused layer-norm forward kernel, which also returns its row statistics (public:
in ``torch.__all__``, but not in torch's documentation, so looked up with a fallback)."""


def normalize_fused(
    x: Tensor, normalized_shape: Sequence[int], eps: float
) -> tuple[Tensor, Tensor] | None:
    """(x̂, r) with x̂ = (x − μ) r, r = 1/√(σ² + ε) over the trailing ``normalized_shape``
    dims (r keeps them as size-1 dims), from ``torch.native_layer_norm`` (a forward op: one
    pass where the plain formulas take six). It is called with γ = 1 and β = 0 (y = x̂
    exactly), because its path without parameters is slower (measured, float32 CPU).
    None for a torch without it: the caller then uses :func:`normalize_plain`.
    """
    if _NATIVE_LAYER_NORM is None:
        return None
    ones, zeros = _unit_affine(tuple(normalized_shape), x.dtype, x.device)
    xhat, _, rstd = _NATIVE_LAYER_NORM(x, list(normalized_shape), ones, zeros, eps)
    return xhat, rstd


@functools.lru_cache(maxsize=32)
def _unit_affine(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """γ = 1, β = 0 of ``shape``, made once per shape, dtype and device."""
    with torch.inference_mode(False):  # usable outside inference mode once cached
        return torch.ones(shape, dtype=dtype, device=device), torch.zeros(
            shape, dtype=dtype, device=device
        )


def normalize_plain(x: Tensor, normalized_ndim: int, eps: float) -> tuple[Tensor, Tensor]:
    """(x̂, r): μ = mean(x), σ² = mean((x − μ)²), r = 1/√(σ² + ε), x̂ = (x − μ) r."""
    dims = _row_dims(normalized_ndim)
    centred = x - x.mean(dims, keepdim=True)
    rstd = torch.rsqrt((centred * centred).mean(dims, keepdim=True) + eps)
    return centred * rstd, rstd  # (not in place: autograd may differentiate a forward)


def layer_norm_output(xhat: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """y = γ ⊙ x̂ + β (γ, β left out when None): LayerNorm's output from its normalised x̂."""
    if weight is None:
        return xhat if bias is None else xhat + bias
    if bias is None:
        return xhat * weight
    return torch.addcmul(bias, xhat, weight)


@half_in_float32_backward
def layer_norm_backward(
    grad_out: Tensor, ctx: Ctx, input_grad: bool = True
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(dx, dγ, dβ): dx = r (h − mean(h) − x̂ mean(h ⊙ x̂)), h = g ⊙ γ; dγ = Σ g ⊙ x̂, dβ = Σ g.

    dγ/dβ are None without the parameters; dx is None when ``input_grad`` is False.
    Passes over the (rows × n) tensors are what costs, so each is used once: g ⊙ x̂ gives
    dγ (its column sums) and, with h ⊙ x̂ = (g ⊙ x̂) ⊙ γ, the row sums Σ h ⊙ x̂ as the
    matrix-vector product (g ⊙ x̂) γ; Σ h is g γ likewise (h itself is formed once, for dx).
    """
    xhat, rstd, weight, bias, normalized_ndim = ctx
    width = math.prod(xhat.shape[xhat.dim() - normalized_ndim :])
    g, xhat = grad_out.reshape(-1, width), xhat.reshape(-1, width)  # rows × n
    gx = g * xhat
    grad_weight = None if weight is None else gx.sum(0).view(weight.shape)
    grad_bias = None if bias is None else g.sum(0).view(bias.shape)
    if not input_grad:
        return None, grad_weight, grad_bias
    if weight is None:
        h, sum_h, sum_hx = g.clone(), g.sum(1, keepdim=True), gx.sum(1, keepdim=True)
    else:
        gamma = weight.reshape(width)
        h, sum_h, sum_hx = g * gamma, torch.mv(g, gamma)[:, None], torch.mv(gx, gamma)[:, None]
    grad_x = h.sub_(sum_h, alpha=1 / width).addcmul_(xhat, sum_hx, value=-1 / width)
    grad_x.mul_(rstd.reshape(-1, 1))
    return grad_x.view(grad_out.shape), grad_weight, grad_bias


def layer_norm_backward_normalized(
    grad_xhat: Tensor, ctx: Ctx, *, centred: bool = False, residual: Tensor | None = None
) -> Tensor:
    """dx = r (h − mean(h) − x̂ mean(h ⊙ x̂)) from h = dL/dx̂ itself (γ and β held by the next
    layer: module docstring), for a ctx of :func:`layer_norm_normalize`. ``grad_xhat`` is
    overwritten.

    ``centred``: h comes with its row means removed already, h − mean(h). A next layer
    z = x̂ W′ᵀ + b′ gives that for the price of a parameter-sized pass: h = g W′, and
    h − mean(h) = g W″ with W″ = W′(I − 11ᵀ/n), W′ with each row's mean subtracted. The
    mean(h) pass is then skipped, and mean(h ⊙ x̂) is unchanged, since mean(x̂) = 0:
    mean((h − mean(h)) ⊙ x̂) = mean(h ⊙ x̂) − mean(h) mean(x̂).

    ``residual``: returns residual + dx (a residual stream's gradient, which the normalised
    branch adds to) in the same pass as dx's last factor r; ValueError unless it has
    ``grad_xhat``'s shape, dtype and device.
    """
    if residual is not None and (
        residual.shape != grad_xhat.shape
        or residual.dtype != grad_xhat.dtype
        or residual.device != grad_xhat.device
    ):
        raise ValueError(
            "layer_norm_backward_normalized: residual must have dL/dx̂'s shape, dtype and "
            f"device {tuple(grad_xhat.shape)} {grad_xhat.dtype} {grad_xhat.device}, got "
            f"{tuple(residual.shape)} {residual.dtype} {residual.device}"
        )
    xhat, rstd, _, _, normalized_ndim = ctx
    width = math.prod(xhat.shape[xhat.dim() - normalized_ndim :])
    h, xhat = grad_xhat.view(-1, width), xhat.reshape(-1, width)  # rows × n
    sum_hx = (h * xhat).sum(1, keepdim=True)
    if not centred:
        h.sub_(h.sum(1, keepdim=True), alpha=1 / width)
    h.addcmul_(xhat, sum_hx, value=-1 / width)  # h − mean(h) − x̂ mean(h ⊙ x̂)
    rstd = rstd.reshape(-1, 1)
    if residual is None:
        return h.mul_(rstd).view(grad_xhat.shape)
    return torch.addcmul(residual.view(-1, width), h, rstd).view(residual.shape)


@half_in_float32
def rms_norm_forward(
    x: Tensor, normalized_ndim: int, weight: Tensor | None, eps: float
) -> tuple[Tensor, Ctx]:
    """y = γ ⊙ x / √(mean(x²) + ε) over the last ``normalized_ndim`` dims. Keeps x̂ and r."""
    dims = _row_dims(normalized_ndim)
    rstd = torch.rsqrt((x * x).mean(dims, keepdim=True) + eps)
    xhat = x * rstd
    out = xhat if weight is None else xhat * weight
    return out, (xhat, rstd, weight, normalized_ndim)


@half_in_float32_backward
def rms_norm_backward(
    grad_out: Tensor, ctx: Ctx, input_grad: bool = True
) -> tuple[Tensor | None, Tensor | None]:
    """(dx, dγ): dx = r (h − x̂ mean(h ⊙ x̂)), h = g ⊙ γ; dγ = Σ_rows g ⊙ x̂."""
    xhat, rstd, weight, normalized_ndim = ctx
    grad_weight = None if weight is None else _sum_over_rows(grad_out * xhat, normalized_ndim)
    grad_x = None
    if input_grad:
        h = grad_out * weight if weight is not None else grad_out.clone()
        mean_hx = (h * xhat).mean(_row_dims(normalized_ndim), keepdim=True)
        grad_x = h.addcmul_(xhat, mean_hx, value=-1).mul_(rstd)
    return grad_x, grad_weight
