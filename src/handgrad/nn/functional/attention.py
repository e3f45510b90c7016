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

The row sums need not be taken over the L × S matrices: rowsum(dP ⊙ P) = rowsum(G ⊙ O),
because Σ_j dP_ij P_ij = Σ_j (G Vᵀ)_ij P̃_ij = Σ_d G_id (P̃ V)_id (dropout's D/(1 − p)
moves from dP to P̃). A masked position has P = 0, hence dS = 0: no gradient flows
through it; a float mask shifts the scores but not these formulas.

Forward: with no dropout and no weights to keep, O is torch's own scaled_dot_product_attention
(a forward op, whose fused kernel never forms P); otherwise the products below compute it.
Memory and speed: attention is independent for each (batch entry, head) pair, so the kernels
work through them a chunk at a time (``_CHUNK_ELEMENTS`` scores per chunk): the L × S
matrices of one chunk stay in cache and are the only ones alive at a time. The forward keeps
Q, K, V, O and — unless asked not to (``save_weights=False``) — the weights P; without them
the backward recomputes each chunk's P = softmax(s · Q Kᵀ + M), one more product and
softmax, instead of keeping an L × S matrix per pair until the backward.
A row whose every key is masked has weights 0 (output 0), as torch's attention gives.

Causal masks: query i meets keys j ≤ i only, and everywhere above the diagonal P = 0 and
dS = 0 — those entries add exact zeros to every product. So the causal backward works
through the queries in ``_CAUSAL_BLOCKS`` blocks of rows [r₀, r₁), each against the keys
before r₁ alone: the same formulas on the blocks on and below the diagonal, those above it
(a quarter of the L × S entries with two blocks) never computed. dK and dV collect each
block's share, dK[:r₁] += s · dS_blockᵀ Q_block and dV[:r₁] += P_blockᵀ G_block.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 17
"""Scores per chunk of (batch entry, head) pairs: 512 KiB of float32, a core's L2 cache."""

_CAUSAL_BLOCKS = 2
"""Blocks of query rows in the causal backward (see the module docstring): the products skip
the blocks above the diagonal, 1/2 − 1/(2·blocks) of the entries. Two: at the GPT
benchmark's shapes (64 pairs of 128 positions, 32 features) the backward then takes
1.0-1.05× the time of torch's fused kernel, against 1.1-1.2× in one block; three or four
blocks' smaller products cost more than they skip (measured, float32, 1 thread)."""


class AttentionCtx(NamedTuple):
    """What :func:`scaled_dot_product_attention_backward` needs from its forward."""

    query: Tensor  # Q, K, V as batches of matrices (N, L, E), (N, S, E), (N, S, Ev)
    key: Tensor
    value: Tensor
    out: Tensor  # O as returned; any tensor of its values will do (a caller may swap in a view)
    bias: Tensor | None  # the additive mask M as floats: (L, S) or (N, L | 1, S), or None
    causal: bool  # M is the causal mask (no row is fully masked)
    shapes: tuple[torch.Size, torch.Size, torch.Size]  # Q's, K's, V's shapes as given
    scale: float
    weights: Tensor | None  # P, or None to recompute it in backward
    dropout_keep: Tensor | None  # the Bernoulli mask D (bool), None without dropout
    dropout_p: float


