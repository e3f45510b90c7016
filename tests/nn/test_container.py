"""Containers: nested Sequential (named or numbered) and Residual, against torch.nn + autograd
in float64 and against finite differences."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

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


def _chain(activation: type[hn.Module], widths: tuple[int, ...]) -> hn.Sequential:
    torch.manual_seed(0)
    layers: list[hn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        if index:
            layers.append(activation())
        layers.append(hn.Linear(fan_in, fan_out, dtype=torch.float64))
    return hn.Sequential(*layers)


@pytest.mark.parametrize("activation", [hn.Sigmoid, hn.ReLU, hn.Tanh], ids=lambda a: a.__name__)
@pytest.mark.parametrize("widths", [(1, 100, 1), (3, 5, 4, 2)], ids=str)
@pytest.mark.parametrize("shape", [(1,), (6,), (2, 3)], ids=str)
@pytest.mark.parametrize("input_grad", [True, False])
def test_sequential_gives_the_bits_of_its_layers_called_one_by_one(
    activation: type[hn.Module], widths: tuple[int, ...], shape: tuple[int, ...], input_grad: bool
) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, widths[0], generator=generator, dtype=torch.float64)
    grad = torch.randn(*shape, widths[-1], generator=generator, dtype=torch.float64)
    net, by_hand = _chain(activation, widths), _chain(activation, widths)
    out = net(x)
    grad_x = net.backward(grad, input_grad=input_grad)
    expected = x
    for layer in by_hand:
        expected = layer(expected)
    upstream = grad
    for position in range(len(by_hand) - 1, -1, -1):
        upstream = by_hand[position].backward(upstream, input_grad=input_grad or position > 0)
    assert torch.equal(out, expected)
    assert (grad_x is None) is (upstream is None) is (not input_grad)
    if input_grad:
        assert torch.equal(grad_x, upstream)
    for got, reference in zip(net.parameters(), by_hand.parameters(), strict=True):
        assert torch.equal(got.grad, reference.grad)


def test_each_layer_of_a_sequential_keeps_its_own_ctx() -> None:
    net = _chain(hn.Sigmoid, (2, 3, 1))
    x = torch.randn(4, 2, dtype=torch.float64)
    out = net(x)
    grad = torch.randn(4, 1, dtype=torch.float64)
    # Backward through the layers one by one, after the container's forward.
    manual = net[0].backward(net[1].backward(net[2].backward(grad)))
    manual_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    assert torch.equal(net(x), out)  # each backward released its ctx: a new forward
    assert torch.equal(net.backward(grad), manual)
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), manual_grads, strict=True))
    assert net[2]._saved[1] == (out.shape, out.dtype, out.device)  # not the output itself


def test_a_layer_subclass_with_its_own_forward_and_backward_works_in_a_sequential() -> None:
    class Doubled(hn.Linear):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return super().forward(input) * 2

        def backward(self, grad_output: torch.Tensor, input_grad: bool = True) -> Any:
            return super().backward(grad_output * 2, input_grad)

    torch.manual_seed(0)
    doubled = Doubled(2, 3, dtype=torch.float64)
    net = hn.Sequential(doubled, hn.Sigmoid())
    x = torch.randn(4, 2, dtype=torch.float64)
    result = check_module(net, x)
    assert result.passed, result.report()
    plain = hn.Linear(2, 3, dtype=torch.float64)
    plain.load_state_dict(doubled.state_dict())
    assert torch.equal(net(x), torch.sigmoid(plain(x) * 2))
