"""handgrad.optim.ASGD against torch.optim.ASGD."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from handgrad.optim import ASGD
from tests.optim._cases import (
    COMMON_ERROR_CASES,
    DTYPES,
    FOREACH,
    assert_bad_hyperparameter_refused,
    assert_capturable_on_cpu_refused,
    assert_common_bad_input_refused,
    assert_differentiable_matches_torch,
    assert_sparse_gradients_refused,
    least_squares_run,
)
from tests.optim.harness import (
    assert_matches_torch,
    assert_state_dict_handover,
    torch_inputs_params,
)

EXTRA = [
    ("tensor lr", {"lr": torch.tensor(0.001)}),
    ("early averaging", {"t0": 5, "lambd": 0.01, "alpha": 0.5, "weight_decay": 0.05}),
]


@pytest.mark.parametrize("hyperparams", torch_inputs_params("ASGD", EXTRA))
@DTYPES
@pytest.mark.parametrize("foreach", FOREACH)
def test_matches_torch(
    hyperparams: dict[str, Any], dtype: torch.dtype, foreach: Any, device: torch.device
) -> None:
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
        device=device,
    )


@pytest.mark.parametrize("hyperparams", torch_inputs_params("ASGD"))
def test_torch_multi_tensor_eta(hyperparams: dict[str, Any], device: torch.device) -> None:
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
        device=device,
    )


@pytest.mark.parametrize("foreach", FOREACH)
def test_complex_params_match_torch(foreach: Any, device: torch.device) -> None:
    assert_matches_torch(
        ASGD,
        torch.optim.ASGD,
        {"t0": 10, "weight_decay": 0.1},
        complex_params=True,
        ours_kwargs={"foreach": foreach},
        torch_kwargs={"foreach": False},
        device=device,
    )


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover(direction: str, device: torch.device) -> None:
    assert_state_dict_handover(
        ASGD, torch.optim.ASGD, {"t0": 5, "lambd": 0.01}, direction=direction, device=device
    )


@COMMON_ERROR_CASES
def test_common_bad_inputs(description: str, params: Any, kwargs: dict[str, Any]) -> None:
    assert_common_bad_input_refused(ASGD, torch.optim.ASGD, description, params, kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": -0.1}, {"weight_decay": -0.5}], ids=str)
def test_bad_hyperparameters(kwargs: dict[str, Any]) -> None:
    assert_bad_hyperparameter_refused(ASGD, torch.optim.ASGD, kwargs)


def test_sparse_gradients_are_refused_like_torch() -> None:
    assert_sparse_gradients_refused(ASGD, torch.optim.ASGD)


def test_differentiable_flag_runs_the_single_tensor_body(device: torch.device) -> None:
    assert_differentiable_matches_torch(ASGD, torch.optim.ASGD, device=device)


def test_capturable_on_cpu_is_refused_at_step_like_torch() -> None:
    assert_capturable_on_cpu_refused(ASGD, torch.optim.ASGD)


def test_converges_on_least_squares(device: torch.device) -> None:
    w, opt, best = least_squares_run(
        lambda params: ASGD(params, lr=0.5, t0=100), steps=2000, device=device
    )
    torch.testing.assert_close(opt.state[w]["ax"], best, atol=1e-3, rtol=0)
