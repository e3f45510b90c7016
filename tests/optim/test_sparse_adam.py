"""handgrad.optim.SparseAdam against torch.optim.SparseAdam.

The shared harness feeds dense gradients, which SparseAdam refuses; here the same non-convex
objective (harness.Objective) is sampled on a few random rows per step, with repeated rows,
and handed over as sparse COO gradients (hybrid ones for the 3-d parameter).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor

from handgrad.optim import SparseAdam
from tests.optim._cases import COMMON_ERROR_CASES
from tests.optim.harness import (
    TOLERANCES,
    Objective,
    assert_same_error,
    make_params,
    torch_inputs_params,
)

# (shape, sparse dims): a vector, an embedding table, a table of 2x3 blocks, a fully sparse matrix.
LAYOUTS = (((8,), 1), ((10, 4), 1), ((6, 2, 3), 1), ((5, 5), 2))
SHAPES = [shape for shape, _ in LAYOUTS]
EXTRA = [
    ("betas, eps", {"betas": (0.5, 0.9), "eps": 1e-4, "lr": 0.05}),
    ("maximize, tensor lr", {"maximize": True, "lr": torch.tensor(0.02)}),
    ("beta1 zero", {"betas": (0.0, 0.99), "lr": 0.01}),
]


def _sparse_grads(params: list[Tensor], objective: Objective, step: int) -> list[Tensor]:
    """The objective's gradient on a few rows (sparse dims), some rows listed twice."""
    generator = torch.Generator().manual_seed(1000 + step)
    dense = objective.gradients(params)
    grads = []
    for (shape, sparse_dims), g in zip(LAYOUTS, dense, strict=True):
        picks = [torch.randint(0, shape[d], (3,), generator=generator) for d in range(sparse_dims)]
        indices = torch.stack(picks)
        # a repeated entry; rows drawn on the CPU (the same on every device), then moved
        indices = torch.cat([indices, indices[:, :1]], dim=1).to(g.device)
        values = g[tuple(indices)] * 0.5  # summed with the repeat: 1.5 g or g per entry
        grads.append(torch.sparse_coo_tensor(indices, values, shape, check_invariants=True))
    return grads


def _build(cls: Any, params: list[Tensor], hyperparams: dict[str, Any]) -> Any:
    """Two groups: the second half at half the learning rate."""
    kwargs = copy.deepcopy(hyperparams)
    lr = kwargs.get("lr", 1e-3)
    second = {"lr": lr.clone() * 0.5 if isinstance(lr, Tensor) else lr * 0.5}
    return cls([{"params": params[:2]}, {"params": params[2:], **second}], **kwargs)


def _run_side_by_side(
    hyperparams: dict[str, Any], dtype: torch.dtype, device: torch.device, steps: int = 50
) -> None:
    ours_params = make_params(SHAPES, dtype, 0, device)
    theirs_params = make_params(SHAPES, dtype, 0, device)
    objective = Objective(SHAPES, dtype, 0, device)
    ours = _build(SparseAdam, ours_params, hyperparams)
    theirs = _build(torch.optim.SparseAdam, theirs_params, hyperparams)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, 7, 0.7) for o in (ours, theirs)]
    rtol, atol = TOLERANCES[dtype]
    for step in range(1, steps + 1):
        for ps in (ours_params, theirs_params):
            for p, g in zip(ps, _sparse_grads(ps, objective, step), strict=True):
                p.grad = g
        ours_params[1].grad = None if step % 5 == 1 else ours_params[1].grad  # skipped rows
        theirs_params[1].grad = None if step % 5 == 1 else theirs_params[1].grad
        ours.step()
        theirs.step()
        for index, (p, q) in enumerate(zip(ours_params, theirs_params, strict=True)):
            torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=f"step {step} param {index}")
        for scheduler in schedulers:
            scheduler.step()
    for p, q in zip(ours_params, theirs_params, strict=True):
        mine, reference = ours.state[p], theirs.state[q]
        assert set(mine) == set(reference) == {"step", "exp_avg", "exp_avg_sq"}
        assert mine["step"] == reference["step"]
        assert isinstance(mine["step"], int)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(mine[key], reference[key], rtol=rtol, atol=atol)


@pytest.mark.parametrize("hyperparams", torch_inputs_params("SparseAdam", EXTRA))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_matches_torch(
    hyperparams: dict[str, Any], dtype: torch.dtype, device: torch.device
) -> None:
    _run_side_by_side(hyperparams, dtype, device)


