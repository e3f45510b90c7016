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
That fused kernel also finds each row's log-sum-exp L_i = log Σ_j e^(S_ij) (its running
softmax needs it), and for causal heads on the CPU the forward keeps it (``ctx.logsumexp``;
a (B, H, L) tensor, 1/d of O): the backward then recomputes P = e^(S − L) with one
exponential instead of a softmax (:func:`_probabilities_`).
Memory and speed: attention is independent for each (batch entry, head) pair, so the kernels
work through them a chunk at a time (``_CHUNK_ELEMENTS`` scores per chunk): the L × S
matrices of one chunk stay in cache and are the only ones alive at a time. The forward keeps
Q, K, V, O and — unless asked not to (``save_weights=False``) — the weights P; without them
the backward recomputes each chunk's P = softmax(s · Q Kᵀ + M), one more product and
softmax, instead of keeping an L × S matrix per pair until the backward.
A row whose every key is masked has weights 0 (output 0), as torch's attention gives.
Q, K and V may be views with any strides — (B, H, T, d) heads side by side in the (B, T,
3, H, d) output of one Linear, as a GPT's qkv product gives them: the kernels then take the
problems a head at a time (:func:`_groups`) rather than copy them, and the backward can write
dQ, dK and dV into views of one such buffer (its ``out``). The causal backward of such heads
runs block by block over all heads at once (:func:`_causal_backward_heads`): the same
products, a quarter of the calls.

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
from typing import NamedTuple, cast

import torch
from torch import Tensor

from handgrad._compat import attention_with_logsumexp

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
    # (B, H, L): each row's log Σ_j e^(S_ij), where torch's fused forward gave it, else None
    logsumexp: Tensor | None = None


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
    """One group of attention problems as batches of matrices: Q (N, L, E), K (N, S, E),
    V (N, S, Ev) and the mask as (L, S) (one for every problem) or (N, L | 1, S), or None."""

    query: Tensor
    key: Tensor
    value: Tensor
    bias: Tensor | None


def _batch_shape(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None) -> torch.Size:
    """The batch dimensions of the problems: Q's, K's, V's (and a batched mask's) broadcast."""
    # (torch.broadcast_shapes is written in Python: called only where shapes differ)
    batch = query.shape[:-2]
    if not batch == key.shape[:-2] == value.shape[:-2]:
        batch = torch.broadcast_shapes(batch, key.shape[:-2], value.shape[:-2])
    if bias is not None and bias.dim() > 2 and any(n != 1 for n in bias.shape[:-2]):
        batch = torch.broadcast_shapes(batch, bias.shape[:-2])
    return batch


def _shared_bias(bias: Tensor | None) -> bool:
    """Whether one (L, S) mask serves every problem (no batch dims, or only ones)."""
    return bias is None or all(n == 1 for n in bias.shape[:-2])


def _groups(batch: torch.Size, tensors: list[Tensor | None]) -> list[list[Tensor | None]]:
    """Each tensor (batch dims ``batch``, broadcast to them, then two matrix dims) as 3-D
    views (N, rows, cols), one list per group of problems (None stays None):

    - one group where every tensor's batch dims flatten into one without a copy;
    - one group per head where there are two batch dims (batch entry, head) that do not:
      heads side by side in one buffer, as a Linear's (B, T, 3, H, d) output holds Q, K and V,
      are (B, H, T, d) views whose (B, H) do not merge, but each head's t[:, h] is a 3-D view
      (B, T, d) with a stride per dimension, which the batched products take as it is;
    - otherwise one group of flattened copies (more than two batch dims that do not merge;
      only inputs: the outputs the kernels write into are allocated so as to merge).
    """
    expanded = [
        t if t is None or t.shape[:-2] == batch else t.expand(*batch, *t.shape[-2:])
        for t in tensors
    ]
    if len(batch) == 2 and not all(t is None or _batch_dims_merge(t) for t in expanded):
        return [[None if t is None else t.select(1, j) for t in expanded] for j in range(batch[1])]
    try:
        return [[None if t is None else t.view(-1, *t.shape[-2:]) for t in expanded]]
    except RuntimeError:  # (some batch dims do not merge)
        return [[None if t is None else t.reshape(-1, *t.shape[-2:]) for t in expanded]]


