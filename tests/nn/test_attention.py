"""Scaled dot-product attention and MultiheadAttention against torch + autograd (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import handgrad.nn as hn
from handgrad.check import check_module
from handgrad.nn import functional as F
from handgrad.nn.functional import attention as attention_kernels
from tests.nn.helpers import assert_matches

DOUBLE = torch.float64


# ----------------------------------------------------------------- the functional kernel


def _sdpa_case(
    batch: tuple[int, ...],
    target_len: int,
    source_len: int,
    dims: tuple[int, int],
    mask: str,
    seed: int,
) -> tuple[tuple[torch.Tensor, ...], dict[str, object]]:
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=DOUBLE)

    embed, value_dim = dims
    q = draw(*batch, target_len, embed)
    k = draw(*batch, source_len, embed)
    v = draw(*batch, source_len, value_dim)
    kwargs: dict[str, object] = {}
    if mask == "causal":
        kwargs["is_causal"] = True
    elif mask == "bool":
        allowed = torch.rand(target_len, source_len, generator=generator) > 0.4
        allowed[:, 0] = True  # every query sees a key (a fully masked row is tested apart)
        kwargs["attn_mask"] = allowed
    elif mask == "float":
        kwargs["attn_mask"] = draw(*batch[-1:], target_len, source_len)
    return (q, k, v), kwargs


@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    target_len=st.integers(1, 6),
    source_len=st.integers(1, 6),
    dims=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    mask=st.sampled_from(["none", "causal", "bool", "float"]),
    scale=st.sampled_from([None, 0.3]),
    save_weights=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sdpa_matches_torch(
    batch: tuple[int, ...],
    target_len: int,
    source_len: int,
    dims: tuple[int, int],
    mask: str,
    scale: float | None,
    save_weights: bool,
    seed: int,
) -> None:
    (q, k, v), kwargs = _sdpa_case(batch, target_len, source_len, dims, mask, seed)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, scale=scale, **kwargs)
    upstream = torch.randn(
        expected.shape, dtype=DOUBLE, generator=torch.Generator().manual_seed(seed)
    )
    expected_grads = torch.autograd.grad(expected, leaves, upstream)

    out, ctx = F.scaled_dot_product_attention_forward(
        q,
        k,
        v,
        scale=scale,
        save_weights=save_weights,
        **kwargs,  # type: ignore[arg-type]
    )
    grads = F.scaled_dot_product_attention_backward(upstream, ctx)
    assert_matches(out, expected.detach(), "output")
    for name, got, want in zip(("d_query", "d_key", "d_value"), grads, expected_grads, strict=True):
        assert_matches(got, want, name)


def test_sdpa_broadcasts_batch_dims_and_sums_their_gradients() -> None:
    q = torch.randn(2, 3, 4, 5, dtype=DOUBLE)
    k = torch.randn(1, 3, 6, 5, dtype=DOUBLE)  # broadcast over the first dim
    v = torch.randn(2, 1, 6, 2, dtype=DOUBLE)  # over the second
    mask = torch.randn(2, 3, 4, 6, dtype=DOUBLE)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, attn_mask=mask)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    out, ctx = F.scaled_dot_product_attention_forward(q, k, v, attn_mask=mask)
    assert_matches(out, expected.detach(), "output")
    for got, want in zip(
        F.scaled_dot_product_attention_backward(upstream, ctx), expected_grads, strict=True
    ):
        assert_matches(got, want)


def test_sdpa_in_many_chunks_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The (batch, head) pairs are worked through in chunks; the chunk size changes nothing
    where P is a softmax (by rows). From the forward's log-sum-exp, P = 2^(S₂ − L₂) is one
    element-wise exp2 over a chunk's blocks, whose vectorized kernel and scalar tail may
    round differently: the chunk size can move an entry by its last bit, no more."""
    q, k, v = (torch.randn(3, 4, 7, 5, dtype=DOUBLE) for _ in range(3))
    upstream = torch.randn(3, 4, 7, 5, dtype=DOUBLE)
    whole_out, ctx = F.scaled_dot_product_attention_forward(
        q, k, v, is_causal=True, save_weights=False
    )
    whole = F.scaled_dot_product_attention_backward(upstream, ctx)
    whole_by_softmax = F.scaled_dot_product_attention_backward(
        upstream, ctx._replace(logsumexp=None)
    )
    monkeypatch.setattr(attention_kernels, "_CHUNK_ELEMENTS", 2 * 7 * 7 + 1)  # 2 pairs a chunk
    chunked_out, ctx = F.scaled_dot_product_attention_forward(
        q, k, v, is_causal=True, save_weights=False
    )
    chunked = F.scaled_dot_product_attention_backward(upstream, ctx)
    chunked_by_softmax = F.scaled_dot_product_attention_backward(
        upstream, ctx._replace(logsumexp=None)
    )
    assert torch.equal(chunked_out, whole_out)
    for a, b in zip(chunked_by_softmax, whole_by_softmax, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(chunked, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("lengths", [(7, 7), (5, 9), (9, 4)], ids=["square", "wide", "tall"])
def test_the_causal_backward_in_row_blocks_matches_autograd(
    monkeypatch: pytest.MonkeyPatch, blocks: int, lengths: tuple[int, int]
) -> None:
    """The causal backward skips the blocks above the diagonal (query rows in ``blocks``
    blocks, each against the keys it meets): autograd's gradients, for any number of
    blocks and for more or fewer queries than keys."""
    monkeypatch.setattr(attention_kernels, "_CAUSAL_BLOCKS", blocks)
    monkeypatch.setattr(attention_kernels, "_CHUNK_ELEMENTS", 3 * 9 * 9)  # chunks of 3 pairs
    target_len, source_len = lengths
    q = torch.randn(2, 4, target_len, 5, dtype=DOUBLE)
    k, v = (torch.randn(2, 4, source_len, 5, dtype=DOUBLE) for _ in range(2))
    upstream = torch.randn(2, 4, target_len, 5, dtype=DOUBLE)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    _, ctx = F.scaled_dot_product_attention_forward(q, k, v, is_causal=True, save_weights=False)
    grads = F.scaled_dot_product_attention_backward(upstream, ctx)
    for name, got, want in zip(("d_query", "d_key", "d_value"), grads, expected_grads, strict=True):
        assert_matches(got, want, name)


@pytest.mark.parametrize("save_weights", [False, True])
@pytest.mark.parametrize("mask", ["causal", "batched float"])
def test_heads_side_by_side_in_one_buffer_are_read_and_written_in_place(
    save_weights: bool, mask: str
) -> None:
    """Q, K, V as (B, H, T, d) views of one (B, T, 3, H, d) buffer (a qkv Linear's output),
    whose (B, H) do not merge: the kernels work through them a head at a time without a copy,
    and the backward writes dQ, dK, dV into views of one such buffer (``out``)."""
    batch, length, heads, dim = 3, 6, 2, 4
    qkv = torch.randn(batch, length, 3, heads, dim, dtype=DOUBLE)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    kwargs: dict[str, object] = {"is_causal": True}
    if mask == "batched float":
        kwargs = {"attn_mask": torch.randn(batch, heads, length, length, dtype=DOUBLE)}
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, **kwargs)
    upstream = torch.randn_like(expected).transpose(1, 2).contiguous().transpose(1, 2)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    out, ctx = F.scaled_dot_product_attention_forward(
        q, k, v, save_weights=save_weights, **kwargs
    )
    assert ctx.query.data_ptr() == qkv.data_ptr()  # kept as the view it is, not copied
    grad_qkv = torch.full_like(qkv, math.nan)
    views = tuple(grad_qkv.permute(2, 0, 3, 1, 4).unbind(0))
    grads = F.scaled_dot_product_attention_backward(upstream, ctx, out=views)
    assert_matches(out, expected.detach(), "output")
    for got, view, want, name in zip(grads, views, expected_grads, "qkv", strict=True):
        assert got.data_ptr() == view.data_ptr()
        assert_matches(got, want, f"d{name}")
    assert not grad_qkv.isnan().any()  # every entry of the buffer written


def _side_by_side_causal(
    batch: int, heads: int, target_len: int, source_len: int, dim: int
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
    """Q (B, H, L, d), K and V (B, H, S, d) as views of (B, ·, 3, H, d) buffers whose (B, H) do
    not merge (a qkv Linear's output), and an upstream gradient G of the output's shape."""
    queries = torch.randn(batch, target_len, 3, heads, dim, dtype=DOUBLE)
    keys = torch.randn(batch, source_len, 3, heads, dim, dtype=DOUBLE)
    q = queries.permute(2, 0, 3, 1, 4)[0]
    k, v = keys.permute(2, 0, 3, 1, 4)[1:].unbind(0)
    upstream = torch.randn(batch, target_len, heads, dim, dtype=DOUBLE).transpose(1, 2)
    return (q, k, v), upstream


def _count_heads_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gains an entry each time the block-major loop (_causal_backward_heads) runs."""
    calls: list[int] = []
    heads_path = attention_kernels._causal_backward_heads
    monkeypatch.setattr(
        attention_kernels,
        "_causal_backward_heads",
        lambda *args: calls.append(1) or heads_path(*args),
    )
    return calls


@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("lengths", [(7, 7), (9, 4), (5, 9)], ids=["square", "tall", "wide"])
def test_the_causal_backward_of_heads_side_by_side_matches_autograd(
    monkeypatch: pytest.MonkeyPatch, blocks: int, lengths: tuple[int, int]
) -> None:
    """Heads side by side take the block-major loop (_causal_backward_heads) where the last
    block meets every key (not "wide": more keys than queries): autograd's gradients, every
    entry of ``out`` written."""
    monkeypatch.setattr(attention_kernels, "_CAUSAL_BLOCKS", blocks)
    calls = _count_heads_path_calls(monkeypatch)
    (q, k, v), upstream = _side_by_side_causal(3, 2, *lengths, 4)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    _, ctx = F.scaled_dot_product_attention_forward(q, k, v, is_causal=True, save_weights=False)
    out = tuple(torch.full_like(t, math.nan) for t in (q, k, v))
    grads = F.scaled_dot_product_attention_backward(upstream, ctx, out=out)
    assert len(calls) == (0 if lengths == (5, 9) else 1)
    for name, got, want in zip(("d_query", "d_key", "d_value"), grads, expected_grads, strict=True):
        assert_matches(got, want, name)


def test_the_causal_backward_of_heads_side_by_side_has_the_bits_of_a_head_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The block-major loop runs the same products, in the same order for each entry, as the
    general loop, which takes a head at a time (chosen here by chunks of fewer problems)."""
    (q, k, v), upstream = _side_by_side_causal(4, 3, 8, 8, 5)
    _, ctx = F.scaled_dot_product_attention_forward(q, k, v, is_causal=True, save_weights=False)
    calls = _count_heads_path_calls(monkeypatch)
    block_major = F.scaled_dot_product_attention_backward(upstream, ctx)
    assert calls == [1]  # the block-major loop ran
    monkeypatch.setattr(attention_kernels, "_CHUNK_ELEMENTS", 2 * 4 * 8)  # 2 problems a chunk
    monkeypatch.setattr(
        attention_kernels, "_causal_backward_heads", lambda *args: pytest.fail("not chunked")
    )
    head_at_a_time = F.scaled_dot_product_attention_backward(upstream, ctx)
    for a, b in zip(block_major, head_at_a_time, strict=True):
        assert torch.equal(a, b)


def _count_probabilities_from_sums(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """A list that gains an entry for each block's P the causal backward recomputes: whether
    from the forward's log-sum-exp (True) or by softmax (False)."""
    seen: list[bool] = []
    probabilities = attention_kernels._probabilities_
    monkeypatch.setattr(
        attention_kernels,
        "_probabilities_",
        lambda scores, sums: seen.append(sums is not None) or probabilities(scores, sums),
    )
    return seen


def _causal_scores(q: Tensor, k: Tensor) -> Tensor:
    """S = Q Kᵀ/√d with −∞ above the diagonal (square)."""
    allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, -math.inf)


@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("layout", ["side by side", "contiguous"])
def test_the_causal_backward_from_the_forwards_log_sum_exp_matches_autograd(
    monkeypatch: pytest.MonkeyPatch, layout: str, blocks: int
) -> None:
    """Causal (B, H, T, d) heads on the CPU: the forward keeps each row's log-sum-exp (the
    scores', to round-off) beside torch's O, and the backward's P = 2^(S₂ − L₂) from it —
    the block-major loop for heads side by side, the general loop for contiguous ones —
    gives autograd's gradients, as the softmax does without it."""
    monkeypatch.setattr(attention_kernels, "_CAUSAL_BLOCKS", blocks)
    seen = _count_probabilities_from_sums(monkeypatch)
    if layout == "side by side":
        (q, k, v), upstream = _side_by_side_causal(3, 2, 7, 7, 4)
    else:
        q, k, v, upstream = (torch.randn(3, 2, 7, 4, dtype=DOUBLE) for _ in range(4))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    out, ctx = F.scaled_dot_product_attention_forward(q, k, v, is_causal=True, save_weights=False)
    assert torch.equal(out, expected.detach())  # torch's own fused kernel
    assert ctx.logsumexp is not None
    assert_matches(ctx.logsumexp, torch.logsumexp(_causal_scores(q, k), -1), "logsumexp")
    from_sums = F.scaled_dot_product_attention_backward(upstream, ctx)
    # a block of each head (2) at a time side by side; of all problems at once contiguous
    assert len(seen) == blocks * (2 if layout == "side by side" else 1)
    assert all(seen)
    seen.clear()
    by_softmax = F.scaled_dot_product_attention_backward(upstream, ctx._replace(logsumexp=None))
    assert seen
    assert not any(seen)
    names = ("d_query", "d_key", "d_value")
    for name, got, again, want in zip(names, from_sums, by_softmax, expected_grads, strict=True):
        assert_matches(got, want, name)
        assert_matches(again, want, name)


_NO_LOG_SUM_EXP = {
    "3-D": ((2, 7, 4), (2, 7, 4), {"is_causal": True}),
    "more keys": ((2, 2, 5, 4), (2, 2, 9, 4), {"is_causal": True}),
    "mask": ((2, 2, 7, 4), (2, 2, 7, 4), {"attn_mask": torch.ones(7, 7, dtype=torch.bool).tril()}),
    "not causal": ((2, 2, 7, 4), (2, 2, 7, 4), {}),
    "weights kept": ((2, 2, 7, 4), (2, 2, 7, 4), {"is_causal": True, "save_weights": True}),
    "columns": ((2, 2, 7, 4), (2, 2, 7, 4), {"is_causal": True, "columns": True}),
}


@pytest.mark.parametrize("case", list(_NO_LOG_SUM_EXP), ids=list(_NO_LOG_SUM_EXP))
def test_the_forward_keeps_no_log_sum_exp_where_the_fused_kernel_does_not_run(
    case: str,
) -> None:
    """Anything but causal (B, H, T, d) heads with unit feature strides (or a forward that
    keeps P itself): no log-sum-exp, the backward by softmax, still autograd's gradients."""
    query_shape, key_shape, kwargs = _NO_LOG_SUM_EXP[case]
    kwargs = dict(kwargs)
    q = torch.randn(query_shape, dtype=DOUBLE)
    k, v = (torch.randn(key_shape, dtype=DOUBLE) for _ in range(2))
    if kwargs.pop("columns", False):  # each row of features strided: (.., d, T) transposed
        q, k, v = (t.transpose(-2, -1).contiguous().transpose(-2, -1) for t in (q, k, v))
    save_weights = bool(kwargs.pop("save_weights", False))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, **kwargs)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    out, ctx = F.scaled_dot_product_attention_forward(
        q, k, v, save_weights=save_weights, **kwargs
    )
    assert ctx.logsumexp is None
    assert_matches(out, expected.detach(), "output")
    grads = F.scaled_dot_product_attention_backward(upstream, ctx)
    for name, got, want in zip(("d_query", "d_key", "d_value"), grads, expected_grads, strict=True):
        assert_matches(got, want, name)


def test_without_the_fused_kernels_log_sum_exp_the_causal_backward_takes_the_softmax(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A torch without the kernel's private name (handgrad._compat's fallback): O from the
    public function, P by softmax, autograd's gradients."""
    import handgrad._compat as compat

    monkeypatch.setattr(compat, "_FLASH_ATTENTION_CPU", None)
    seen = _count_probabilities_from_sums(monkeypatch)
    (q, k, v), upstream = _side_by_side_causal(3, 2, 7, 7, 4)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    out, ctx = F.scaled_dot_product_attention_forward(q, k, v, is_causal=True, save_weights=False)
    assert ctx.logsumexp is None
    assert torch.equal(out, expected.detach())
    grads = F.scaled_dot_product_attention_backward(upstream, ctx)
    assert seen
    assert not any(seen)
    for name, got, want in zip(("d_query", "d_key", "d_value"), grads, expected_grads, strict=True):
        assert_matches(got, want, name)


def test_backward_into_out_of_the_wrong_shape_or_dtype_is_refused() -> None:
    q, k, v = (torch.randn(2, 3, 4, dtype=DOUBLE) for _ in range(3))
    out, ctx = F.scaled_dot_product_attention_forward(q, k, v)
    upstream = torch.randn_like(out)
    good = tuple(torch.empty_like(t) for t in (q, k, v))
    with pytest.raises(ValueError, match=r"out's dK must have shape \(2, 3, 4\).*got \(2, 4, 3\)"):
        F.scaled_dot_product_attention_backward(
            upstream, ctx, out=(good[0], torch.empty(2, 4, 3, dtype=DOUBLE), good[2])
        )
    with pytest.raises(ValueError, match=r"out's dV must have .* torch.float64 .*float32"):
        F.scaled_dot_product_attention_backward(
            upstream, ctx, out=(good[0], good[1], torch.empty(2, 3, 4))
        )
    with pytest.raises(ValueError, match="three tensors"):
        F.scaled_dot_product_attention_backward(upstream, ctx, out=good[:2])  # type: ignore[arg-type]
    grads = F.scaled_dot_product_attention_backward(upstream, ctx, out=good)
    assert all(g is t for g, t in zip(grads, good, strict=True))


def test_a_fully_masked_row_gets_zero_weights_and_no_gradient() -> None:
    q, k, v = (torch.randn(2, 3, 4, dtype=DOUBLE) for _ in range(3))
    allowed = torch.ones(3, 3, dtype=torch.bool)
    allowed[1] = False  # query 1 may attend to nothing
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*leaves, attn_mask=allowed)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    out, ctx = F.scaled_dot_product_attention_forward(q, k, v, attn_mask=allowed)
    grads = F.scaled_dot_product_attention_backward(upstream, ctx)
    assert torch.equal(out[:, 1], torch.zeros(2, 4, dtype=DOUBLE))
    assert torch.equal(grads[0][:, 1], torch.zeros(2, 4, dtype=DOUBLE))
    assert_matches(out, expected.detach())
    for got, want in zip(grads, expected_grads, strict=True):
        assert_matches(got, want)


