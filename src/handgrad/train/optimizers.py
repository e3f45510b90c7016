"""Optimizers for a training run: from a name, the user's arguments and a model to one
``torch.optim.Optimizer``, with learning rates that stay good when the batch size changes.

- :func:`make_optimizer` — ``"adam"``, ``"momentum"``, ... (the names of
  :mod:`handgrad.optim.names`) with the arguments the user set (``--opt NAME.KEY=VALUE``).
  Every argument is checked against the class's constructor and then passed to it, so a
  bad value is refused by the optimizer's own error (with the setting named in front).
- Two optimizers train a part of the network only, as torch's documentation recommends:
  **Muon** the 2-D weight matrices, **SparseAdam** the parameters of layers with sparse
  gradients (``Embedding(sparse=True)``). The other parameters are trained by AdamW (its
  arguments: ``--opt muon.adamw.KEY=VALUE``); the two act as one optimizer,
  :class:`Partitioned`.
- :func:`default_lr` — the learning rate used when none is given: the task's tuned rate
  (or the optimizer's own default) at the task's reference batch size, scaled to the batch
  size of the run by :func:`scaled_lr`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import Optimizer

from handgrad.optim import names

if TYPE_CHECKING:
    from handgrad.train.tasks import Backend, Task

# The optimizers that train one part of a network; the rest is trained by COMPANION.
PARTIAL = ("muon", "sparseadam")
COMPANION = "adamw"

# Arguments training runs give by default where the class's default suits another use.
# L-BFGS without a line search diverges on mini-batches at every fixed rate tried (digits,
# lr 0.001: loss 3e9 in 4 epochs), its curvature pairs mixing batches; the strong-Wolfe
# search only accepts steps that lower the batch's loss, with lr = 1 its first trial.
RUN_DEFAULTS: dict[str, dict[str, Any]] = {"lbfgs": {"line_search_fn": "strong_wolfe"}}

# How the learning rate follows the batch size: lr ∝ B^exponent below the reference batch.
# See scaled_lr for the derivation. Optimizers not named here are adaptive (exponent 1/2).
LINEAR_SCALING = frozenset({"sgd", "momentum", "nesterov", "asgd", "lbfgs", "sgdschedulefree"})


def constructor_arguments(cls: type[Any]) -> dict[str, Any]:
    """The keyword arguments of ``cls(params, ...)`` and their defaults (``params`` left
    out): what ``--opt NAME.KEY=VALUE`` may set."""
    signature = inspect.signature(cls.__init__)
    return {
        name: parameter.default
        for name, parameter in list(signature.parameters.items())[1:]
        if name != "params"
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL,
                                   inspect.Parameter.VAR_KEYWORD)
    }


def check_arguments(name: str, cls: type[Any], options: Mapping[str, Any]) -> None:
    """A ``ValueError`` naming the setting when ``options`` holds an argument ``cls`` does not
    take, or a value of the wrong kind for the argument's default (a bool where the default is
    one, a number where it is a number); everything else is the optimizer's to judge."""
    known = constructor_arguments(cls)
    for key, value in options.items():
        if key not in known:
            raise ValueError(
                f"{name}.{key}: {cls.__name__} has no argument {key!r}; its arguments are: "
                + ", ".join(known)
            )
        default = known[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{name}.{key}={value!r}: expected true or false")
        if (isinstance(default, int | float) and not isinstance(default, bool)
                and (isinstance(value, bool) or not isinstance(value, int | float))):
            raise ValueError(f"{name}.{key}={value!r}: expected a number")
        allowed = _CHECKED_WHEN_STEPPING.get(cls.__name__.lower(), {}).get(key)
        if allowed is not None and value not in allowed:
            raise ValueError(f"{name}.{key}={value!r}: expected one of "
                             + ", ".join("none" if v is None else str(v) for v in allowed))
        if isinstance(default, tuple) and not isinstance(value, tuple | list):
            raise ValueError(
                f"{name}.{key}={value!r}: expected {len(default)} comma-separated values, "
                f"like {','.join(str(item).lower() for item in default)}"
            )


# Arguments an optimizer checks only when it steps; checked here, before any training.
_CHECKED_WHEN_STEPPING: dict[str, dict[str, tuple[Any, ...]]] = {
    "lbfgs": {"line_search_fn": (None, "strong_wolfe")},
}


def scaled_lr(lr: float, name: str, batch_size: int, reference_batch: int) -> float:
    """``lr``, tuned at ``reference_batch``, for a run with ``batch_size``.

    A mini-batch gradient is the full gradient plus noise of variance σ²/B. Below the
    reference batch the noise grows, and the rate must shrink to keep the same noise per
    unit of progress:

    - SGD-like updates (``lr · g``) move by the gradient itself: keeping the SDE's
      temperature lr/B fixed gives the linear rule lr ∝ B (Goyal et al. 2017; Smith & Le
      2018);
    - adaptive updates (``lr · m/√v``: Adam, RMSprop, Adagrad, Muon's orthogonalized step,
      ...) are normalized by the gradient's scale, noise included; their SDE (Malladi et al.
      2022) gives the square-root rule lr ∝ √B.

    Above the reference batch the rate is kept: the stability bound lr < 2/λ_max of the
    loss's curvature does not grow with the batch, and a larger rate is where runs diverge::

        lr(B) = lr_ref · min(1, B / B_ref)^k,   k = 1 (SGD-like), 1/2 (adaptive)
    """
    exponent = 1.0 if name in LINEAR_SCALING else 0.5
    return lr * min(1.0, batch_size / reference_batch) ** exponent


def own_default_lr(name: str, backend: Backend = "handgrad") -> float:
    """The optimizer's own default learning rate (its constructor's)."""
    cls, _ = resolve(name, backend)
    lr = constructor_arguments(cls).get("lr")
    return float(lr) if isinstance(lr, int | float) else 1e-3


def default_lr(name: str, task: Task, batch_size: int, backend: Backend = "handgrad") -> float:
    """The learning rate of ``name`` when none is given: the task's tuned rate for it (else
    the optimizer's own default), scaled from the task's reference batch size to
    ``batch_size`` by :func:`scaled_lr`."""
    tuned = task.default_lr(name)
    lr = tuned if tuned is not None else own_default_lr(name, backend)
    return scaled_lr(lr, name, batch_size, task.defaults.batch_size)


def resolve(name: str, backend: Backend = "handgrad") -> tuple[type[Optimizer], dict[str, Any]]:
    """The class (handgrad's, or torch.optim's for ``backend="torch"``) and the arguments
    the name implies (``momentum`` → SGD with momentum 0.9)."""
    lookup = names.torch_optimizer_class if backend == "torch" else None
    return names.resolve_optimizer(name, lookup)


class Partitioned(Optimizer):
    """Several optimizers acting as one, each over its own parameters.

    ``param_groups`` is the list of every part's groups (the same dictionaries), so an LR
    scheduler, a gradient all-reduce or ``zero_grad`` reach every parameter; ``step`` steps
    every part; the state dict holds each part's. ``parts`` maps a label (``"muon"``,
    ``"adamw"``) to its optimizer.
    """

    def __init__(self, parts: Mapping[str, Optimizer]) -> None:
        if not parts:
            raise ValueError("Partitioned needs at least one optimizer")
        params = [p for part in parts.values() for group in part.param_groups
                  for p in group["params"]]
        # Optimizer.__init__ builds groups of its own (checks, hooks); once the parts are
        # set, param_groups are theirs.
        self.parts: dict[str, Optimizer] = {}
        self._own_groups: list[dict[str, Any]] = []
        super().__init__(params, {})
        self.parts = dict(parts)
        self.defaults = {label: part.defaults for label, part in self.parts.items()}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every part's groups, read afresh: a part's ``load_state_dict`` replaces its group
        dictionaries, and a scheduler must reach the new ones."""
        if not self.parts:
            return self._own_groups
        return [group for part in self.parts.values() for group in part.param_groups]

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self._own_groups = groups

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Step every part (the closure, if any, is evaluated once, before)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts.values():
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"parts": {label: part.state_dict() for label, part in self.parts.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("parts")
        if not isinstance(saved, dict) or sorted(saved) != sorted(self.parts):
            found = sorted(saved) if isinstance(saved, dict) else saved
            raise ValueError(f"state dict holds the parts {found!r}, expected "
                             f"{sorted(self.parts)}")
        for label, part in self.parts.items():
            part.load_state_dict(saved[label])


def _partial_parameters(name: str, model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters Muon (2-D weights) or SparseAdam (layers with sparse gradients) train."""
    if name == "muon":
        return [p for p in model.parameters() if p.ndim == 2]
    chosen: list[torch.nn.Parameter] = []
    for module in model.modules():
        if getattr(module, "sparse", False) is True:
            chosen += list(module.parameters(recurse=False))
    return chosen


def make_optimizer(
    name: str,
    model: torch.nn.Module,
    lr: float,
    options: Mapping[str, Any] | None = None,
    *,
    companion_lr: float | None = None,
    backend: Backend = "handgrad",
) -> Optimizer:
    """The optimizer ``name`` over ``model``'s parameters with learning rate ``lr`` and the
    user's ``options`` (constructor arguments; an ``lr`` among them wins over ``lr``).

    ``muon`` and ``sparseadam`` train their part of the network (see the module docstring);
    the rest goes to AdamW with ``companion_lr`` and the options under the key ``"adamw"``
    (a mapping). A network without such parameters is a ``ValueError`` saying so. Any
    ``ValueError`` or ``TypeError`` of a constructor comes back as a ``ValueError`` naming
    the optimizer and the arguments it was given.
    """
    options = dict(options or {})
    cls, implied = resolve(name, backend)
    companion_options = options.pop(COMPANION, None) if name in PARTIAL else None
    check_arguments(name, cls, options)
    arguments = {**implied, "lr": lr, **options}
    if name not in PARTIAL:
        return _construct(name, cls, list(model.parameters()), arguments)

    chosen = _partial_parameters(name, model)
    if not chosen:
        what = ("2-D weight matrices" if name == "muon"
                else "sparse gradients (a layer such as Embedding(sparse=True))")
        raise ValueError(f"{name} trains parameters with {what}; this network has none")
    taken = {id(p) for p in chosen}
    rest = [p for p in model.parameters() if id(p) not in taken]
    parts = {name: _construct(name, cls, chosen, arguments)}
    if companion_options is not None and not isinstance(companion_options, Mapping):
        raise ValueError(f"{name}.{COMPANION} must be a table of AdamW arguments, "
                         f"like {name}.{COMPANION}.lr=0.001")
    if rest:
        companion_cls, _ = resolve(COMPANION, backend)
        extra = dict(companion_options or {})
        check_arguments(f"{name}.{COMPANION}", companion_cls, extra)
        extra = {"lr": companion_lr if companion_lr is not None else lr, **extra}
        parts[COMPANION] = _construct(f"{name}.{COMPANION}", companion_cls, rest, extra)
    elif companion_options:
        raise ValueError(f"{name}.{COMPANION}: every parameter is trained by {name}; "
                         "no AdamW to configure")
    return Partitioned(parts)


def _construct(
    label: str, cls: type[Optimizer], params: Iterable[torch.nn.Parameter],
    arguments: Mapping[str, Any],
) -> Optimizer:
    try:
        return cls(params, **arguments)
    except (ValueError, TypeError, RuntimeError) as error:
        given = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(f"{label} ({given}): {reason}") from None


def resolved_arguments(optimizer: Optimizer) -> dict[str, Any]:
    """Every constructor argument of ``optimizer`` as it trains (its ``defaults``, i.e. the
    arguments given and the class's defaults), as JSON values; for a :class:`Partitioned`
    one such mapping per part."""
    if isinstance(optimizer, Partitioned):
        return {label: resolved_arguments(part) for label, part in optimizer.parts.items()}
    return {key: json_value(value) for key, value in optimizer.defaults.items()
            if key != "params"}


def json_value(value: Any) -> Any:
    """``value`` as JSON can hold it: tuples become lists, tensors numbers, non-finite
    floats strings, anything else its ``str``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return json_value(value.item())
    if isinstance(value, tuple | list):
        return [json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    return str(value)


__all__ = [
    "COMPANION",
    "LINEAR_SCALING",
    "PARTIAL",
    "RUN_DEFAULTS",
    "Partitioned",
    "check_arguments",
    "constructor_arguments",
    "default_lr",
    "json_value",
    "make_optimizer",
    "own_default_lr",
    "resolve",
    "resolved_arguments",
    "scaled_lr",
]
