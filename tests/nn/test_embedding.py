"""Embedding against torch.nn.Embedding + autograd: dense and sparse gradients, padding,
max_norm, gradient scaling by frequency, SparseAdam, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import handgrad.nn as hn
import handgrad.optim
from handgrad.check import check_module
from tests.nn.helpers import assert_matches

DOUBLE = torch.float64


def _pair(**kwargs: object) -> tuple[torch.nn.Embedding, hn.Embedding]:
    torch.manual_seed(3)
    reference = torch.nn.Embedding(dtype=DOUBLE, **kwargs)  # type: ignore[arg-type]
    torch.manual_seed(3)
    ours = hn.Embedding(dtype=DOUBLE, **kwargs)  # type: ignore[arg-type]
    return reference, ours


def _weight_gradients(
    reference: torch.nn.Embedding, ours: hn.Embedding, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    expected = reference(indices)
    upstream = torch.randn(expected.shape, dtype=DOUBLE)
    expected.backward(upstream)
    out = ours(indices)
    assert ours.backward(upstream) is None  # integer input: no input gradient
    assert reference.weight.grad is not None
    assert ours.weight.grad is not None
    return out, expected.detach(), ours.weight.grad, reference.weight.grad


@given(
    num=st.integers(1, 8),
    dim=st.integers(1, 4),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple),  # (torch fails on 0-d)
    padding=st.booleans(),
    scale_grad_by_freq=st.booleans(),
    sparse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_embedding_matches_torch(
    num: int,
    dim: int,
    shape: tuple[int, ...],
    padding: bool,
    scale_grad_by_freq: bool,
    sparse: bool,
    seed: int,
) -> None:
    if sparse and scale_grad_by_freq:
        return  # torch refuses the combination (tested below)
    padding_idx = num // 2 if padding else None
    reference, ours = _pair(
        num_embeddings=num,
        embedding_dim=dim,
        padding_idx=padding_idx,
        scale_grad_by_freq=scale_grad_by_freq,
        sparse=sparse,
    )
    assert torch.equal(ours.weight, reference.weight)  # drawn as torch draws it
    indices = torch.randint(0, num, shape, generator=torch.Generator().manual_seed(seed))
    out, expected, got, want = _weight_gradients(reference, ours, indices)
    assert torch.equal(out, expected)
    assert got.layout == want.layout
    assert_matches(got.to_dense(), want.to_dense(), "weight gradient")


def test_max_norm_renormalises_the_rows_looked_up_as_torch() -> None:
    reference, ours = _pair(num_embeddings=6, embedding_dim=3, max_norm=1.0, norm_type=1.5)
    indices = torch.tensor([[0, 2, 2], [5, 0, 1]])
    out, expected, got, want = _weight_gradients(reference, ours, indices)
    assert_matches(out, expected, "output")
    assert_matches(ours.weight.detach(), reference.weight.detach(), "renormalised weight")
    assert torch.equal(ours.weight[3], reference.weight.detach()[3])  # not looked up: untouched
    assert_matches(got, want, "weight gradient")


def test_sparse_gradients_train_with_sparse_adam_as_torch() -> None:
    reference, ours = _pair(num_embeddings=20, embedding_dim=4, sparse=True, padding_idx=0)
    ours_opt = handgrad.optim.SparseAdam(ours.parameters(), lr=0.1)
    theirs_opt = torch.optim.SparseAdam(reference.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        indices = torch.randint(0, 20, (3, 5), generator=generator)
        target = torch.randn(3, 5, 4, dtype=DOUBLE, generator=generator)
        ours_opt.zero_grad()
        theirs_opt.zero_grad()
        out = ours(indices)
        ours.backward(2 * (out - target) / out.numel())
        torch.nn.functional.mse_loss(reference(indices), target).backward()
        assert ours.weight.grad is not None
        assert ours.weight.grad.is_sparse
        ours_opt.step()
        theirs_opt.step()
    assert_matches(ours.weight.detach(), reference.weight.detach(), "weights after 5 steps")


def test_gradients_accumulate_dense_and_sparse() -> None:
    for sparse in (False, True):
        _, ours = _pair(num_embeddings=5, embedding_dim=2, sparse=sparse)
        indices = torch.tensor([1, 3, 1])
        for _ in range(2):
            ours.backward(torch.ones(3, 2, dtype=DOUBLE)) if ours(indices) is not None else None
        assert ours.weight.grad is not None
        expected = torch.zeros(5, 2, dtype=DOUBLE)
        expected[1], expected[3] = 4.0, 2.0
        assert torch.equal(ours.weight.grad.to_dense(), expected)


def test_finite_differences() -> None:
    # (no padding_idx: its row's gradient is 0 by definition, not the derivative)
    _, ours = _pair(num_embeddings=7, embedding_dim=3)
    result = check_module(ours, torch.tensor([[0, 2, 6], [6, 6, 1]]))
    assert result.passed, result.report()
    assert [t.name for t in result.tensors] == ["weight"]


def test_on_each_device(device: torch.device) -> None:
    reference, ours = _pair(num_embeddings=9, embedding_dim=4)
    reference, ours = reference.to(device), ours.to(device)
    indices = torch.tensor([[1, 8], [8, 0]], device=device)
    out, expected, got, want = _weight_gradients(reference, ours, indices)
    assert torch.equal(out, expected)
    assert_matches(got, want)


def test_state_dict_repr_and_conversion_mirror_torch() -> None:
    reference, ours = _pair(num_embeddings=9, embedding_dim=4, padding_idx=-1, max_norm=2.0)
    assert repr(ours) == repr(reference)
    assert ours.padding_idx == reference.padding_idx == 8
    assert list(ours.state_dict()) == list(reference.state_dict())
    twin = hn.from_torch(reference)
    assert isinstance(twin, hn.Embedding)
    assert twin.max_norm == 2.0
    assert torch.equal(twin.weight, reference.weight)
    assert not twin.weight.requires_grad
    assert torch.equal(hn.to_torch(twin).weight, reference.weight)


def test_token_ids_out_of_range_name_the_shape_and_size() -> None:
    ours = hn.Embedding(5, 2)
    with pytest.raises(IndexError, match=r"index 5 in input of shape \(2, 2\).*num_embeddings=5"):
        ours(torch.tensor([[0, 5], [1, 2]]))
    with pytest.raises(IndexError, match="index -1"):
        ours(torch.tensor([-1]))


def test_bad_arguments_raise_torchs_exceptions() -> None:
    with pytest.raises(RuntimeError, match=r"torch\.int64 or torch\.int32.*torch\.float32"):
        hn.Embedding(5, 2)(torch.tensor([1.0]))
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor"):
        hn.Embedding(5, 2)([1, 2])  # type: ignore[arg-type]
    for padding_idx in (5, -6):
        with pytest.raises(AssertionError, match="Padding_idx must be within num_embeddings"):
            hn.Embedding(5, 2, padding_idx=padding_idx)


def test_sparse_gradients_scaled_by_frequency_are_refused_as_by_torch() -> None:
    _, ours = _pair(num_embeddings=5, embedding_dim=2, sparse=True, scale_grad_by_freq=True)
    out = ours(torch.tensor([1, 1]))
    with pytest.raises(RuntimeError, match="scale_grad_by_freq not supported with sparse"):
        ours.backward(torch.ones_like(out))
