"""Whole convolutional networks: a LeNet-style CNN and ResNet basic blocks (Residual) converted
from torch.nn, checked gradient for gradient, and trained beside their torch twins."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import handgrad.nn as hn
from handgrad.check import check_module
from handgrad.optim import Adam
from tests.conftest import DEVICES
from tests.nn.conv_helpers import compare_with_torch
from tests.nn.helpers import assert_matches

F64 = torch.float64
nn = torch.nn


def lenet() -> nn.Module:
    """Two conv–batchnorm–relu–pool stages and a head, on 1×12×12 images."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True),
        nn.Dropout2d(0.2), nn.Flatten(), nn.Linear(6 * 2 * 2, 10), nn.BatchNorm1d(10),
        nn.ReLU(), nn.Linear(10, 3),
    )  # fmt: skip


def basic_block(channels: int, stride: int = 1) -> nn.Module:
    """ResNet's basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""
    shortcut = None
    if stride != 1:
        shortcut = nn.Sequential(
            nn.Conv2d(channels // stride, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
        )
    block = nn.Sequential(
        nn.Conv2d(channels // stride, channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
    )  # fmt: skip
    return nn.Sequential(hn.TorchResidual(block, shortcut), nn.ReLU())


def resnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        basic_block(4), basic_block(8, stride=2), nn.GroupNorm(2, 8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip


NETWORKS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("lenet", lenet, (5, 1, 12, 12)),
    ("resnet", resnet, (3, 3, 8, 8)),
]


@pytest.mark.parametrize(("name", "build", "shape"), NETWORKS, ids=[n[0] for n in NETWORKS])
@pytest.mark.parametrize("device", DEVICES)
def test_network_gradients_match_autograd(
    name: str, build: Callable[[], nn.Module], shape: tuple[int, ...], device: str
) -> None:
    torch.manual_seed(0)
    reference = build().to(device=device, dtype=F64)
    hand = hn.from_torch(reference)
    assert list(hand.state_dict()) == list(reference.state_dict())
    x = torch.randn(shape, dtype=F64, device=device)
    compare_with_torch(reference, x, hand=hand, network_scale=True)
    reference.eval()
    hand.eval()
    compare_with_torch(reference, x, hand=hand, network_scale=True)


@pytest.mark.parametrize(("name", "build", "shape"), NETWORKS, ids=[n[0] for n in NETWORKS])
def test_network_passes_check_module(
    name: str, build: Callable[[], nn.Module], shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    hand = hn.from_torch(build())
    result = check_module(hand, torch.randn(shape), fd_samples=6)
    assert result.passed, result.report()


@pytest.mark.parametrize(("name", "build", "shape"), NETWORKS, ids=[n[0] for n in NETWORKS])
def test_training_matches_torch_step_for_step(
    name: str, build: Callable[[], nn.Module], shape: tuple[int, ...]
) -> None:
    """SGD with momentum on both: after 4 steps the parameters and running statistics of
    the handgrad network equal the torch network's, trained by autograd."""
    torch.manual_seed(0)
    reference = build().to(F64)
    hand = hn.from_torch(reference)
    reference_opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    hand_opt = torch.optim.SGD(hand.parameters(), lr=0.05, momentum=0.9)
    loss_fn = hn.CrossEntropyLoss()
    for step in range(4):
        x = torch.randn(shape, dtype=F64)
        y = torch.randint(0, 3, (shape[0],))
        torch.manual_seed(10 + step)  # the same dropout masks
        reference_opt.zero_grad()
        expected = nn.functional.cross_entropy(reference(x), y)
        expected.backward()
        reference_opt.step()
        torch.manual_seed(10 + step)
        hand_opt.zero_grad()
        loss = loss_fn(hand(x), y)
        hand.backward(loss_fn.backward(), input_grad=False)
        hand_opt.step()
        assert_matches(loss, expected.detach(), f"loss at step {step}")
    for (name_, expected_tensor), got in zip(
        reference.state_dict().items(), hand.state_dict().values(), strict=True
    ):
        if got.is_floating_point():
            assert_matches(got, expected_tensor, name_)
        else:
            assert torch.equal(got, expected_tensor), name_


def test_handgrad_adam_trains_a_cnn_on_flat_parameters() -> None:
    torch.manual_seed(0)
    hand = hn.from_torch(lenet())
    hn.flatten_parameters(hand)
    optimizer = Adam(hand.parameters(), lr=0.01)
    loss_fn = hn.CrossEntropyLoss()
    x = torch.randn(16, 1, 12, 12)
    y = torch.randint(0, 3, (16,))
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        losses.append(float(loss_fn(hand(x), y)))
        hand.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]


def test_round_trip_keeps_the_tree() -> None:
    reference = resnet()
    hand = hn.from_torch(reference)
    assert isinstance(hand[3][0], hn.Residual)
    assert isinstance(hand[4][0].shortcut[0], hn.Conv2d)
    back = hn.to_torch(hand)
    assert repr(back) == repr(reference)
    for (name, expected), got in zip(
        reference.state_dict().items(), back.state_dict().values(), strict=True
    ):
        assert torch.equal(got, expected), name
