"""Every module mirrors its torch.nn twin: forward's argument names (so keywords such as
``input=`` work alike), the inputs it refuses (with torch's exception type) and its results
at edge values (±inf, NaN, signed zeros, the far tails)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import handgrad.nn as hn
from handgrad.nn import convert

PAIRS = sorted(
    ((torch_type, rule.target) for torch_type, rule in convert._TO_HANDGRAD.items()),
    key=lambda pair: pair[0].__name__,
)


def _arguments(forward: object) -> list[str]:
    return [
        name
        for name, parameter in inspect.signature(forward).parameters.items()  # type: ignore[arg-type]
        if name != "self"
    ]


@pytest.mark.parametrize(("torch_type", "handgrad_type"), PAIRS, ids=lambda t: t.__name__)
def test_forward_takes_the_arguments_of_torchs(
    torch_type: type[torch.nn.Module], handgrad_type: type[torch.nn.Module]
) -> None:
    if torch_type.forward is torch.nn.Module.forward:  # ModuleList, ModuleDict: no forward
        pytest.skip(f"{torch_type.__name__} has no forward")
    assert _arguments(handgrad_type.forward) == _arguments(torch_type.forward)


@pytest.mark.parametrize(
    "module",
    [hn.Linear(2, 1), hn.ReLU(), hn.GELU(), hn.Dropout(0.5), hn.Flatten(), hn.Identity()],
    ids=lambda m: type(m).__name__,
)
def test_the_input_can_be_given_by_keyword(module: hn.Module) -> None:
    x = torch.randn(3, 2)
    assert torch.equal(module(input=x), module(x)) or isinstance(module, hn.Dropout)
    net = hn.Sequential(module)
    assert net(input=x).shape == module(x).shape
    assert hn.Residual(hn.Identity())(input=x).shape == x.shape


def test_a_loss_takes_input_and_target_by_keyword() -> None:
    prediction, target = torch.randn(3, 1), torch.randn(3, 1)
    loss_fn = hn.MSELoss()
    assert torch.equal(
        loss_fn(input=prediction, target=target), torch.nn.MSELoss()(prediction, target)
    )


def _pairs() -> list[tuple[hn.Module, torch.nn.Module]]:
    return [
        (hn.ReLU(), torch.nn.ReLU()),
        (hn.Sigmoid(), torch.nn.Sigmoid()),
        (hn.Tanh(), torch.nn.Tanh()),
        (hn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
        (hn.ELU(0.7), torch.nn.ELU(0.7)),
        (hn.GELU(), torch.nn.GELU()),
        (hn.GELU("tanh"), torch.nn.GELU("tanh")),
        (hn.Softplus(), torch.nn.Softplus()),
        (hn.Softplus(2.0, 5.0), torch.nn.Softplus(2.0, 5.0)),
        (hn.Identity(), torch.nn.Identity()),
        (hn.Dropout(0.5), torch.nn.Dropout(0.5)),
        (hn.Dropout(1.0), torch.nn.Dropout(1.0)),
        (hn.Flatten(0), torch.nn.Flatten(0)),
    ]


def _outcome(module: torch.nn.Module, x: torch.Tensor) -> object:
    """The output, or the type of the exception raised."""
    try:
        torch.manual_seed(0)
        return module(x)
    except Exception as error:  # the type is what is compared
        return type(error)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64], ids=str)
@pytest.mark.parametrize(("hand", "reference"), _pairs(), ids=lambda m: repr(m))
def test_non_float_input_is_taken_or_refused_as_torch_does(
    hand: hn.Module, reference: torch.nn.Module, dtype: torch.dtype, training: bool
) -> None:
    x = torch.tensor([[-2, 0, 3]]).to(dtype)
    got, expected = _outcome(hand.train(training), x), _outcome(reference.train(training), x)
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor), got
        assert got.dtype == expected.dtype
        assert torch.equal(got, expected)
    else:
        assert got is expected


EDGES = [math.inf, -math.inf, math.nan, 0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4, 20.0, 20.5,
         -745.2, 88.0, -88.0, 710.0, 4.67, -3.156, -0.754, 1.0, -1.0]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize(
    ("hand", "reference"), _pairs()[:10], ids=lambda m: repr(m)
)
def test_edge_values_give_torchs_results_forward_and_backward(
    hand: hn.Module, reference: torch.nn.Module, dtype: torch.dtype
) -> None:
    """±inf, NaN, signed zeros, tiny and huge inputs, the linear regime of Softplus, the tail
    of GELU: every value and gradient as torch's (NaN where torch's is NaN), one element per
    call (torch's scalar kernels: its vectorised ones differ from them at NaN for ELU)."""
    rtol = 1e-13 if dtype is torch.float64 else 1e-5
    for value in EDGES:
        x = torch.tensor([value], dtype=dtype)
        leaf = x.clone().requires_grad_(True)
        expected = reference(leaf)
        expected.backward(torch.ones_like(expected))
        got = hand(x)
        grad = hand.backward(torch.ones_like(got))
        for ours, theirs, what in ((got, expected.detach(), "value"), (grad, leaf.grad, "grad")):
            # atol: near GELU's minimum (x ≈ −0.75) its gradient is a difference of O(1) terms
            torch.testing.assert_close(
                ours, theirs, rtol=rtol, atol=rtol, equal_nan=True, msg=f"{what} at {value}"
            )
