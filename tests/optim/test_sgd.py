"""SGD against torch.optim.SGD: every combination torch's suite runs, and more."""

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
    ("nesterov maximize", {"lr": 0.02, "momentum": 0.5, "nesterov": True, "maximize": True}),
    ("nesterov no decay", {"lr": 0.02, "momentum": 0.8, "nesterov": True}),
    ("all options", {"lr": 0.05, "momentum": 0.7, "dampening": 0.3, "weight_decay": 0.2,
                     "maximize": True}),
    ("tensor lr with momentum", {"lr": torch.tensor(0.01), "momentum": 0.9}),
    ("tensor weight_decay", {"lr": 0.01, "weight_decay": torch.tensor(0.1)}),
    ("fused momentum", {"lr": 0.01, "momentum": 0.9, "fused": True}),
]  # fmt: skip


@DEFAULT_OR_SINGLE
@pytest.mark.parametrize("hyperparams", torch_inputs_params("SGD", EXTRA))
def test_matches_torch(
    hyperparams: dict[str, Any], foreach: bool | None, dtype: torch.dtype, device: torch.device
) -> None:
    # torch's fused SGD fails when a parameter misses its gradient on the first step
    # (it allocates momentum buffers for gradients only): no gradient-less steps there.
    assert_matches_torch(
        hg.SGD, torch.optim.SGD, hyperparams, dtype=dtype, ours_kwargs={"foreach": foreach},
        grad_none_every=None if hyperparams.get("fused") else 6, device=device,
    )  # fmt: skip


@DEFAULT_OR_SINGLE
def test_complex_parameters(foreach: bool | None, device: torch.device) -> None:
    hyperparams = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}
    assert_matches_torch(hg.SGD, torch.optim.SGD, hyperparams, complex_params=True,
                         ours_kwargs={"foreach": foreach}, device=device)  # fmt: skip


def test_sparse_gradients_match_torch(device: torch.device) -> None:
    params = [torch.linspace(-1, 1, 6, device=device), torch.linspace(0, 2, 6, device=device)]
    theirs_params = [p.clone() for p in params]
    ours = hg.SGD(params, lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(theirs_params, lr=0.1, momentum=0.9)
    for step in range(5):
        for p, q in zip(params, theirs_params, strict=True):
            grad = torch.zeros(6, device=device)
            grad[step % 6] = p[step % 6] + 1.0
            p.grad = grad.to_sparse()
            q.grad = grad.clone().to_sparse()
        ours.step()
        theirs.step()
        for p, q in zip(params, theirs_params, strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not torch.equal(params[0], torch.linspace(-1, 1, 6, device=device))


def test_momentum_buffer_starts_as_the_gradient_and_keeps_lr_out() -> None:
    p = torch.tensor([1.0, -2.0])
    opt = hg.SGD([p], lr=0.5, momentum=0.9, dampening=0.5)
    p.grad = torch.tensor([0.2, 0.4])
    opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.tensor([0.2, 0.4]))
    torch.testing.assert_close(p, torch.tensor([0.9, -2.2]))
    opt.step()  # b = 0.9 b + 0.5 g, independent of lr
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], torch.tensor([0.28, 0.56]))


def test_no_momentum_means_no_state() -> None:
    p = torch.ones(2)
    p.grad = torch.ones(2)
    opt = hg.SGD([p], lr=0.1)
    opt.step()
    assert len(opt.state[p]) == 0
    torch.testing.assert_close(p, torch.full((2,), 0.9))


ERRORS = [
    ("negative lr", {"lr": -0.1}),
    ("negative weight_decay", {"weight_decay": -0.1}),
    ("nesterov without momentum", {"nesterov": True}),
    ("nesterov with dampening", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}),
    ("fused and foreach", {"fused": True, "foreach": True}),
    ("fused and differentiable", {"fused": True, "differentiable": True}),
]


def test_rejects_what_torch_rejects() -> None:
    bad = [kwargs for _, kwargs in ERRORS]
    assert_rejects_what_torch_rejects(hg.SGD, torch.optim.SGD, "SGD", bad, refuses_sparse=False)


def test_defaults_match_torch() -> None:
    assert_defaults_match(hg.SGD, torch.optim.SGD)


@pytest.mark.parametrize("hyperparams", torch_inputs_params("SGD", EXTRA))
def test_large_tensor_path_matches_torch(
    hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    # No gradient-less steps for fused (see test_matches_torch).
    grad_none_every = None if hyperparams.get("fused") else 6
    assert_large_tensor_path_matches(
        hg.SGD,
        torch.optim.SGD,
        hyperparams,
        monkeypatch,
        grad_none_every=grad_none_every,
        device=device,
    )
