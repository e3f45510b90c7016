"""SiLU, Softmax, LogSoftmax and GELU (both approximations) against torch + autograd."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import handgrad.nn as hn
from handgrad.check import check_module
from tests.nn.helpers import assert_matches, hand_grads, torch_grads

DOUBLE = torch.float64

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


def _compare(ours: hn.Module, reference: torch.nn.Module, x: torch.Tensor) -> None:
    upstream = torch.randn(x.shape, dtype=x.dtype, device=x.device)
    expected_out, expected_grad, _ = torch_grads(reference, x, upstream)
    out, grad, _ = hand_grads(ours, x, upstream)
    assert_matches(out, expected_out, "output")
    assert_matches(grad, expected_grad, "input gradient")


@given(shape=shapes, data=st.data(), scale=st.sampled_from([1.0, 30.0]))
def test_softmax_and_log_softmax_match_torch(
    shape: tuple[int, ...], data: st.DataObject, scale: float
) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = torch.randn(shape, dtype=DOUBLE) * scale  # large logits: no overflow either way
    _compare(hn.Softmax(dim), torch.nn.Softmax(dim), x)
    _compare(hn.LogSoftmax(dim), torch.nn.LogSoftmax(dim), x)


@given(shape=shapes, scale=st.sampled_from([1.0, 50.0]))
def test_silu_matches_torch(shape: tuple[int, ...], scale: float) -> None:
    _compare(hn.SiLU(), torch.nn.SiLU(), torch.randn(shape, dtype=DOUBLE) * scale)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_both_approximations_match_torch(approximate: str, device: torch.device) -> None:
    x = torch.randn(6, 7, dtype=DOUBLE, device=device) * 4
    x[0, :3] = torch.tensor([0.0, -40.0, 40.0], dtype=DOUBLE)
    _compare(hn.GELU(approximate), torch.nn.GELU(approximate), x)


@pytest.mark.parametrize(
    "module",
    [hn.SiLU(), hn.Softmax(-1), hn.LogSoftmax(0), hn.GELU("tanh")],
    ids=lambda m: type(m).__name__,
)
def test_finite_differences(module: hn.Module) -> None:
    result = check_module(module, torch.randn(4, 5))
    assert result.passed, result.report()


def test_on_each_device_and_dtype(device: torch.device, dtype: torch.dtype) -> None:
    x = torch.randn(3, 4, dtype=dtype, device=device)
    for ours, reference in ((hn.Softmax(1), torch.nn.Softmax(1)), (hn.SiLU(), torch.nn.SiLU())):
        _compare(ours, reference, x)


def test_implicit_dim_warns_and_picks_torchs_dim() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        out = hn.Softmax()(x)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        expected = torch.nn.Softmax()(x)
    torch.testing.assert_close(out, expected)  # dim 0 for a 3-d input, as torch


def test_dim_out_of_range_is_an_index_error() -> None:
    with pytest.raises(IndexError, match=r"dim 2 is out of range for an input of shape \(3, 4\)"):
        hn.LogSoftmax(2)(torch.randn(3, 4))


def test_repr_and_conversion() -> None:
    assert repr(hn.Softmax(1)) == repr(torch.nn.Softmax(1))
    assert repr(hn.SiLU()) == repr(torch.nn.SiLU())
    net = hn.from_torch(torch.nn.Sequential(torch.nn.SiLU(), torch.nn.LogSoftmax(-1)))
    assert [type(m).__name__ for m in net] == ["SiLU", "LogSoftmax"]
    assert isinstance(hn.to_torch(net)[1], torch.nn.LogSoftmax)
