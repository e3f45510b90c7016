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


@pytest.mark.parametrize("shape", [(1000, 1000), (500, 2000), (2000, 500)], ids=str)
def test_large_matrices_match_torch_bit_for_bit(shape: tuple[int, int]) -> None:
    # The benchmark's 1000 x 1000 and a wide and a tall shape: the large products take other
    # oneDNN kernels (blockings, thread splits) than the small shapes above. One step each
    # (~0.3 s per 1000² matrix and side); the kept workspace's reuse is tested above.
    _run_beside_torch({"lr": 0.02}, torch.float32, [shape, shape], 1)


def test_remainder_batches_and_a_grown_workspace_match_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Batches of 3 and 2 (the second in the first 2 matrices of the kept workspace), then a
    # new group of the same shape makes the workspace grow to 4 matrices.
    monkeypatch.setattr(muon_module, "_BATCH_ELEMENTS", 3 * 18 * 24)
    shapes = [(18, 24)] * 5
    ours, theirs, ours_params, theirs_params = _run_beside_torch(
        {"lr": 0.02}, torch.float64, shapes, 3
    )
    assert [w.count for w in ours._workspaces.values()] == [3]
    monkeypatch.setattr(muon_module, "_BATCH_ELEMENTS", 4 * 18 * 24)
    more = _params(torch.float64, [(18, 24)] * 4)
    ours.add_param_group({"params": more, "lr": 0.01})
    theirs.add_param_group({"params": [p.clone() for p in more], "lr": 0.01})
    all_ours = ours_params + more
    all_theirs = theirs_params + theirs.param_groups[1]["params"]
    for _ in range(2):
        for mine, reference in zip(all_ours, all_theirs, strict=True):
            mine.grad = torch.sin(3 * mine) + 0.1 * mine
            reference.grad = torch.sin(3 * reference) + 0.1 * reference
        ours.step()
        theirs.step()
    for mine, reference in zip(all_ours, all_theirs, strict=True):
        assert torch.equal(mine, reference)
    assert [w.count for w in ours._workspaces.values()] == [4]


def test_steps_after_the_first_allocate_nothing_of_a_matrix_size() -> None:
    # The point of the kept workspace: fresh batch-sized buffers cost page faults every step
    # (~5 % of a step at 4 x 1000²). Only 0-d tensors (the norms) may be allocated.
    params = _params(torch.float32, [(40, 30)] * 3)
    for p in params:
        p.grad = torch.cos(p)
    opt = Muon(params, lr=0.02)
    opt.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as profile:  # fmt: skip
        opt.step()
    allocations = {e.name: e.cpu_memory_usage for e in profile.events() if e.cpu_memory_usage > 0}
    assert allocations  # the profiler does see the norms' 0-d tensors
    assert max(allocations.values()) < 40 * 30 * 2, allocations


def test_workspace_is_rebuilt_after_pickling() -> None:
    import pickle

    params = _params(torch.float64, [(18, 24)] * 2)
    for p in params:
        p.grad = torch.cos(p)
    opt = Muon(params, lr=0.02)
    opt.step()
    copy = pickle.loads(pickle.dumps(opt))  # parameters and state copied, gradients not
    assert copy._workspaces == {}
    copied = copy.param_groups[0]["params"]
    for p in (*params, *copied):
        p.grad = torch.cos(p)
    copy.step()
    opt.step()
    for mine, other in zip(params, copied, strict=True):
        assert torch.equal(mine, other)


def test_newton_schulz_batch_writes_into_the_given_scratch() -> None:
    generator = torch.Generator().manual_seed(5)
    matrices = torch.randn(3, 30, 18, generator=generator).bfloat16()  # tall
    theirs = [torch_newton_schulz(m.clone(), COEFFICIENTS, 3, 1e-7) for m in matrices]
    spare, gram, polynomial = torch.empty_like(matrices), *torch.empty(2, 3, 18, 18).bfloat16()
    ours = newton_schulz_batch(matrices, COEFFICIENTS, 3, 1e-7, (spare, gram, polynomial))
    # odd step count: the last iterate lies in the spare, transposed back
    assert ours.data_ptr() == spare.data_ptr()
    for mine, reference in zip(ours, theirs, strict=True):
        assert torch.equal(mine, reference)


@pytest.mark.parametrize("shape", [(40, 30), (30, 40), (24, 24)], ids=str)
def test_transposed_parameters_match_torch_bit_for_bit(shape: tuple[int, int]) -> None:
    # Column-major parameters, gradients and momentum buffers: torch's direction and update
    # keep that layout, the batch's stack and scratch are row-major.
    generator = torch.Generator().manual_seed(6)
    starts = [torch.randn(shape[::-1], generator=generator, dtype=torch.float64).T for _ in "abc"]
    ours_params = [s.clone(memory_format=torch.preserve_format) for s in starts]
    theirs_params = [s.clone(memory_format=torch.preserve_format) for s in starts]
    assert not ours_params[0].is_contiguous()
    ours = Muon(ours_params, lr=0.02)
    theirs = torch.optim.Muon(theirs_params, lr=0.02)
    for _ in range(3):
        for p in (*ours_params, *theirs_params):
            p.grad = torch.sin(3 * p) + 0.1 * p
        assert not ours_params[0].grad.is_contiguous()
        ours.step()
        theirs.step()
    for mine, reference in zip(ours_params, theirs_params, strict=True):
        assert torch.equal(mine, reference)
    assert [w.count for w in ours._workspaces.values()] == [3]  # it was the batched path
