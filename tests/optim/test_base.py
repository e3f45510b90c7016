"""handgrad.optim.Optimizer's own bookkeeping: which classes sit on it, old state_dicts, one
way to fill missing group flags, state holding only what a class declares, and a rule that
cannot be handed an argument it does not take."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import handgrad.nn as hn
import handgrad.optim as hg
import handgrad.optim._base as base
from handgrad.optim import Optimizer
from handgrad.optim._base import flat_updates

ON_THE_BASE = [
    "SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta",
    "Rprop", "ASGD", "Adafactor", "Muon",
]  # fmt: skip
ELEMENTWISE = [name for name in ON_THE_BASE if name not in ("Adafactor", "Muon")]
# Group flags newer than the first releases: an old state_dict may lack any of them.
FLAGS = (
    "foreach", "maximize", "capturable", "differentiable", "fused", "amsgrad",
    "decoupled_weight_decay", "centered", "momentum",
)  # fmt: skip
# 0-d state that older torch versions saved as Python numbers.
OLD_NUMBERS = {"NAdam": ("step", "mu_product"), "ASGD": ("step", "eta", "mu"), "SGD": ()}


def test_the_optimizers_share_the_base() -> None:
    for name in ON_THE_BASE:
        cls = getattr(hg, name)
        assert issubclass(cls, Optimizer), name
        assert not issubclass(cls, getattr(torch.optim, name)), name
        assert cls.elementwise == (name in ELEMENTWISE), name
    # A closure-driven quasi-Newton method and a sparse-only one keep steps of their own.
    for name in ("SparseAdam", "LBFGS"):
        assert not issubclass(getattr(hg, name), Optimizer), name


def test_one_way_to_fill_missing_group_flags() -> None:
    """Only the base restores group flags (``flag_defaults``, in __setstate__); AdamW forces
    decoupled_weight_decay as torch's AdamW does."""
    for name in ON_THE_BASE:
        cls = getattr(hg, name)
        overrides = cls.__dict__.get("__setstate__")
        assert overrides is None or name in ("AdamW", "ASGD", "Muon"), name


def _old_state_dict_loaded(
    cls: Any, flags: tuple[str, ...], numbers: tuple[str, ...], device: torch.device
) -> Any:
    """An optimizer after one step, saved as an old version would save it, loaded again."""
    p = torch.linspace(-1.0, 1.0, 4, dtype=torch.float64, device=device)
    p.grad = torch.linspace(0.5, -0.25, 4, dtype=torch.float64, device=device)
    opt = cls([p], lr=0.01)
    opt.step()
    saved = opt.state_dict()
    for flag in flags:
        saved["param_groups"][0].pop(flag, None)
    for key in numbers:
        saved["state"][0][key] = float(saved["state"][0][key])
    fresh = cls([p], lr=0.01)
    fresh.load_state_dict(saved)
    p.grad = torch.linspace(-0.5, 0.75, 4, dtype=torch.float64, device=device)
    fresh.step()
    return fresh


@pytest.mark.parametrize("name", [*ELEMENTWISE, "Adafactor"])
def test_old_state_dicts_load_like_torch(name: str, device: torch.device) -> None:
    # Group flags an old state_dict lacks get torch's defaults; steps saved as numbers become
    # tensors of torch's dtype on torch's device; the next step is torch's.
    ours_cls, theirs_cls = getattr(hg, name), getattr(torch.optim, name)
    numbers = OLD_NUMBERS.get(name, ("step",))
    # SGD's momentum is a hyperparameter, not a flag torch restores; Adafactor restores foreach.
    flags = tuple(flag for flag in FLAGS if not (name == "SGD" and flag == "momentum"))
    if name == "Adafactor":
        flags = ("foreach",)
    ours = _old_state_dict_loaded(ours_cls, flags, numbers, device)
    theirs = _old_state_dict_loaded(theirs_cls, flags, numbers, device)
    ours_group = {k: v for k, v in ours.param_groups[0].items() if k != "params"}
    theirs_group = {k: v for k, v in theirs.param_groups[0].items() if k != "params"}
    assert ours_group == theirs_group
    if not theirs.state:  # SGD without momentum keeps none
        assert not ours.state
        return
    ours_state = next(iter(ours.state.values()))
    theirs_state = next(iter(theirs.state.values()))
    assert ours_state.keys() == theirs_state.keys()
    for key, value in theirs_state.items():
        mine = ours_state[key]
        assert torch.is_tensor(mine), key
        assert (mine.dtype, mine.shape, mine.device) == (value.dtype, value.shape, value.device), (
            key
        )
        torch.testing.assert_close(mine, value, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        ours.param_groups[0]["params"][0], theirs.param_groups[0]["params"][0], rtol=1e-12, atol=0
    )


