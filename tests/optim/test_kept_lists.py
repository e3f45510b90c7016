"""Kept lists (handgrad/optim/_kept.py) never go stale.

A group's step reuses the lists of its last step while a check of identities finds the
group as it was. Each test changes one thing between steps the way a user would (a state
tensor or dict replaced, ``load_state_dict``, a gradient missing, a parameter added to the
group, an option that changes the state keys or the body) on both handgrad's optimizer and
torch.optim's on separate copies, and checks every step bit for bit: a stale list would
update a tensor nobody reads any more, skip a parameter or use the wrong body, and fail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from handgrad import optim

Change = Callable[[torch.optim.Optimizer, list[Tensor]], None]


def _params(seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (2, 2, 2), ()]
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]


def _grads(params: list[Tensor], step: int) -> None:
    for i, p in enumerate(params):
        p.grad = torch.sin(p * (i + 1) + step)  # a new tensor at each step, as a backward


def _run(name: str, change: Change | None, steps: int = 3, **options: Any) -> None:
    ours_params, theirs_params = _params(), _params()
    ours = getattr(optim, name)(ours_params, **options)
    theirs = getattr(torch.optim, name)(theirs_params, foreach=True, **options)
    for phase in range(2):
        for step in range(steps):
            for optimizer, params in ((ours, ours_params), (theirs, theirs_params)):
                _grads(params, step + 10 * phase)
                optimizer.step()
            for a, b in zip(ours_params, theirs_params, strict=True):
                assert torch.equal(a, b), (name, phase, step)
        if phase == 0:
            kept = ours.__dict__["_handgrad_kept"]
            assert kept[id(ours.param_groups[0])] is not None  # the kept path was in use
            if change is not None:
                change(ours, ours_params)
                change(theirs, theirs_params)
    for a, b in zip(ours.state.values(), theirs.state.values(), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def _replace_a_state_tensor(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
    state = optimizer.state[params[1]]
    key = "momentum_buffer" if "momentum_buffer" in state else "exp_avg"
    state[key] = state[key] * 0.5


def _replace_a_state_dict(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
    state = optimizer.state[params[2]]
    optimizer.state[params[2]] = {key: value.clone() * 0.25 for key, value in state.items()}


def _forget_a_parameter_state(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
    del optimizer.state[params[0]]


def _reload(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
    optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))


def _scale_a_step_in_place(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
    state = optimizer.state[params[3]]
    if "exp_avg" in state:
        state["exp_avg"].mul_(3.0)  # in place: the kept lists hold the same tensor


def _add_a_parameter(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
    extra = torch.linspace(-1, 1, 5, dtype=torch.float64)
    params.append(extra)
    optimizer.param_groups[0]["params"].append(extra)


def _set(key: str, value: Any) -> Change:
    def change(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
        optimizer.param_groups[0][key] = value

    return change


CHANGES: dict[str, Change | None] = {
    "nothing": None,
    "a state tensor replaced": _replace_a_state_tensor,
    "a state dict replaced": _replace_a_state_dict,
    "a parameter's state forgotten": _forget_a_parameter_state,
    "load_state_dict": _reload,
    "a state tensor changed in place": _scale_a_step_in_place,
    "a parameter added to the group": _add_a_parameter,
}


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
@pytest.mark.parametrize(("name", "options"), [
    ("Adam", {"lr": 0.05, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
], ids=["Adam", "SGD"])  # fmt: skip
def test_a_change_between_steps_is_followed(
    name: str, options: dict[str, Any], change: Change | None
) -> None:
    _run(name, change, **options)


@pytest.mark.parametrize(
    "change",
    [_set("betas", (0.5, 0.8)), _set("foreach", False), _set("maximize", True), _set("lr", 0.2)],
    ids=["betas", "foreach-False", "maximize", "lr"],
)
def test_a_changed_group_option_is_followed(change: Change) -> None:
    _run("Adam", change, lr=0.05)


def test_a_parameter_without_a_gradient_is_skipped_then_taken_again() -> None:
    ours_params, theirs_params = _params(), _params()
    ours = optim.Adam(ours_params, lr=0.1)
    theirs = torch.optim.Adam(theirs_params, lr=0.1, foreach=True)
    for step in range(8):
        for optimizer, params in ((ours, ours_params), (theirs, theirs_params)):
            _grads(params, step)
            if 2 <= step < 5:
                params[1].grad = None
            optimizer.step()
        for a, b in zip(ours_params, theirs_params, strict=True):
            assert torch.equal(a, b), step


def test_a_sparse_gradient_after_dense_ones_is_refused_as_torch_does() -> None:
    params = _params()
    optimizer = optim.Adam(params, lr=0.1)
    for step in range(3):
        _grads(params, step)
        optimizer.step()
    params[1].grad = params[1].grad.to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()
