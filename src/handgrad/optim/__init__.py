"""The torch.optim family written by hand.

Every class subclasses :class:`torch.optim.Optimizer` (and no torch optimizer) with the same
name, constructor arguments, defaults, state keys and errors as its torch.optim namesake, so
state_dicts and LR schedulers move freely between the two libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module that defines it. Imported on first use so that importing
# handgrad.optim stays cheap.
_MODULE_OF = {
    "SGD": "sgd",
    "RMSprop": "rmsprop",
    "Adam": "adam",
    "AdamW": "adamw",
    "Adamax": "adamax",
    "NAdam": "nadam",
    "RAdam": "radam",
    "Adagrad": "adagrad",
    "Adadelta": "adadelta",
    "Rprop": "rprop",
    "ASGD": "asgd",
    "Adafactor": "adafactor",
    "SparseAdam": "sparse_adam",
    "LBFGS": "lbfgs",
    "Muon": "muon",
}

__all__ = [*sorted(_MODULE_OF), "optimizer_class"]


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        module = importlib.import_module(f"{__name__}.{_MODULE_OF[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def optimizer_class(name: str) -> type[Any]:
    """The handgrad optimizer class for a lowercase torch.optim name (``"adam"`` -> Adam).

    Raises ``ValueError`` naming the known names for anything else.
    """
    by_lower = {public.lower(): public for public in _MODULE_OF}
    key = name.strip().lower()
    if key not in by_lower:
        known = ", ".join(sorted(by_lower))
        raise ValueError(f"unknown optimizer {name!r}; expected one of: {known}")
    cls: type[Any] = __getattr__(by_lower[key])
    return cls
