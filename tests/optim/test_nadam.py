"""NAdam against torch.optim.NAdam: every combination torch's suite runs, and more."""

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
    ("tensor lr decoupled", {"lr": torch.tensor(0.01), "weight_decay": 0.1,
                             "decoupled_weight_decay": True}),
    ("maximize decoupled", {"lr": 0.02, "weight_decay": 0.2, "decoupled_weight_decay": True,
                            "maximize": True, "betas": (0.8, 0.9)}),
]  # fmt: skip


@DEFAULT_OR_SINGLE
@pytest.mark.parametrize("hyperparams", torch_inputs_params("NAdam", EXTRA))
def test_matches_torch(
    hyperparams: dict[str, Any], foreach: bool | None, dtype: torch.dtype, device: torch.device
) -> None:
    assert_matches_torch(
        hg.NAdam, torch.optim.NAdam, hyperparams, dtype=dtype,
        ours_kwargs={"foreach": foreach}, grad_none_every=6, device=device,
    )  # fmt: skip


@DEFAULT_OR_SINGLE
def test_complex_parameters(foreach: bool | None, device: torch.device) -> None:
    assert_matches_torch(hg.NAdam, torch.optim.NAdam, {"lr": 0.05, "weight_decay": 0.1},
                         complex_params=True, ours_kwargs={"foreach": foreach},
                         device=device)  # fmt: skip


def test_mu_product_is_a_scalar_dtype_tensor() -> None:
    p = torch.ones(2, dtype=torch.float64)
    p.grad = torch.ones(2, dtype=torch.float64)
    opt = hg.NAdam([p])
    opt.step()
    opt.step()
    mu_product = opt.state[p]["mu_product"]
    assert mu_product.dtype == torch.float32
    assert mu_product.shape == ()
    mu1 = 0.9 * (1 - 0.5 * 0.96**0.004)
    mu2 = 0.9 * (1 - 0.5 * 0.96**0.008)
    assert mu_product.item() == pytest.approx(mu1 * mu2, rel=1e-6)


def test_rejects_what_torch_rejects() -> None:
    bad = ({"lr": -1.0}, {"eps": -1.0}, {"weight_decay": -1.0}, {"betas": (0.9, 1.5)})
    assert_rejects_what_torch_rejects(hg.NAdam, torch.optim.NAdam, "NAdam", bad)


def test_defaults_match_torch() -> None:
    assert_defaults_match(hg.NAdam, torch.optim.NAdam)


@pytest.mark.parametrize("hyperparams", torch_inputs_params("NAdam", EXTRA))
def test_large_tensor_path_matches_torch(
    hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    assert_large_tensor_path_matches(
        hg.NAdam, torch.optim.NAdam, hyperparams, monkeypatch, device=device
    )
