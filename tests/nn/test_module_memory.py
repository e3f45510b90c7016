"""What every module keeps between forward and backward: its ctx and the output's shape, dtype
and device, never the output itself; and nothing once its backward has run."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import handgrad.nn as hn
from handgrad.nn.module import RELEASED

# ReLU's and Tanh's backward formulas read their output: those keep it (in their ctx)
READS_OUTPUT = {"ReLU", "Tanh"}
MODULES = {
    "Linear": (lambda: hn.Linear(3, 4), (5, 3)),
    "ReLU": (hn.ReLU, (5, 3)),
    "Tanh": (hn.Tanh, (5, 3)),
    "Flatten": (hn.Flatten, (5, 3, 2)),
    "Sequential": (lambda: hn.Sequential(hn.Linear(3, 4), hn.Tanh(), hn.Linear(4, 2)), (5, 3)),
    "Residual": (lambda: hn.Residual(hn.Sequential(hn.Linear(3, 3), hn.Tanh())), (5, 3)),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_the_output_is_not_kept_and_backward_releases_the_context(name: str) -> None:
    make, shape = MODULES[name]
    module = make()
    out = module(torch.randn(shape))
    alive = weakref.ref(out)
    grad = torch.ones_like(out)
    del out
    gc.collect()
    assert (alive() is None) != (name in READS_OUTPUT), f"{name} keeps its output"
    module.backward(grad)
    gc.collect()
    assert alive() is None
    assert module._saved is not None
    assert module._saved[0] is RELEASED
    for child in module.modules():  # a container's children released theirs too
        if isinstance(child, hn.Module) and child._saved is not None:
            assert child._saved[0] is RELEASED
    with pytest.raises(ValueError, match="called twice for one forward"):
        module.backward(grad)
    out = module(torch.randn(shape))  # a new forward, a new backward
    module.backward(torch.ones_like(out))


def test_a_loss_releases_its_context_whatever_the_upstream_gradient() -> None:
    loss_fn = hn.MSELoss()
    loss_fn(torch.randn(4, 2), torch.randn(4, 2))
    loss_fn.backward()
    with pytest.raises(ValueError, match="called twice for one forward"):
        loss_fn.backward(torch.tensor(1.0))


def test_a_failed_check_of_grad_output_keeps_the_context() -> None:
    layer = hn.Linear(3, 2)
    layer(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(4, 2\)"):
        layer.backward(torch.ones(4, 3))
    assert layer.backward(torch.ones(4, 2)).shape == (4, 3)  # the right one still works


def test_sequential_frees_each_gradient_once_the_layer_reading_it_is_done() -> None:
    handed: list[weakref.ref[torch.Tensor]] = []  # the gradients handed to each layer
    alive_when_called: list[list[bool]] = []  # per call, which of those were still alive

    class Probe(hn.Module):
        """y = x, recording in backward which earlier gradients are still alive."""

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return self._remember((), input * 1)

        def backward(self, grad_output: torch.Tensor, input_grad: bool = True) -> torch.Tensor:
            self._recall(grad_output)
            alive_when_called.append([ref() is not None for ref in handed])
            handed.append(weakref.ref(grad_output))
            return grad_output * 1

    net = hn.Sequential(Probe(), Probe(), Probe())
    net(torch.randn(3, 2))
    net.backward(torch.randn(3, 2))
    # When a layer's backward runs, only the gradient handed to it is alive, not those the
    # later layers read (CPython moves call arguments into the callee; another interpreter
    # might keep them until the call returns: memory, not values, would differ).
    assert alive_when_called == [[], [False], [False, False]]