def test_sdpa_gradient_of_the_weights_adds_to_dp() -> None:
    """A caller that returns P (need_weights) passes dL/dP too: checked against autograd."""
    q, k, v = (torch.randn(2, 4, 3, dtype=DOUBLE) for _ in range(3))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    scores = leaves[0] @ leaves[1].transpose(-2, -1) / math.sqrt(3)
    weights = torch.softmax(scores, -1)
    out = weights @ leaves[2]
    g_out, g_weights = torch.randn_like(out), torch.randn_like(weights)
    expected = torch.autograd.grad((out * g_out).sum() + (weights * g_weights).sum(), leaves)
    _, ctx = F.scaled_dot_product_attention_forward(q, k, v)
    assert ctx.weights is not None
    assert_matches(ctx.weights, weights.detach(), "weights")
    for got, want in zip(
        F.scaled_dot_product_attention_backward(g_out, ctx, g_weights), expected, strict=True
    ):
        assert_matches(got, want)


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_sdpa_dropout_drops_a_fraction_p_and_scales_the_rest(p: float) -> None:
    torch.manual_seed(0)
    q, k = torch.zeros(8, 64, 4), torch.zeros(8, 64, 4)  # uniform weights 1/64
    v = torch.eye(64).expand(8, 64, 64)  # the output is the dropped, scaled weights themselves
    out, ctx = F.scaled_dot_product_attention_forward(q, k, v, dropout_p=p)
    assert ctx.dropout_keep is not None
    kept = ctx.dropout_keep.float().mean().item()
    assert abs(kept - (1 - p)) < 0.02  # 32,768 draws: 4+ standard deviations
    expected = torch.where(ctx.dropout_keep, 1 / 64 / (1 - p), 0.0)
    torch.testing.assert_close(out, expected)
    # backward: autograd through the same mask, written out
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    weights = torch.softmax(leaves[0] @ leaves[1].transpose(1, 2) / 2.0, -1)
    dropped = weights * (ctx.dropout_keep.float() / (1 - p))
    upstream = torch.randn_like(out)
    expected = torch.autograd.grad(dropped @ leaves[2], leaves, upstream)
    for got, want in zip(
        F.scaled_dot_product_attention_backward(upstream, ctx), expected, strict=True
    ):
        torch.testing.assert_close(got, want)


