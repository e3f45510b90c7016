"""Containers: nested Sequential (named or numbered) and Residual, against torch.nn + autograd
in float64 and against finite differences."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

import handgrad.nn as hn
from handgrad.check import check_module
from tests.nn.helpers import assert_matches, assert_twins_agree


def _residual_net(shortcut: bool) -> torch.nn.Module:
    nn = torch.nn
    block = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5 if shortcut else 4))
    return nn.Sequential(
        nn.Linear(3, 4),
        hn.TorchResidual(block, nn.Linear(4, 5) if shortcut else None),
        nn.Sequential(nn.ReLU(), nn.Sequential(nn.Linear(5 if shortcut else 4, 2))),
    ).double()


@pytest.mark.parametrize("shortcut", [False, True], ids=["identity", "projection"])
@pytest.mark.parametrize("shape", [(6, 3), (3,), (2, 4, 3)], ids=str)
def test_residual_and_nested_sequential_match_autograd(shortcut, shape) -> None:
    torch.manual_seed(0)
    reference = _residual_net(shortcut)
    hand = hn.from_torch(reference)
    x = torch.randn(shape, dtype=torch.float64)
    assert_twins_agree(hand, reference, x)
    result = check_module(hand, x)
    assert result.passed, result.report()


def test_residual_backward_adds_the_identity_path() -> None:
    scale = hn.Linear(2, 2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        scale.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    residual = hn.Residual(scale)
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    assert torch.equal(residual(x), torch.tensor([[3.0, -4.0]], dtype=torch.float64))
    grad = residual.backward(torch.ones(1, 2, dtype=torch.float64))
    assert torch.equal(grad, torch.tensor([[3.0, 4.0]], dtype=torch.float64))  # 1 + W^T 1
    assert torch.equal(scale.weight.grad, torch.tensor([[1.0, -1.0], [1.0, -1.0]]).double())


def test_residual_without_input_gradient_still_fills_parameter_gradients() -> None:
    torch.manual_seed(0)
    block, shortcut = hn.Linear(3, 2), hn.Linear(3, 2)
    residual = hn.Residual(block, shortcut)
    residual(torch.randn(4, 3))
    assert residual.backward(torch.ones(4, 2), input_grad=False) is None
    assert block.weight.grad is not None
    assert shortcut.weight.grad is not None
    assert list(dict(residual.named_parameters())) == [
        "block.weight", "block.bias", "shortcut.weight", "shortcut.bias"
    ]  # fmt: skip


def test_residual_refuses_what_it_cannot_add() -> None:
    with pytest.raises(TypeError, match=r"Residual: block is torch\.nn\.modules\.linear\.Linear"):
        hn.Residual(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    layer = hn.ReLU()
    with pytest.raises(ValueError, match="block and shortcut are the same object"):
        hn.Residual(layer, layer)
    with pytest.raises(ValueError, match=r"maps an input of shape \(4, 3\) to \(4, 2\), but the "
                       r"shortcut gives \(4, 3\)"):  # fmt: skip
        hn.Residual(hn.Linear(3, 2))(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"Residual\.backward\(\) called before forward"):
        hn.Residual(hn.ReLU()).backward(torch.ones(2))


def test_sequential_takes_named_layers_like_torch() -> None:
    named = OrderedDict([("hidden", hn.Linear(2, 3)), ("act", hn.ReLU()), ("out", hn.Linear(3, 1))])
    net = hn.Sequential(named)
    assert list(net.state_dict()) == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert net.act is named["act"]
    head = net[1:]
    assert [name for name, _ in head.named_children()] == ["act", "out"]
    reference = hn.to_torch(net)
    assert list(reference.state_dict()) == list(net.state_dict())
    assert_twins_agree(net, reference, torch.randn(5, 2))
    with pytest.raises(TypeError, match="Sequential: module out is torch"):
        hn.Sequential(OrderedDict([("out", torch.nn.Linear(2, 2))]))  # type: ignore[arg-type]


def test_nested_sequentials_pass_input_grad_false_to_the_first_layer_only() -> None:
    torch.manual_seed(0)
    inner = hn.Sequential(hn.Linear(2, 3), hn.Sigmoid())
    net = hn.Sequential(inner, hn.Sequential(hn.Linear(3, 1)))
    out = net(torch.randn(4, 2))
    assert net.backward(torch.ones_like(out), input_grad=False) is None
    reference = hn.to_torch(net)
    x = torch.randn(4, 2)
    for p in net.parameters():
        p.grad = None
    out = net(x)
    net.backward(torch.ones_like(out))
    reference(x).sum().backward()
    for got, expected in zip(net.parameters(), reference.parameters(), strict=True):
        assert_matches(got.grad, expected.grad)