def _batch_dims_merge(t: Tensor) -> bool:
    """Whether the two batch dims of ``t`` (B, H, rows, cols) merge into one without a copy
    (B's stride is H's times H's size, or one of them has a single entry)."""
    return t.shape[0] == 1 or t.shape[1] == 1 or t.stride(0) == t.stride(1) * t.shape[1]


def _dense_matrices(t: Tensor) -> bool:
    """Whether each matrix of ``t`` (N, rows, cols) is dense, row after row."""
    return t.stride(-1) == 1 and (t.shape[-2] <= 1 or t.stride(-2) == t.shape[-1])


def _chunks(count: int, query_rows: int, source_len: int) -> list[slice]:
    """Slices of a group's ``count`` problems, each holding about _CHUNK_ELEMENTS scores of
    ``query_rows`` × ``source_len`` per problem (fewer rows than L where the backward works
    through the causal blocks)."""
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, query_rows * source_len))
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
    like: Tensor, chunks: list[slice], count: int, query_rows: int, source_len: int, number: int
) -> tuple[Tensor, ...]:
    """``number`` (chunk, query_rows, S) tensors to reuse for every chunk: a few fresh L × S
    matrices per chunk cost more (in page faults) than the products that fill them."""
    largest = min(chunks[0].stop, count) if chunks else 0
    shape = (largest, query_rows, source_len)
    return tuple(like.new_empty(shape) for _ in range(number))


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
    batch = _batch_shape(query, key, value, bias)
    target_len, source_len = query.shape[-2], key.shape[-2]
    shapes = (query.shape, key.shape, value.shape)
    q3, k3, v3 = (t.expand(*batch, *t.shape[-2:]) for t in (query, key, value))
    shared = _shared_bias(bias)
    if shared and bias is not None:
        bias = bias.reshape(bias.shape[-2:])  # one (L, S) mask for every problem
    if dropout_p == 0.0 and not save_weights:
        # Nothing to keep but O: torch's own forward op computes it (its fused kernel never
        # forms P); the backward is ours, from the recomputed P.
        out, logsumexp = _fused_forward(query, key, value, attn_mask, is_causal, scale)
        return out, AttentionCtx(
            q3, k3, v3, out, bias, is_causal, shapes, scale, None, None, 0.0, logsumexp
        )
    new = query.new_empty
    out = new(*batch, target_len, value.shape[-1])
    weights = new(*batch, target_len, source_len) if save_weights else None
    keep = None
    if dropout_p > 0.0:
        # Drawn as torch's dropout draws it (bernoulli_ on a tensor like P); kept as booleans
        # (a quarter of the memory) and turned back into m/(1 − p) where needed.
        keep = new(*batch, target_len, source_len).bernoulli_(1.0 - dropout_p, generator=generator)
        keep = keep.bool()
    fix_rows = _fully_masked_rows(bias, is_causal)
    recording = _recording(query, key, value, bias)
    groups = _groups(batch, [q3, k3, v3, None if shared else bias, out, weights, keep])
    count = cast(Tensor, groups[0][0]).shape[0] if groups else 0
    chunks = _chunks(count, target_len, source_len)
    buffers = None if recording else _chunk_buffers(out, chunks, count, target_len, source_len, 2)
    for group in groups:
        q, k, v, group_out = cast(list[Tensor], [*group[:3], group[4]])
        group_bias, group_weights, group_keep = group[3], group[5], group[6]
        problems = _Problems(q, k, v, bias if shared else group_bias)
        for rows in chunks:
            chunk_weights = _weights(
                problems, rows, scale, None if buffers is None else (buffers[0], buffers[1])
            )
            if fix_rows:  # rows of −∞ only: weights 0, as torch's attention
                chunk_weights = chunk_weights.nan_to_num(0.0)
            if group_weights is not None:
                group_weights[rows] = chunk_weights
            attended = chunk_weights
            if group_keep is not None:
                attended = chunk_weights * _dropout_scale(group_keep[rows], dropout_p, out.dtype)
            chunk_out = group_out[rows]
            if recording:
                chunk_out.copy_(torch.bmm(attended, problems.value[rows]))
            else:
                torch.bmm(attended, problems.value[rows], out=chunk_out)
    ctx = AttentionCtx(q3, k3, v3, out, bias, is_causal, shapes, scale, weights, keep, dropout_p)
    return out, ctx


