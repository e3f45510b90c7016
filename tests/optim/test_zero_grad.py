"""The lean ``step()``/``zero_grad()`` of handgrad.optim.Optimizer behave as torch.optim's.

Ours skip torch's profiler scope when no profiler runs and call the step hooks only when
some are registered; these tests pin the behaviour that must not change: hooks (per
optimizer and global, once per step, able to replace the arguments), the profiler events,
and zero_grad's two modes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from handgrad.optim import Adam, RMSprop


def _params() -> list[torch.Tensor]:
    params = [torch.linspace(-1, 1, 6).reshape(2, 3), torch.ones(4)]
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    return params


@pytest.mark.parametrize("cls", [Adam, torch.optim.Adam], ids=["ours", "torch"])
def test_zero_grad_set_to_none(cls: Any) -> None:
    params = _params()
    params.append(torch.zeros(2))  # no gradient: stays None
    cls(params).zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("cls", [Adam, torch.optim.Adam], ids=["ours", "torch"])
def test_zero_grad_in_place_keeps_the_tensors(cls: Any) -> None:
    params = _params()
    leaf = torch.ones(4, requires_grad=True)
    params[1].grad = leaf * 2  # a gradient with a grad_fn (create_graph-style)
    grads = [p.grad for p in params]
    cls(params).zero_grad(set_to_none=False)
    for p, g in zip(params, grads, strict=True):
        assert p.grad is g
        assert torch.equal(g, torch.zeros_like(g))
        assert g.grad_fn is None
        assert not g.requires_grad


def _step_counts(cls: Any, register: str) -> list[str]:
    calls: list[str] = []
    params = _params()
    opt = cls(params, lr=0.1)

    def pre(optimizer: Any, args: Any, kwargs: Any) -> None:
        assert optimizer is opt
        calls.append("pre")

    def post(optimizer: Any, args: Any, kwargs: Any) -> None:
        calls.append("post")

    if register == "optimizer":
        handles = [opt.register_step_pre_hook(pre), opt.register_step_post_hook(post)]
    else:
        handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    try:
        opt.step()
        opt.step()
    finally:
        for handle in handles:
            handle.remove()
    opt.step()  # hooks removed: not called
    return calls


@pytest.mark.parametrize("register", ["optimizer", "global"])
def test_step_hooks_run_once_per_step_like_torch(register: str) -> None:
    ours = _step_counts(Adam, register)
    assert ours == _step_counts(torch.optim.Adam, register)
    assert ours == ["pre", "post", "pre", "post"]


def test_pre_hook_can_replace_the_closure() -> None:
    params = _params()
    opt = RMSprop(params, lr=0.1)
    seen: list[str] = []

    def closure() -> torch.Tensor:
        seen.append("replacement")
        return torch.tensor(1.5)

    def pre(optimizer: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
        return (args[0], closure), kwargs

    opt.register_step_pre_hook(pre)
    loss = opt.step(lambda: torch.tensor(0.0))
    assert seen == ["replacement"]
    assert loss.item() == 1.5


def test_subclass_overriding_step_runs_hooks_once() -> None:
    class Logged(Adam):
        def step(self, closure: Any = None) -> Any:
            return super().step(closure)

    params = _params()
    opt = Logged(params, lr=0.1)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.step()
    assert calls == ["pre"]


def test_profiler_sees_the_same_scopes_as_torch() -> None:
    def names(cls: Any) -> set[str]:
        opt = cls(_params(), lr=0.1)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            opt.step()
            opt.zero_grad()
        return {e.name for e in prof.events() if e.name.startswith("Optimizer.")}

    assert names(Adam) == {"Optimizer.step#Adam.step", "Optimizer.zero_grad#Adam.zero_grad"}
    assert names(torch.optim.Adam) == names(Adam)


def test_step_leaves_grad_mode_as_it_found_it() -> None:
    params = [torch.ones(3, requires_grad=True)]
    params[0].grad = torch.ones(3)
    opt = Adam(params, lr=0.1)
    opt.step()
    assert torch.is_grad_enabled()
    with torch.no_grad():
        opt.step()
        assert not torch.is_grad_enabled()
    assert not params[0].requires_grad or params[0].grad_fn is None
