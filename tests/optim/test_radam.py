"""RAdam against torch.optim.RAdam: every combination torch's suite runs, and more."""

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
    # small beta2: the rectified phase starts after a couple of steps
    ("early rectification", {"lr": 0.02, "betas": (0.8, 0.9), "maximize": True}),
]


@pytest.mark.parametrize("foreach", [None, False], ids=["default", "single"])
@pytest.mark.parametrize("hyperparams", torch_inputs_params("RAdam", EXTRA))
def test_matches_torch(
    hyperparams: dict[str, Any], foreach: bool | None, dtype: torch.dtype
) -> None:
    assert_matches_torch(
        hg.RAdam, torch.optim.RAdam, hyperparams, dtype=dtype,
        ours_kwargs={"foreach": foreach}, grad_none_every=6,
    )  # fmt: skip


@pytest.mark.parametrize("foreach", [None, False], ids=["default", "single"])
def test_complex_parameters(foreach: bool | None) -> None:
    assert_matches_torch(hg.RAdam, torch.optim.RAdam, {"lr": 0.05, "weight_decay": 0.1},
                         complex_params=True, ours_kwargs={"foreach": foreach})  # fmt: skip


def test_warm_up_steps_are_plain_momentum() -> None:
    p = torch.tensor([0.0], dtype=torch.float64)
    p.grad = torch.tensor([2.0], dtype=torch.float64)
    opt = hg.RAdam([p], lr=0.1)
    opt.step()  # rho_1 < 5: theta -= lr * m / (1 - beta1) = lr * g
    torch.testing.assert_close(p, torch.tensor([-0.2], dtype=torch.float64), rtol=1e-15, atol=0)


def test_rejects_what_torch_rejects() -> None:
    ours, theirs = hg.RAdam, torch.optim.RAdam
    for _desc, params, kwargs in common_error_cases():
        assert_same_error(ours, theirs, kwargs, params=params)
    for _desc, kwargs, error_type, fragment in torch_error_inputs("RAdam"):
        kind, raised, message = assert_same_error(ours, theirs, kwargs)
        assert (kind, raised) == ("raise", error_type)
        assert fragment in message
    for kwargs in ({"lr": -1.0}, {"eps": -1.0}, {"betas": (0.9, 1.0)}):
        assert assert_same_error(ours, theirs, kwargs)[0] == "raise"
    sparse = torch.zeros(3)
    sparse.grad = torch.ones(3).to_sparse()
    kind, raised, _ = assert_same_error(ours, theirs, {}, params=lambda: [sparse], at_step=True)
    assert (kind, raised) == ("raise", RuntimeError)


def test_defaults_match_torch() -> None:
    assert hg.RAdam([torch.zeros(1)]).defaults == torch.optim.RAdam([torch.zeros(1)]).defaults


@pytest.mark.parametrize("hyperparams", torch_inputs_params("RAdam", EXTRA))
def test_large_tensor_path_matches_torch(
    hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tensors above the size threshold go tensor-at-a-time with scratch buffers (here the
    two larger shapes), the rest through the multi-tensor body: both must match torch."""
    monkeypatch.setattr(common, "LARGE_TENSOR_ELEMENTS", 10)
    assert_matches_torch(hg.RAdam, torch.optim.RAdam, hyperparams, grad_none_every=6)