# ----------------------------------------------------------------- MultiheadAttention


def _pair(**kwargs: object) -> tuple[torch.nn.MultiheadAttention, hn.MultiheadAttention]:
    torch.manual_seed(7)
    reference = torch.nn.MultiheadAttention(dtype=DOUBLE, **kwargs)  # type: ignore[arg-type]
    torch.manual_seed(7)
    ours = hn.MultiheadAttention(dtype=DOUBLE, **kwargs)  # type: ignore[arg-type]
    return reference, ours


@pytest.mark.parametrize(
    "kwargs",
    [
        {"embed_dim": 8, "num_heads": 2},
        {"embed_dim": 6, "num_heads": 3, "bias": False, "batch_first": True},
        {"embed_dim": 4, "num_heads": 1, "add_bias_kv": True, "kdim": 3, "vdim": 5},
    ],
    ids=["packed", "no-bias", "separate-bias-kv"],
)
def test_mha_is_initialised_like_torch(kwargs: dict[str, object]) -> None:
    reference, ours = _pair(**kwargs)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for (name, theirs), mine in zip(
        reference.state_dict().items(), ours.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    assert not any(p.requires_grad for p in ours.parameters())


@st.composite
def mha_cases(draw: st.DrawFn) -> dict[str, object]:
    heads = draw(st.integers(1, 3))
    case = {
        "embed_dim": heads * draw(st.integers(1, 3)),
        "num_heads": heads,
        "bias": draw(st.booleans()),
        "add_bias_kv": draw(st.booleans()),
        "add_zero_attn": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "self_attention": draw(st.booleans()),
        "batched": draw(st.booleans()),
        "need_weights": draw(st.booleans()),
        "average": draw(st.booleans()),
        "mask_dtype": draw(st.sampled_from([torch.bool, DOUBLE])),
        "attn_mask": draw(st.sampled_from([None, 2, 3])),  # its number of dims
        "padding": draw(st.booleans()),
        "lengths": (draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))),
        "seed": draw(st.integers(0, 2**16)),
    }
    if not case["self_attention"]:
        case["kdim"] = draw(st.sampled_from([None, 2]))
        case["vdim"] = draw(st.sampled_from([None, 3]))
    return case


