"""Optimizer names: one parser for the command line, the trainer and the trajectories."""

from __future__ import annotations

import pytest
import torch

import handgrad.optim
from handgrad.optim.names import (
    ALIASES,
    parse_optimizer_names,
    resolve_optimizer,
    torch_optimizer_class,
)


def test_parse_optimizer_names() -> None:
    assert parse_optimizer_names(" SGD, adam ") == ["sgd", "adam"]
    assert parse_optimizer_names(["Momentum"]) == ["momentum"]
    with pytest.raises(ValueError, match="comma-separated list"):
        parse_optimizer_names("sgd,,adam")
    with pytest.raises(ValueError, match="comma-separated list"):
        parse_optimizer_names([])
    with pytest.raises(ValueError, match="named more than once: adam"):
        parse_optimizer_names("adam,sgd,Adam")


def test_every_handgrad_optimizer_resolves_by_its_lowercase_name() -> None:
    for public, cls in handgrad.optim.OPTIMIZERS.items():
        assert resolve_optimizer(public.lower()) == (cls, {})
        assert torch_optimizer_class(public.lower()) is getattr(torch.optim, public)


def test_aliases_are_configurations_of_sgd() -> None:
    assert sorted(ALIASES) == ["momentum", "nesterov"]
    assert resolve_optimizer("Nesterov") == (
        handgrad.optim.SGD, {"momentum": 0.9, "nesterov": True}
    )
    assert resolve_optimizer("momentum", torch_optimizer_class) == (
        torch.optim.SGD, {"momentum": 0.9}
    )
    _, options = resolve_optimizer("momentum")
    options["momentum"] = 0.5  # a copy: the table is not changed
    assert ALIASES["momentum"][1] == {"momentum": 0.9}


def test_unknown_names_say_what_is_known() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer 'adma'; expected one of: .*adam.*"
                                         r"; or one of the aliases: momentum, nesterov"):
        resolve_optimizer("adma")
    with pytest.raises(ValueError, match=r"unknown optimizer 'nope'"):
        torch_optimizer_class("nope")