@functools.lru_cache(maxsize=32)
def _causal_bias(
    target_len: int, source_len: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """(L, S) additive mask: 0 where key j ≤ query i, −∞ above the diagonal."""
    with torch.inference_mode(False):  # usable outside inference mode once cached
        above = torch.ones(target_len, source_len, dtype=torch.bool, device=device).triu_(1)
        return torch.zeros(above.shape, dtype=dtype, device=device).masked_fill_(above, -math.inf)


def _bias(attn_mask: Tensor | None, is_causal: bool, query: Tensor, key: Tensor) -> Tensor | None:
    """The mask as the additive M of the module docstring (None: no mask)."""
    if is_causal:
        return _causal_bias(query.shape[-2], key.shape[-2], query.dtype, query.device)
    if attn_mask is None or attn_mask.dtype != torch.bool:
        return attn_mask
    return torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill_(
        attn_mask.logical_not(), -math.inf
    )


class _Problems(NamedTuple):
    """The attention problems as a batch of matrices: (N, L, E), (N, S, E), (N, S, Ev),
    the mask as (L, S) or (N, L | 1, S) (or None), and the batch shape to restore."""

    query: Tensor
    key: Tensor
    value: Tensor
    bias: Tensor | None
    batch: torch.Size


def _as_matrices(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None) -> _Problems:
    """Broadcast the batch dimensions and flatten them into one (a view where possible)."""
    # (torch.broadcast_shapes is written in Python: called only where shapes differ)
    batch = query.shape[:-2]
    if not batch == key.shape[:-2] == value.shape[:-2]:
        batch = torch.broadcast_shapes(batch, key.shape[:-2], value.shape[:-2])
    if bias is not None and bias.dim() > 2:
        batch = torch.broadcast_shapes(batch, bias.shape[:-2])

    def matrices(t: Tensor) -> Tensor:
        return t.expand(*batch, *t.shape[-2:]).reshape(-1, *t.shape[-2:])

    bias3 = None
    if bias is not None:
        if all(n == 1 for n in bias.shape[:-2]):
            bias3 = bias.reshape(bias.shape[-2:])  # one mask for every problem
        else:
            bias3 = matrices(bias)
    return _Problems(matrices(query), matrices(key), matrices(value), bias3, batch)


def _chunks(problems: _Problems, query_rows: int | None = None) -> list[slice]:
    """Slices of the problem index, each holding about _CHUNK_ELEMENTS scores (of
    ``query_rows`` rows per problem where the backward works through fewer than L at a time:
    the causal blocks)."""
    count, target_len = problems.query.shape[:2]
    rows = target_len if query_rows is None else query_rows
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, rows * problems.key.shape[1]))
    return [slice(start, start + per_chunk) for start in range(0, count, per_chunk)]


def _weights(
    problems: _Problems, rows: slice, scale: float, buffers: tuple[Tensor, Tensor] | None
) -> Tensor:
    """P = softmax(s · Q Kᵀ + M) for the problems ``rows``, written into ``buffers`` (scores,
    weights; reused from chunk to chunk) when given.

    One batched product with the scale and the mask fused in: baddbmm(M, Q, Kᵀ, α = s).
    """
    q, k = problems.query[rows], problems.key[rows]
    scores = weights = None
    if buffers is not None:
        scores, weights = buffers[0][: q.shape[0]], buffers[1][: q.shape[0]]
    bias = problems.bias
    if bias is None:
        scores = torch.bmm(q, k.transpose(1, 2), out=scores).mul_(scale)
    else:
        mask = bias if bias.dim() == 2 else bias[rows]
        scores = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=scale, out=scores)
    return torch.softmax(scores, -1, out=weights)


