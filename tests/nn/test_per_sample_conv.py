"""backward(..., per_sample=True) through the convolutional layers: every parameter's
p.grad_sample against torch.func's vmap(grad) on the torch twin, in float64."""

from __future__ import annotations

import pytest
import torch

import handgrad.nn as hn
from handgrad.nn.per_sample import per_sample_gradients
from tests.nn.test_per_sample import check_against_vmap

f64 = {"dtype": torch.float64}


def cnn(groups: int, padding_mode: str) -> hn.Sequential:
    return hn.Sequential(
        hn.Conv2d(2, 4, 3, padding=1, padding_mode=padding_mode, **f64),
        hn.GroupNorm(2, 4, **f64),
        hn.ReLU(),
        hn.MaxPool2d(2),
        hn.Conv2d(4, 4, 3, stride=2, padding=1, groups=groups, bias=groups == 1, **f64),
        hn.Tanh(),
        hn.Dropout2d(0.3),
        hn.AdaptiveAvgPool2d(2),
        hn.Flatten(),
        hn.Linear(16, 3, **f64),
    )


@pytest.mark.parametrize(
    ("groups", "padding_mode"), [(1, "zeros"), (2, "reflect"), (4, "circular")]
)
@pytest.mark.parametrize("per_sample", [True, "factored"])
@pytest.mark.parametrize("batch", [1, 3])
def test_cnn(groups: int, padding_mode: str, per_sample: bool | str, batch: int,
             device: torch.device) -> None:  # fmt: skip
    model = cnn(groups, padding_mode).to(device)
    model[6].eval()  # Dropout2d: the identity, as in the twin under vmap
    x = torch.randn(batch, 2, 8, 8, **f64, device=device)
    target = torch.randint(0, 3, (batch,), device=device)
    check_against_vmap(model, x, hn.CrossEntropyLoss(), target, batch, per_sample)


@pytest.mark.parametrize("per_sample", [True, "factored"])
def test_conv1d_and_transposed(per_sample: bool | str, device: torch.device) -> None:
    model = hn.Sequential(
        hn.Conv1d(3, 4, 3, dilation=2, padding=2, **f64),
        hn.ELU(),
        hn.Conv1d(4, 2, 2, stride=2, **f64),
        hn.Unflatten(2, (1, 4)),
        hn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, **f64),
        hn.Tanh(),
        hn.ConvTranspose2d(4, 2, (2, 3), stride=(1, 2), groups=2, dilation=(2, 1), **f64),
        hn.Flatten(),
    ).to(device)
    x = torch.randn(3, 3, 8, **f64, device=device)
    out = model(x)
    target = torch.randn_like(out)
    check_against_vmap(model, x, hn.MSELoss(), target, target.numel(), per_sample)


def test_batch_norm_in_eval_mode(device: torch.device) -> None:
    model = hn.Sequential(
        hn.Conv2d(2, 3, 3, **f64), hn.BatchNorm2d(3, **f64), hn.ReLU(), hn.Flatten(),
        hn.Linear(12, 4, **f64), hn.BatchNorm1d(4, **f64),
    ).to(device)  # fmt: skip
    model(torch.randn(6, 2, 4, 4, **f64, device=device))  # running statistics of a batch
    with torch.no_grad():
        for layer in (model[1], model[5]):
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-1, 1)
    model.eval()
    x = torch.randn(5, 2, 4, 4, **f64, device=device)
    target = torch.randn(5, 4, **f64, device=device)
    check_against_vmap(model, x, hn.MSELoss(), target, target.numel())


def test_batch_norm_in_training_refuses() -> None:
    model = hn.Sequential(hn.Conv2d(2, 3, 3), hn.BatchNorm2d(3), hn.Flatten())
    out = model(torch.randn(4, 2, 5, 5))
    with pytest.raises(ValueError, match=r"BatchNorm2d.*not defined with the batch's statistics"):
        model.backward(torch.ones_like(out), per_sample=True)


def test_unbatched_convolution_refuses() -> None:
    layer = hn.Conv1d(2, 3, 2)
    out = layer(torch.randn(2, 5))
    with (
        pytest.raises(ValueError, match="per-sample gradients need a batch dimension"),
        per_sample_gradients(),  # (a layer's own backward has no per_sample argument)
    ):
        layer.backward(torch.ones_like(out))
