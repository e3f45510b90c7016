"""handgrad.optim.Adadelta against torch.optim.Adadelta."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from handgrad.optim import Adadelta
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
    ("tensor lr", {"lr": torch.tensor(0.5)}),
    ("eps, rho", {"eps": 1e-3, "rho": 0.5, "maximize": True}),
]


@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adadelta", EXTRA))
@DTYPES
@pytest.mark.parametrize("foreach", FOREACH)
def test_matches_torch(
    hyperparams: dict[str, Any], dtype: torch.dtype, foreach: Any, device: torch.device
) -> None:
    # Each body against torch's body of the same kind; our default (multi-tensor) against
    # torch's default (single-tensor on CPU).
    assert_matches_torch(
        Adadelta,
        torch.optim.Adadelta,
        hyperparams,
        dtype=dtype,
        ours_kwargs={"foreach": foreach},
        torch_kwargs={"foreach": foreach},
        grad_none_every=5,
        device=device,
    )


@pytest.mark.parametrize("foreach", FOREACH)
def test_complex_params_match_torch(foreach: Any, device: torch.device) -> None:
    assert_matches_torch(
        Adadelta,
        torch.optim.Adadelta,
        {"weight_decay": 0.1},
        complex_params=True,
        ours_kwargs={"foreach": foreach},
        torch_kwargs={"foreach": foreach},
        device=device,
    )


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover(direction: str, device: torch.device) -> None:
    assert_state_dict_handover(
        Adadelta,
        torch.optim.Adadelta,
        {"lr": 0.5, "weight_decay": 0.1},
        direction=direction,
        device=device,
    )


@COMMON_ERROR_CASES
def test_common_bad_inputs(description: str, params: Any, kwargs: dict[str, Any]) -> None:
    assert_common_bad_input_refused(Adadelta, torch.optim.Adadelta, description, params, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": -0.1}, {"rho": 1.1}, {"rho": -0.1}, {"eps": -1e-3}, {"weight_decay": -1.0}],
    ids=str,
)
def test_bad_hyperparameters(kwargs: dict[str, Any]) -> None:
    assert_bad_hyperparameter_refused(Adadelta, torch.optim.Adadelta, kwargs)


def test_sparse_gradients_are_refused_like_torch() -> None:
    assert_sparse_gradients_refused(Adadelta, torch.optim.Adadelta)


def test_differentiable_flag_runs_the_single_tensor_body(device: torch.device) -> None:
    assert_differentiable_matches_torch(Adadelta, torch.optim.Adadelta, device=device)


def test_capturable_on_cpu_is_refused_at_step_like_torch() -> None:
    assert_capturable_on_cpu_refused(Adadelta, torch.optim.Adadelta)


def test_converges_on_least_squares(device: torch.device) -> None:
    w, _opt, best = least_squares_run(
        lambda params: Adadelta(params, lr=1.0), steps=3000, device=device
    )
    torch.testing.assert_close(w, best, atol=1e-4, rtol=0)