def test_untouched_rows_do_not_move() -> None:
    table = torch.ones(4, 2, dtype=torch.float64)
    opt = SparseAdam([table], lr=0.1)
    table.grad = torch.sparse_coo_tensor(
        torch.tensor([[2]]),
        torch.tensor([[1.0, -1.0]], dtype=torch.float64),
        (4, 2),
        check_invariants=True,
    )
    opt.step()
    # Step 1: m = 0.1 g, v = 0.001 g², so θ moves by lr·sign(g) (up to ε).
    expected = torch.ones(4, 2, dtype=torch.float64)
    expected[2] = torch.tensor([0.9, 1.1], dtype=torch.float64)
    torch.testing.assert_close(table, expected, rtol=0, atol=1e-6)
    assert opt.state[table]["exp_avg"][[0, 1, 3]].abs().sum() == 0


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover(direction: str, device: torch.device) -> None:
    hyperparams = {"lr": 0.05, "betas": (0.8, 0.99)}
    objective = Objective(SHAPES, torch.float64, 0, device=device)
    reference_params = make_params(SHAPES, torch.float64, 0, device=device)
    reference = _build(torch.optim.SparseAdam, reference_params, hyperparams)
    params = make_params(SHAPES, torch.float64, 0, device=device)
    first, second = (
        (torch.optim.SparseAdam, SparseAdam)
        if direction == "torch_to_ours"
        else (SparseAdam, torch.optim.SparseAdam)
    )
    current = _build(first, params, hyperparams)
    for step in range(1, 21):
        if step == 11:
            receiver = _build(second, params, hyperparams)
            receiver.load_state_dict(copy.deepcopy(current.state_dict()))
            current = receiver
        for opt, ps in ((reference, reference_params), (current, params)):
            for p, g in zip(ps, _sparse_grads(ps, objective, step), strict=True):
                p.grad = g
            opt.step()
        for p, q in zip(params, reference_params, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


@COMMON_ERROR_CASES
def test_common_bad_inputs(description: str, params: Any, kwargs: dict[str, Any]) -> None:
    kind, _, _ = assert_same_error(SparseAdam, torch.optim.SparseAdam, kwargs, params=params)
    assert kind != "ok", description


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.0},
        {"lr": -1e-3},
        {"eps": 0.0},
        {"betas": (1.0, 0.0)},
        {"betas": (0.9, 1.0)},
        {"betas": (-0.1, 0.9)},
    ],
    ids=str,
)
def test_bad_hyperparameters(kwargs: dict[str, Any]) -> None:
    kind, error, message = assert_same_error(SparseAdam, torch.optim.SparseAdam, kwargs)
    assert (kind, error) == ("raise", ValueError)
    assert message


@pytest.mark.parametrize(
    "make_params_",
    [
        lambda: [torch.zeros(3, layout=torch.sparse_coo)],
        lambda: [{"params": [torch.zeros(3, layout=torch.sparse_coo)]}],
        lambda: [torch.rand(2, 3, dtype=torch.complex64)],
    ],
    ids=["sparse param", "sparse param in group", "complex param"],
)
def test_bad_params_like_torch(make_params_: Any) -> None:
    kind, error, _ = assert_same_error(SparseAdam, torch.optim.SparseAdam, {}, params=make_params_)
    assert (kind, error) == ("raise", ValueError)


def test_dense_gradients_are_refused_at_step_like_torch() -> None:
    kind, error, message = assert_same_error(SparseAdam, torch.optim.SparseAdam, {}, at_step=True)
    assert (kind, error) == ("raise", RuntimeError)
    assert "dense gradients" in message


def test_converges_on_a_sparse_regression(device: torch.device) -> None:
    # An embedding table fitted row by row: loss ½‖E[i] − T[i]‖² on sampled rows i.
    generator = torch.Generator().manual_seed(4)
    target = torch.randn(12, 3, generator=generator, dtype=torch.float64).to(device)
    table = torch.zeros(12, 3, dtype=torch.float64, device=device)
    opt = SparseAdam([table], lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=400, gamma=0.2)
    for _ in range(1600):
        rows = torch.randint(0, 12, (4,), generator=generator).to(device)
        values = table[rows] - target[rows]
        table.grad = torch.sparse_coo_tensor(
            rows.unsqueeze(0), values, (12, 3), check_invariants=True
        )
        opt.step()
        scheduler.step()
    torch.testing.assert_close(table, target, atol=1e-3, rtol=0)
