"""Optimizer names as the command line and the runners take them: one parser for all.

A name is a lowercase torch.optim class name (``"adam"`` → Adam) or a textbook name for a
configuration of one (:data:`ALIASES`: ``momentum`` is SGD with momentum 0.9, ``nesterov``
the same with Nesterov's look-ahead). :func:`parse_optimizer_names` reads a comma-separated
list, :func:`resolve_optimizer` turns one name into the class and the constructor arguments
the name implies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

OptimizerLookup = Callable[[str], type[Any]]

# Textbook names for configurations of a torch.optim class.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "momentum": ("sgd", {"momentum": 0.9}),
    "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}),
}


def parse_optimizer_names(names: str | Sequence[str]) -> list[str]:
    """``"sgd, Adam"`` or ``["sgd", "adam"]`` → ``["sgd", "adam"]``.

    Names are stripped and lowercased; an empty list, an empty name or a name given twice is
    a ``ValueError`` naming the input. Whether a name is known is :func:`resolve_optimizer`'s
    question.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    parsed = [str(item).strip().lower() for item in items]
    if not parsed or any(not item for item in parsed):
        raise ValueError(f"optimizers must be a comma-separated list of names, got {names!r}")
    repeated = sorted({item for item in parsed if parsed.count(item) > 1})
    if repeated:
        raise ValueError(f"optimizer(s) named more than once: {', '.join(repeated)}")
    return parsed


def handgrad_optimizer_class(name: str) -> type[Any]:
    """handgrad's class for a lowercase torch.optim name (looked up at call time, so that
    tests may substitute :func:`handgrad.optim.optimizer_class`)."""
    import handgrad.optim

    return handgrad.optim.optimizer_class(name)


def torch_optimizer_class(name: str) -> type[Any]:
    """torch.optim's own class for a lowercase name (``"adam"`` → ``torch.optim.Adam``)."""
    by_lower = {
        public.lower(): obj
        for public, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    }
    key = name.strip().lower()
    if key not in by_lower:
        known = ", ".join(sorted(by_lower))
        raise ValueError(f"unknown optimizer {name!r}; expected one of: {known}")
    return by_lower[key]


def resolve_optimizer(
    name: str, lookup: OptimizerLookup | None = None
) -> tuple[type[Any], dict[str, Any]]:
    """The class and the extra constructor arguments for ``name``.

    ``lookup`` maps a lowercase torch.optim name to a class (default:
    :func:`handgrad_optimizer_class`; :func:`torch_optimizer_class` for torch's). An unknown
    name is a ``ValueError`` naming it, the classes known and the aliases.
    """
    key = name.strip().lower()
    base, extra = ALIASES.get(key, (key, {}))
    find = lookup if lookup is not None else handgrad_optimizer_class
    try:
        cls = find(base)
    except ValueError as error:
        aliases = ", ".join(sorted(ALIASES))
        raise ValueError(f"{error}; or one of the aliases: {aliases}") from None
    return cls, dict(extra)


__all__ = [
    "ALIASES",
    "handgrad_optimizer_class",
    "parse_optimizer_names",
    "resolve_optimizer",
    "torch_optimizer_class",
]
