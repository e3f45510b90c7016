"""handgrad.optim has every optimizer torch.optim has, under the same name."""

from __future__ import annotations

import pytest
import torch

import handgrad.optim
from handgrad.optim import OPTIMIZERS, optimizer_class


def _torch_optimizers() -> set[str]:
    return {
        name
        for name, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    }


def test_every_torch_optimizer_has_a_handgrad_namesake() -> None:
    assert _torch_optimizers() == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_is_our_own_subclass_of_the_base_optimizer_only(name: str) -> None:
    cls = getattr(handgrad.optim, name)
    assert cls.__module__.startswith("handgrad.optim.")
    torch_classes = {getattr(torch.optim, n) for n in _torch_optimizers()}
    assert not torch_classes & set(cls.__mro__)
    assert issubclass(cls, torch.optim.Optimizer)


def test_optimizer_class_resolves_lowercase_names() -> None:
    assert optimizer_class("adam") is handgrad.optim.Adam
    assert optimizer_class(" RMSprop ") is handgrad.optim.RMSprop


def test_optimizer_class_names_the_known_ones_on_a_typo() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer 'adma'; expected one of: .*adam"):
        optimizer_class("adma")
