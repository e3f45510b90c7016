"""Scaled dot-product attention, forward and a backward derived by hand.

For queries Q (L × E), keys K (S × E) and values V (S × Ev) — with any leading batch
dimensions, broadcast as in a matrix product —

    S = s · Q Kᵀ + M            scores, s the scale (1/√E unless given), M the mask
    P = softmax(S) (by row)     attention weights
    P̃ = P ⊙ D / (1 − p)         dropout (training only; D a Bernoulli(1 − p) mask)
    O = P̃ V                     output (L × Ev)

The mask M is 0 where a query may attend and −∞ where it may not (a boolean ``attn_mask``
is True where attention is *allowed*, as in torch.nn.functional; ``is_causal`` allows
key j ≤ query i), or any float added to the scores.

Backward, given G = dL/dO, by the chain rule through each line in reverse:

    dV = P̃ᵀ G                                (O = P̃ V)
    dP̃ = G Vᵀ,  dP = dP̃ ⊙ D / (1 − p)
    dS = P ⊙ (dP − rowsum(dP ⊙ P))           (the softmax Jacobian-vector product, by row)
    dQ = s · dS K,   dK = s · dSᵀ Q          (S = s Q Kᵀ + M)

A masked position has P = 0, hence dS = 0: no gradient flows through it; a float mask
shifts the scores but not this formula (its own gradient would be dS, not returned here).

Memory: the forward keeps Q, K, V and the log-sum-exp of each row of S (L numbers per
query row), not the L × S weights; the backward recomputes P = exp(S − lse), one more
product Q Kᵀ — cheap next to keeping a matrix the size of the scores for every layer.
A row whose every key is masked has weights 0 (output 0), as torch's attention gives.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor


class AttentionCtx(NamedTuple):
    """What :func:`scaled_dot_product_attention_backward` needs from its forward."""

    query: Tensor
    key: Tensor
    value: Tensor
    attn_mask: Tensor | None
    is_causal: bool
    scale: float
    lse: Tensor  # log Σ_j exp(S_ij) per row, shape (..., L, 1); 0 for fully masked rows
    weights: Tensor | None  # P itself when the caller asked for it (it is an output then)
    dropout_keep: Tensor | None  # the Bernoulli mask D (bool), None without dropout
    dropout_p: float


@functools.lru_cache(maxsize=32)
def _causal_block(target_len: int, source_len: int, device: torch.device) -> Tensor:
    """Boolean (L, S), True above the diagonal: the keys j > i a causal query i may not see."""
    return torch.ones(target_len, source_len, dtype=torch.bool, device=device).triu_(1)


def _masked_scores(
    query: Tensor,
    key: Tensor,
    scale: float,
    attn_mask: Tensor | None,
    is_causal: bool,
) -> Tensor:
    """S = s · Q Kᵀ with the mask applied (−∞ where attention is not allowed, or M added)."""
    scores = torch.matmul(query, key.transpose(-2, -1)).mul_(scale)
    if is_causal:
        block = _causal_block(query.shape[-2], key.shape[-2], query.device)
        scores.masked_fill_(block, -math.inf)
    elif attn_mask is not None:
        broadcast = torch.broadcast_shapes(scores.shape, attn_mask.shape) == scores.shape
        if attn_mask.dtype == torch.bool:
            hidden = attn_mask.logical_not()
            scores = (
                scores.masked_fill_(hidden, -math.inf)
                if broadcast
                else scores.masked_fill(hidden, -math.inf)
            )
        else:
            scores = scores.add_(attn_mask) if broadcast else scores + attn_mask
    return scores


def scaled_dot_product_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    need_weights: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, AttentionCtx]:
    """O = dropout(softmax(s · Q Kᵀ + M)) V, as torch.nn.functional.scaled_dot_product_attention.

    Arguments as torch's (``attn_mask`` boolean, True = may attend, or float, added; at most
    one of ``attn_mask`` and ``is_causal``; ``scale`` defaults to 1/√E). ``dropout_p`` is
    applied as given (pass 0 in evaluation). With ``need_weights`` the ctx keeps the
    weights P (before dropout) as ``ctx.weights``, for a caller that returns them.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    scores = _masked_scores(query, key, scale, attn_mask, is_causal)
    lse = torch.logsumexp(scores, -1, keepdim=True)
    # A fully masked row has lse = −∞; clamped, its weights come out exp(−∞) = 0.
    lse.clamp_(min=torch.finfo(lse.dtype).min)
    weights = scores.sub_(lse).exp_()  # P, in the scores' buffer
    keep = None
    attended = weights
    if dropout_p > 0.0:
        # Drawn as torch's dropout draws it (bernoulli_ on a tensor like P); kept as booleans
        # (a quarter of the memory) and turned back into m/(1 − p) where needed.
        keep = torch.empty_like(weights).bernoulli_(1.0 - dropout_p, generator=generator).bool()
        attended = weights * _dropout_scale(keep, dropout_p, weights.dtype)
    out = torch.matmul(attended, value)
    ctx = AttentionCtx(
        query,
        key,
        value,
        attn_mask,
        is_causal,
        scale,
        lse,
        weights if need_weights else None,
        keep,
        dropout_p,
    )
    return out, ctx


def _dropout_scale(keep: Tensor, p: float, dtype: torch.dtype) -> Tensor:
    """m/(1 − p) from the boolean mask m, computed as torch's dropout computes it (same bits)."""
    if p == 1.0:
        return torch.zeros_like(keep, dtype=dtype)
    return keep.to(dtype).div_(1.0 - p)


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a gradient over the dimensions its input was broadcast along."""
    if grad.shape == shape:
        return grad
    extra = grad.dim() - len(shape)
    if extra:
        grad = grad.sum(tuple(range(extra)))
    dims = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    return grad.sum(dims, keepdim=True) if dims else grad


def scaled_dot_product_attention_backward(
    grad_out: Tensor, ctx: AttentionCtx, grad_weights: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """(dQ, dK, dV) from G = dL/dO (derivation in the module docstring).

    ``grad_weights`` is an extra gradient on the weights P (before dropout), for callers that
    returned P as an output; it adds to dP.
    """
    query, key, value, attn_mask, is_causal, scale, lse, weights, keep, dropout_p = ctx
    if weights is None:  # recompute P = exp(S − lse), in the new scores' buffer
        weights = _masked_scores(query, key, scale, attn_mask, is_causal).sub_(lse).exp_()
    attended = weights
    dropout_scale = None
    if keep is not None:
        dropout_scale = _dropout_scale(keep, dropout_p, weights.dtype)
        attended = weights * dropout_scale
    grad_value = torch.matmul(attended.transpose(-2, -1), grad_out)
    grad_weights_total = torch.matmul(grad_out, value.transpose(-2, -1))  # dP̃
    if dropout_scale is not None:
        grad_weights_total.mul_(dropout_scale)
    if grad_weights is not None:
        grad_weights_total = grad_weights_total + grad_weights
    # dS = P ⊙ (dP − rowsum(dP ⊙ P)), then the scale s folded in once
    row_dot = (grad_weights_total * weights).sum(-1, keepdim=True)
    grad_scores = grad_weights_total.sub_(row_dot).mul_(weights).mul_(scale)
    grad_query = torch.matmul(grad_scores, key)
    grad_key = torch.matmul(grad_scores.transpose(-2, -1), query)
    return (
        _sum_to(grad_query, query.shape),
        _sum_to(grad_key, key.shape),
        _sum_to(grad_value, value.shape),
    )
