"""handgrad.optim.ASGD against torch.optim.ASGD."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from handgrad.optim import ASGD
from tests.optim.harness import (
    assert_matches_torch,
    assert_same_error,
    assert_state_dict_handover,
    common_error_cases,
    torch_inputs_params,
)

EXTRA = [
    ("tensor lr", {"lr": torch.tensor(0.001)}),
    ("early averaging", {"t0": 5, "lambd": 0.01, "alpha": 0.5, "weight_decay": 0.05}),
]
FOREACH = [
    pytest.param(False, id="single"),
    pytest.param(True, id="multi"),
    pytest.param(None, id="default"),
]


@pytest.mark.parametrize("hyperparams", torch_inputs_params("ASGD", EXTRA))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("foreach", FOREACH)
def test_matches_torch(hyperparams: dict[str, Any], dtype: torch.dtype, foreach: Any) -> None:
    # Both our bodies against torch's single-tensor body (its CPU default): torch's
    # multi-tensor body computes η in the float32 step dtype (see test_torch_multi_tensor_eta).
    assert_matches_torch(
        ASGD,
        torch.optim.ASGD,
        hyperparams,
        dtype=dtype,
        ours_kwargs={"foreach": foreach},
        torch_kwargs={"foreach": False},
        grad_none_every=5,
    )


@pytest.mark.parametrize("hyperparams", torch_inputs_params("ASGD"))
def test_torch_multi_tensor_eta(hyperparams: dict[str, Any]) -> None:
    # torch's multi-tensor body rounds η = γ/(1 + λγt)^α through float32 arithmetic, 1 float32
    # ulp (6e-8 relative) from the double-precision η of its single-tensor body and ours.
    assert_matches_torch(
        ASGD,
        torch.optim.ASGD,
        hyperparams,
        ours_kwargs={"foreach": True},
        torch_kwargs={"foreach": True},
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("foreach", FOREACH)
def test_complex_params_match_torch(foreach: Any) -> None:
    assert_matches_torch(
        ASGD,
        torch.optim.ASGD,
        {"t0": 10, "weight_decay": 0.1},
        complex_params=True,
        ours_kwargs={"foreach": foreach},
        torch_kwargs={"foreach": False},
    )


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover(direction: str) -> None:
    assert_state_dict_handover(
        ASGD, torch.optim.ASGD, {"t0": 5, "lambd": 0.01}, direction=direction
    )


@pytest.mark.parametrize(
    ("description", "params", "kwargs"),
    [pytest.param(*case, id=case[0].replace(" ", "_")) for case in common_error_cases()],
)
def test_common_bad_inputs(description: str, params: Any, kwargs: dict[str, Any]) -> None:
    kind, _, _ = assert_same_error(ASGD, torch.optim.ASGD, kwargs, params=params)
    assert kind != "ok", description


@pytest.mark.parametrize("kwargs", [{"lr": -0.1}, {"weight_decay": -0.5}], ids=str)
def test_bad_hyperparameters(kwargs: dict[str, Any]) -> None:
    kind, error, message = assert_same_error(ASGD, torch.optim.ASGD, kwargs)
    assert (kind, error) == ("raise", ValueError)
    assert message


def test_sparse_gradients_are_refused_like_torch() -> None:
    def params() -> list[torch.Tensor]:
        p = torch.zeros(3)
        p.grad = torch.zeros(3).to_sparse()
        return [p]

    kind, error, _ = assert_same_error(ASGD, torch.optim.ASGD, {}, params=params, at_step=True)
    assert (kind, error) == ("raise", RuntimeError)


def test_differentiable_flag_runs_the_single_tensor_body() -> None:
    # Accepted for compatibility: torch's differentiable body on tensors that do not require
    # grad is its single-tensor body, and so is ours (no autograd is recorded either way).
    assert_matches_torch(
        ASGD, torch.optim.ASGD, {"differentiable": True}, steps=10, scheduler=False
    )


def test_capturable_on_cpu_is_refused_at_step_like_torch() -> None:
    kind, error, _ = assert_same_error(
        ASGD, torch.optim.ASGD, {"capturable": True}, at_step=True, same_message=False
    )
    assert (kind, error) == ("raise", AssertionError)


def test_converges_on_least_squares() -> None:
    # Linear regression: loss ½‖Xw − y‖²/n, gradient Xᵀ(Xw − y)/n; the answer is lstsq's.
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    y = y + 0.1 * torch.randn(64, generator=generator, dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64)
    opt = ASGD([w], lr=0.5, t0=100)
    for _ in range(2000):
        w.grad = x.T @ (x @ w - y) / len(y)
        opt.step()
    best = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(opt.state[w]["ax"], best, atol=1e-3, rtol=0)