@given(mha_cases())
def test_mha_matches_torch(case: dict[str, object]) -> None:
    """Outputs, weights and every gradient (query, key, value, each parameter) vs autograd."""
    target_len, source_len, batch = case["lengths"]  # type: ignore[misc]
    if case["self_attention"]:
        source_len = target_len
    arguments = {
        name: case[name]
        for name in (
            "embed_dim",
            "num_heads",
            "bias",
            "add_bias_kv",
            "add_zero_attn",
            "batch_first",
        )
    }
    for name in ("kdim", "vdim"):
        if name in case:
            arguments[name] = case[name]
    reference, ours = _pair(**arguments)
    generator = torch.Generator().manual_seed(case["seed"])  # type: ignore[arg-type]
    batched, batch_first = case["batched"], case["batch_first"]

    def sequence(length: int, width: int) -> torch.Tensor:
        shape = (
            (length, width)
            if not batched
            else ((batch, length, width) if batch_first else (length, batch, width))
        )
        return torch.randn(shape, generator=generator, dtype=DOUBLE)

    query = sequence(target_len, ours.embed_dim)
    if case["self_attention"]:
        inputs = [query]
    else:
        inputs = [query, sequence(source_len, ours.kdim), sequence(source_len, ours.vdim)]
    heads = ours.num_heads
    kwargs: dict[str, object] = {
        "need_weights": case["need_weights"],
        "average_attn_weights": case["average"],
    }

    def mask(*shape: int) -> torch.Tensor:
        if case["mask_dtype"] == torch.bool:  # True = may not attend; key 0 stays visible
            hidden = torch.rand(shape, generator=generator) > 0.6
            hidden[..., 0] = False
            return hidden
        return torch.randn(shape, generator=generator, dtype=DOUBLE)

    if case["attn_mask"] == 2:
        kwargs["attn_mask"] = mask(target_len, source_len)
    elif case["attn_mask"] == 3:
        kwargs["attn_mask"] = mask((batch if batched else 1) * heads, target_len, source_len)
    if case["padding"]:
        kwargs["key_padding_mask"] = mask(batch, source_len) if batched else mask(source_len)

    leaves = [x.clone().requires_grad_() for x in inputs]
    call = leaves * 3 if case["self_attention"] else leaves
    expected_out, expected_weights = reference(*call, **kwargs)
    g_out = torch.randn(expected_out.shape, generator=generator, dtype=DOUBLE)
    loss = (expected_out * g_out).sum()
    g_weights = None
    if expected_weights is not None:
        g_weights = torch.randn(expected_weights.shape, generator=generator, dtype=DOUBLE)
        loss = loss + (expected_weights * g_weights).sum()
    params = list(reference.parameters())
    expected = torch.autograd.grad(loss, leaves + params)

    with torch.no_grad():
        own = inputs * 3 if case["self_attention"] else inputs
        out, weights = ours(*own, **kwargs)
        grads = ours.backward((g_out, g_weights) if g_weights is not None else g_out)
    assert grads is not None
    assert_matches(out, expected_out.detach(), "attn_output")
    if expected_weights is None:
        assert weights is None
    else:
        assert_matches(weights, expected_weights.detach(), "attn_weights")
    if case["self_attention"]:
        grads = (grads[0] + grads[1] + grads[2],)
    names = ("query", "key", "value")[: len(grads)]
    for name, got, want in zip(names, grads, expected[: len(leaves)], strict=True):
        assert_matches(got, want, f"d_{name}", scale_floor=1e-3)
    for (name, param), want in zip(ours.named_parameters(), expected[len(leaves) :], strict=True):
        assert_matches(param.grad, want, name, scale_floor=1e-3)


