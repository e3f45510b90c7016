"""handgrad.optim.Muon against torch.optim.Muon.

Tolerance: none. The Newton–Schulz iteration runs in bfloat16 (8 significant bits), where any
change in the order of operations moves results by ~4e-3 relative, far beyond the float32 or
float64 tolerances of the other optimizers; "close" would hide a different algorithm. We use
the same bfloat16 ``addmm`` steps as torch, so parameters and momentum buffers agree bit for
bit (rtol = atol = 0) in float64, float32 and bfloat16 parameters alike.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.optim._muon import _zeropower_via_newtonschulz as torch_newton_schulz

from handgrad.optim import Muon
from handgrad.optim.muon import newton_schulz
from tests.conftest import DEVICES
from tests.optim._cases import COMMON_ERROR_CASES
from tests.optim.harness import (
    assert_matches_torch,
    assert_same_error,
    assert_state_dict_handover,
    torch_inputs_params,
)

# Tall and wide (torch transposes the tall one); torch's own bfloat16 x @ x.T on a transposed view
# is slow on CPU, so the trajectories use two matrices.
MATRICES = ((4, 3), (3, 5))
EXTRA = [
    ("no nesterov", {"nesterov": False, "lr": 0.02}),
    ("match_rms_adamw", {"adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.0}),
    ("original, tensor lr", {"adjust_lr_fn": "original", "lr": torch.tensor(0.01)}),
    ("eps", {"eps": 1e-3, "momentum": 0.5}),
]


@pytest.mark.parametrize("hyperparams", torch_inputs_params("Muon", EXTRA))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_matches_torch_bit_for_bit(
    hyperparams: dict[str, Any], dtype: torch.dtype, device: torch.device
) -> None:
    assert_matches_torch(
        Muon,
        torch.optim.Muon,
        hyperparams,
        dtype=dtype,
        shapes=MATRICES,
        grad_none_every=5,
        rtol=0,
        atol=0,
        device=device,
    )


@pytest.mark.parametrize("nesterov", [True, False])
def test_bfloat16_params_match_torch(nesterov: bool, device: torch.device) -> None:
    # bfloat16 parameters: x.bfloat16() is then no copy, so the iteration's first in-place
    # division touches the direction itself (the momentum buffer without nesterov) as in torch.
    generator = torch.Generator().manual_seed(2)
    start = torch.randn(5, 3, generator=generator).bfloat16().to(device)
    ours_p, theirs_p = start.clone(), start.clone()
    ours = Muon([ours_p], lr=0.02, nesterov=nesterov)
    theirs = torch.optim.Muon([theirs_p], lr=0.02, nesterov=nesterov)
    for _ in range(30):
        for p in (ours_p, theirs_p):
            p.grad = torch.sin(3 * p) + 0.1 * p
        ours.step()
        theirs.step()
        torch.testing.assert_close(ours_p, theirs_p, rtol=0, atol=0)
    torch.testing.assert_close(
        ours.state[ours_p]["momentum_buffer"],
        theirs.state[theirs_p]["momentum_buffer"],
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (6, 6)])
def test_newton_schulz_orthogonalises(shape: tuple[int, int], device: torch.device) -> None:
    # The quintic drives every singular value into roughly [0.7, 1.2] (not exactly 1).
    generator = torch.Generator().manual_seed(3)
    g = torch.randn(shape, generator=generator, dtype=torch.float64).to(device)
    g[0] *= 100  # badly conditioned on purpose
    out = newton_schulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7)
    assert out.dtype == torch.bfloat16
    assert out.shape == g.shape
    assert out.device == g.device
    singular_values = torch.linalg.svdvals(out.double())
    assert singular_values.min() > 0.6
    assert singular_values.max() < 1.25
    # Same singular vectors as G: O ≈ U Vᵀ, so Uᵀ O V is nearly diagonal.
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    core = u.T @ out.double() @ vh.T
    off_diagonal = core - torch.diag(torch.diagonal(core))
    assert off_diagonal.abs().max() < 0.05


# Parametrised directly, not through the function-scoped fixture, which Hypothesis refuses.
@pytest.mark.parametrize("device", DEVICES)
@given(
    rows=st.integers(1, 24),
    cols=st.integers(1, 24),
    steps=st.integers(1, 7),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16]),
)
def test_newton_schulz_bits_equal_torch(
    rows: int, cols: int, steps: int, seed: int, dtype: torch.dtype, device: str
) -> None:
    generator = torch.Generator().manual_seed(seed)
    g = torch.randn(rows, cols, generator=generator, dtype=torch.float64).to(device, dtype)
    coefficients = (3.4445, -4.7750, 2.0315)
    ours = newton_schulz(g.clone(), coefficients, steps, 1e-7)
    theirs = torch_newton_schulz(g.clone(), coefficients, steps, 1e-7)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover(direction: str, device: torch.device) -> None:
    assert_state_dict_handover(
        Muon,
        torch.optim.Muon,
        {"lr": 0.02, "momentum": 0.9},
        direction=direction,
        shapes=MATRICES,
        rtol=0,
        atol=0,
        device=device,
    )


@COMMON_ERROR_CASES
def test_common_bad_inputs(description: str, params: Any, kwargs: dict[str, Any]) -> None:
    kind, _, _ = assert_same_error(Muon, torch.optim.Muon, kwargs, params=params)
    assert kind != "ok", description


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": -0.1}, {"momentum": -0.5}, {"weight_decay": -0.1}, {"adjust_lr_fn": "arbitrary"}],
    ids=str,
)
def test_bad_hyperparameters(kwargs: dict[str, Any]) -> None:
    kind, error, message = assert_same_error(Muon, torch.optim.Muon, kwargs)
    assert (kind, error) == ("raise", ValueError)
    assert message


@pytest.mark.parametrize("shape", [(2, 3, 4), (5,), ()], ids=str)
def test_non_matrix_params_are_refused_like_torch(shape: tuple[int, ...]) -> None:
    def params() -> list[torch.Tensor]:
        return [torch.rand(shape)]

    kind, error, message = assert_same_error(Muon, torch.optim.Muon, {}, params=params)
    assert (kind, error) == ("raise", ValueError)
    assert "Muon only supports 2D parameters" in message


@pytest.mark.parametrize(
    ("kwargs", "make_param"),
    [
        ({}, lambda: torch.rand(2, 3, dtype=torch.complex64)),
        ({"ns_steps": 100}, lambda: torch.rand(2, 3)),
        ({"ns_coefficients": (3.4, -4.7)}, lambda: torch.rand(2, 3)),
    ],
    ids=["complex", "ns_steps", "coefficients"],
)
def test_bad_inputs_at_step_like_torch(kwargs: dict[str, Any], make_param: Any) -> None:
    def params() -> list[torch.Tensor]:
        p = make_param()
        p.grad = torch.rand_like(p)
        return [p]

    kind, error, _ = assert_same_error(Muon, torch.optim.Muon, kwargs, params=params, at_step=True)
    assert kind == "raise"
    assert error in (RuntimeError, ValueError)


def test_sparse_gradients_are_refused_like_torch() -> None:
    def params() -> list[torch.Tensor]:
        p = torch.zeros(2, 3)
        p.grad = torch.ones(2, 3).to_sparse()
        return [p]

    kind, error, _ = assert_same_error(Muon, torch.optim.Muon, {}, params=params, at_step=True)
    assert (kind, error) == ("raise", RuntimeError)


def test_converges_on_least_squares(device: torch.device) -> None:
    # A 4 × 3 weight, min ½‖XW − Y‖²/n: orthogonalised steps of decaying size reach lstsq's W.
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=generator, dtype=torch.float64)
    w_true = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    y = x @ w_true + 0.1 * torch.randn(64, 3, generator=generator, dtype=torch.float64)
    best = torch.linalg.lstsq(x, y).solution.to(device)  # on the CPU, then moved
    x, y = x.to(device), y.to(device)
    w = torch.zeros(4, 3, dtype=torch.float64, device=device)
    opt = Muon([w], lr=0.05, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)
    for _ in range(400):
        w.grad = x.T @ (x @ w - y) / len(y)
        opt.step()
        scheduler.step()
    torch.testing.assert_close(w, best, atol=1e-3, rtol=0)
