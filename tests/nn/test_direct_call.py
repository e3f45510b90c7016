"""Calling a handgrad module runs its forward directly unless torch's __call__ has work to do.

``Module.__call__`` (handgrad's one bypass) skips torch's wrapper when no hook (on the module
or global), compiled call or trace is active (``handgrad._compat.forward_runs_alone``); every
one of those must still take torch's path, with the same effect as on a torch.nn module.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import handgrad.nn as hnn
from handgrad import _compat


@pytest.fixture
def calls_through_torch(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the modules that went through torch's ``_call_impl``."""
    seen: list[str] = []
    original = torch.nn.Module._call_impl

    def counting(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        seen.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "_call_impl", counting)
    return seen


def _net() -> hnn.Sequential:
    torch.manual_seed(0)
    return hnn.Sequential(hnn.Linear(2, 3), hnn.Sigmoid(), hnn.Linear(3, 1))


def test_without_hooks_forward_runs_directly(calls_through_torch: list[str]) -> None:
    net = _net()
    x = torch.randn(4, 2)
    out = net(x)
    assert calls_through_torch == []
    torch.testing.assert_close(out, net[2].forward(net[1].forward(net[0].forward(x))))
    assert all(_compat.forward_runs_alone(m) for m in net.modules())


def test_a_forward_hook_on_a_layer_runs_and_changes_the_output(
    calls_through_torch: list[str],
) -> None:
    net = _net()
    x = torch.randn(4, 2)
    plain = net(x)
    handle = net[1].register_forward_hook(lambda module, args, out: out * 2)
    hooked = net(x)
    assert calls_through_torch == ["Sigmoid"]
    torch.testing.assert_close(hooked, net[2].forward(2 * net[1].forward(net[0].forward(x))))
    handle.remove()
    torch.testing.assert_close(net(x), plain)
    assert calls_through_torch == ["Sigmoid"]  # direct again once the hook is gone


def test_a_forward_pre_hook_can_replace_the_input() -> None:
    net = _net()
    x = torch.randn(4, 2)
    net.register_forward_pre_hook(lambda module, args: (args[0] * 0,))
    torch.testing.assert_close(net(x), _net()(torch.zeros(4, 2)))


def test_a_global_forward_hook_sees_every_module(calls_through_torch: list[str]) -> None:
    net, loss_fn = _net(), hnn.MSELoss()
    seen: list[str] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(type(module).__name__)
    )
    try:
        assert not _compat.forward_runs_alone(net)
        loss_fn(net(torch.randn(4, 2)), torch.zeros(4, 1))
    finally:
        handle.remove()
    assert seen == ["Linear", "Sigmoid", "Linear", "Sequential", "MSELoss"]
    assert calls_through_torch == ["Sequential", "Linear", "Sigmoid", "Linear", "MSELoss"]
    assert _compat.forward_runs_alone(net)


def test_a_compiled_call_is_used(calls_through_torch: list[str]) -> None:
    layer = hnn.Linear(2, 1)
    layer._compiled_call_impl = lambda *args, **kwargs: "compiled"
    assert layer(torch.randn(1, 2)) == "compiled"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_a_one_element_loss_is_bitwise_torchs(dtype: torch.dtype, reduction: str) -> None:
    # At batch 1 the mean skips its division by 1, and MSE its reduction kernel (one square
    # is its own sum): the same bits as torch's, and the gradient too.
    generator = torch.Generator().manual_seed(5)
    for scale in (1e3, 1.0, 1e-30, 0.0):
        prediction = torch.randn(1, 1, generator=generator, dtype=dtype) * scale
        target = torch.randn(1, 1, generator=generator, dtype=dtype) * scale
        for loss_fn, reference in (
            (hnn.MSELoss(reduction), torch.nn.functional.mse_loss),
            (hnn.L1Loss(reduction), torch.nn.functional.l1_loss),
        ):
            ours: Tensor = loss_fn(prediction, target)
            leaf = prediction.clone().requires_grad_(True)
            theirs = reference(leaf, target, reduction=reduction)
            (grad,) = torch.autograd.grad(theirs, leaf)
            torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=0)
            torch.testing.assert_close(loss_fn.backward(), grad, rtol=0, atol=0)
            assert ours.shape == ()


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_a_trace_records_through_torchs_call(calls_through_torch: list[str]) -> None:
    net = _net()
    x = torch.randn(4, 2)
    with torch.no_grad():
        traced = torch.jit.trace(net, x, check_trace=False)
    assert "Linear" in calls_through_torch  # the trace went through torch's __call__
    torch.testing.assert_close(traced(x), net(x), rtol=0, atol=0)


def test_a_backward_hook_goes_through_torch(calls_through_torch: list[str]) -> None:
    net = _net()
    net[0].register_full_backward_pre_hook(lambda module, grad: None)
    net(torch.randn(4, 2))
    assert calls_through_torch == ["Linear"]


def test_a_composite_module_calls_its_children_through_the_bypass(
    calls_through_torch: list[str],
) -> None:
    x = torch.randn(4, 2)
    residual = hnn.Residual(hnn.Sequential(hnn.Linear(2, 2), hnn.Sigmoid()))
    residual(x)
    assert calls_through_torch == []
    seen: list[str] = []
    residual.block[1].register_forward_hook(lambda m, args, out: seen.append("hooked"))
    residual(x)
    assert seen == ["hooked"]
    assert calls_through_torch == ["Sigmoid"]
