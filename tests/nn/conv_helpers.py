"""Helpers for the convolutional-layer tests: run a torch.nn module and its handgrad twin
(``from_torch``) side by side and compare everything autograd produces."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import handgrad.nn as hn
from tests.nn.helpers import assert_matches


def layout(x: Tensor, kind: str) -> Tensor:
    """x with the same values in another memory layout: ``contiguous``, ``channels_last``
    (4-D only) or ``strided`` (a view with a gap between elements of the last axis)."""
    if kind == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if kind == "strided":
        spread = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        spread[..., ::2] = x
        view = spread[..., ::2]
        assert not view.is_contiguous() or x.shape[-1] <= 1
        return view
    return x.contiguous()


def compare_with_torch(
    reference: torch.nn.Module,
    x: Tensor,
    *,
    seed: int = 1,
    forward: Callable[[torch.nn.Module, Tensor], Tensor] | None = None,
    hand: torch.nn.Module | None = None,
    network_scale: bool = False,
) -> hn.Module:
    """Run ``reference`` (torch.nn, autograd) and its twin (``from_torch``, hand-written
    backward) on ``x`` with the same random upstream gradient; assert that the outputs, the
    input gradients, every parameter gradient (by name) and every buffer after the forward
    (running statistics, by name) agree to the dtype's tolerance. Returns the twin.

    ``network_scale``: measure each parameter gradient against the largest of the network's
    (a conv bias before a batch norm has an exactly-zero gradient: both sides are noise).
    """
    twin = hn.from_torch(reference) if hand is None else hand
    call = forward if forward is not None else (lambda module, inp: module(inp))
    x_leaf = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    expected = call(reference, x_leaf)
    # a seed no test draws its inputs from (2**16 and below): g independent of x
    generator = torch.Generator(device=x.device).manual_seed(2**20 + seed)
    upstream = torch.randn(expected.shape, generator=generator, dtype=x.dtype, device=x.device)
    names = [name for name, _ in reference.named_parameters()]
    params = [param for _, param in reference.named_parameters()]
    grads = torch.autograd.grad(expected, [x_leaf, *params], upstream, allow_unused=True)

    for param in twin.parameters():
        param.grad = None
    torch.manual_seed(seed)
    with torch.no_grad():
        out = call(twin, x)
        grad_x = twin.backward(upstream)  # type: ignore[operator]
    assert_matches(out, expected.detach(), "output")
    assert_matches(grad_x, grads[0], "input gradient")
    hand_params = dict(twin.named_parameters())
    assert sorted(hand_params) == sorted(names)
    floor = 0.0
    if network_scale:
        floor = max((float(g.abs().max()) for g in grads[1:] if g is not None), default=0.0)
    for name, expected_grad in zip(names, grads[1:], strict=True):
        assert expected_grad is not None, name
        assert_matches(hand_params[name].grad, expected_grad, f"gradient of {name}", floor)
    hand_buffers = dict(twin.named_buffers())
    for name, buffer in reference.named_buffers():
        if buffer.is_floating_point():
            assert_matches(hand_buffers[name], buffer, f"buffer {name}")
        else:
            assert torch.equal(hand_buffers[name], buffer), name
    return twin  # type: ignore[return-value]


def assert_same_error(
    torch_call: Callable[[], object],
    hand_call: Callable[[], object],
    error: type[Exception],
    *fragments: str,
) -> None:
    """torch raises ``error`` and so does handgrad, whose message contains ``fragments``."""
    with pytest.raises(error):
        torch_call()
    with pytest.raises(error) as caught:
        hand_call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