class _Counter(Optimizer):
    """A rule with a step count and one moving average, to watch the base at work."""

    state_keys = ("step", "avg")
    elementwise = True

    def __init__(self, params: Any) -> None:
        super().__init__(params, {"lr": 0.1})
        self.calls: list[tuple[int, tuple[float, ...]]] = []

    def update(self, group: Any, params: Any, grads: Any, state: Any) -> None:
        self.calls.append((len(params), tuple(t.item() for t in state["step"])))
        torch._foreach_lerp_(state["avg"], grads, 0.5)
        torch._foreach_add_(params, state["avg"], alpha=-group["lr"])


def test_the_base_counts_steps_and_makes_only_the_declared_state() -> None:
    params = [torch.ones(3), torch.ones(2)]
    opt = _Counter(params)
    for step in range(1, 4):
        params[0].grad = torch.ones(3)
        params[1].grad = None if step == 2 else torch.ones(2)  # skipped: not counted
        opt.step()
    assert opt.calls == [(2, (1.0, 1.0)), (1, (2.0,)), (2, (3.0, 2.0))]
    assert set(opt.state[params[0]]) == {"step", "avg"}
    assert opt.state[params[0]]["step"].item() == 3.0


class _Lion(Optimizer):
    """A user's rule with state but no step count (the issue's Lion): nothing else appears."""

    state_keys = ("exp_avg",)
    elementwise = True

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr, "betas": (0.9, 0.99)})

    def update(self, group: Any, params: Any, grads: Any, state: Any) -> None:
        beta1, beta2 = group["betas"]
        direction = torch._foreach_lerp(state["exp_avg"], grads, 1 - beta1)
        torch._foreach_sign_(direction)
        torch._foreach_add_(params, direction, alpha=-group["lr"])
        torch._foreach_lerp_(state["exp_avg"], grads, 1 - beta2)


@pytest.mark.parametrize(
    "layout", ["flat", "large", "float16", "bfloat16", "complex", "0-d", "foreach=False"]
)
def test_a_rule_with_one_body_runs_on_every_layout(
    layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's crash (``_single_tensor() got an unexpected keyword argument 'scratch'``)
    cannot happen: the base hands a rule only (group, params, grads, state), on every layout,
    and a class without the optional bodies runs update everywhere."""
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16,
             "complex": torch.complex64}.get(layout, torch.float32)  # fmt: skip
    shapes = {"0-d": [()], "large": [(300, 300), (3,)]}.get(layout, [(4, 2), (3,)])
    params = [torch.randn(shape, dtype=dtype) for shape in shapes]
    starts = [p.clone() for p in params]
    if layout == "flat":
        hn.flatten_parameters(params)
    opt = _Lion(params, lr=0.01)
    if layout == "foreach=False":
        opt.param_groups[0]["foreach"] = False
    for _ in range(3):
        for p in params:
            p.grad = None
            hn.accumulate_grad(p, torch.full_like(p, 1 + 1j if dtype.is_complex else 1))
        opt.step()
    assert flat_updates(opt) == (3 if layout == "flat" else 0)
    for p, start in zip(params, starts, strict=True):
        assert set(opt.state[p]) == {"exp_avg"}
        assert opt.state[p]["exp_avg"].dtype == dtype
        # three steps of −lr·sign(1) on every coordinate (both parts of a complex one)
        moved = (torch.view_as_real(p - start) if dtype.is_complex else p - start).double()
        tolerance = 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6  # its rounding
        torch.testing.assert_close(moved, torch.full_like(moved, -0.03), rtol=0, atol=tolerance)


def test_the_optional_bodies_are_used_only_where_a_class_has_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    class Traced(_Lion):
        def update_large(self, group: Any, params: Any, grads: Any, state: Any) -> None:
            seen.append("large")
            self.update(group, params, grads, state)

    monkeypatch.setattr(base, "LARGE_TENSOR_ELEMENTS", 10)
    params = [torch.zeros(20), torch.zeros(3)]
    for opt in (_Lion(params), Traced(params)):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    assert seen == ["large"]
    assert _Lion.update_single is None
    assert _Lion.update_flat is None


def test_a_class_without_update_says_so() -> None:
    class Empty(Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {"lr": 0.1})

    p = torch.zeros(2)
    p.grad = torch.ones(2)
    with pytest.raises(NotImplementedError, match="Empty must define update"):
        Empty([p]).step()
