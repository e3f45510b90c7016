"""What the convolutional layers keep: not their outputs, and nothing once backward has run."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import handgrad.nn as hn
import handgrad.nn.functional.normalization as normalization
from handgrad.nn._saving import RELEASED

LAYERS = [
    (lambda: hn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 5)),
    (lambda: hn.Conv1d(2, 3, 3), (2, 2, 6)),
    (lambda: hn.ConvTranspose2d(2, 3, 3, stride=2), (2, 2, 3, 3)),
    (lambda: hn.MaxPool2d(2), (2, 2, 4, 4)),
    (lambda: hn.AvgPool2d(2), (2, 2, 4, 4)),
    (lambda: hn.AdaptiveAvgPool2d(1), (2, 2, 4, 4)),
    (lambda: hn.BatchNorm2d(2), (3, 2, 4, 4)),
    (lambda: hn.BatchNorm1d(2), (5, 2)),
    (lambda: hn.GroupNorm(1, 2), (2, 2, 3)),
    (lambda: hn.Dropout2d(0.5), (2, 2, 3, 3)),
]
IDS = ["Conv2d", "Conv1d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
       "BatchNorm2d", "BatchNorm1d", "GroupNorm", "Dropout2d"]  # fmt: skip


@pytest.mark.parametrize(("make", "shape"), LAYERS, ids=IDS)
def test_the_output_is_not_kept_and_backward_releases_the_context(make, shape) -> None:
    layer = make()
    out = layer(torch.randn(shape))
    alive = weakref.ref(out)
    grad = torch.ones_like(out)
    del out
    gc.collect()
    assert alive() is None, "the layer keeps its output"
    layer.backward(grad)
    assert layer._saved[0] is RELEASED
    with pytest.raises(ValueError, match="called twice for one forward"):
        layer.backward(grad)
    out = layer(torch.randn(shape))  # a new forward, a new backward
    layer.backward(torch.ones_like(out))


def test_grad_output_is_still_checked_against_the_output() -> None:
    layer = hn.Conv2d(2, 3, 3)
    layer(torch.randn(2, 2, 5, 5))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(2, 3, 3, 3\)"):
        layer.backward(torch.ones(2, 3, 3, 4))
    with pytest.raises(ValueError, match="dtype"):
        layer.backward(torch.ones(2, 3, 3, 3, dtype=torch.float64))


def test_channel_dot_in_slices_equals_one_product(monkeypatch: pytest.MonkeyPatch) -> None:
    a = torch.randn(7, 3, 4, 5, dtype=torch.float64)
    b = torch.randn(7, 3, 4, 5, dtype=torch.float64)
    whole = (a * b).sum((0, 2, 3))
    monkeypatch.setattr(normalization, "_DOT_SLICE", 40)  # two samples per slice
    sliced = normalization.channel_dot(a, b)
    assert torch.allclose(sliced, whole, rtol=1e-14, atol=0)
