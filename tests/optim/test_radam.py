"""RAdam against torch.optim.RAdam: every combination torch's suite runs, and more."""

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
    # small beta2: the rectified phase starts after a couple of steps
    ("early rectification", {"lr": 0.02, "betas": (0.8, 0.9), "maximize": True}),
]


@DEFAULT_OR_SINGLE
@pytest.mark.parametrize("hyperparams", torch_inputs_params("RAdam", EXTRA))
def test_matches_torch(
    hyperparams: dict[str, Any], foreach: bool | None, dtype: torch.dtype, device: torch.device
) -> None:
    assert_matches_torch(
        hg.RAdam, torch.optim.RAdam, hyperparams, dtype=dtype,
        ours_kwargs={"foreach": foreach}, grad_none_every=6, device=device,
    )  # fmt: skip


@DEFAULT_OR_SINGLE
def test_complex_parameters(foreach: bool | None, device: torch.device) -> None:
    assert_matches_torch(hg.RAdam, torch.optim.RAdam, {"lr": 0.05, "weight_decay": 0.1},
                         complex_params=True, ours_kwargs={"foreach": foreach},
                         device=device)  # fmt: skip


def test_warm_up_steps_are_plain_momentum() -> None:
    p = torch.tensor([0.0], dtype=torch.float64)
    p.grad = torch.tensor([2.0], dtype=torch.float64)
    opt = hg.RAdam([p], lr=0.1)
    opt.step()  # rho_1 < 5: theta -= lr * m / (1 - beta1) = lr * g
    torch.testing.assert_close(p, torch.tensor([-0.2], dtype=torch.float64), rtol=1e-15, atol=0)


def test_rejects_what_torch_rejects() -> None:
    bad = ({"lr": -1.0}, {"eps": -1.0}, {"betas": (0.9, 1.0)})
    assert_rejects_what_torch_rejects(hg.RAdam, torch.optim.RAdam, "RAdam", bad)


def test_defaults_match_torch() -> None:
    assert_defaults_match(hg.RAdam, torch.optim.RAdam)


@pytest.mark.parametrize("hyperparams", torch_inputs_params("RAdam", EXTRA))
def test_large_tensor_path_matches_torch(
    hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    assert_large_tensor_path_matches(
        hg.RAdam, torch.optim.RAdam, hyperparams, monkeypatch, device=device
    )