def test_mha_causal_hint_uses_the_causal_kernel() -> None:
    reference, ours = _pair(embed_dim=4, num_heads=2, batch_first=True)
    x = torch.randn(2, 5, 4, dtype=DOUBLE)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=DOUBLE)
    leaf = x.clone().requires_grad_()
    expected, _ = reference(leaf, leaf, leaf, attn_mask=causal, is_causal=True, need_weights=False)
    upstream = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, [leaf], upstream)
    out, _ = ours(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)
    assert_matches(out, expected.detach())
    grads = ours.backward(upstream)
    assert grads is not None
    assert_matches(grads[0] + grads[1] + grads[2], expected_grad)


def test_mha_dropout_in_training_only() -> None:
    _, ours = _pair(embed_dim=4, num_heads=2, dropout=0.5)
    x = torch.randn(6, 3, 4, dtype=DOUBLE)
    ours.eval()
    first, _ = ours(x, x, x)
    assert torch.equal(first, ours(x, x, x)[0])  # no dropout in evaluation
    ours.train()
    torch.manual_seed(1)
    a, weights = ours(x, x, x)
    torch.manual_seed(2)
    b, _ = ours(x, x, x)
    assert not torch.equal(a, b)
    assert weights is not None
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6, dtype=DOUBLE))  # before dropout


