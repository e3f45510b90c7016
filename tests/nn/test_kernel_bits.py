"""The kernels give the bits of the formulas in their docstrings and, where the formula
allows, of autograd: every derivative is ours, from forward ops, and rounds like torch's."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import handgrad.nn as hn
from handgrad.nn import functional as F
from handgrad.nn.functional._common import _number

ALL_FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def inside(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel computes in: float32 for float16/bfloat16 (rounded once at the end,
    as torch's CPU kernels; tests/nn/test_half_precision.py measures the errors), else its own."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


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
    p, t = p.to(inside(dtype)), t.to(inside(dtype))
    squares = (p - t) * (p - t)
    assert bits(loss) == bits(squares.mean().to(dtype))
    assert bits(loss) == bits((squares.sum() / p.numel()).to(dtype))


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
    diff = p.to(inside(dtype)) - t.to(inside(dtype))
    scale = grad / p.numel() if reduction == "mean" else grad
    assert bits(F.mse_backward(grad, ctx)) == bits((diff * (2.0 * scale)).to(dtype))


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


def test_a_flat_training_step_matches_autograd() -> None:
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
    p[0, :4] = torch.tensor([-40.0, 40.0, -0.0, 0.0])  # the tails of the BCE gradient
    t[0, :2] = torch.tensor([0.0, 1.0])
    scale = grad / p.numel()
    _, l1 = F.l1_forward(p, t)
    _, huber = F.huber_forward(p, t, 0.5)
    _, bce = F.bce_with_logits_forward(p, t)
    _, ce = F.cross_entropy_of_labels_forward(p, labels)
    p, t = p.to(inside(dtype)), t.to(inside(dtype))
    diff = p - t
    assert bits(F.l1_backward(grad, l1)) == bits((torch.sign(diff) * scale).to(dtype))
    huber_local = diff.clamp(-0.5, 0.5)
    assert bits(F.huber_backward(grad, huber)) == bits((huber_local * scale).to(dtype))
    s = torch.sigmoid(-p.abs())
    local = torch.where(p < 0, s - t, (1.0 - t) - s)
    assert bits(F.bce_with_logits_backward(grad, bce)) == bits((local * scale).to(dtype))
    if dtype in (torch.float32, torch.float64):
        # 1 − σ(−x) would be 0 at x = −40, t = 0; σ(40) − 1 at x = 40, t = 1
        got = F.bce_with_logits_backward(1.0, bce)[0, :2].tolist()
        assert got == pytest.approx([math.exp(-40) / 185, -math.exp(-40) / 185], rel=1e-6)
    prob, coef = F.cross_entropy_of_labels_forward(p, labels)[1][:2]
    expected = ((prob - coef) * (grad / 37)).to(dtype)
    assert bits(F.cross_entropy_backward(grad, ce)) == bits(expected)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype_(request: pytest.FixtureRequest) -> torch.dtype:
    dtype: torch.dtype = request.param
    return dtype


def _autograd(op: Callable[[Tensor], Tensor], x: Tensor, g: Tensor) -> Tensor:
    leaf = x.clone().requires_grad_(True)
    op(leaf).backward(g)
    assert leaf.grad is not None
    return leaf.grad


@pytest.mark.parametrize("dtype", ALL_FLOATS, ids=str)
def test_sigmoid_backward_is_autograds_bit_for_bit_and_the_formulas(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(257, 33, generator=generator) * 8).to(dtype)
    x[0, :4] = torch.tensor([math.inf, -math.inf, 0.0, 40.0])
    g = torch.randn(257, 33, generator=generator).to(dtype)
    out, ctx = F.sigmoid_forward(x)
    got = F.sigmoid_backward(g, ctx)
    if dtype in (torch.float32, torch.float64):
        assert bits(got) == bits(_autograd(torch.sigmoid, x, g))
        assert bits(got) == bits(g * (1.0 - out) * out)  # the docstring's formula, in its order
    else:  # from the float32 y, rounded once: tests/nn/test_half_precision.py has the errors
        y = torch.sigmoid(x.float())
        assert bits(got) == bits((g.float() * (1.0 - y) * y).to(dtype))


@pytest.mark.parametrize("dtype", ALL_FLOATS, ids=str)
def test_relu_backward_gives_autograds_values(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(300, 70, generator=generator).to(dtype)
    x[0, :6] = torch.tensor([0.0, -0.0, 1e-30, math.inf, -math.inf, math.nan])
    g = torch.randn(300, 70, generator=generator).to(dtype)
    _, ctx = F.relu_forward(x)
    # torch.equal: the same values (a masked negative g is -0 here, +0 in autograd).
    assert torch.equal(F.relu_backward(g, ctx), _autograd(torch.relu, x, g))


def test_relu_backward_where_the_output_is_zero_or_nan() -> None:
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0, -1.0, math.nan])
    g = torch.tensor([5.0, 1.0, -1.0, 7.0, -4.0, 2.0, 6.0])
    _, ctx = F.relu_forward(x)
    # 0 where x <= 0, g where x > 0 and, as autograd, where x is NaN.
    assert torch.equal(F.relu_backward(g, ctx), torch.tensor([0, 0, 0, 7, -4, 0, 6.0]))
    # An infinite or NaN gradient where x <= 0 gives NaN (g * 0); autograd gives 0 there.
    g_bad = torch.tensor([math.inf, math.nan, -math.inf, 7.0, -4.0, 1.0, 6.0])
    got = F.relu_backward(g_bad, ctx)
    assert got[:3].isnan().all()
    assert torch.equal(got[3:], torch.tensor([7, -4, 0, 6.0]))


def test_tanh_backward_keeps_the_digits_where_one_minus_y_squared_cancels() -> None:
    x = torch.cat([torch.linspace(-8, 8, 4001), torch.tensor([4.67, -4.67, 4.6701, 10.0])])
    x = x.to(torch.float64)
    g = torch.ones_like(x)
    _, ctx = F.tanh_forward(x)
    got, expected = F.tanh_backward(g, ctx), _autograd(torch.tanh, x, g)
    relative = ((got - expected).abs() / expected.abs()).max().item()
    assert relative <= 1e-15, relative
    # The textbook 1 - y**2 loses ~1e-13 relative at x = 4.67: the test can tell.
    naive = 1.0 - ctx[0] * ctx[0]
    assert ((naive - expected).abs() / expected.abs()).max().item() > 1e-14


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_tanh_backward_in_half_precision_is_the_float32_formula_rounded_once(
    dtype: torch.dtype,
) -> None:
    x = torch.linspace(-6, 6, 2001).to(dtype)
    g = torch.linspace(-3, 3, 2001).to(dtype)
    _, ctx = F.tanh_forward(x)
    y = torch.tanh(x.float())  # kept in float32: 1 − y keeps digits the rounded y has lost
    expected = (g.float() * ((1.0 - y) * (1.0 + y))).to(dtype)
    assert bits(F.tanh_backward(g, ctx)) == bits(expected)


@pytest.mark.parametrize("shape", [(64, 100, 1), (2000, 7, 1), (5, 3, 2)])
def test_linear_backward_input_gradient_is_bitwise_the_matmul(
    shape: tuple[int, int, int], dtype_: torch.dtype
) -> None:
    batch, fan_in, fan_out = shape
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(batch, fan_in, generator=generator, dtype=dtype_)
    w = torch.randn(fan_out, fan_in, generator=generator, dtype=dtype_)
    b = torch.randn(fan_out, generator=generator, dtype=dtype_)
    g = torch.randn(batch, fan_out, generator=generator, dtype=dtype_)
    _, ctx = F.linear_forward(x, w, b)
    grad_x, grad_w, grad_b = F.linear_backward(g, ctx)
    assert grad_x is not None
    assert grad_b is not None
    assert torch.equal(grad_x, g.matmul(w))
    assert torch.equal(grad_w, g.t().mm(x))
    assert torch.equal(grad_b, g.sum(0))


@pytest.mark.parametrize("grad", [1.0, 0.37])
def test_mse_backward_is_bitwise_the_textbook_formula(
    grad: float, dtype_: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(3)
    p = torch.randn(37, 3, generator=generator, dtype=dtype_)
    t = torch.randn(37, 3, generator=generator, dtype=dtype_)
    loss, ctx = F.mse_forward(p, t)
    assert torch.equal(loss, ((p - t) ** 2).sum() / p.numel())
    assert torch.equal(F.mse_backward(grad, ctx), 2.0 * (p - t) * (grad / p.numel()))


@pytest.mark.parametrize("shape", [(128, 10), (10,), (8, 5, 3)], ids=str)
def test_cross_entropy_of_labels_agrees_with_the_general_formula(
    shape: tuple[int, ...], dtype_: torch.dtype
) -> None:
    """Plain labels take the one-gather path; an in-range ignore_index that no target uses
    forces the general path on the same problem: both give the same bits."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(shape, generator=generator, dtype=dtype_) * 5
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    target_shape = shape[:0] if len(shape) == 1 else (shape[0], *shape[2:])
    target = torch.randint(1, n_classes, target_shape, generator=generator)
    fast, general = hn.CrossEntropyLoss(), hn.CrossEntropyLoss(ignore_index=0)
    assert torch.equal(fast(logits, target), general(logits, target))
    assert fast._saved is not None
    assert general._saved is not None
    assert fast._saved[0][2] is True  # the label path ran
    assert general._saved[0][2] is False
    # softmax as e^s / Z rather than e^(log softmax): within an ulp or two of the general path
    got, expected = fast.backward(), general.backward()
    eps = torch.finfo(dtype_).eps
    torch.testing.assert_close(got, expected, rtol=4 * eps, atol=4 * eps / got.numel())


def test_cross_entropy_of_labels_matches_autograd() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(100, 7, generator=generator, dtype=torch.float64) * 10
    target = torch.randint(0, 7, (100,), generator=generator)
    leaf = logits.clone().requires_grad_()
    expected = torch.nn.functional.cross_entropy(leaf, target)
    expected.backward()
    loss_fn = hn.CrossEntropyLoss()
    torch.testing.assert_close(loss_fn(logits, target), expected.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(loss_fn.backward(), leaf.grad, rtol=1e-13, atol=1e-17)


def test_cross_entropy_still_names_an_out_of_range_label() -> None:
    with pytest.raises(ValueError, match=r"target 7 is out of range for 7 classes"):
        hn.CrossEntropyLoss()(torch.zeros(3, 7), torch.tensor([0, 7, 1]))


def test_cross_entropy_ignores_the_default_ignore_index_among_plain_labels() -> None:
    logits = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, -100, 2, 1])
    got = hn.CrossEntropyLoss()(logits, target)
    expected = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)