def _chunk_buffers(
    problems: _Problems, chunks: list[slice], count: int, query_rows: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Three (chunk, L, S) tensors (``query_rows`` rows for L where given) to reuse for every
    chunk: a few fresh L × S matrices per chunk cost more (in page faults) than the products
    that fill them."""
    largest = min(chunks[0].stop, count) if chunks else 0
    rows = problems.query.shape[1] if query_rows is None else query_rows
    shape = (largest, rows, problems.key.shape[1])
    new = problems.query.new_empty
    return new(shape), new(shape), new(shape)


def _recording(*tensors: Tensor | None) -> bool:
    """Whether autograd records these ops (handgrad.check differentiates a forward so):
    ``out=`` arguments, which autograd refuses, are then left out."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _fully_masked_rows(bias: Tensor | None, causal: bool) -> bool:
    """Whether some query may attend to no key (softmax would give 0/0 there)."""
    return bias is not None and not causal and bool(torch.isneginf(bias).all(-1).any())


def _dropout_scale(keep: Tensor, p: float, dtype: torch.dtype) -> Tensor:
    """m/(1 − p) from the boolean mask m, computed as torch's dropout computes it (same bits)."""
    if p == 1.0:
        return torch.zeros_like(keep, dtype=dtype)
    return keep.to(dtype).div_(1.0 - p)


def _check_arguments(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, is_causal: bool
) -> None:
    """RuntimeError (torch's type) naming the argument and the shapes for inputs that do not
    fit together: Q (..., L, E), K (..., S, E), V (..., S, Ev), a mask broadcastable to
    (..., L, S) that is boolean or of Q's dtype, and not both a mask and ``is_causal``."""
    shapes = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
    if min(query.dim(), key.dim(), value.dim()) < 2:
        raise RuntimeError(
            f"scaled_dot_product_attention: query, key and value need at least 2 dimensions "
            f"(..., length, features), got {shapes}"
        )
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise RuntimeError(
            "scaled_dot_product_attention: expected query (..., L, E), key (..., S, E) and "
            f"value (..., S, Ev), got {shapes}"
        )
    if attn_mask is None:
        return
    if is_causal:
        raise RuntimeError(
            "scaled_dot_product_attention: give attn_mask or is_causal=True, not both "
            "(is_causal builds the causal mask itself)"
        )
    if attn_mask.dtype != torch.bool and attn_mask.dtype != query.dtype:
        raise RuntimeError(
            "scaled_dot_product_attention: expected attn_mask of dtype torch.bool or the "
            f"query's {query.dtype}, got {attn_mask.dtype}"
        )
    expected = (*query.shape[:-1], key.shape[-2])
    try:
        fits = torch.broadcast_shapes(attn_mask.shape, expected)[-2:] == expected[-2:]
    except RuntimeError:
        fits = False
    if not fits:
        raise RuntimeError(
            f"scaled_dot_product_attention: attn_mask of shape {tuple(attn_mask.shape)} does "
            f"not broadcast to the scores' (..., L, S) = {expected} ({shapes})"
        )


def scaled_dot_product_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    save_weights: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, AttentionCtx]:
    """O = dropout(softmax(s · Q Kᵀ + M)) V, as torch.nn.functional.scaled_dot_product_attention.

    Arguments as torch's (``attn_mask`` boolean, True = may attend, or float, added; at most
    one of ``attn_mask`` and ``is_causal``; ``scale`` defaults to 1/√E). ``dropout_p`` is
    applied as given (pass 0 in evaluation). The weights P (before dropout) are
    ``ctx.weights``, shaped (..., L, S); with ``save_weights=False`` they are not kept (the
    backward recomputes them) and ``ctx.weights`` is None.
    """
    _check_arguments(query, key, value, attn_mask, is_causal)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    bias = _bias(attn_mask, is_causal, query, key)
    problems = _as_matrices(query, key, value, bias)
    count, target_len = problems.query.shape[:2]
    source_len = problems.key.shape[1]
    shapes = (query.shape, key.shape, value.shape)
    if dropout_p == 0.0 and not save_weights:
        # Nothing to keep but O: torch's own forward op computes it (its fused kernel never
        # forms P); the backward is ours, from the recomputed P.
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask, 0.0, is_causal, scale=scale
        )
        return out, AttentionCtx(
            *problems[:3], out, problems.bias, is_causal, shapes, scale, None, None, 0.0
        )
    out = problems.query.new_empty(count, target_len, problems.value.shape[-1])
    weights = problems.query.new_empty(count, target_len, source_len) if save_weights else None
    keep = None
    if dropout_p > 0.0:
        # Drawn as torch's dropout draws it (bernoulli_ on a tensor like P); kept as booleans
        # (a quarter of the memory) and turned back into m/(1 − p) where needed.
        keep = (
            torch.empty(count, target_len, source_len, dtype=out.dtype, device=out.device)
            .bernoulli_(1.0 - dropout_p, generator=generator)
            .bool()
        )
    fix_rows = _fully_masked_rows(bias, is_causal)
    chunks = _chunks(problems)
    recording = _recording(query, key, value, bias)
    buffers = None if recording else _chunk_buffers(problems, chunks, count)
    for rows in chunks:
        chunk_weights = _weights(
            problems, rows, scale, None if buffers is None else (buffers[0], buffers[1])
        )
        if fix_rows:  # rows of −∞ only: weights 0, as torch's attention
            chunk_weights = chunk_weights.nan_to_num(0.0)
        if weights is not None:
            weights[rows] = chunk_weights
        attended = chunk_weights
        if keep is not None:
            attended = chunk_weights * _dropout_scale(keep[rows], dropout_p, out.dtype)
        if recording:
            out[rows] = torch.bmm(attended, problems.value[rows])
        else:
            torch.bmm(attended, problems.value[rows], out=out[rows])
    batch = problems.batch
    out = out.view(*batch, target_len, out.shape[-1])
    ctx = AttentionCtx(
        problems.query,
        problems.key,
        problems.value,
        out,
        problems.bias,
        is_causal,
        shapes,
        scale,
        weights,
        keep,
        dropout_p,
    )
    if weights is not None:
        ctx = ctx._replace(weights=weights.view(*batch, target_len, source_len))
    return out, ctx


