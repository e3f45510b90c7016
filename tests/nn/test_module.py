"""The Module base class: parameters, gradient accumulation as autograd's, the helpers."""

from __future__ import annotations

import pytest
import torch

import handgrad.nn as hn


def test_accumulate_grad_stores_then_adds_in_place() -> None:
    param = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
    first = torch.tensor([1.0, 2.0, 3.0])
    hn.accumulate_grad(param, first)
    assert param.grad is first  # stored as is, like autograd's AccumulateGrad
    hn.accumulate_grad(param, torch.ones(3))
    assert param.grad is first  # then summed in place: optimizers may hold a reference
    assert torch.equal(param.grad, torch.tensor([2.0, 3.0, 4.0]))


def test_accumulate_grad_under_inference_mode_stores_a_normal_tensor() -> None:
    param = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    with torch.inference_mode():
        hn.accumulate_grad(param, torch.ones(2))
    assert not param.grad.is_inference()
    param.grad.add_(1.0)  # would raise for an inference tensor outside inference mode
    assert torch.equal(param.grad, torch.full((2,), 2.0))


def test_a_subclass_without_backward_says_so() -> None:
    class ForwardOnly(hn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(NotImplementedError, match="ForwardOnly does not implement backward"):
        ForwardOnly().backward(torch.ones(1))


def test_handgrad_modules_are_torch_modules() -> None:
    net = hn.Sequential(hn.Linear(2, 3), hn.ReLU(), hn.Linear(3, 1))
    assert isinstance(net, torch.nn.Module)
    state = net.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    twin = hn.Sequential(hn.Linear(2, 3), hn.ReLU(), hn.Linear(3, 1))
    twin.load_state_dict(state)
    x = torch.randn(4, 2)
    assert torch.equal(twin(x), net(x))
    assert net.eval().training is False
    assert net[0].training is False
    assert all(not p.requires_grad for p in twin.parameters())
    assert sum(p.numel() for p in net.parameters()) == 2 * 3 + 3 + 3 + 1