def _fused_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None,
    is_causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor | None]:
    """O from torch's forward op, and each row's log-sum-exp L_i = log Σ_j e^(S_ij), (B, H, L),
    where its fused CPU kernel gives it (:func:`handgrad._compat.attention_with_logsumexp`):
    causal heads (B, H, T, d), Q, K and V of one shape, float32 or float64, each row of
    features contiguous: inputs on which the public function runs that same kernel (the
    same O, bit for bit). Else L is None and the backward recomputes P by softmax.
    """
    if (
        is_causal
        and attn_mask is None
        and query.dim() == 4
        and query.shape == key.shape == value.shape
        and query.numel() > 0
        and query.device.type == "cpu"
        and query.dtype in (torch.float32, torch.float64)
        and all(t.dtype == query.dtype and t.stride(-1) == 1 for t in (query, key, value))
    ):
        fused = attention_with_logsumexp(query, key, value, True, scale)
        if fused is not None:
            return fused
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask, 0.0, is_causal, scale=scale
    )
    return out, None


_LOG2_E = 1.0 / math.log(2.0)
"""log₂ e: e^x = 2^(x log₂ e)."""


def _scores_scale(scale: float, log2_sums: Tensor | None) -> float:
    """The factor of Q Kᵀ in the scores that :func:`_probabilities_` takes: s, or, with the
    rows' log-sum-exp in base 2, s log₂ e (scores S₂ = S log₂ e)."""
    return scale if log2_sums is None else scale * _LOG2_E


def _probabilities_(scores: Tensor, log2_sums: Tensor | None) -> Tensor:
    """P from a block's scores, in place: softmax by row; or, given the rows' log-sum-exp
    in base 2 (L₂ = L log₂ e, rows × 1) and scores S₂ = S log₂ e (computed so, the mask's
    0 and −∞ unchanged by the factor), P = e^(S − L) = 2^(S₂ − L₂): one subtraction and one
    exponential in place of softmax's row maxima, exponentials, sums and division. (Measured
    on a (16, 64, 128) float32 block, 1 thread: 87 µs against softmax's 140; exp2 is torch's
    faster exponential here.) exp2 runs over the whole block at once, and its vectorized
    kernel and its scalar tail (the last few elements) may differ in the last bit: how many
    problems a block holds can move an entry of P by one ulp, where the softmax, row by row,
    gives the same bits for any count.
    """
    if log2_sums is None:
        return torch.softmax(scores, -1, out=scores)
    return torch.sub(scores, log2_sums, out=scores).exp2_()


