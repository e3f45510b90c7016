"""BatchNorm1d, BatchNorm2d and GroupNorm against torch.nn + autograd: outputs, every
gradient and the running statistics (and num_batches_tracked) after each training step."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import handgrad.nn as hn
from handgrad.check import check_module
from tests.conftest import DEVICES
from tests.nn.conv_helpers import assert_same_error, compare_with_torch, layout
from tests.nn.helpers import assert_matches

F64 = torch.float64


@st.composite
def batch_norm_configs(draw: st.DrawFn) -> dict[str, Any]:
    rank = draw(st.sampled_from([2, 3, 4]))
    channels = draw(st.integers(1, 4))
    batch = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, 4)) for _ in range(rank - 2))
    if batch * math.prod(spatial) < 3:
        # Batch statistics need two values per channel, and with exactly two x̂ = ±1 makes
        # the exact input gradient ε-small: both sides are rounding noise there.
        batch = 3
    shape = (batch, channels, *spatial)
    return {
        "kind": torch.nn.BatchNorm2d if rank == 4 else torch.nn.BatchNorm1d,
        "shape": shape,
        "training": draw(st.booleans()),
        "momentum": draw(st.sampled_from([0.1, 0.5, None])),
        "affine": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "track_running_stats": draw(st.booleans()),
        "eps": draw(st.sampled_from([1e-5, 1e-2])),
        "steps": draw(st.integers(1, 3)),
        "layout": draw(
            st.sampled_from(["contiguous", "strided"] + ["channels_last"] * (rank == 4))
        ),
        "offset": draw(st.sampled_from([0.0, 3.0])),  # a mean far from 0
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.parametrize("device", DEVICES)
@given(batch_norm_configs())
def test_batch_norm_matches_autograd_over_several_steps(
    device: str, config: dict[str, Any]
) -> None:
    torch.manual_seed(config["seed"])
    channels = config["shape"][1]
    reference = config["kind"](
        channels, config["eps"], config["momentum"], config["affine"],
        config["track_running_stats"], dtype=F64, bias=config["bias"],
    ).to(device)  # fmt: skip
    if config["affine"]:  # away from the initial 1 and 0
        with torch.no_grad():
            reference.weight.uniform_(0.5, 1.5)
            if reference.bias is not None:
                reference.bias.uniform_(-1, 1)
    if config["track_running_stats"]:
        with torch.no_grad():
            reference.running_mean.uniform_(-1, 1)
            reference.running_var.uniform_(0.5, 2)
    reference.train(config["training"])
    hand = hn.from_torch(reference)
    for _ in range(config["steps"]):
        x = torch.randn(config["shape"], dtype=F64, device=device) * 2 + config["offset"]
        compare_with_torch(reference, layout(x, config["layout"]), hand=hand)
    if config["track_running_stats"]:
        expected_count = config["steps"] if config["training"] else 0
        assert int(hand.num_batches_tracked) == expected_count


@pytest.mark.parametrize("device", DEVICES)
@given(
    st.integers(1, 3),
    st.sampled_from([(1, 1), (2, 2), (2, 4), (3, 6), (6, 6)]),
    st.sampled_from([(), (3,), (2, 3)]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["contiguous", "strided", "channels_last"]),
    st.integers(0, 2**16),
)
def test_group_norm_matches_autograd(
    device: str,
    batch: int,
    groups_channels: tuple[int, int],
    spatial: tuple[int, ...],
    affine: bool,
    bias: bool,
    kind: str,
    seed: int,
) -> None:
    groups, channels = groups_channels
    if channels // groups * math.prod(spatial) < 3:
        # One or two values per group: x̂ is 0 or ±1 and the exact input gradient 0 or
        # ε-small, so both sides are rounding noise and a relative comparison means nothing.
        spatial = (3, *spatial[1:])
    shape = (batch, channels, *spatial)
    torch.manual_seed(seed)
    reference = torch.nn.GroupNorm(groups, channels, affine=affine, bias=bias, dtype=F64)
    reference = reference.to(device)
    if affine:
        with torch.no_grad():
            reference.weight.uniform_(0.5, 1.5)
            if reference.bias is not None:
                reference.bias.uniform_(-1, 1)
    x = torch.randn(shape, dtype=F64, device=device) * 2 + 1
    compare_with_torch(reference, layout(x, kind if len(shape) == 4 else "strided"))


def test_cumulative_average_with_momentum_none() -> None:
    reference = torch.nn.BatchNorm2d(3, momentum=None, dtype=F64)
    hand = hn.from_torch(reference)
    for step in range(4):
        x = torch.randn(4, 3, 2, 2, dtype=F64) * (step + 1) + step
        reference(x)
        hand(x)
    assert_matches(hand.running_mean, reference.running_mean)
    assert_matches(hand.running_var, reference.running_var)
    assert int(hand.num_batches_tracked) == 4


def test_eval_uses_the_running_statistics() -> None:
    reference = torch.nn.BatchNorm1d(3, dtype=F64)
    hand = hn.from_torch(reference)
    x = torch.randn(8, 3, dtype=F64) + 2
    for module in (reference, hand):
        module(x)
    reference.eval()
    hand.eval()
    before = hand.running_mean.clone()
    compare_with_torch(reference, torch.randn(1, 3, dtype=F64), hand=hand)  # batch 1 is fine
    assert torch.equal(hand.running_mean, before)
    assert int(hand.num_batches_tracked) == 1


@pytest.mark.parametrize(
    "reference",
    [
        torch.nn.BatchNorm1d(4),
        torch.nn.BatchNorm2d(3, eps=1e-3, momentum=None, affine=False),
        torch.nn.BatchNorm2d(3, track_running_stats=False, bias=False),
        torch.nn.GroupNorm(2, 4),
        torch.nn.GroupNorm(3, 6, eps=1e-3, affine=False),
    ],
    ids=repr,
)
def test_repr_state_dict_and_finite_differences(reference: torch.nn.Module) -> None:
    hand = hn.from_torch(reference)
    assert repr(hand) == repr(reference)
    assert repr(hn.to_torch(hand)) == repr(reference)
    assert list(hand.state_dict()) == list(reference.state_dict())
    for (name, expected), got in zip(
        reference.state_dict().items(), hand.state_dict().values(), strict=True
    ):
        assert got.dtype == expected.dtype, name
        assert torch.equal(got, expected), name
    channels = getattr(reference, "num_features", getattr(reference, "num_channels", 0))
    shape = (5, channels) if isinstance(reference, torch.nn.BatchNorm1d) else (3, channels, 2, 3)
    result = check_module(hand, torch.randn(shape) + 1, fd_samples=12)
    assert result.passed, result.report()


def test_loads_state_dicts_without_num_batches_tracked_as_torch() -> None:
    reference = torch.nn.BatchNorm2d(3)
    reference(torch.randn(4, 3, 2, 2))
    state = reference.state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1  # type: ignore[attr-defined]
    hand = hn.BatchNorm2d(3)
    hand.load_state_dict(state)
    assert torch.equal(hand.running_mean, reference.running_mean)
    assert int(hand.num_batches_tracked) == 0


def test_reset_running_stats() -> None:
    hand = hn.BatchNorm1d(2)
    hand(torch.randn(5, 2) + 3)
    hand.reset_running_stats()
    assert torch.equal(hand.running_mean, torch.zeros(2))
    assert torch.equal(hand.running_var, torch.ones(2))
    assert int(hand.num_batches_tracked) == 0


@pytest.mark.parametrize(
    ("make", "shape", "error", "fragments"),
    [
        (lambda: torch.nn.BatchNorm1d(3), (1, 3), ValueError, ["more than 1 value per channel"]),
        (lambda: torch.nn.BatchNorm2d(3), (1, 3, 1, 1), ValueError, ["more than 1 value"]),
        (lambda: torch.nn.BatchNorm2d(3), (2, 3, 4), ValueError, ["expected 4D input (got 3D"]),
        (lambda: torch.nn.BatchNorm1d(3), (2, 3, 4, 4), ValueError, ["expected 2D or 3D"]),
        (lambda: torch.nn.BatchNorm2d(3), (2, 4, 2, 2), RuntimeError,
         ["BatchNorm2d(3", "3 channels", "(2, 4, 2, 2)"]),
        (lambda: torch.nn.GroupNorm(2, 4), (2, 6, 3), RuntimeError,
         ["GroupNorm(2, 4", "4 channels", "(2, 6, 3)"]),
        (lambda: torch.nn.GroupNorm(2, 4, affine=False), (2, 5, 3), RuntimeError,
         ["GroupNorm(2, 4", "divisible", "(2, 5, 3)"]),
        (lambda: torch.nn.GroupNorm(2, 4), (4,), RuntimeError, ["GroupNorm(2, 4", "(4,)"]),
        (lambda: torch.nn.GroupNorm(4, 4), (1, 4), ValueError, ["more than 1 value"]),
    ],
)  # fmt: skip
def test_bad_input_raises_torchs_error_naming_layer_and_shape(
    make: Any, shape: tuple[int, ...], error: type[Exception], fragments: list[str]
) -> None:
    reference = make()
    hand = hn.from_torch(reference)
    x = torch.randn(shape)
    assert_same_error(lambda: reference(x), lambda: hand(x), error, *fragments)


def test_bad_arguments_raise_torchs_errors() -> None:
    assert_same_error(
        lambda: torch.nn.GroupNorm(4, 6), lambda: hn.GroupNorm(4, 6), ValueError, "divisible"
    )


def test_normalization_under_inference_mode() -> None:
    hand = hn.BatchNorm2d(3)
    with torch.inference_mode():
        out = hand(torch.randn(4, 3, 2, 2))
        grad = hand.backward(torch.ones_like(out))
    assert grad is not None
    assert hand.weight is not None and hand.weight.grad is not None  # noqa: PT018
    hand.weight.grad.add_(1)
    assert int(hand.num_batches_tracked) == 1
