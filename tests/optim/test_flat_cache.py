"""The flat path's records (handgrad/optim/_flat.py, FlatAdam in adam.py) never go stale.

A flat group keeps its flat state while each parameter's state entries are the views it
handed out, and Adam keeps a prepared update (:class:`FlatAdam`) while the group's entries
are the same objects. Each test changes one of those between steps the way a user or a
scheduler would, and checks that the next steps are still bit for bit torch.optim's on
separate copies: a stale record would apply an old learning rate, update a state tensor
nobody reads any more, or count steps wrongly, and fail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from handgrad.optim import Adam, AdamW
from handgrad.optim._base import flat_updates
from handgrad.optim.adam import FlatAdam
from tests.optim.test_flat_groups import Flat, assert_same, steps_match


def _pair(
    cls: type[Adam] = Adam, dtype: torch.dtype = torch.float64, **hyperparams: Any
) -> tuple[Flat, list[Tensor], Adam, torch.optim.Optimizer]:
    flat = Flat(dtype)
    reference = flat.separate_copies()
    ours = cls(flat.params, **hyperparams)
    theirs = getattr(torch.optim, cls.__name__)(reference, **hyperparams)
    return flat, reference, ours, theirs


def _plan(optimizer: Adam) -> Any:
    return optimizer.__dict__["_handgrad_flat_adam"][id(optimizer.param_groups[0])]


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_the_lean_update_is_taken_and_bitwise_torchs(cls: type[Adam], dtype: torch.dtype) -> None:
    flat, reference, ours, theirs = _pair(cls, dtype, lr=0.01, betas=(0.8, 0.95), eps=1e-6)
    steps_match(flat, reference, ours, theirs, 20)
    assert isinstance(_plan(ours), FlatAdam)
    assert flat_updates(ours) == 20


def _set(key: str, value: Any) -> Callable[[torch.optim.Optimizer], None]:
    def change(optimizer: torch.optim.Optimizer) -> None:
        optimizer.param_groups[0][key] = value

    return change


@pytest.mark.parametrize(
    "change",
    [
        _set("lr", 0.05),
        _set("betas", (0.5, 0.9)),
        _set("eps", 1e-2),
        _set("weight_decay", 0.3),  # L2 decay: off FlatAdam, onto the plain body
        _set("maximize", True),
        _set("foreach", False),  # off the flat path altogether (torch's reference body)
    ],
    ids=["lr", "betas", "eps", "weight_decay", "maximize", "foreach-False"],
)
def test_a_changed_group_entry_is_read_again(
    change: Callable[[torch.optim.Optimizer], None],
) -> None:
    flat, reference, ours, theirs = _pair(lr=0.01)
    steps_match(flat, reference, ours, theirs, 4)
    for optimizer in (ours, theirs):
        change(optimizer)
    steps_match(flat, reference, ours, theirs, 4)


def test_a_scheduler_assigning_lr_every_step_is_followed() -> None:
    flat, reference, ours, theirs = _pair(AdamW, lr=0.02)
    schedulers = [torch.optim.lr_scheduler.ExponentialLR(opt, 0.7) for opt in (ours, theirs)]
    for _ in range(8):
        steps_match(flat, reference, ours, theirs, 1)
        for scheduler in schedulers:
            scheduler.step()
    assert flat_updates(ours) == 8


def test_a_tensor_lr_changed_in_place_is_followed() -> None:
    # The same tensor object stays in the group: only its value says the lr changed.
    flat, reference, ours, theirs = _pair(lr=torch.tensor(0.01), foreach=False)
    ours.param_groups[0]["foreach"] = None  # ours on the flat path, torch's on its CPU body
    steps_match(flat, reference, ours, theirs, 3)
    for optimizer in (ours, theirs):
        optimizer.param_groups[0]["lr"].fill_(0.1)
    steps_match(flat, reference, ours, theirs, 3)
    assert flat_updates(ours) == 6


def test_a_state_tensor_replaced_by_hand_is_updated() -> None:
    flat, reference, ours, theirs = _pair(lr=0.01)
    steps_match(flat, reference, ours, theirs, 3)
    for optimizer, params in ((ours, flat.params), (theirs, reference)):
        state = optimizer.state[params[1]]
        state["exp_avg"] = state["exp_avg"] * 3  # a new tensor, outside any flat buffer
    steps_match(flat, reference, ours, theirs, 3)
    torch.testing.assert_close(
        ours.state[flat.params[1]]["exp_avg"], theirs.state[reference[1]]["exp_avg"], rtol=0, atol=0
    )


def test_a_step_count_changed_on_one_parameter_is_followed() -> None:
    flat, reference, ours, theirs = _pair(lr=0.01)
    steps_match(flat, reference, ours, theirs, 3)
    for optimizer, params in ((ours, flat.params), (theirs, reference)):
        optimizer.state[params[2]]["step"].fill_(40.0)  # in place: the same tensor
    steps_match(flat, reference, ours, theirs, 3)


def test_load_state_dict_mid_run_replaces_the_cached_group() -> None:
    flat, reference, ours, theirs = _pair(lr=0.01)
    steps_match(flat, reference, ours, theirs, 3)
    saved = ours.state_dict()
    saved["param_groups"][0]["lr"] = 0.04  # the loaded group differs from the cached one
    for optimizer in (ours, theirs):
        optimizer.load_state_dict(copy.deepcopy(saved))  # state tensors of their own
    steps_match(flat, reference, ours, theirs, 3)
    assert flat_updates(ours) == 6


def test_a_new_param_group_leaves_the_cached_one_correct() -> None:
    flat, reference, ours, theirs = _pair(lr=0.01)
    steps_match(flat, reference, ours, theirs, 3)
    extra_ours = torch.ones(3, dtype=torch.float64)
    extra_theirs = extra_ours.clone()
    ours.add_param_group({"params": [extra_ours], "lr": 0.1})
    theirs.add_param_group({"params": [extra_theirs], "lr": 0.1})
    for _ in range(3):
        extra_ours.grad = torch.full_like(extra_ours, 0.5)
        extra_theirs.grad = torch.full_like(extra_theirs, 0.5)
        steps_match(flat, reference, ours, theirs, 1)
    assert_same([extra_ours], [extra_theirs])
    assert flat_updates(ours) == 3 + 3  # the new group is no layout: per-parameter


def test_a_state_dict_replaced_by_hand_is_followed() -> None:
    # The mapping itself changes (same key, a new dict of new tensors): found again.
    flat, reference, ours, theirs = _pair(lr=0.01)
    steps_match(flat, reference, ours, theirs, 3)
    for optimizer, params in ((ours, flat.params), (theirs, reference)):
        optimizer.state[params[0]] = {
            key: value.clone() * (2 if key == "exp_avg" else 1)
            for key, value in optimizer.state[params[0]].items()
        }
    steps_match(flat, reference, ours, theirs, 3)
