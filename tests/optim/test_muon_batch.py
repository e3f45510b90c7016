"""Muon's batched Newton–Schulz path: same-shape matrices share bmm/baddbmm, bit for bit.

Zero tolerance throughout, as in test_muon.py: a batched product that took another kernel
would move bfloat16 results by whole ulps, which "close" would hide.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.optim._muon import _zeropower_via_newtonschulz as torch_newton_schulz

import handgrad.optim.muon as muon_module
from handgrad.optim import Muon
from handgrad.optim.muon import batchable, newton_schulz_batch

COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# Two batchable shapes (one wide, one tall: torch transposes the tall one), each three times,
# and two that are not (16³ is the threshold itself; 5 x 4 is small): batches and singles.
SHAPES = [(18, 24), (30, 17), (18, 24), (16, 16), (30, 17), (5, 4), (18, 24), (30, 17)]


def _params(dtype: torch.dtype, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    return [torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes]


def _run_beside_torch(
    hyperparams: dict[str, Any], dtype: torch.dtype, shapes: list[tuple[int, int]], steps: int
) -> tuple[Muon, torch.optim.Muon, list[torch.Tensor], list[torch.Tensor]]:
    ours_params = _params(dtype, shapes)
    theirs_params = [p.clone() for p in ours_params]
    ours = Muon(ours_params, **hyperparams)
    theirs = torch.optim.Muon(theirs_params, **hyperparams)
    for step in range(steps):
        for index, (mine, reference) in enumerate(zip(ours_params, theirs_params, strict=True)):
            if (index + step) % 7 == 6:  # now and then a parameter without a gradient
                mine.grad = reference.grad = None
                continue
            mine.grad = torch.sin(3 * mine) + 0.1 * mine
            reference.grad = torch.sin(3 * reference) + 0.1 * reference
        ours.step()
        theirs.step()
        for mine, reference in zip(ours_params, theirs_params, strict=True):
            torch.testing.assert_close(mine, reference, rtol=0, atol=0)
    return ours, theirs, ours_params, theirs_params


@pytest.mark.parametrize(
    "hyperparams",
    [
        {"lr": 0.02},
        {"lr": 0.02, "nesterov": False, "weight_decay": 0.0},
        {"lr": torch.tensor(0.01), "adjust_lr_fn": "match_rms_adamw", "momentum": 0.8},
    ],
    ids=["default", "no_nesterov", "tensor_lr_match_rms"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_batched_steps_match_torch_bit_for_bit(
    hyperparams: dict[str, Any], dtype: torch.dtype
) -> None:
    ours, theirs, ours_params, theirs_params = _run_beside_torch(hyperparams, dtype, SHAPES, 8)
    for mine, reference in zip(ours_params, theirs_params, strict=True):
        torch.testing.assert_close(
            ours.state[mine]["momentum_buffer"],
            theirs.state[reference]["momentum_buffer"],
            rtol=0,
            atol=0,
        )


def test_same_shapes_are_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fails if the batched path silently stops being taken.
    batch_sizes: list[int] = []
    real = muon_module.newton_schulz_batch

    def counting(matrices: torch.Tensor, *args: Any) -> torch.Tensor:
        batch_sizes.append(matrices.size(0))
        return real(matrices, *args)

    monkeypatch.setattr(muon_module, "newton_schulz_batch", counting)
    params = _params(torch.float32, SHAPES)
    for p in params:
        p.grad = torch.ones_like(p)
    Muon(params, lr=0.02).step()
    assert sorted(batch_sizes) == [3, 3]


def test_batchable_threshold() -> None:
    assert not batchable((16, 16))
    assert not batchable((16, 1000))
    assert batchable((17, 17))
    assert batchable((1000, 17))


def test_duplicate_parameter_steps_twice_like_torch() -> None:
    # torch warns and then updates a parameter listed twice twice in a row.
    shapes = [(18, 20), (18, 20)]
    ours_params = _params(torch.float64, shapes)
    theirs_params = [p.clone() for p in ours_params]
    with pytest.warns(UserWarning, match="duplicate"):
        ours = Muon([ours_params[0], ours_params[1], ours_params[0]], lr=0.02)
    with pytest.warns(UserWarning, match="duplicate"):
        theirs = torch.optim.Muon([theirs_params[0], theirs_params[1], theirs_params[0]], lr=0.02)
    for _ in range(3):
        for p in (*ours_params, *theirs_params):
            p.grad = torch.cos(2 * p)
        ours.step()
        theirs.step()
    for mine, reference in zip(ours_params, theirs_params, strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)


@given(
    rows=st.integers(17, 40),
    cols=st.integers(17, 40),
    batch=st.integers(2, 4),
    steps=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_newton_schulz_batch_bits_equal_torch(
    rows: int, cols: int, batch: int, steps: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    matrices = torch.randn(batch, rows, cols, generator=generator, dtype=torch.float64)
    theirs = [torch_newton_schulz(m.clone(), COEFFICIENTS, steps, 1e-7) for m in matrices]
    ours = newton_schulz_batch(matrices.bfloat16(), COEFFICIENTS, steps, 1e-7)
    assert ours.shape == matrices.shape
    for mine, reference in zip(ours, theirs, strict=True):
        assert torch.equal(mine, reference)
