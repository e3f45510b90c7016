"""RMSprop against torch.optim.RMSprop: every combination torch's suite runs, and more."""

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
    ("tensor lr", {"lr": torch.tensor(0.01), "momentum": 0.5, "centered": True}),
    ("momentum, not centered", {"lr": 0.005, "momentum": 0.9}),
    ("alpha and eps", {"lr": 0.02, "alpha": 0.5, "eps": 1e-3, "maximize": True}),
]


@pytest.mark.parametrize("foreach", [None, False], ids=["default", "single"])
@pytest.mark.parametrize("hyperparams", torch_inputs_params("RMSprop", EXTRA))
def test_matches_torch(
    hyperparams: dict[str, Any], foreach: bool | None, dtype: torch.dtype
) -> None:
    assert_matches_torch(
        hg.RMSprop, torch.optim.RMSprop, hyperparams, dtype=dtype,
        ours_kwargs={"foreach": foreach}, grad_none_every=6,
    )  # fmt: skip


@pytest.mark.parametrize("foreach", [None, False], ids=["default", "single"])
def test_complex_parameters(foreach: bool | None) -> None:
    hyperparams = {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1}
    assert_matches_torch(hg.RMSprop, torch.optim.RMSprop, hyperparams, complex_params=True,
                         ours_kwargs={"foreach": foreach})  # fmt: skip


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
    for _desc, params, kwargs in common_error_cases():
        assert_same_error(ours, theirs, kwargs, params=params)
    for _desc, kwargs, error_type, fragment in torch_error_inputs("RMSprop"):
        kind, raised, message = assert_same_error(ours, theirs, kwargs)
        assert (kind, raised) == ("raise", error_type)
        assert fragment in message
    for _desc, kwargs in ERRORS:
        kind, _raised, _message = assert_same_error(ours, theirs, kwargs)
        assert kind == "raise"
    sparse = torch.zeros(3)
    sparse.grad = torch.ones(3).to_sparse()
    kind, raised, _ = assert_same_error(ours, theirs, {}, params=lambda: [sparse], at_step=True)
    assert (kind, raised) == ("raise", RuntimeError)
    kind, raised, _ = assert_same_error(ours, theirs, {"fused": True})
    assert (kind, raised) == ("raise", TypeError)


def test_defaults_match_torch() -> None:
    ours, theirs = hg.RMSprop([torch.zeros(1)]), torch.optim.RMSprop([torch.zeros(1)])
    assert ours.defaults == theirs.defaults


@pytest.mark.parametrize("hyperparams", torch_inputs_params("RMSprop", EXTRA))
def test_large_tensor_path_matches_torch(
    hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tensors above the size threshold go tensor-at-a-time with scratch buffers (here the
    two larger shapes), the rest through the multi-tensor body: both must match torch."""
    monkeypatch.setattr(common, "LARGE_TENSOR_ELEMENTS", 10)
    assert_matches_torch(hg.RMSprop, torch.optim.RMSprop, hyperparams, grad_none_every=6)