def test_check_module_passes_cross_attention() -> None:
    """The finite-difference check on all three inputs and every parameter."""
    _, ours = _pair(embed_dim=4, num_heads=2, kdim=3, vdim=2, add_bias_kv=True)
    q, k, v = torch.randn(3, 2, 4), torch.randn(5, 2, 3), torch.randn(5, 2, 2)

    class OutputOnly(hn.Module):  # check_module differentiates one output
        def __init__(self) -> None:
            super().__init__()
            self.attention = ours

        def forward(
            self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
        ) -> torch.Tensor:
            return self.attention(query, key, value, need_weights=False)[0]

        def backward(self, grad_output: torch.Tensor, input_grad: bool = True) -> object:
            return self.attention.backward(grad_output, input_grad)

    result = check_module(OutputOnly(), (q, k, v))
    assert result.passed, result.report()
    names = {t.name for t in result.tensors}
    assert {"query", "key", "value", "attention.q_proj_weight", "attention.bias_k"} <= names


def test_mha_backward_without_input_grad_returns_none_and_fills_parameters() -> None:
    _, ours = _pair(embed_dim=4, num_heads=2)
    x = torch.randn(3, 2, 4, dtype=DOUBLE)
    out, _ = ours(x, x, x)
    assert ours.backward(torch.ones_like(out), input_grad=False) is None
    assert all(p.grad is not None for p in ours.parameters())