def _causal_row_blocks(target_len: int, source_len: int) -> list[tuple[int, int, int]]:
    """(r₀, r₁, keys) for each block of query rows [r₀, r₁): the keys it meets are [0, keys),
    keys = min(r₁, S) (query i meets keys j ≤ i). The last block comes first: it meets every
    key the others meet, so its products write dK and dV, and the others add to them."""
    if min(target_len, source_len) == 0:
        return []  # (nothing to compute: the plain loop handles the empty case)
    size = -(-target_len // _CAUSAL_BLOCKS)
    blocks = [(start, min(start + size, target_len)) for start in range(0, target_len, size)]
    return [(start, stop, min(stop, source_len)) for start, stop in reversed(blocks)]


def _causal_backward_chunk(
    problems: _Problems,
    rows: slice,
    blocks: list[tuple[int, int, int]],
    scale: float,
    upstream: tuple[Tensor, Tensor],
    grads: tuple[Tensor, Tensor, Tensor],
    buffers: tuple[Tensor, Tensor, Tensor],
) -> None:
    """The backward of the problems ``rows`` under the causal mask, a block of query rows at a
    time against the keys it meets (module docstring): into ``grads`` (dQ, dK, dV before the
    scale s) from ``upstream`` (G and rowsum(G ⊙ O)), ``buffers`` holding the block's S, P, dP.
    """
    q, k, v = problems.query[rows], problems.key[rows], problems.value[rows]
    grad3, row_dot = upstream[0][rows], upstream[1][rows]
    grad_query, grad_key, grad_value = (g[rows] for g in grads)
    assert problems.bias is not None  # the causal mask, (L, S)
    count, source_len = q.shape[0], k.shape[1]
    written = False  # whether dK and dV hold a block's share yet
    if blocks[0][2] < source_len:  # (fewer queries than keys: the last keys meet none)
        grad_key.zero_()
        grad_value.zero_()
        written = True
    for start, stop, keys in blocks:
        shape = (count, stop - start, keys)
        scores, weights, grad_p = (b.view(-1)[: math.prod(shape)].view(shape) for b in buffers)
        query_block, grad_block = q[:, start:stop], grad3[:, start:stop]
        key_block, value_block = k[:, :keys], v[:, :keys]
        bias = problems.bias[start:stop, :keys]
        torch.baddbmm(bias, query_block, key_block.transpose(1, 2), alpha=scale, out=scores)
        torch.softmax(scores, -1, out=weights)  # P of the block
        weights_t = weights.transpose(1, 2)
        if written:  # dV += Pᵀ G
            grad_value[:, :keys].baddbmm_(weights_t, grad_block)
        else:
            torch.bmm(weights_t, grad_block, out=grad_value)
        torch.bmm(grad_block, value_block.transpose(1, 2), out=grad_p)  # dP = G Vᵀ
        grad_scores = grad_p.sub_(row_dot[:, start:stop]).mul_(weights)  # P ⊙ (dP − rowsum)
        torch.bmm(grad_scores, key_block, out=grad_query[:, start:stop])  # dQ = dS K
        if written:  # dK += dSᵀ Q
            grad_key[:, :keys].baddbmm_(grad_scores.transpose(1, 2), query_block)
        else:
            torch.bmm(grad_scores.transpose(1, 2), query_block, out=grad_key)
        written = True


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
    grad_out: Tensor,
    ctx: AttentionCtx,
    grad_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dQ, dK, dV) from G = dL/dO (derivation in the module docstring).

    ``grad_weights`` is an extra gradient on the weights P (before dropout), for callers that
    returned P as an output; it adds to dP (and its share of the row sums).
    """
    query, key, value, out, bias, causal, shapes, scale, weights, keep, dropout_p = ctx
    problems = _Problems(query, key, value, bias, torch.Size())
    count, target_len = query.shape[:2]
    source_len = key.shape[1]
    # rowsum(dP ⊙ P) = rowsum(G ⊙ O), over O's last dimension
    row_dot = (grad_out * out).sum(-1, keepdim=True).reshape(count, target_len, 1)
    grad3 = grad_out.reshape(count, target_len, -1)
    weights3 = None if weights is None else weights.reshape(count, target_len, source_len)
    extra3 = None
    if grad_weights is not None:
        extra3 = grad_weights.reshape(count, target_len, source_len)
    grad_query, grad_key, grad_value = (torch.empty_like(t) for t in (query, key, value))
    fix_rows = weights is None and _fully_masked_rows(bias, causal)
    causal_blocks = None  # the causal mask's blocks of query rows (module docstring)
    if causal and weights3 is None and keep is None and extra3 is None:
        causal_blocks = _causal_row_blocks(target_len, source_len)
    # (a chunk holds as many scores whole or in blocks: with two, twice the problems)
    block_rows = max((stop - start for start, stop, _ in causal_blocks or []), default=None)
    chunks = _chunks(problems, block_rows)
    scores_buffer, weights_buffer, grad_p_buffer = _chunk_buffers(
        problems, chunks, count, block_rows
    )
    for rows in chunks:
        if causal_blocks:
            _causal_backward_chunk(
                problems,
                rows,
                causal_blocks,
                scale,
                (grad3, row_dot),
                (grad_query, grad_key, grad_value),
                (scores_buffer, weights_buffer, grad_p_buffer),
            )
            continue
        if weights3 is not None:
            chunk_weights = weights3[rows]
        else:  # the forward's P, recomputed
            chunk_weights = _weights(problems, rows, scale, (scores_buffer, weights_buffer))
            if fix_rows:
                chunk_weights.nan_to_num_(0.0)
        chunk_grad = grad3[rows]
        attended = chunk_weights
        dropout_scale = None
        if keep is not None:
            dropout_scale = _dropout_scale(keep[rows], dropout_p, chunk_weights.dtype)
            attended = chunk_weights * dropout_scale
        torch.bmm(attended.transpose(1, 2), chunk_grad, out=grad_value[rows])  # dV = P̃ᵀ G
        grad_p = grad_p_buffer[: chunk_weights.shape[0]]
        torch.bmm(chunk_grad, value[rows].transpose(1, 2), out=grad_p)  # dP̃ = G Vᵀ
        if dropout_scale is not None:
            grad_p.mul_(dropout_scale)
        chunk_row_dot = row_dot[rows]
        if extra3 is not None:
            chunk_row_dot = chunk_row_dot + (extra3[rows] * chunk_weights).sum(-1, keepdim=True)
            grad_p.add_(extra3[rows])
        grad_scores = grad_p.sub_(chunk_row_dot).mul_(chunk_weights)  # P ⊙ (dP − rowsum(dP ⊙ P))
        torch.bmm(grad_scores, key[rows], out=grad_query[rows])
        torch.bmm(grad_scores.transpose(1, 2), query[rows], out=grad_key[rows])
    batch = out.shape[:-2]
    grads = (grad_query.mul_(scale), grad_key.mul_(scale), grad_value)
    return tuple(  # type: ignore[return-value]
        _sum_to(grad.view(*batch, *grad.shape[1:]), shape)
        for grad, shape in zip(grads, shapes, strict=True)
    )
