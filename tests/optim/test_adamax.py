"""Adamax against torch.optim.Adamax: every combination torch's suite runs, and more."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import handgrad.optim as hg
from tests.optim._cases import (
    DEFAULT_OR_SINGLE,
    assert_defaults_match,
    assert_large_tensor_path_matches,
    assert_rejects_what_torch_rejects,
)
from tests.optim.harness import (
    assert_matches_torch,
    torch_inputs_params,
)

EXTRA = [
    ("tensor lr", {"lr": torch.tensor(0.01), "weight_decay": 0.1}),
    ("betas and eps", {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3, "maximize": True}),
]


@DEFAULT_OR_SINGLE
@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adamax", EXTRA))
def test_matches_torch(
    hyperparams: dict[str, Any], foreach: bool | None, dtype: torch.dtype, device: torch.device
) -> None:
    assert_matches_torch(
        hg.Adamax, torch.optim.Adamax, hyperparams, dtype=dtype,
        ours_kwargs={"foreach": foreach}, grad_none_every=6, device=device,
    )  # fmt: skip


@DEFAULT_OR_SINGLE
def test_complex_parameters(foreach: bool | None, device: torch.device) -> None:
    assert_matches_torch(hg.Adamax, torch.optim.Adamax, {"lr": 0.05, "weight_decay": 0.1},
                         complex_params=True, ours_kwargs={"foreach": foreach},
                         device=device)  # fmt: skip


def test_eps_sits_inside_the_max() -> None:
    p = torch.tensor([1.0, 1.0], dtype=torch.float64)
    p.grad = torch.tensor([0.0, 3.0], dtype=torch.float64)
    opt = hg.Adamax([p], lr=0.1, eps=0.5)
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_inf"], torch.tensor([0.5, 3.5], dtype=p.dtype))
    # zero gradient: m = 0, no step and no division by zero
    assert p[0].item() == 1.0


def test_rejects_what_torch_rejects() -> None:
    bad = ({"lr": -1.0}, {"eps": -1.0}, {"weight_decay": -1.0}, {"betas": (1.0, 0.9)})
    assert_rejects_what_torch_rejects(hg.Adamax, torch.optim.Adamax, "Adamax", bad)


def test_defaults_match_torch() -> None:
    assert_defaults_match(hg.Adamax, torch.optim.Adamax)


@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adamax", EXTRA))
def test_large_tensor_path_matches_torch(
    hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    assert_large_tensor_path_matches(
        hg.Adamax, torch.optim.Adamax, hyperparams, monkeypatch, device=device
    )
