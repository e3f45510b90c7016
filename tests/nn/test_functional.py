"""The pure kernels on their own: each backward against autograd on the matching torch op."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from handgrad.nn import functional as F
from tests.nn.helpers import assert_matches

# (forward kernel, backward kernel, the torch op it must match)

ELEMENTWISE = [
    (F.relu_forward, F.relu_backward, TF.relu),
    (F.sigmoid_forward, F.sigmoid_backward, torch.sigmoid),
    (F.tanh_forward, F.tanh_backward, torch.tanh),
    (
        lambda x: F.leaky_relu_forward(x, 0.3),
        F.leaky_relu_backward,
        lambda x: TF.leaky_relu(x, 0.3),
    ),
    (lambda x: F.elu_forward(x, 1.7), F.elu_backward, lambda x: TF.elu(x, 1.7)),
    (lambda x: F.gelu_forward(x, "none"), F.gelu_backward, TF.gelu),
    (
        lambda x: F.gelu_forward(x, "tanh"),
        F.gelu_backward,
        lambda x: TF.gelu(x, approximate="tanh"),
    ),
    (
        lambda x: F.softplus_forward(x, 0.5, 2.0),
        F.softplus_backward,
        lambda x: TF.softplus(x, 0.5, 2.0),
    ),
    (lambda x: F.flatten_forward(x, 0, 1), F.flatten_backward, lambda x: x.flatten(0, 1)),
]


@pytest.mark.parametrize(("forward", "backward", "reference"), ELEMENTWISE)
def test_kernel_pair_matches_autograd(forward, backward, reference, dtype) -> None:
    x = torch.randn(5, 6, dtype=dtype) * 4
    out, ctx = forward(x)
    g = torch.randn_like(out)
    leaf = x.clone().requires_grad_(True)
    expected = reference(leaf)
    expected.backward(g)
    assert_matches(out, expected.detach(), "forward")
    assert_matches(backward(g, ctx), leaf.grad, "backward")


def test_linear_kernels(dtype) -> None:
    x = torch.randn(2, 3, 4, dtype=dtype)
    w = torch.randn(5, 4, dtype=dtype)
    b = torch.randn(5, dtype=dtype)
    out, ctx = F.linear_forward(x, w, b)
    g = torch.randn_like(out)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    expected = TF.linear(*leaves)
    expected.backward(g)
    assert_matches(out, expected.detach())
    dx, dw, db = F.linear_backward(g, ctx)
    for got, leaf in zip((dx, dw, db), leaves, strict=True):
        assert_matches(got, leaf.grad)
    # input_grad=False skips dx; no bias, no db.
    _, ctx_no_bias = F.linear_forward(x, w, None)
    dx, dw_again, db = F.linear_backward(g, ctx_no_bias, input_grad=False)
    assert dx is None
    assert db is None
    assert_matches(dw_again, leaves[1].grad)


def test_sigmoid_and_log_softmax_never_overflow(dtype) -> None:
    x = torch.tensor([-1e30, -1000.0, 0.0, 1000.0, 1e30], dtype=dtype)
    s, ctx = F.sigmoid_forward(x)
    assert torch.equal(s, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0], dtype=dtype))
    grad = F.sigmoid_backward(torch.ones_like(x), ctx)
    assert torch.equal(grad, torch.tensor([0.0, 0.0, 0.25, 0.0, 0.0], dtype=dtype))
    logits = torch.tensor([[1e4, 1e4 + 1.0, -1e4]], dtype=dtype)
    log_p = F.log_softmax(logits, dim=1)
    assert torch.isfinite(log_p).all()
    assert_matches(log_p, torch.log_softmax(logits, dim=1))


def test_dropout_kernel_training_flag_and_mask(dtype) -> None:
    x = torch.randn(40, 40, dtype=dtype)
    out, ctx = F.dropout_forward(x, 0.5, training=False)
    assert out is x
    assert ctx == (None,)
    generator = torch.Generator().manual_seed(5)
    out, ctx = F.dropout_forward(x, 0.25, training=True, generator=generator)
    (scale,) = ctx
    values = scale.unique().tolist()
    assert values == [0.0, pytest.approx(1 / 0.75)]
    expected_mask = torch.empty_like(x).bernoulli_(0.75, generator=torch.Generator().manual_seed(5))
    assert torch.equal(scale != 0, expected_mask.bool())
    assert_matches(F.dropout_backward(torch.ones_like(x), ctx), scale)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_kernels_match_autograd(reduction, dtype) -> None:
    p = torch.randn(4, 3, dtype=dtype)
    t = torch.randn(4, 3, dtype=dtype)
    for forward, backward, reference in [
        (F.mse_forward, F.mse_backward, TF.mse_loss),
        (F.l1_forward, F.l1_backward, TF.l1_loss),
    ]:
        loss, ctx = forward(p, t, reduction)
        leaf = p.clone().requires_grad_(True)
        expected = reference(leaf, t, reduction=reduction)
        g = torch.randn_like(expected)
        expected.backward(g)
        assert_matches(loss, expected.detach())
        assert_matches(backward(g, ctx), leaf.grad)