def _causal_row_blocks(target_len: int, source_len: int) -> list[tuple[int, int, int]]:
    """(r₀, r₁, keys) for each block of query rows [r₀, r₁): the keys it meets are [0, keys),
    keys = min(r₁, S) (query i meets keys j ≤ i). The last block comes first: it meets every
    key the others meet, so its products write dK and dV, and the others add to them."""
    if min(target_len, source_len) == 0:
        return []  # (nothing to compute: the plain loop handles the empty case)
    size = -(-target_len // _CAUSAL_BLOCKS)
    blocks = [(start, min(start + size, target_len)) for start in range(0, target_len, size)]
    return [(start, stop, min(stop, source_len)) for start, stop in reversed(blocks)]


class _CausalBlock(NamedTuple):
    """A block of query rows [start, stop) of the causal backward, meeting keys [0, keys),
    with its share of the mask and of the chunk buffers (made once per backward)."""

    start: int
    stop: int
    keys: int
    bias: Tensor  # M[start:stop, :keys]
    weights: Tensor  # (chunk, stop − start, keys): S, then P in place
    grad_p: Tensor  # (chunk, stop − start, keys): dP − rowsum, then dS


def _causal_blocks(
    blocks: list[tuple[int, int, int]], bias: Tensor, buffers: tuple[Tensor, Tensor]
) -> list[_CausalBlock]:
    """Each block of :func:`_causal_row_blocks` with its mask and buffer views."""
    chunk = buffers[0].shape[0]
    out = []
    for start, stop, keys in blocks:
        shape = (chunk, stop - start, keys)
        weights, grad_p = (b.view(-1)[: math.prod(shape)].view(shape) for b in buffers)
        out.append(_CausalBlock(start, stop, keys, bias[start:stop, :keys], weights, grad_p))
    return out


def _causal_backward_chunk(
    inputs: tuple[Tensor, Tensor, Tensor],
    blocks: list[_CausalBlock],
    scale: float,
    upstream: tuple[Tensor, Tensor, Tensor | None],
    grads: tuple[Tensor, Tensor, Tensor],
) -> None:
    """The backward of a chunk of problems (``inputs``: Q, K, V) under the causal mask, a block
    of query rows at a time against the keys it meets (module docstring): into ``grads``
    (dQ, dK, dV) from ``upstream`` (G, −rowsum(G ⊙ O) and the rows' log-sum-exp in base 2,
    or None: :func:`_probabilities_`); each block's buffers hold its S (then P, in place)
    and dP (then dS).
    """
    q, k, v = inputs
    grad3, minus_row_dots, log2_sums = upstream
    alpha = _scores_scale(scale, log2_sums)
    grad_query, grad_key, grad_value = grads
    count, source_len = q.shape[0], k.shape[1]
    # (for the blocks' products into slices: see _product_into)
    staging = q.new_empty(count * max(q.shape[1], source_len) * max(q.shape[2], v.shape[2]))
    written = False  # whether dK and dV hold a block's share yet
    if blocks[0].keys < source_len:  # (fewer queries than keys: the last keys meet none)
        grad_key.zero_()
        grad_value.zero_()
        written = True
    for start, stop, keys, bias, weights, grad_p in blocks:
        if count < weights.shape[0]:  # (the last chunk may hold fewer problems)
            weights, grad_p = weights[:count], grad_p[:count]
        query_block, grad_block = q[:, start:stop], grad3[:, start:stop]
        key_block, value_block = k[:, :keys], v[:, :keys]
        torch.baddbmm(bias, query_block, key_block.transpose(1, 2), alpha=alpha, out=weights)
        # P of the block, over its scores
        _probabilities_(weights, None if log2_sums is None else log2_sums[:, start:stop])
        weights_t = weights.transpose(1, 2)
        if written:  # dV += Pᵀ G
            _product_into(grad_value[:, :keys], weights_t, grad_block, True, 1.0, staging)
        else:
            torch.bmm(weights_t, grad_block, out=grad_value)
        # dP − rowsum(dP ⊙ P) = G Vᵀ − rowsum(G ⊙ O): the row sums start the product off
        minus_row_dot = minus_row_dots[:, start:stop]
        torch.baddbmm(minus_row_dot, grad_block, value_block.transpose(1, 2), out=grad_p)
        grad_scores = grad_p.mul_(weights)  # dS = P ⊙ (dP − rowsum)
        # dQ = s · dS K (the block of dQ is written, not read)
        _product_into(grad_query[:, start:stop], grad_scores, key_block, False, scale, staging)
        # dK = s · dSᵀ Q, added from the second block on
        _product_into(
            grad_key[:, :keys], grad_scores.transpose(1, 2), query_block, written, scale, staging
        )
        written = True


def _causal_backward_heads(
    inputs: tuple[Tensor, Tensor, Tensor],
    upstream: tuple[Tensor, Tensor, Tensor | None],
    bias: Tensor,
    scale: float,
    blocks: list[tuple[int, int, int]],
    grads: tuple[Tensor, Tensor, Tensor],
) -> None:
    """The causal backward (:func:`_causal_backward_chunk`'s formulas) of heads side by side:
    ``inputs`` Q, K, V and ``upstream`` G, rowsum(G ⊙ O) (and the rows' log-sum-exp in base
    2, or None: :func:`_probabilities_`) as (B, H, T, ·) views whose (B, H) do not merge (a
    qkv Linear's output), into ``grads`` dQ, dK, dV of the same shapes.

    The same products on the same blocks, in the same order for each entry (the same bits
    as a head at a time), issued with fewer calls: the blocks are the outer loop and the
    heads the inner one, so each block's views of Q, K, V, G (and of the buffers) are taken
    once for all heads (a slice, a transpose and an ``unbind``). Each product writes a dense
    buffer — dQ's block rows (H, B, rows, d), dK and dV (H, B, S, ·), the later blocks'
    shares of dK and dV beside them and added in once per block — and one copy per block
    (dQ) or per tensor (dK, dV) puts them into ``grads``. A head at a time (the general loop
    below) issues about four times the calls, and twelve small copies per layer where this
    makes four, each over all heads. Measured at the GPT benchmark's shapes (the step
    against torch eager's, paired rounds in one process): 1.02–1.03 → 1.00 at 2 threads, no
    change at 1 (within ±1%). Needs the last block (listed first) to meet every key.
    """
    query, key, value = inputs
    grad_out, row_dots, log2_sums = upstream
    alpha = _scores_scale(scale, log2_sums)
    grad_query, grad_key, grad_value = grads
    batch, heads = query.shape[:2]
    query_dim, value_dim = query.shape[3], value.shape[3]
    new = query.new_empty
    largest = max(batch * (stop - start) * keys for start, stop, keys in blocks)
    scores_buffer, grad_p_buffer = new(largest), new(largest)  # reused by every head
    key_sum = new(heads, batch, key.shape[2], query_dim)
    value_sum = new(heads, batch, key.shape[2], value_dim)
    for number, (start, stop, keys) in enumerate(blocks):
        shape = (batch, stop - start, keys)
        size = math.prod(shape)
        weights = scores_buffer[:size].view(shape)  # S, then P in place
        grad_p = grad_p_buffer[:size].view(shape)  # dP − rowsum, then dS
        weights_t, grad_p_t = weights.transpose(1, 2), grad_p.transpose(1, 2)
        mask = bias[start:stop, :keys]
        qs = query[:, :, start:stop].unbind(1)
        gs = grad_out[:, :, start:stop].unbind(1)
        row_dot = row_dots[:, :, start:stop].unbind(1)
        ks = key[:, :, :keys].unbind(1)
        kts = key[:, :, :keys].transpose(2, 3).unbind(1)
        vts = value[:, :, :keys].transpose(2, 3).unbind(1)
        block_query = new(heads, batch, stop - start, query_dim)
        # the first block meets every key: it writes dK and dV; the others' shares beside
        key_part = key_sum if number == 0 else new(heads, batch, keys, query_dim)
        value_part = value_sum if number == 0 else new(heads, batch, keys, value_dim)
        dqs, dks, dvs = block_query.unbind(0), key_part.unbind(0), value_part.unbind(0)
        sums = [None] * heads if log2_sums is None else log2_sums[:, :, start:stop].unbind(1)
        for h in range(heads):
            torch.baddbmm(mask, qs[h], kts[h], alpha=alpha, out=weights)
            _probabilities_(weights, sums[h])
            torch.bmm(weights_t, gs[h], out=dvs[h])  # Pᵀ G
            # dP − rowsum(dP ⊙ P) = G Vᵀ − rowsum(G ⊙ O)
            torch.baddbmm(row_dot[h], gs[h], vts[h], beta=-1.0, out=grad_p)
            grad_p.mul_(weights)  # dS = P ⊙ (dP − rowsum)
            torch.baddbmm(dqs[h], grad_p, ks[h], beta=0.0, alpha=scale, out=dqs[h])  # s dS K
            torch.baddbmm(dks[h], grad_p_t, qs[h], beta=0.0, alpha=scale, out=dks[h])  # s dSᵀ Q
        grad_query[:, :, start:stop].copy_(block_query.transpose(0, 1))
        if number:
            key_sum[:, :, :keys].add_(key_part)
            value_sum[:, :, :keys].add_(value_part)
    grad_key.copy_(key_sum.transpose(0, 1))
    grad_value.copy_(value_sum.transpose(0, 1))


def _product_into(
    target: Tensor, batch1: Tensor, batch2: Tensor, add: bool, alpha: float, staging: Tensor
) -> None:
    """target (+)= α · batch1 @ batch2 for a batch of matrices: added with ``add``, else
    written.

    torch's CPU batched product runs one matrix at a time, on one thread, when its output is
    not contiguous (a block of rows of dQ, or of keys of dK and dV, is a slice of each
    matrix); so such a block is computed into ``staging`` (a flat buffer of at least
    ``target.numel()`` elements, contiguous) and copied or added in. Measured at the GPT
    benchmark's shapes (16 problems, 64 × 128 by 128 × 32): 147 against 75 µs at 2 threads,
    148 against 131 µs at 1.
    """
    if target.is_contiguous():
        target.baddbmm_(batch1, batch2, beta=1.0 if add else 0.0, alpha=alpha)
        return
    dense = staging[: target.numel()].view(target.shape)
    torch.baddbmm(dense, batch1, batch2, beta=0.0, alpha=alpha, out=dense)
    if add:
        target.add_(dense)
    else:
        target.copy_(dense)


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a gradient over the dimensions its input was broadcast along."""
    if grad.shape == shape:
        return grad
    extra = grad.dim() - len(shape)
    if extra:
        grad = grad.sum(tuple(range(extra)))
    dims = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    return grad.sum(dims, keepdim=True) if dims else grad


def _check_out(out: tuple[Tensor, Tensor, Tensor], like: tuple[Tensor, Tensor, Tensor]) -> None:
    """ValueError unless ``out`` is three tensors shaped as Q, K and V (broadcast to the
    batch), of their dtype and device: the backward writes dQ, dK and dV into them."""
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ValueError(f"scaled_dot_product_attention_backward: out must be three tensors "
                         f"(dQ, dK, dV), got {type(out).__name__}")  # fmt: skip
    for name, target, t in zip(("dQ", "dK", "dV"), out, like, strict=True):
        if not (isinstance(target, Tensor) and target.shape == t.shape
                and target.dtype == t.dtype and target.device == t.device):  # fmt: skip
            got = (f"{tuple(target.shape)} {target.dtype} on {target.device}"
                   if isinstance(target, Tensor) else type(target).__name__)  # fmt: skip
            raise ValueError(
                f"scaled_dot_product_attention_backward: out's {name} must have shape "
                f"{tuple(t.shape)}, dtype {t.dtype} on {t.device}; got {got}"
            )


def scaled_dot_product_attention_backward(
    grad_out: Tensor,
    ctx: AttentionCtx,
    grad_weights: Tensor | None = None,
    *,
    out: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dQ, dK, dV) from G = dL/dO (derivation in the module docstring).

    ``grad_weights`` is an extra gradient on the weights P (before dropout), for callers that
    returned P as an output; it adds to dP (and its share of the row sums). ``out``: three
    tensors shaped as Q, K and V broadcast to the batch (views of one buffer, say) that dQ,
    dK and dV are written into, instead of fresh ones.
    """
    query, key, value, attended, bias, causal, shapes, scale, weights, keep, dropout_p, lse = ctx
    if out is not None:
        _check_out(out, (query, key, value))
    batch = attended.shape[:-2]
    target_len, source_len = query.shape[-2], key.shape[-2]
    # rowsum(dP ⊙ P) = rowsum(G ⊙ O), over O's last dimension
    row_dot = (grad_out * attended).sum(-1, keepdim=True)
    grads = out
    if grads is None or len(batch) > 2:  # (more batch dims: _groups may copy; out copied to)
        grads = tuple(query.new_empty(t.shape) for t in (query, key, value))  # type: ignore[assignment]
    assert grads is not None
    fix_rows = weights is None and _fully_masked_rows(bias, causal)
    causal_blocks = None  # the causal mask's blocks of query rows (module docstring)
    if causal and weights is None and keep is None and grad_weights is None:
        causal_blocks = _causal_row_blocks(target_len, source_len)
    # (a chunk holds as many scores whole or in blocks: with two, twice the problems)
    block_rows = max((stop - start for start, stop, _ in causal_blocks or []), default=None)
    # the rows' log-sum-exp in base 2 (_probabilities_), (B, H, L, 1) as the row sums;
    # contiguous, so that it merges (B, H) where Q, K, V do (torch's is laid out (B, L, H))
    log2_sums = None
    if causal_blocks and lse is not None:
        log2_sums = torch.mul(lse, _LOG2_E, out=lse.new_empty(lse.shape)).unsqueeze(-1)
    if (
        causal_blocks
        and causal_blocks[0][2] == source_len  # (the last block meets every key)
        and _heads_in_one_chunk(
            batch, (query, key, value, grad_out, *grads), cast(int, block_rows), source_len
        )
    ):
        assert bias is not None  # the causal mask, (L, S)
        upstream = (grad_out.expand(*batch, *grad_out.shape[-2:]), row_dot, log2_sums)
        _causal_backward_heads((query, key, value), upstream, bias, scale, causal_blocks, grads)
        return _given_out(grads, out, shapes)
    if causal_blocks:
        row_dot.neg_()  # (−rowsum(G ⊙ O): the causal blocks' products start from it)
    shared = bias is None or bias.dim() == 2
    inputs = [query, key, value, None if shared else bias, grad_out, row_dot, log2_sums]
    groups = _groups(batch, [*inputs, weights, keep, grad_weights, *grads])
    count = cast(Tensor, groups[0][0]).shape[0] if groups else 0
    rows_per_problem = target_len if block_rows is None else block_rows
    chunks = _chunks(count, rows_per_problem, source_len)
    if causal_blocks:
        assert bias is not None  # the causal mask, (L, S)
        # two buffers per chunk (the causal blocks' softmax is in place), else three
        buffers = _chunk_buffers(query, chunks, count, rows_per_problem, source_len, 2)
        blocks = _causal_blocks(causal_blocks, bias, (buffers[0], buffers[1]))
    else:
        buffers = _chunk_buffers(query, chunks, count, rows_per_problem, source_len, 3)
    # The products write dQ, dK, dV into buffers of dense matrices, copied into the targets
    # where those are not (heads side by side in one buffer: each row of a head's matrix is
    # a slice of a longer row). torch's CPU batched product into an output that is not
    # contiguous runs one matrix at a time on one thread: it took 1.3x the time of a dense
    # output at 1 thread and did not run faster at 2 (measured, float32, the GPT benchmark's
    # shapes); the copies cost less than that. (The causal blocks' slices: _product_into.)
    staging = None
    for group in groups:
        q, k, v, group_bias, grad3, row_dot3 = cast(list[Tensor], group[:6])
        sums3, weights3, keep3, extra3 = group[6:10]
        targets = cast(list[Tensor], group[10:])
        grad_query, grad_key, grad_value = targets
        if not all(_dense_matrices(t) for t in targets):  # (staged: see above)
            if staging is None:
                staging = [t.new_empty(t.shape) for t in targets]
            grad_query, grad_key, grad_value = staging
        problems = _Problems(q, k, v, bias if shared else group_bias)
        for rows in chunks:
            if causal_blocks:
                whole = rows.start == 0 and rows.stop >= count  # (no slicing needed)
                _causal_backward_chunk(
                    (q, k, v) if whole else (q[rows], k[rows], v[rows]),
                    blocks,
                    scale,
                    (grad3, row_dot3, sums3)
                    if whole
                    else (grad3[rows], row_dot3[rows], None if sums3 is None else sums3[rows]),
                    (grad_query, grad_key, grad_value)
                    if whole
                    else (grad_query[rows], grad_key[rows], grad_value[rows]),
                )
                continue
            if weights3 is not None:
                chunk_weights = weights3[rows]
            else:  # the forward's P, recomputed
                chunk_weights = _weights(problems, rows, scale, (buffers[0], buffers[1]))
                if fix_rows:
                    chunk_weights.nan_to_num_(0.0)
            chunk_grad = grad3[rows]
            p_tilde = chunk_weights
            dropout_scale = None
            if keep3 is not None:
                dropout_scale = _dropout_scale(keep3[rows], dropout_p, chunk_weights.dtype)
                p_tilde = chunk_weights * dropout_scale
            torch.bmm(p_tilde.transpose(1, 2), chunk_grad, out=grad_value[rows])  # dV = P̃ᵀ G
            grad_p = buffers[2][: chunk_weights.shape[0]]
            torch.bmm(chunk_grad, v[rows].transpose(1, 2), out=grad_p)  # dP̃ = G Vᵀ
            if dropout_scale is not None:
                grad_p.mul_(dropout_scale)
            chunk_row_dot = row_dot3[rows]
            if extra3 is not None:
                chunk_row_dot = chunk_row_dot + (extra3[rows] * chunk_weights).sum(-1, keepdim=True)
                grad_p.add_(extra3[rows])
            grad_scores = grad_p.sub_(chunk_row_dot).mul_(chunk_weights)  # P ⊙ (dP − rowsum)
            torch.bmm(grad_scores, k[rows], out=grad_query[rows])
            torch.bmm(grad_scores.transpose(1, 2), q[rows], out=grad_key[rows])
        if grad_query is not targets[0]:  # staged
            for target, grad in zip(targets, (grad_query, grad_key, grad_value), strict=True):
                target.copy_(grad)
    if not causal_blocks:  # (the causal blocks' products take s themselves)
        grads[0].mul_(scale)
        grads[1].mul_(scale)
    return _given_out(grads, out, shapes)


def _given_out(
    grads: tuple[Tensor, Tensor, Tensor],
    out: tuple[Tensor, Tensor, Tensor] | None,
    shapes: tuple[torch.Size, torch.Size, torch.Size],
) -> tuple[Tensor, Tensor, Tensor]:
    """dQ, dK, dV in ``out`` where given (copied there if computed elsewhere), each summed
    over the dimensions its input was broadcast along."""
    if out is not None and grads is not out:
        for target, grad in zip(out, grads, strict=True):
            target.copy_(grad)
        grads = out
    return tuple(  # type: ignore[return-value]
        _sum_to(grad, shape) for grad, shape in zip(grads, shapes, strict=True)
    )


def _heads_in_one_chunk(
    batch: torch.Size, tensors: tuple[Tensor, ...], block_rows: int, source_len: int
) -> bool:
    """Whether the problems are heads side by side — (B, H) batch dims that some of
    ``tensors`` cannot merge (:func:`_groups` would take a head at a time) — and each head's
    B problems fit in one chunk of the causal backward."""
    if len(batch) != 2 or all(_batch_dims_merge(t) for t in tensors):
        return False
    return batch[0] <= max(1, _CHUNK_ELEMENTS // max(1, block_rows * source_len))
