"""What one optimizer's own rule does, checked by hand or against torch in its own way.

The shared tests of every optimizer are in test_against_torch.py (settings in rows.py);
these are the ones that belong to one rule: a first step worked out by hand, a state
tensor's layout, a path of its own (sparse gradients, fused kernels), a documented
difference from torch.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import handgrad.optim as hg
from tests.optim._cases import assert_sparse_gradients_refused, least_squares_run
from tests.optim.harness import assert_matches_torch, assert_same_error, torch_inputs_params

Adagrad, ASGD, Adafactor = hg.Adagrad, hg.ASGD, hg.Adafactor
CLASSES = [pytest.param(hg.Adam, torch.optim.Adam, id="Adam"),
           pytest.param(hg.AdamW, torch.optim.AdamW, id="AdamW")]  # fmt: skip


# --- Adam and AdamW ------------------------------------------------------------------------


def test_single_and_multi_tensor_bodies_agree_bitwise(device: torch.device) -> None:
    final = []
    for foreach in (False, True):
        ours, _ = assert_matches_torch(hg.Adam, torch.optim.Adam, {"amsgrad": True, "lr": 0.03},
                                       ours_kwargs={"foreach": foreach}, steps=20,
                                       device=device)  # fmt: skip
        final.append(ours)
    for single, multi in zip(*final, strict=True):
        assert torch.equal(single, multi)


def test_adamw_is_adam_with_decoupled_decay() -> None:
    opt = hg.AdamW([torch.zeros(2)])
    assert opt.defaults["weight_decay"] == 1e-2
    assert opt.defaults["decoupled_weight_decay"] is True
    assert isinstance(opt, hg.Adam)
    assert not isinstance(opt, torch.optim.Adam)


def _complex_param() -> list[torch.Tensor]:
    p = torch.zeros(3, dtype=torch.complex64)
    p.grad = torch.ones(3, dtype=torch.complex64)
    return [p]


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_step_errors_match_torch(ours: Any, theirs: Any) -> None:
    assert_sparse_gradients_refused(ours, theirs)
    kind, raised, _ = assert_same_error(
        ours, theirs, {"fused": True}, params=_complex_param, at_step=True
    )
    assert (kind, raised) == ("raise", RuntimeError)


# --- SGD -----------------------------------------------------------------------------------


def test_sgd_sparse_gradients_match_torch(device: torch.device) -> None:
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


# --- RMSprop -------------------------------------------------------------------------------


def test_rmsprop_first_step_by_hand() -> None:
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


# --- Adamax --------------------------------------------------------------------------------


def test_eps_sits_inside_the_max() -> None:
    p = torch.tensor([1.0, 1.0], dtype=torch.float64)
    p.grad = torch.tensor([0.0, 3.0], dtype=torch.float64)
    opt = hg.Adamax([p], lr=0.1, eps=0.5)
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_inf"], torch.tensor([0.5, 3.5], dtype=p.dtype))
    # zero gradient: m = 0, no step and no division by zero
    assert p[0].item() == 1.0


# --- NAdam ---------------------------------------------------------------------------------


def test_mu_product_is_a_scalar_dtype_tensor() -> None:
    p = torch.ones(2, dtype=torch.float64)
    p.grad = torch.ones(2, dtype=torch.float64)
    opt = hg.NAdam([p])
    opt.step()
    opt.step()
    mu_product = opt.state[p]["mu_product"]
    assert mu_product.dtype == torch.float32
    assert mu_product.shape == ()
    mu1 = 0.9 * (1 - 0.5 * 0.96**0.004)
    mu2 = 0.9 * (1 - 0.5 * 0.96**0.008)
    assert mu_product.item() == pytest.approx(mu1 * mu2, rel=1e-6)


# --- RAdam ---------------------------------------------------------------------------------


def test_warm_up_steps_are_plain_momentum() -> None:
    p = torch.tensor([0.0], dtype=torch.float64)
    p.grad = torch.tensor([2.0], dtype=torch.float64)
    opt = hg.RAdam([p], lr=0.1)
    opt.step()  # rho_1 < 5: theta -= lr * m / (1 - beta1) = lr * g
    torch.testing.assert_close(p, torch.tensor([-0.2], dtype=torch.float64), rtol=1e-15, atol=0)


# --- Adagrad -------------------------------------------------------------------------------


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
def test_adagrad_sparse_gradients_match_torch(device: torch.device) -> None:
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


def test_fused_refuses_complex_like_torch() -> None:
    def params() -> list[torch.Tensor]:
        p = torch.zeros(2, dtype=torch.complex64)
        p.grad = torch.ones_like(p)
        return [p]

    kind, error, _ = assert_same_error(
        Adagrad, torch.optim.Adagrad, {"fused": True}, params=params, at_step=True
    )
    assert (kind, error) == ("raise", RuntimeError)


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


# --- ASGD ----------------------------------------------------------------------------------


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


def test_asgd_average_converges_on_least_squares(device: torch.device) -> None:
    w, opt, best = least_squares_run(
        lambda params: ASGD(params, lr=0.5, t0=100), steps=2000, device=device
    )
    torch.testing.assert_close(opt.state[w]["ax"], best, atol=1e-3, rtol=0)


# --- Adafactor -----------------------------------------------------------------------------


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


def test_adafactor_converges_on_least_squares(device: torch.device) -> None:
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
