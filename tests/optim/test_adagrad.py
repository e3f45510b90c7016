"""handgrad.optim.Adagrad against torch.optim.Adagrad."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from handgrad.optim import Adagrad
from tests.optim._cases import (
    COMMON_ERROR_CASES,
    DTYPES,
    FOREACH,
    assert_common_bad_input_refused,
    assert_differentiable_matches_torch,
    least_squares_run,
)
from tests.optim.harness import (
    assert_matches_torch,
    assert_same_error,
    assert_state_dict_handover,
    torch_inputs_params,
)

EXTRA = [
    ("lr_decay alone", {"lr": 0.05, "lr_decay": 0.01}),
    (
        "maximize, lr_decay, accumulator",
        {"maximize": True, "lr_decay": 0.1, "initial_accumulator_value": 0.5},
    ),
    ("eps", {"eps": 1e-3, "weight_decay": 0.2}),
]


@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adagrad", EXTRA))
@DTYPES
@pytest.mark.parametrize("foreach", FOREACH)
def test_matches_torch(
    hyperparams: dict[str, Any], dtype: torch.dtype, foreach: Any, device: torch.device
) -> None:
    # Our default (multi-tensor) is compared with torch's default (single-tensor on CPU).
    assert_matches_torch(
        Adagrad,
        torch.optim.Adagrad,
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
        Adagrad,
        torch.optim.Adagrad,
        {"weight_decay": 0.1, "lr_decay": 0.01},
        complex_params=True,
        ours_kwargs={"foreach": foreach},
        torch_kwargs={"foreach": foreach},
        device=device,
    )


def test_fused_matches_torch_fused(device: torch.device) -> None:
    assert_matches_torch(
        Adagrad,
        torch.optim.Adagrad,
        {"lr": 0.05, "weight_decay": 0.1, "fused": True},
        dtype=torch.float32,
        device=device,
    )


def test_state_is_created_eagerly_like_torch() -> None:
    p, q = torch.ones(3), torch.ones(3)
    ours = Adagrad([p], initial_accumulator_value=0.25)
    theirs = torch.optim.Adagrad([q], initial_accumulator_value=0.25)
    assert set(ours.state[p]) == {"step", "sum"}
    assert ours.state[p]["step"].dtype == theirs.state[q]["step"].dtype
    torch.testing.assert_close(ours.state[p]["sum"], torch.full((3,), 0.25), rtol=0, atol=0)
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert mine["param_groups"] == reference["param_groups"]
    assert set(mine["state"][0]) == set(reference["state"][0])


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")
def test_sparse_gradients_match_torch(device: torch.device) -> None:
    p = torch.randn(6, 3, dtype=torch.float64).to(device)
    q = p.clone()
    ours, theirs = Adagrad([p], lr=0.1), torch.optim.Adagrad([q], lr=0.1)
    for step in range(20):
        # a repeated index on purpose
        rows = torch.tensor([[step % 6, (step * 5) % 6, step % 6]], device=device)
        values = torch.sin(torch.arange(9, dtype=torch.float64, device=device).reshape(3, 3) + step)
        grad = torch.sparse_coo_tensor(rows, values, (6, 3), check_invariants=True)
        p.grad, q.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
        torch.testing.assert_close(p, q, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours.state[p]["sum"], theirs.state[q]["sum"], rtol=1e-12, atol=0)


def test_sparse_gradients_refuse_weight_decay_like_torch() -> None:
    def params() -> list[torch.Tensor]:
        p = torch.zeros(3)
        p.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.tensor([1.0]), (3,))
        return [p]

    kind, error, _ = assert_same_error(
        Adagrad, torch.optim.Adagrad, {"weight_decay": 0.1}, params=params, at_step=True
    )
    assert (kind, error) == ("raise", RuntimeError)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover(direction: str, device: torch.device) -> None:
    assert_state_dict_handover(
        Adagrad,
        torch.optim.Adagrad,
        {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1},
        direction=direction,
        device=device,
    )


@COMMON_ERROR_CASES
def test_common_bad_inputs(description: str, params: Any, kwargs: dict[str, Any]) -> None:
    assert_common_bad_input_refused(Adagrad, torch.optim.Adagrad, description, params, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": -0.1},
        {"lr_decay": -0.5},
        {"weight_decay": -1.0},
        {"initial_accumulator_value": -0.1},
        {"eps": -1e-3},
        {"fused": True, "foreach": True},
        {"fused": True, "differentiable": True},
    ],
    ids=str,
)
def test_bad_hyperparameters(kwargs: dict[str, Any]) -> None:
    kind, error, message = assert_same_error(Adagrad, torch.optim.Adagrad, kwargs)
    assert kind == "raise"
    assert error in (ValueError, RuntimeError)
    assert message


def test_fused_refuses_complex_like_torch() -> None:
    def params() -> list[torch.Tensor]:
        p = torch.zeros(2, dtype=torch.complex64)
        p.grad = torch.ones_like(p)
        return [p]

    kind, error, _ = assert_same_error(
        Adagrad, torch.optim.Adagrad, {"fused": True}, params=params, at_step=True
    )
    assert (kind, error) == ("raise", RuntimeError)


def test_differentiable_flag_runs_the_single_tensor_body(device: torch.device) -> None:
    assert_differentiable_matches_torch(Adagrad, torch.optim.Adagrad, device=device)


def test_converges_on_least_squares(device: torch.device) -> None:
    w, _opt, best = least_squares_run(
        lambda params: Adagrad(params, lr=0.5), steps=1000, device=device
    )
    torch.testing.assert_close(w, best, atol=1e-6, rtol=0)


def test_sparse_gradients_on_views_into_one_buffer_step_as_owning_tensors() -> None:
    # torch 2.13's dense.add_(sparse) applies a view's storage offset twice; ours must update
    # exactly the elements an owning tensor would (flatten_parameters' layout).
    shapes = [(4, 3), (5, 3), (2, 3)]
    generator = torch.Generator().manual_seed(0)
    owning = [torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes]
    buffer = torch.cat([t.reshape(-1) for t in owning])
    views, offset = [], 0
    for t in owning:
        views.append(buffer[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    reference, flat = Adagrad(owning, lr=0.1), Adagrad(views, lr=0.1)
    for step in range(10):
        for p, q in zip(owning, views, strict=True):
            dense = torch.sin(torch.arange(p.numel(), dtype=torch.float64) + step).view(p.shape)
            dense[step % p.shape[0]] = 0  # an untouched row
            p.grad, q.grad = dense.to_sparse(1), dense.to_sparse(1)
        reference.step()
        flat.step()
        for p, q in zip(owning, views, strict=True):
            torch.testing.assert_close(q, p, rtol=1e-15, atol=0)
