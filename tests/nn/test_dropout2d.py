"""Dropout2d: the same channels dropped as torch.nn.Dropout2d from the same seed, and the
gradient through the same mask."""

from __future__ import annotations

import pytest
import torch

import handgrad.nn as hn
from tests.nn.conv_helpers import assert_same_error, compare_with_torch, layout

F64 = torch.float64


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
def test_matches_torch_in_training(p: float, kind: str) -> None:
    x = layout(torch.randn(4, 6, 3, 5, dtype=F64), kind)
    twin = compare_with_torch(torch.nn.Dropout2d(p), x, seed=3)
    if 0 < p < 1:
        torch.manual_seed(3)
        out = twin(x)
        dropped = (out == 0).flatten(2).all(-1)  # (N, C): whole channels are zero or kept
        kept = torch.isclose(out, x / (1 - p), rtol=1e-14, atol=0).flatten(2).all(-1)
        assert bool((dropped | kept).all())
        assert bool(dropped.any()) and bool(kept.any())  # noqa: PT018


def test_three_dimensional_input_is_channel_dropout_as_torch_warns() -> None:
    x = torch.randn(4, 6, 5, dtype=F64)
    with pytest.warns(UserWarning, match="3D input to dropout2d"):
        compare_with_torch(torch.nn.Dropout2d(0.4), x)


def test_eval_is_the_identity_and_draws_nothing() -> None:
    hand = hn.Dropout2d(0.5).eval()
    x = torch.randn(2, 3, 4, 4)
    before = torch.get_rng_state()
    assert hand(x) is x
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(hand.backward(torch.ones_like(x)), torch.ones_like(x))


def test_inplace_overwrites_the_input_like_torch() -> None:
    x = torch.randn(2, 3, 4, 4)
    y = x.clone()
    torch.manual_seed(0)
    torch.nn.Dropout2d(0.5, inplace=True)(y)
    hand = hn.Dropout2d(0.5, inplace=True)
    torch.manual_seed(0)
    out = hand(x)
    assert out is x
    assert torch.equal(x, y)


def test_generator_gives_reproducible_masks() -> None:
    x = torch.randn(8, 4, 2, 2)
    first = hn.Dropout2d(0.5, generator=torch.Generator().manual_seed(1))(x)
    second = hn.Dropout2d(0.5, generator=torch.Generator().manual_seed(1))(x)
    assert torch.equal(first, second)


def test_arguments_repr_and_errors_are_torchs() -> None:
    reference = torch.nn.Dropout2d(0.2, inplace=True)
    hand = hn.from_torch(reference)
    assert repr(hand) == repr(reference)
    assert repr(hn.to_torch(hand)) == repr(reference)
    assert_same_error(lambda: torch.nn.Dropout2d(1.5), lambda: hn.Dropout2d(1.5), ValueError, "1.5")
