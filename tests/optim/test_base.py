"""ElementwiseOptimizer's own bookkeeping: old state_dicts, and every subclass on the base."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import handgrad.optim as hg
from handgrad.optim._base import ElementwiseOptimizer

ELEMENTWISE = [
    "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "Rprop",
    "ASGD",
]  # fmt: skip
# Group flags newer than the first releases: an old state_dict may lack any of them.
FLAGS = (
    "foreach", "maximize", "capturable", "differentiable", "fused", "amsgrad",
    "decoupled_weight_decay", "centered", "momentum",
)  # fmt: skip
# 0-d state that older torch versions saved as Python numbers.
OLD_NUMBERS = {"NAdam": ("step", "mu_product"), "ASGD": ("step", "eta", "mu")}


def test_the_elementwise_optimizers_share_the_base() -> None:
    for name in ELEMENTWISE:
        cls = getattr(hg, name)
        assert issubclass(cls, ElementwiseOptimizer), name
        assert not issubclass(cls, getattr(torch.optim, name)), name
    for name in ("SGD", "Adafactor", "SparseAdam", "LBFGS", "Muon"):
        assert not issubclass(getattr(hg, name), ElementwiseOptimizer), name


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


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_old_state_dicts_load_like_torch(name: str, device: torch.device) -> None:
    # Group flags an old state_dict lacks get torch's defaults; steps saved as numbers become
    # tensors of torch's dtype on torch's device; the next step is torch's.
    ours_cls, theirs_cls = getattr(hg, name), getattr(torch.optim, name)
    numbers = OLD_NUMBERS.get(name, ("step",))
    ours = _old_state_dict_loaded(ours_cls, FLAGS, numbers, device)
    theirs = _old_state_dict_loaded(theirs_cls, FLAGS, numbers, device)
    ours_group = {k: v for k, v in ours.param_groups[0].items() if k != "params"}
    theirs_group = {k: v for k, v in theirs.param_groups[0].items() if k != "params"}
    assert ours_group == theirs_group
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
