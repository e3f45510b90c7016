"""The lean forward/backward path gives the same bits as the plain formulas it replaces."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import handgrad.nn as hn
from handgrad.nn import functional as F
from handgrad.nn.functional._common import _number

ALL_FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def bits(t: Tensor) -> list[int]:
    """The raw bit patterns (NaN == NaN, -0.0 != 0.0)."""
    int_type = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(int_type).reshape(-1).tolist()


@pytest.mark.parametrize("dtype", ALL_FLOATS, ids=str)
@pytest.mark.parametrize("sizes", [(1, 100), (100, 1), (7, 3)], ids=str)
def test_one_row_weight_gradient_is_bitwise_the_gemm(
    dtype: torch.dtype, sizes: tuple[int, int]
) -> None:
    fan_in, fan_out = sizes
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(1, fan_in, generator=generator) * 10).to(dtype)
    w = torch.randn(fan_out, fan_in, generator=generator).to(dtype)
    b = torch.randn(fan_out, generator=generator).to(dtype)
    g = (torch.randn(1, fan_out, generator=generator) * 10).to(dtype)
    _, ctx = F.linear_forward(x, w, b)
    grad_x, grad_w, grad_b = F.linear_backward(g, ctx)
    assert bits(grad_w) == bits(g.t().mm(x))
    assert bits(grad_b) == bits(g.sum(0))
    assert grad_x is not None
    assert bits(grad_x) == bits(g.matmul(w))


@pytest.mark.parametrize("batch", [1, 5])
def test_linear_backward_writes_into_the_given_tensors(batch: int) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, generator=generator, dtype=torch.float64)
    w = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    b = torch.randn(3, generator=generator, dtype=torch.float64)
    g = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    _, ctx = F.linear_forward(x, w, b)
    _, expected_w, expected_b = F.linear_backward(g, ctx, input_grad=False)
    weight_out, bias_out = torch.full_like(w, math.nan), torch.full_like(b, math.nan)
    grad_x, grad_w, grad_b = F.linear_backward(g, ctx, False, weight_out, bias_out)
    assert grad_x is None
    assert grad_w is weight_out
    assert grad_b is bias_out
    assert torch.equal(weight_out, expected_w)
    assert torch.equal(bias_out, expected_b)


@pytest.mark.parametrize("dtype", ALL_FLOATS, ids=str)
def test_relu_forward_is_bitwise_clamp_min(dtype: torch.dtype) -> None:
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0, math.nan, -math.inf, math.inf]).to(dtype)
    out, _ = F.relu_forward(x)
    assert bits(out) == bits(x.clamp_min(0))


@pytest.mark.parametrize("dtype", ALL_FLOATS, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (64, 1), (37, 3), (1000,), (5, 7, 9)], ids=str)
def test_mean_is_bitwise_torchs_mean_and_sum_over_count(
    dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    generator = torch.Generator().manual_seed(2)
    p = torch.randn(shape, generator=generator).to(dtype)
    t = torch.randn(shape, generator=generator).to(dtype)
    loss, _ = F.mse_forward(p, t)
    assert loss.dtype == dtype
    assert loss.shape == ()
    squares = (p - t) * (p - t)
    assert bits(loss) == bits(squares.mean())
    if dtype in (torch.float32, torch.float64):
        assert bits(loss) == bits(squares.sum() / p.numel())


@pytest.mark.parametrize("dtype", ALL_FLOATS, ids=str)
@pytest.mark.parametrize("grad", [1.0, 0.37, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_backward_scale_is_bitwise_the_number_formula(
    dtype: torch.dtype, grad: float, reduction: str
) -> None:
    generator = torch.Generator().manual_seed(3)
    p = (torch.randn(37, 3, generator=generator) * 3).to(dtype)
    t = torch.randn(37, 3, generator=generator).to(dtype)
    _, ctx = F.mse_forward(p, t, reduction)
    diff = p - t
    scale = grad / p.numel() if reduction == "mean" else grad
    assert bits(F.mse_backward(grad, ctx)) == bits(diff * (2.0 * scale))


@pytest.mark.parametrize("dtype", ALL_FLOATS, ids=str)
def test_a_zero_dimensional_loss_keeps_its_dtype(dtype: torch.dtype) -> None:
    p, t = torch.tensor(1.5).to(dtype), torch.tensor(0.25).to(dtype)
    for reduction in ("mean", "sum", "none"):
        loss_fn = hn.MSELoss(reduction=reduction)
        loss = loss_fn(p, t)
        assert loss.dtype == dtype
        assert loss.item() == 1.25**2
        grad = loss_fn.backward(0.5)
        assert grad.dtype == dtype
        assert grad.shape == ()
        assert grad.item() == 1.25


def test_the_kernels_still_work_under_autograd() -> None:
    """Verification code may run the forward kernels on tensors that require grad."""
    p = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 2, dtype=torch.float64)
    loss, ctx = F.mse_forward(p, t)
    loss.backward()
    assert p.grad is not None
    torch.testing.assert_close(p.grad, F.mse_backward(1.0, ctx).detach(), rtol=1e-15, atol=0)


def test_kept_numbers_made_under_inference_mode_are_normal_tensors() -> None:
    with torch.inference_mode():
        number = _number(0.123456789, torch.float64)
    assert not number.is_inference()
    p = torch.randn(3, requires_grad=True)
    (p * _number(0.123456789, torch.float64)).sum().backward()  # may be saved for backward


def test_training_step_results_are_unchanged_by_the_lean_path() -> None:
    """A whole flat training step against torch.nn + autograd, batch 1 and 64, float64."""
    for batch, activation in ((1, hn.Sigmoid), (64, hn.ReLU)):
        torch.manual_seed(0)
        net = hn.Sequential(
            hn.Linear(1, 100, dtype=torch.float64),
            activation(),
            hn.Linear(100, 1, dtype=torch.float64),
        )
        reference = hn.to_torch(net)
        hn.flatten_parameters(net)
        x = torch.randn(batch, 1, dtype=torch.float64)
        y = x**3
        loss_fn = hn.MSELoss()
        loss = loss_fn(net(x), y)
        assert net.backward(loss_fn.backward(), input_grad=False) is None
        expected = torch.nn.functional.mse_loss(reference(x), y)
        expected.backward()
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-14, atol=0)
        for p, q in zip(net.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ALL_FLOATS, ids=str)
@pytest.mark.parametrize("grad", [1.0, 0.37])
def test_loss_backward_scales_are_bitwise_the_number_formulas(
    dtype: torch.dtype, grad: float
) -> None:
    generator = torch.Generator().manual_seed(4)
    p = (torch.randn(37, 5, generator=generator) * 3).to(dtype)
    t = torch.rand(37, 5, generator=generator).to(dtype)
    labels = torch.randint(0, 5, (37,), generator=generator)
    scale = grad / p.numel()
    diff = p - t
    _, ctx = F.l1_forward(p, t)
    assert bits(F.l1_backward(grad, ctx)) == bits(torch.sign(diff) * scale)
    _, ctx = F.huber_forward(p, t, 0.5)
    assert bits(F.huber_backward(grad, ctx)) == bits(diff.clamp(-0.5, 0.5) * scale)
    _, ctx = F.bce_with_logits_forward(p, t)
    local = (1.0 - t) - 1.0 * torch.sigmoid(-p)
    assert bits(F.bce_with_logits_backward(grad, ctx)) == bits(local * scale)
    _, ctx = F.cross_entropy_of_labels_forward(p, labels)
    prob, coef = ctx[0], ctx[1]
    assert bits(F.cross_entropy_backward(grad, ctx)) == bits((prob - coef) * (grad / 37))
