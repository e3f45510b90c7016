"""RMSprop against torch.optim.RMSprop: every combination torch's suite runs, and more."""

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
    assert_same_error,
    torch_inputs_params,
)

EXTRA = [
    ("tensor lr", {"lr": torch.tensor(0.01), "momentum": 0.5, "centered": True}),
    ("momentum, not centered", {"lr": 0.005, "momentum": 0.9}),
    ("alpha and eps", {"lr": 0.02, "alpha": 0.5, "eps": 1e-3, "maximize": True}),
]


@DEFAULT_OR_SINGLE
@pytest.mark.parametrize("hyperparams", torch_inputs_params("RMSprop", EXTRA))
def test_matches_torch(
    hyperparams: dict[str, Any], foreach: bool | None, dtype: torch.dtype, device: torch.device
) -> None:
    assert_matches_torch(
        hg.RMSprop, torch.optim.RMSprop, hyperparams, dtype=dtype,
        ours_kwargs={"foreach": foreach}, grad_none_every=6, device=device,
    )  # fmt: skip


@DEFAULT_OR_SINGLE
def test_complex_parameters(foreach: bool | None, device: torch.device) -> None:
    hyperparams = {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1}
    assert_matches_torch(hg.RMSprop, torch.optim.RMSprop, hyperparams, complex_params=True,
                         ours_kwargs={"foreach": foreach}, device=device)  # fmt: skip


def test_first_step_by_hand() -> None:
    p = torch.tensor([1.0, -1.0], dtype=torch.float64)
    p.grad = torch.tensor([0.5, -2.0], dtype=torch.float64)
    opt = hg.RMSprop([p], lr=0.1, alpha=0.9, eps=0.0)
    opt.step()
    # v = 0.1 g², step = lr g / sqrt(v) = lr sign(g) / sqrt(0.1)
    expected = (
        torch.tensor([1.0, -1.0], dtype=torch.float64)
        - 0.1 * torch.tensor([1.0, -1.0], dtype=torch.float64) / 0.1**0.5
    )
    torch.testing.assert_close(p, expected, rtol=1e-14, atol=0)
    assert sorted(opt.state[p]) == ["square_avg", "step"]


ERRORS = [
    ("negative lr", {"lr": -0.1}),
    ("negative eps", {"eps": -0.1}),
    ("negative weight_decay", {"weight_decay": -0.1}),
    ("negative alpha", {"alpha": -0.1}),
]


def test_rejects_what_torch_rejects() -> None:
    ours, theirs = hg.RMSprop, torch.optim.RMSprop
    assert_rejects_what_torch_rejects(ours, theirs, "RMSprop", [kwargs for _, kwargs in ERRORS])
    kind, raised, _ = assert_same_error(ours, theirs, {"fused": True})
    assert (kind, raised) == ("raise", TypeError)


def test_defaults_match_torch() -> None:
    assert_defaults_match(hg.RMSprop, torch.optim.RMSprop)


@pytest.mark.parametrize("hyperparams", torch_inputs_params("RMSprop", EXTRA))
def test_large_tensor_path_matches_torch(
    hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    assert_large_tensor_path_matches(
        hg.RMSprop, torch.optim.RMSprop, hyperparams, monkeypatch, device=device
    )