# ----------------------------------------------------------------- bad input


def test_embed_dim_not_divisible_by_num_heads() -> None:
    with pytest.raises(AssertionError, match="embed_dim=10 and num_heads=3"):
        hn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="greater than 0"):
        hn.MultiheadAttention(0, 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"attn_mask": torch.zeros(4, 4, dtype=torch.bool)},
            RuntimeError,
            r"2D attn_mask is \(4, 4\).*\(3, 5\)",
        ),
        (
            {"attn_mask": torch.zeros(5, 3, 5)},
            RuntimeError,
            r"3D attn_mask is \(5, 3, 5\).*\(4, 3, 5\)",
        ),
        (
            {"attn_mask": torch.zeros(3, 5, dtype=torch.int64)},
            AssertionError,
            "only bool and floating types of attn_mask",
        ),
        (
            {"key_padding_mask": torch.zeros(2, 4, dtype=torch.bool)},
            AssertionError,
            r"key_padding_mask of shape \(2, 5\).*got \(2, 4\)",
        ),
        (
            {"key_padding_mask": torch.zeros(2, 5, dtype=torch.int32)},
            AssertionError,
            "only bool and floating types of key_padding_mask",
        ),
        (
            {"attn_mask": torch.zeros(3, 5, dtype=torch.float64)},
            RuntimeError,
            "must have the query's dtype",
        ),
        ({"is_causal": True}, RuntimeError, "needs attn_mask"),
    ],
)
def test_bad_masks_raise_torchs_exception_naming_the_shapes(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    ours = hn.MultiheadAttention(4, 2)
    q, kv = torch.randn(3, 2, 4), torch.randn(5, 2, 4)
    with pytest.raises(error, match=match):
        ours(q, kv, kv, **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_name_the_shapes() -> None:
    ours = hn.MultiheadAttention(4, 2)
    with pytest.raises(AssertionError, match=r"query \(3, 2, 5\)"):
        ours(torch.randn(3, 2, 5), torch.randn(3, 2, 4), torch.randn(3, 2, 4))
    with pytest.raises(AssertionError, match="3-D"):
        ours(torch.randn(3, 2, 4), torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(TypeError, match=r"key must be a torch\.Tensor"):
        ours(torch.randn(3, 2, 4), [1.0], torch.randn(3, 2, 4))  # type: ignore[arg-type]
    out, _ = ours(
        torch.randn(3, 2, 4), torch.randn(3, 2, 4), torch.randn(3, 2, 4), need_weights=False
    )
    with pytest.raises(ValueError, match="need_weights=False"):
        ours.backward((torch.ones_like(out), torch.ones(2, 3, 3)))


@pytest.mark.parametrize(
    ("shapes", "kwargs", "match"),
    [
        (((2, 3, 4), (2, 5, 3), (2, 5, 4)), {}, r"key \(2, 5, 3\)"),
        (((2, 3, 4), (2, 5, 4), (2, 4, 4)), {}, r"value \(2, 4, 4\)"),
        (((3, 4), (5, 4), (5, 4)), {"attn_mask": torch.ones(3, 4, dtype=torch.bool)},
         r"attn_mask of shape \(3, 4\) .* \(3, 5\)"),
        (((3, 4), (5, 4), (5, 4)), {"attn_mask": torch.ones(3, 5, dtype=torch.int64)},
         "torch.int64"),
        (((3, 4), (3, 4), (3, 4)), {"attn_mask": torch.ones(3, 3, dtype=torch.bool),
                                    "is_causal": True}, "not both"),
    ],
)  # fmt: skip
def test_sdpa_bad_arguments_raise_torchs_runtime_error_naming_them(
    shapes: tuple[tuple[int, ...], ...], kwargs: dict[str, object], match: str
) -> None:
    q, k, v = (torch.randn(shape) for shape in shapes)
    with pytest.raises(RuntimeError):  # torch's type for each of these
        torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=match):
        F.scaled_dot_product_attention_forward(q, k, v, **kwargs)  # type: ignore[arg-type]


def test_mha_on_each_device(device: torch.device) -> None:
    reference, ours = _pair(embed_dim=4, num_heads=2, batch_first=True)
    reference, ours = reference.to(device), ours.to(device)
    x = torch.randn(2, 3, 4, dtype=DOUBLE, device=device)
    leaf = x.clone().requires_grad_()
    expected, _ = reference(leaf, leaf, leaf, need_weights=False)
    upstream = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, [leaf], upstream)
    out, _ = ours(x, x, x, need_weights=False)
    grads = ours.backward(upstream)
    assert grads is not None
    assert_matches(out, expected.detach())
    assert_matches(grads[0] + grads[1] + grads[2], expected_grad)
