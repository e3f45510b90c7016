"""Losses against torch.nn + autograd: every reduction, weights, smoothing, probabilities."""

from __future__ import annotations

import pytest
import torch

import handgrad.nn as hn
from tests.nn.helpers import assert_matches

REDUCTIONS = ["mean", "sum", "none"]


def assert_loss_agrees(hand, reference, prediction, target, grad=None) -> None:
    """Loss value and d(loss)/d(prediction) (scaled by grad) agree with autograd."""
    leaf = prediction.detach().clone().requires_grad_(True)
    expected = reference(leaf, target)
    upstream = torch.randn_like(expected) if grad is None else grad
    expected.backward(upstream)
    got = hand(prediction, target)
    assert_matches(got, expected.detach(), "loss")
    assert_matches(hand.backward(upstream), leaf.grad, "d(loss)/d(prediction)")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("hand_type", "torch_type", "kwargs"),
    [
        (hn.MSELoss, torch.nn.MSELoss, {}),
        (hn.L1Loss, torch.nn.L1Loss, {}),
        (hn.HuberLoss, torch.nn.HuberLoss, {}),
        (hn.HuberLoss, torch.nn.HuberLoss, {"delta": 0.3}),
    ],
    ids=["mse", "l1", "huber", "huber-0.3"],
)
def test_regression_losses(hand_type, torch_type, kwargs, reduction, device, dtype) -> None:
    prediction = torch.randn(7, 3, device=device, dtype=dtype) * 2
    target = torch.randn(7, 3, device=device, dtype=dtype)
    target[0, 0] = prediction[0, 0]  # a zero residual: the subgradient of |d| is 0 there
    hand = hand_type(reduction=reduction, **kwargs)
    reference = torch_type(reduction=reduction, **kwargs)
    assert_loss_agrees(hand, reference, prediction, target)


def test_default_backward_grad_is_one(dtype) -> None:
    prediction, target = torch.randn(5, 2, dtype=dtype), torch.randn(5, 2, dtype=dtype)
    loss_fn = hn.MSELoss()
    def backward(grad: object = None) -> torch.Tensor:
        loss_fn(prediction, target)  # each backward releases what its forward kept
        return loss_fn.backward() if grad is None else loss_fn.backward(grad)

    assert_matches(backward(), 2 * (prediction - target) / prediction.numel())
    assert_matches(backward(1.0), backward(torch.tensor(1.0, dtype=dtype)))
    assert_matches(backward(3.0), 3 * backward())
    with pytest.raises(ValueError, match="called twice for one forward"):
        loss_fn.backward(1.0)  # a number as upstream gradient is refused the same way


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"label_smoothing": 0.15},
        {"ignore_index": 1},
        {"weight": "w"},
        {"weight": "w", "ignore_index": 2, "label_smoothing": 0.3},
    ],
    ids=["plain", "smoothing", "ignore", "weight", "weight-ignore-smoothing"],
)
@pytest.mark.parametrize(
    "shape", [(6, 4), (4,), (3, 4, 5)], ids=["batch", "unbatched", "spatial"]
)
def test_cross_entropy_class_indices(kwargs, reduction, shape, device, dtype) -> None:
    kwargs = dict(kwargs)
    if kwargs.get("weight") == "w":
        kwargs["weight"] = torch.rand(4, device=device, dtype=dtype) + 0.2
    logits = torch.randn(shape, device=device, dtype=dtype) * 3
    class_dim = 0 if len(shape) == 1 else 1
    target_shape = shape[:class_dim] + shape[class_dim + 1 :]
    target = torch.randint(0, 4, target_shape, device=device)
    if len(shape) > 1:
        target.view(-1)[0] = 2  # ignore_index=2 cases ignore at least one sample ...
        target.view(-1)[1] = 0  # ... and keep at least one
    else:
        target.fill_(0)  # the single sample is kept
    hand = hn.CrossEntropyLoss(reduction=reduction, **kwargs)
    reference = torch.nn.CrossEntropyLoss(reduction=reduction, **kwargs)
    assert_loss_agrees(hand, reference, logits, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4), (3,)], ids=["batch", "spatial", "unbatched"])
def test_cross_entropy_probabilities(reduction, smoothing, weighted, shape, device, dtype) -> None:
    class_dim = 0 if len(shape) == 1 else 1
    logits = torch.randn(shape, device=device, dtype=dtype) * 3
    target = torch.softmax(torch.randn(shape, device=device, dtype=dtype), dim=class_dim)
    weight = torch.rand(3, device=device, dtype=dtype) + 0.2 if weighted else None
    kwargs = {"weight": weight, "label_smoothing": smoothing, "reduction": reduction}
    hand = hn.CrossEntropyLoss(**kwargs)
    assert_loss_agrees(hand, torch.nn.CrossEntropyLoss(**kwargs), logits, target)


def test_cross_entropy_is_stable_for_huge_logits(dtype) -> None:
    logits = torch.tensor([[1e4, 0.0, -1e4], [-3e4, 3e4, 0.0]], dtype=dtype)
    target = torch.tensor([1, 1])
    loss_fn = hn.CrossEntropyLoss(reduction="none")
    loss = loss_fn(logits, target)
    grad = loss_fn.backward(torch.ones(2, dtype=dtype))
    assert torch.isfinite(loss).all()
    assert torch.isfinite(grad).all()
    assert_matches(loss, torch.tensor([1e4, 0.0], dtype=dtype))
    assert_matches(grad, torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "extras", ["none", "weight", "pos_weight", "both"], ids=lambda e: f"extras={e}"
)
def test_bce_with_logits(reduction, extras, device, dtype) -> None:
    logits = torch.randn(6, 3, device=device, dtype=dtype) * 4
    target = torch.rand(6, 3, device=device, dtype=dtype)
    target[0] = torch.tensor([0.0, 1.0, 1.0])  # hard labels too
    kwargs = {"reduction": reduction}
    if extras in ("weight", "both"):
        kwargs["weight"] = torch.rand(6, 1, device=device, dtype=dtype)
    if extras in ("pos_weight", "both"):
        kwargs["pos_weight"] = torch.rand(3, device=device, dtype=dtype) * 4
    hand = hn.BCEWithLogitsLoss(**kwargs)
    assert_loss_agrees(hand, torch.nn.BCEWithLogitsLoss(**kwargs), logits, target)


def test_bce_with_logits_is_stable_for_huge_logits(dtype) -> None:
    logits = torch.tensor([-1e4, -100.0, 100.0, 1e4], dtype=dtype)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=dtype)
    loss_fn = hn.BCEWithLogitsLoss(reduction="none")
    loss = loss_fn(logits, target)
    grad = loss_fn.backward(torch.ones(4, dtype=dtype))
    assert_matches(loss, torch.tensor([1e4, 0.0, 0.0, 1e4], dtype=dtype))
    assert_matches(grad, torch.tensor([-1.0, 0.0, 0.0, 1.0], dtype=dtype))


def test_losses_have_no_parameters_and_move_their_buffers() -> None:
    loss_fn = hn.CrossEntropyLoss(weight=torch.ones(3))
    assert list(loss_fn.parameters()) == []
    assert loss_fn.to(torch.float64).weight.dtype == torch.float64
    bce = hn.BCEWithLogitsLoss(pos_weight=torch.ones(3)).double()
    assert bce.pos_weight.dtype == torch.float64
    assert "pos_weight" in bce.state_dict()
