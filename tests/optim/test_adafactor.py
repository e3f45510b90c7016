"""handgrad.optim.Adafactor against torch.optim.Adafactor."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from handgrad.optim import Adafactor
from tests.optim._cases import (
    COMMON_ERROR_CASES,
    DTYPES,
    FOREACH,
    assert_bad_hyperparameter_refused,
    assert_common_bad_input_refused,
)
from tests.optim.harness import (
    assert_matches_torch,
    assert_same_error,
    assert_state_dict_handover,
    torch_inputs_params,
)

EXTRA = [
    ("tensor lr, weight_decay", {"lr": torch.tensor(0.001), "weight_decay": 0.1}),
    ("explicit eps1, large eps2", {"eps": (1e-20, 1e-2), "d": 2.0}),
    ("beta2_decay 0 (plain average)", {"beta2_decay": 0.0, "lr": 0.05}),
]


@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adafactor", EXTRA))
@DTYPES
@pytest.mark.parametrize("foreach", FOREACH)
def test_matches_torch(
    hyperparams: dict[str, Any], dtype: torch.dtype, foreach: Any, device: torch.device
) -> None:
    # Shapes 0-d, vector (unfactored) and matrix, 3-d (factored over the last two dims).
    assert_matches_torch(
        Adafactor,
        torch.optim.Adafactor,
        hyperparams,
        dtype=dtype,
        ours_kwargs={"foreach": foreach},
        torch_kwargs={"foreach": foreach},
        grad_none_every=5,
        device=device,
    )


def test_factored_state_shapes_match_torch(device: torch.device) -> None:
    p, q = torch.ones(2, 3, 4, device=device), torch.ones(5, device=device)
    p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
    opt = Adafactor([p, q])
    opt.step()
    assert opt.state[p]["row_var"].device == opt.state[q]["variance"].device == p.device
    assert set(opt.state[p]) == {"step", "row_var", "col_var"}
    assert opt.state[p]["row_var"].shape == (2, 3, 1)
    assert opt.state[p]["col_var"].shape == (2, 1, 4)
    assert set(opt.state[q]) == {"step", "variance"}


def test_factored_estimate_is_exact_for_a_rank_one_square() -> None:
    # After one step (w = 1) R = row means of g², C = column means; for g² = a bᵀ the estimate
    # R C / mean(R) reproduces g² exactly, so the update is g/|g| = sign(g) (then clipped).
    a = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    b = torch.tensor([1.0, 0.25], dtype=torch.float64)
    grad = (a.outer(b)).sqrt()
    p = torch.zeros(3, 2, dtype=torch.float64)
    p.grad = grad
    opt = Adafactor([p], lr=0.01, eps=(1e-30, 1e-3))
    opt.step()
    # α = max(ε₂, RMS(0)) · min(lr, 1) = 1e-3 · 0.01; RMS(U) = 1 so no clipping.
    torch.testing.assert_close(p, torch.full((3, 2), -1e-5, dtype=torch.float64))


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover(direction: str, device: torch.device) -> None:
    assert_state_dict_handover(
        Adafactor,
        torch.optim.Adafactor,
        {"lr": 0.05, "weight_decay": 0.1},
        direction=direction,
        device=device,
    )


@COMMON_ERROR_CASES
def test_common_bad_inputs(description: str, params: Any, kwargs: dict[str, Any]) -> None:
    assert_common_bad_input_refused(Adafactor, torch.optim.Adafactor, description, params, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": -0.1},
        {"eps": (-1e-30, 1e-3)},
        {"eps": (None, -1.0)},
        {"d": 0.0},
        {"beta2_decay": 0.8},
        {"weight_decay": -0.1},
    ],
    ids=str,
)
def test_bad_hyperparameters(kwargs: dict[str, Any]) -> None:
    assert_bad_hyperparameter_refused(Adafactor, torch.optim.Adafactor, kwargs)


@pytest.mark.parametrize("sparse", [False, True], ids=["complex", "sparse"])
def test_complex_and_sparse_are_refused_at_step_like_torch(sparse: bool) -> None:
    def params() -> list[torch.Tensor]:
        if sparse:
            p = torch.zeros(3)
            p.grad = torch.zeros(3).to_sparse()
        else:
            p = torch.rand(2, 3, dtype=torch.complex64)
            p.grad = torch.rand_like(p)
        return [p]

    kind, error, message = assert_same_error(
        Adafactor, torch.optim.Adafactor, {}, params=params, at_step=True
    )
    assert (kind, error) == ("raise", RuntimeError)
    assert "Adafactor does not support" in message


def test_converges_on_least_squares(device: torch.device) -> None:
    # A 2-D weight (factored second moment): min ½‖XW − Y‖²/n; the answer is lstsq's.
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    w_true = torch.tensor([[1.5, -1.0], [-2.0, 0.5], [0.5, 2.0]], dtype=torch.float64)
    y = x @ w_true + 0.1 * torch.randn(64, 2, generator=generator, dtype=torch.float64)
    best = torch.linalg.lstsq(x, y).solution.to(device)  # on the CPU, then moved
    x, y = x.to(device), y.to(device)
    w = torch.zeros(3, 2, dtype=torch.float64, device=device)
    opt = Adafactor([w], lr=0.1, eps=(None, 0.05))
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=0.3)
    for _ in range(400):
        w.grad = x.T @ (x @ w - y) / len(y)
        opt.step()
        scheduler.step()
    torch.testing.assert_close(w, best, atol=1e-6, rtol=0)
