"""Sequential runs chainable layers through their ctx functions: same results, same errors.

Without hooks, ``Sequential`` calls ``_forward_ctx``/``_backward_ctx`` of Linear and the
activations instead of each layer's ``__call__``/``backward`` (see ``Module``'s chain
protocol). These tests hold the chain to the per-layer path bit for bit, check that it is
really taken, and that everything that must leave it does.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import Tensor

import handgrad.nn as hnn
from handgrad.nn.layers import Linear


def _net(activation: type[hnn.Module], widths: tuple[int, ...]) -> hnn.Sequential:
    torch.manual_seed(0)
    layers: list[hnn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        if index:
            layers.append(activation())
        layers.append(hnn.Linear(fan_in, fan_out, dtype=torch.float64))
    return hnn.Sequential(*layers)


def _unchained(net: hnn.Sequential) -> hnn.Sequential:
    """The same network taking the per-layer path (each layer refuses to be chained)."""
    for layer in net:
        layer._chainable = False  # an instance attribute hides the class's
    return net


def _run(net: hnn.Sequential, x: Tensor, grad: Tensor, input_grad: bool) -> list[Tensor]:
    out = net(x)
    grad_x = net.backward(grad, input_grad=input_grad)
    results = [out] + [p.grad for p in net.parameters()]
    return results + ([grad_x] if grad_x is not None else [])


@pytest.mark.parametrize("activation", [hnn.Sigmoid, hnn.ReLU, hnn.Tanh], ids=lambda a: a.__name__)
@pytest.mark.parametrize("widths", [(1, 100, 1), (3, 5, 4, 2)], ids=str)
@pytest.mark.parametrize("shape", [(1,), (6,), (2, 3)], ids=str)
@pytest.mark.parametrize("input_grad", [True, False])
def test_the_chain_gives_the_bits_of_the_per_layer_path(
    activation: type[hnn.Module], widths: tuple[int, ...], shape: tuple[int, ...], input_grad: bool
) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, widths[0], generator=generator, dtype=torch.float64)
    grad = torch.randn(*shape, widths[-1], generator=generator, dtype=torch.float64)
    chained = _run(_net(activation, widths), x, grad, input_grad)
    per_layer = _run(_unchained(_net(activation, widths)), x, grad, input_grad)
    assert len(chained) == len(per_layer)
    for ours, reference in zip(chained, per_layer, strict=True):
        assert torch.equal(ours, reference)


def test_the_chain_is_taken_without_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    forward, backward = Linear._forward_ctx, Linear._backward_ctx

    def counting_forward(self: Linear, x: Tensor) -> Any:
        calls.append("forward")
        return forward(self, x)

    def counting_backward(self: Linear, *args: Any) -> Any:
        calls.append("backward")
        return backward(self, *args)

    monkeypatch.setattr(Linear, "_forward_ctx", counting_forward)
    monkeypatch.setattr(Linear, "_backward_ctx", counting_backward)
    net = _net(hnn.Sigmoid, (2, 3, 1))
    monkeypatch.setattr(Linear, "backward", None)  # the per-layer backward must not be called
    net(torch.ones(4, 2, dtype=torch.float64))
    net.backward(torch.ones(4, 1, dtype=torch.float64))
    assert calls == ["forward", "forward", "backward", "backward"]


def test_each_layer_keeps_its_own_ctx() -> None:
    net = _net(hnn.Sigmoid, (2, 3, 1))
    x = torch.randn(4, 2, dtype=torch.float64)
    out = net(x)
    grad = torch.randn(4, 1, dtype=torch.float64)
    # Backward through the layers one by one, after the container's forward.
    manual = net[0].backward(net[1].backward(net[2].backward(grad)))
    manual_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    assert torch.equal(net.backward(grad), manual)
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), manual_grads, strict=True))
    assert torch.equal(out, net[2]._saved[1])


def test_a_subclass_that_overrides_forward_is_not_chained() -> None:
    class Doubled(hnn.Linear):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x) * 2

        def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
            return super().backward(grad_output * 2, input_grad)

    class Renamed(hnn.Sigmoid):  # overrides nothing of the protocol: still chained
        pass

    assert not Doubled._chainable
    assert Renamed._chainable
    assert hnn.Linear._chainable
    assert hnn.ReLU._chainable
    torch.manual_seed(0)
    doubled = Doubled(2, 3, dtype=torch.float64)
    plain = hnn.Linear(2, 3, dtype=torch.float64)
    plain.load_state_dict(doubled.state_dict())
    x = torch.randn(4, 2, dtype=torch.float64)
    net = hnn.Sequential(doubled, Renamed())
    out = net(x)
    assert torch.equal(out, torch.sigmoid(plain(x) * 2))
    grad = torch.ones_like(out)
    net.backward(grad)
    assert doubled.weight.grad is not None
    # d/dW of σ(2(xWᵀ + b)) is twice the gradient that reaches the plain layer.
    hidden = plain(x) * 2
    plain.backward(2 * grad * torch.sigmoid(hidden) * (1 - torch.sigmoid(hidden)))
    torch.testing.assert_close(doubled.weight.grad, plain.weight.grad, rtol=1e-14, atol=0)


def test_a_hooked_layer_leaves_the_chain_and_its_hook_runs() -> None:
    net = _net(hnn.Tanh, (2, 4, 3))
    reference = _unchained(_net(hnn.Tanh, (2, 4, 3)))
    seen: list[tuple[int, ...]] = []
    net[1].register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    x = torch.randn(5, 2, dtype=torch.float64)
    grad = torch.randn(5, 3, dtype=torch.float64)
    for ours, theirs in zip(_run(net, x, grad, True), _run(reference, x, grad, True), strict=True):
        assert torch.equal(ours, theirs)
    assert seen == [(5, 4)]


class _WrongShapeGradient(hnn.Module):
    """Identity forward; a backward that returns a gradient of the wrong shape."""

    def forward(self, x: Tensor) -> Tensor:
        return self._remember((), x)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        return grad_output[:, :1]


def test_a_gradient_from_an_unchained_layer_is_checked_by_the_next() -> None:
    net = hnn.Sequential(hnn.Linear(2, 3), _WrongShapeGradient())
    out = net(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"Linear.*expected grad_output of shape \(4, 3\)"):
        net.backward(torch.ones_like(out))


def test_the_containers_grad_output_is_checked() -> None:
    net = _net(hnn.ReLU, (2, 3, 1))
    net(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Sequential.*expected grad_output of shape \(4, 1\)"):
        net.backward(torch.ones(4, 2, dtype=torch.float64))
