"""Adamax against torch.optim.Adamax: every combination torch's suite runs, and more."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import handgrad.optim as hg
import handgrad.optim._common as common
from tests.optim.harness import (
    assert_matches_torch,
    assert_same_error,
    common_error_cases,
    torch_error_inputs,
    torch_inputs_params,
)

EXTRA = [
    ("tensor lr", {"lr": torch.tensor(0.01), "weight_decay": 0.1}),
    ("betas and eps", {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3, "maximize": True}),
]


@pytest.mark.parametrize("foreach", [None, False], ids=["default", "single"])
@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adamax", EXTRA))
def test_matches_torch(
    hyperparams: dict[str, Any], foreach: bool | None, dtype: torch.dtype
) -> None:
    assert_matches_torch(
        hg.Adamax, torch.optim.Adamax, hyperparams, dtype=dtype,
        ours_kwargs={"foreach": foreach}, grad_none_every=6,
    )  # fmt: skip


@pytest.mark.parametrize("foreach", [None, False], ids=["default", "single"])
def test_complex_parameters(foreach: bool | None) -> None:
    assert_matches_torch(hg.Adamax, torch.optim.Adamax, {"lr": 0.05, "weight_decay": 0.1},
                         complex_params=True, ours_kwargs={"foreach": foreach})  # fmt: skip


def test_eps_sits_inside_the_max() -> None:
    p = torch.tensor([1.0, 1.0], dtype=torch.float64)
    p.grad = torch.tensor([0.0, 3.0], dtype=torch.float64)
    opt = hg.Adamax([p], lr=0.1, eps=0.5)
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_inf"], torch.tensor([0.5, 3.5], dtype=p.dtype))
    # zero gradient: m = 0, no step and no division by zero
    assert p[0].item() == 1.0


def test_rejects_what_torch_rejects() -> None:
    ours, theirs = hg.Adamax, torch.optim.Adamax
    for _desc, params, kwargs in common_error_cases():
        assert_same_error(ours, theirs, kwargs, params=params)
    for _desc, kwargs, error_type, fragment in torch_error_inputs("Adamax"):
        kind, raised, message = assert_same_error(ours, theirs, kwargs)
        assert (kind, raised) == ("raise", error_type)
        assert fragment in message
    for kwargs in ({"lr": -1.0}, {"eps": -1.0}, {"weight_decay": -1.0}, {"betas": (1.0, 0.9)}):
        assert assert_same_error(ours, theirs, kwargs)[0] == "raise"
    sparse = torch.zeros(3)
    sparse.grad = torch.ones(3).to_sparse()
    kind, raised, _ = assert_same_error(ours, theirs, {}, params=lambda: [sparse], at_step=True)
    assert (kind, raised) == ("raise", RuntimeError)


def test_defaults_match_torch() -> None:
    assert hg.Adamax([torch.zeros(1)]).defaults == torch.optim.Adamax([torch.zeros(1)]).defaults


@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adamax", EXTRA))
def test_large_tensor_path_matches_torch(
    hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tensors above the size threshold go tensor-at-a-time with scratch buffers (here the
    two larger shapes), the rest through the multi-tensor body: both must match torch."""
    monkeypatch.setattr(common, "LARGE_TENSOR_ELEMENTS", 10)
    assert_matches_torch(hg.Adamax, torch.optim.Adamax, hyperparams, grad_none_every=6)
