"""Shared test helpers: run a handgrad module and its torch twin side by side."""

from __future__ import annotations

import torch
from torch import Tensor

# Normwise relative tolerance max|got − expected| / max|expected| per dtype (the bar).
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def assert_matches(
    got: Tensor | None, expected: Tensor, what: str = "tensor", scale_floor: float = 0.0
) -> None:
    """got ≈ expected to the dtype's normwise relative tolerance (exact zeros must match).

    ``scale_floor`` lets a tensor be measured against a larger scale than its own: the size of
    the whole network's gradient, for a gradient that is tiny because of cancellation.
    """
    assert got is not None, f"{what}: got None"
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != {expected.dtype}"
    assert got.device == expected.device, f"{what}: device {got.device} != {expected.device}"
    error = (got.double() - expected.double()).abs().max().item() if got.numel() else 0.0
    scale = expected.double().abs().max().item() if got.numel() else 0.0
    scale = max(scale, scale_floor)
    tolerance = RTOL[expected.dtype] * scale if scale > 0 else 1e-300
    assert error <= tolerance, f"{what}: max abs error {error:.3e}, allowed {tolerance:.3e}"


def torch_grads(
    module: torch.nn.Module,
    x: Tensor,
    upstream: Tensor,
    target: Tensor | None = None,
    seed: int = 1,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """(output, dL/dx, [dL/dθ]) by autograd, L = Σ upstream ⊙ module(x), from RNG seed."""
    x_leaf = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = module(x_leaf) if target is None else module(x_leaf, target)
    params = list(module.parameters())
    grads = torch.autograd.grad(out, [x_leaf, *params], upstream)
    return out.detach(), grads[0], list(grads[1:])


def hand_grads(
    module: torch.nn.Module,
    x: Tensor,
    upstream: Tensor,
    target: Tensor | None = None,
    seed: int = 1,
) -> tuple[Tensor, Tensor | None, list[Tensor | None]]:
    """(output, backward's dL/dx, [param.grad]) of a handgrad module, from RNG seed."""
    for param in module.parameters():
        param.grad = None
    torch.manual_seed(seed)
    out = module(x) if target is None else module(x, target)
    grad_x = module.backward(upstream)  # type: ignore[operator]
    return out, grad_x, [param.grad for param in module.parameters()]


def assert_twins_agree(
    hand: torch.nn.Module,
    reference: torch.nn.Module,
    x: Tensor,
    target: Tensor | None = None,
) -> None:
    """Outputs, input gradients and every parameter gradient agree with autograd."""
    with torch.no_grad():
        probe = hand(x) if target is None else hand(x, target)
    upstream = torch.randn_like(probe)
    expected_out, expected_dx, expected_params = torch_grads(reference, x, upstream, target)
    out, dx, param_grads = hand_grads(hand, x, upstream, target)
    assert_matches(out, expected_out, "output")
    assert_matches(dx, expected_dx, "input gradient")
    assert len(param_grads) == len(expected_params)
    for index, (got, expected) in enumerate(zip(param_grads, expected_params, strict=True)):
        assert_matches(got, expected, f"gradient of parameter {index}")
