"""Stepping a handgrad optimizer beside its authors' implementation (the optimizers beyond
torch.optim), and comparing everything they keep: parameters at every step, then the state
(tensors, nested lists of tensors, numbers) and every group entry.

The objective is tests/optim/harness.py's (non-convex, separable, gradients by hand).
``exact=True`` requires the same bits (``torch.equal``, and ``==`` for numbers); otherwise
float64 must agree to 1e-12 relative (float32 to 1e-5). Complex parameters run in one of
two ways: ``"native"`` (the reference takes the same complex tensors) or ``"real"`` (the
reference runs on ``torch.view_as_real`` copies: handgrad's (Re, Im) convention).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tests.optim.harness import SHAPES, Objective, make_params

Factory = Callable[..., torch.optim.Optimizer]

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def assert_same(ours: Any, theirs: Any, what: str, *, exact: bool, rtol: float) -> None:
    """Equal tensors (compared on real views), lists, dicts and numbers."""
    if isinstance(theirs, Tensor) or isinstance(ours, Tensor):
        mine = ours if isinstance(ours, Tensor) else torch.tensor(ours)
        ref = theirs if isinstance(theirs, Tensor) else torch.tensor(theirs)
        mine, ref = _real(mine.detach()), _real(ref.detach())
        assert mine.shape == ref.shape, f"{what}: shape {tuple(mine.shape)} vs {tuple(ref.shape)}"
        if exact:
            same = torch.equal(mine.to(ref.dtype), ref) or (
                mine.dtype.is_floating_point and torch.equal(mine.isnan(), ref.isnan())
                and torch.equal(mine.nan_to_num(), ref.nan_to_num().to(mine.dtype))
            )
            if not same:
                diff = (mine.double() - ref.double()).abs().max().item()
                raise AssertionError(f"{what}: not the same bits (largest difference {diff:.3e})")
        else:
            torch.testing.assert_close(mine.to(ref.dtype), ref, rtol=rtol, atol=rtol * 1e-3,
                                       msg=lambda m: f"{what}: {m}")  # fmt: skip
        return
    if isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)), f"{what}: {ours!r} vs {theirs!r}"
        assert len(ours) == len(theirs), f"{what}: {ours!r} vs {theirs!r}"
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{what}[{index}]", exact=exact, rtol=rtol)
        return
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs), f"{what}: keys {sorted(ours)} vs {sorted(theirs)}"
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{what}[{key!r}]", exact=exact, rtol=rtol)
        return
    if isinstance(theirs, float) and isinstance(ours, (int, float)) and not exact:
        assert math.isclose(ours, theirs, rel_tol=rtol, abs_tol=rtol * 1e-3), (
            f"{what}: {ours!r} vs {theirs!r}")
        return
    assert ours == theirs or (ours != ours and theirs != theirs), f"{what}: {ours!r} vs {theirs!r}"


class Pair:
    """Our optimizer and the reference on the same starting point and objective."""

    def __init__(self, ours_cls: Factory, theirs_cls: Factory, kwargs: dict[str, Any], *,
                 dtype: torch.dtype = torch.float64, shapes: Sequence[tuple[int, ...]] = SHAPES,
                 complex_mode: str | None = None, second_group: dict[str, Any] | None = None,
                 ours_kwargs: dict[str, Any] | None = None,
                 theirs_kwargs: dict[str, Any] | None = None, train_mode: bool = False,
                 seed: int = 0, device: torch.device | str = "cpu") -> None:  # fmt: skip
        if complex_mode is not None:
            dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.complex_mode = complex_mode
        self.objective = Objective(shapes, dtype, seed, device=device)
        self.ours_params = make_params(shapes, dtype, seed, device)
        theirs = make_params(shapes, dtype, seed, device)
        if complex_mode == "real":
            theirs = [torch.view_as_real(p).clone() for p in theirs]
        self.theirs_params = theirs
        self.ours = _build(ours_cls, self.ours_params, {**kwargs, **(ours_kwargs or {})},
                           second_group)  # fmt: skip
        self.theirs = _build(theirs_cls, self.theirs_params, {**kwargs, **(theirs_kwargs or {})},
                             second_group)  # fmt: skip
        if train_mode:
            for opt in (self.ours, self.theirs):
                opt.train()  # type: ignore[attr-defined]

    def _theirs_as_ours(self) -> list[Tensor]:
        if self.complex_mode == "real":
            return [torch.view_as_complex(q) for q in self.theirs_params]
        return self.theirs_params

    def set_grads(self, step: int, none_every: int | None) -> None:
        ours = self.objective.gradients(self.ours_params)
        theirs = self.objective.gradients(self._theirs_as_ours())
        if self.complex_mode == "real":
            theirs = [torch.view_as_real(g).clone() for g in theirs]
        for index, (p, g) in enumerate(zip(self.ours_params, ours, strict=True)):
            skip = none_every is not None and index == 0 and step % none_every == 1
            p.grad = None if skip else g
        for index, (q, g) in enumerate(zip(self.theirs_params, theirs, strict=True)):
            skip = none_every is not None and index == 0 and step % none_every == 1
            q.grad = None if skip else g

    def compare_params(self, what: str, *, exact: bool, rtol: float) -> None:
        for index, (p, q) in enumerate(zip(self.ours_params, self.theirs_params, strict=True)):
            assert_same(p, q, f"{what} param {index} {tuple(p.shape)}", exact=exact, rtol=rtol)

    def compare_state(self, *, exact: bool, rtol: float) -> None:
        for index, (p, q) in enumerate(zip(self.ours_params, self.theirs_params, strict=True)):
            assert_same(dict(self.ours.state.get(p, {})), dict(self.theirs.state.get(q, {})),
                        f"param {index} state", exact=exact, rtol=rtol)  # fmt: skip
        for index, (a, b) in enumerate(
            zip(self.ours.param_groups, self.theirs.param_groups, strict=True)
        ):
            entries = {k: v for k, v in b.items() if k != "params"}
            mine = {k: v for k, v in a.items() if k != "params"}
            assert_same(mine, entries, f"group {index}", exact=exact, rtol=rtol)


def _build(cls: Factory, params: list[Tensor], kwargs: dict[str, Any],
           second_group: dict[str, Any] | None) -> torch.optim.Optimizer:  # fmt: skip
    kwargs = copy.deepcopy(kwargs)
    if second_group is None or len(params) < 2:
        return cls(params, **kwargs)
    half = len(params) // 2
    return cls([{"params": params[:half]}, {"params": params[half:], **second_group}], **kwargs)


def run_beside(ours_cls: Factory, theirs_cls: Factory, kwargs: dict[str, Any], *,
               exact: bool, steps: int = 50, none_every: int | None = None,
               scheduler: bool = False, **pair_options: Any) -> Pair:  # fmt: skip
    """Step both ``steps`` times; parameters compared after every step, state and groups at
    the end. Returns the pair (for further checks)."""
    pair = Pair(ours_cls, theirs_cls, kwargs, **pair_options)
    rtol = TOLERANCE[torch.float64 if pair.ours_params[0].dtype in (torch.float64,
                                                                     torch.complex128)
                     else torch.float32]  # fmt: skip
    schedulers = [torch.optim.lr_scheduler.StepLR(o, 7, 0.7) for o in (pair.ours, pair.theirs)
                  ] if scheduler else []  # fmt: skip
    for step in range(1, steps + 1):
        pair.set_grads(step, none_every)
        pair.ours.step()
        pair.theirs.step()
        pair.compare_params(f"step {step}", exact=exact, rtol=rtol)
        for each in schedulers:
            each.step()
    pair.compare_state(exact=exact, rtol=rtol)
    assert all(torch.isfinite(_real(p)).all() for p in pair.ours_params)
    return pair


def handover(ours_cls: Factory, theirs_cls: Factory, kwargs: dict[str, Any], *,
             exact: bool, reverse: bool = False, switch_at: int = 10, steps: int = 20,
             train_mode: bool = False, second_group: dict[str, Any] | None = None,
             dtype: torch.dtype = torch.float64) -> None:  # fmt: skip
    """The reference runs ``switch_at`` steps; its state_dict goes to a fresh handgrad
    optimizer (``reverse``: the other way round) on copies of its parameters; both go on and
    must agree with the reference that never stopped."""
    first, second = (ours_cls, theirs_cls) if reverse else (theirs_cls, ours_cls)
    alone = Pair(theirs_cls, theirs_cls, kwargs, dtype=dtype, train_mode=train_mode,
                 second_group=second_group)  # fmt: skip
    relay = Pair(first, first, kwargs, dtype=dtype, train_mode=train_mode,
                 second_group=second_group)  # fmt: skip
    current, params = relay.ours, relay.ours_params
    rtol = TOLERANCE[dtype]
    for step in range(1, steps + 1):
        if step == switch_at + 1:
            sent = current.state_dict()
            params = [p.detach().clone() for p in params]
            current = _build(second, params, kwargs, second_group)
            current.load_state_dict(copy.deepcopy(sent))
        for p, g in zip(params, alone.objective.gradients(params), strict=True):
            p.grad = g
        alone.set_grads(step, None)
        current.step()
        alone.ours.step()
        for index, (p, q) in enumerate(zip(params, alone.ours_params, strict=True)):
            assert_same(p, q, f"step {step} param {index}", exact=exact, rtol=rtol)


__all__ = ["Pair", "assert_same", "handover", "run_beside"]
