"""TransformerEncoderLayer: from_torch of torch's own layer computes the same outputs and
gradients (float64), in every configuration; dropout in training; conversion both ways."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import handgrad.nn as hn
from handgrad.check import check_module
from tests.nn.helpers import assert_matches

DOUBLE = torch.float64


@given(
    activation=st.sampled_from(["relu", "gelu", "gelu-function", "gelu-module"]),
    norm_first=st.booleans(),
    bias=st.booleans(),
    batch_first=st.booleans(),
    batched=st.booleans(),
    masks=st.sampled_from(["none", "causal", "padding", "float", "both"]),
    heads=st.integers(1, 2),
    length=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_from_torch_gives_equal_outputs_and_gradients(
    activation: str,
    norm_first: bool,
    bias: bool,
    batch_first: bool,
    batched: bool,
    masks: str,
    heads: int,
    length: int,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    act: object = {
        "relu": "relu",
        "gelu": "gelu",
        "gelu-function": torch.nn.functional.gelu,
        "gelu-module": torch.nn.GELU("tanh"),
    }[activation]
    reference = torch.nn.TransformerEncoderLayer(
        4 * heads,
        heads,
        12,
        0.0,
        act,
        1e-5,
        batch_first,
        norm_first,
        bias,
        dtype=DOUBLE,  # type: ignore[arg-type]
    )
    ours = hn.from_torch(reference)
    assert isinstance(ours, hn.TransformerEncoderLayer)
    batch = 3
    shape = (length, 4 * heads)
    if batched:
        shape = (batch, *shape) if batch_first else (length, batch, 4 * heads)
    x = torch.randn(shape, dtype=DOUBLE)
    kwargs: dict[str, object] = {}
    if masks == "causal":
        kwargs = {
            "src_mask": torch.nn.Transformer.generate_square_subsequent_mask(length, dtype=DOUBLE),
            "is_causal": True,
        }
    elif masks in ("padding", "both"):
        ignored = torch.rand((batch, length) if batched else (length,)) > 0.6
        ignored[..., 0] = False
        kwargs["src_key_padding_mask"] = ignored
        if masks == "both":
            kwargs["src_mask"] = torch.rand(length, length) > 0.7
            kwargs["src_mask"][:, 0] = False  # type: ignore[index]
    elif masks == "float":
        kwargs["src_mask"] = torch.randn(length, length, dtype=DOUBLE)

    leaf = x.clone().requires_grad_()
    expected = reference(leaf, **kwargs)
    upstream = torch.randn_like(expected)
    params = list(reference.parameters())
    expected_grads = torch.autograd.grad(expected, [leaf, *params], upstream)
    with torch.no_grad():
        out = ours(x, **kwargs)
        grad = ours.backward(upstream)
    assert_matches(out, expected.detach(), "output", scale_floor=1.0)
    assert_matches(grad, expected_grads[0], "input gradient", scale_floor=1.0)
    named = list(ours.named_parameters())
    assert [name for name, _ in named] == [name for name, _ in reference.named_parameters()]
    for (name, param), want in zip(named, expected_grads[1:], strict=True):
        assert_matches(param.grad, want, name, scale_floor=1.0)


def test_initialised_like_torch_from_the_same_seed() -> None:
    torch.manual_seed(5)
    reference = torch.nn.TransformerEncoderLayer(8, 2, 16, activation="gelu", norm_first=True)
    torch.manual_seed(5)
    ours = hn.TransformerEncoderLayer(8, 2, 16, activation="gelu", norm_first=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for (name, theirs), mine in zip(
        reference.state_dict().items(), ours.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs), name


def test_finite_differences() -> None:
    torch.manual_seed(0)
    layer = hn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation="gelu", batch_first=True)
    result = check_module(layer, torch.randn(2, 3, 4))
    assert result.passed, result.report()


def test_dropout_in_training_changes_the_output_and_backward_follows_it() -> None:
    torch.manual_seed(0)
    reference = torch.nn.TransformerEncoderLayer(4, 2, 8, dropout=0.5, dtype=DOUBLE)
    ours = hn.from_torch(reference)
    x = torch.randn(5, 3, 4, dtype=DOUBLE)
    with torch.no_grad():
        a = ours(x)
        b = ours(x)
    assert not torch.equal(a, b)
    # the backward uses the forward's masks: the check replays the RNG for every forward
    result = check_module(ours, x.float())
    assert result.passed, result.report()
    ours.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ours(x))


def test_to_torch_round_trip_and_errors() -> None:
    ours = hn.TransformerEncoderLayer(4, 2, 8, activation=hn.GELU("tanh"), dropout=0.0)
    twin = hn.to_torch(ours)
    assert isinstance(twin, torch.nn.TransformerEncoderLayer)
    x = torch.randn(3, 2, 4)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), ours(x))
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        hn.TransformerEncoderLayer(4, 2, activation="tanh")
    with pytest.raises(TypeError, match="a handgrad Module"):
        hn.TransformerEncoderLayer(4, 2, activation=torch.tanh)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handgrad cannot differentiate"):
        hn.from_torch(torch.nn.TransformerEncoderLayer(4, 2, activation=torch.tanh))
    with pytest.raises(AssertionError, match="divisible by num_heads"):
        hn.TransformerEncoderLayer(6, 4)


def test_on_each_device(device: torch.device) -> None:
    torch.manual_seed(0)
    reference = torch.nn.TransformerEncoderLayer(
        4, 2, 8, dropout=0.0, batch_first=True, dtype=DOUBLE
    )
    reference = reference.to(device)
    ours = hn.from_torch(reference)
    x = torch.randn(2, 3, 4, dtype=DOUBLE, device=device)
    leaf = x.clone().requires_grad_()
    expected = reference(leaf)
    upstream = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, [leaf], upstream)
    out = ours(x)
    assert_matches(out, expected.detach())
    assert_matches(ours.backward(upstream), expected_grad)
