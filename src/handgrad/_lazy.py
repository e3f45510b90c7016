"""Lazy package attributes (PEP 562): a package names what it exports and where each lives,
and imports that module on first use, so importing the package stays cheap (``handgrad.train``
and ``handgrad.check`` pull in the trainer, plots and torch.nn only when asked)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, module_of: dict[str, str]) -> Callable[[str], Any]:
    """A package's module-level ``__getattr__``: ``name`` from ``package.<module_of[name]>``,
    imported when first asked for; AttributeError (as Python's) for any other name."""

    def __getattr__(name: str) -> Any:
        if name in module_of:
            module = importlib.import_module(f"{package}.{module_of[name]}")
            return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
