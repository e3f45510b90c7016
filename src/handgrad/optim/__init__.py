"""The torch.optim family written by hand.

Every class subclasses :class:`torch.optim.Optimizer` (and no torch optimizer) with the same
name, constructor arguments, defaults, state keys and errors as its torch.optim namesake, so
state_dicts and LR schedulers move freely between the two libraries. All but LBFGS and
SparseAdam are written on :class:`Optimizer`, the base that owns the step loop: a subclass
writes its update rule (docs/writing-an-optimizer.md).

Beyond torch.optim (:data:`BEYOND_TORCH`), each equal to its authors' implementation (the
reference named in its docstring) and interchangeable with it: Lion, SGDScheduleFree and
AdamWScheduleFree (with ``train()``/``eval()``), Prodigy, Adan, Lamb, ADOPT and SOAP.
"""

from __future__ import annotations

import torch

from handgrad.optim._base import Optimizer
from handgrad.optim.adadelta import Adadelta
from handgrad.optim.adafactor import Adafactor
from handgrad.optim.adagrad import Adagrad
from handgrad.optim.adam import Adam
from handgrad.optim.adamax import Adamax
from handgrad.optim.adamw import AdamW
from handgrad.optim.adan import Adan
from handgrad.optim.adopt import ADOPT
from handgrad.optim.asgd import ASGD
from handgrad.optim.lamb import Lamb
from handgrad.optim.lbfgs import LBFGS
from handgrad.optim.lion import Lion
from handgrad.optim.muon import Muon
from handgrad.optim.nadam import NAdam
from handgrad.optim.prodigy import Prodigy
from handgrad.optim.radam import RAdam
from handgrad.optim.rmsprop import RMSprop
from handgrad.optim.rprop import Rprop
from handgrad.optim.schedule_free import AdamWScheduleFree, SGDScheduleFree
from handgrad.optim.sgd import SGD
from handgrad.optim.soap import SOAP
from handgrad.optim.sparse_adam import SparseAdam

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    cls.__name__: cls
    for cls in (
        SGD, RMSprop, Adam, AdamW, Adamax, NAdam, RAdam, Adagrad, Adadelta, Rprop, ASGD,
        Adafactor, SparseAdam, LBFGS, Muon,
    )
}

# The optimizers torch.optim does not ship, each with its reference implementation's name.
BEYOND_TORCH: dict[str, type[torch.optim.Optimizer]] = {
    cls.__name__: cls
    for cls in (
        Lion, SGDScheduleFree, AdamWScheduleFree, Prodigy, Adan, Lamb, ADOPT, SOAP,
    )
}

__all__ = [*sorted(OPTIMIZERS), *sorted(BEYOND_TORCH), "BEYOND_TORCH", "OPTIMIZERS", "Optimizer",
           "optimizer_class"]  # fmt: skip


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The handgrad optimizer class for a lowercase class name (``"adam"`` -> Adam, ``"lion"``
    -> Lion): torch.optim's names and those of :data:`BEYOND_TORCH`.

    Raises ``ValueError`` naming the known names for anything else.
    """
    by_lower = {public.lower(): cls for public, cls in {**OPTIMIZERS, **BEYOND_TORCH}.items()}
    key = name.strip().lower()
    if key not in by_lower:
        known = ", ".join(sorted(by_lower))
        raise ValueError(f"unknown optimizer {name!r}; expected one of: {known}")
    return by_lower[key]
