"""Every module mirrors its torch.nn twin's call: forward's argument names (so keywords such
as ``input=`` work alike) and the registry that pairs them."""

from __future__ import annotations

import inspect

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
