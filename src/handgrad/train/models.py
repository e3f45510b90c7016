"""Models by name: the networks ``handgrad train --model NAME[:key=value,...]`` builds.

A model is registered once with :func:`register_model`: a *builder*
``build(task, options) -> torch.nn.Module`` that returns the network in plain ``torch.nn``
layers, the options it takes (each with a converter that validates a value) and the
defaults, which may depend on the task (the MLP's width is the task's). The training code
then

1. parses the spec (:func:`parse_model`): ``"mlp:hidden=100x100,activation=sigmoid"`` →
   :class:`ModelSpec`, every option name and value checked, one-line errors that list what
   exists;
2. builds the torch.nn network inside a forked RNG seeded from the run's seed (the same
   weights for the same seed, the caller's RNG untouched), for the task's input and output
   shapes;
3. converts it to handgrad's layers with :func:`handgrad.nn.from_torch` (``backend=
   "handgrad"``), or keeps it as the autograd reference (``backend="torch"``): both
   backends start from the same weights.

A new model (a CNN, a GPT) is a builder and a ``register_model`` call; its layers need a
conversion (:func:`handgrad.nn.register_conversion`) for the handgrad backend. The builder
reads what it needs from the :class:`~handgrad.train.tasks.Task`: ``input_shape``,
``num_outputs``, ``kind``.

The default model is ``mlp``: the task's network (``cubic``: 1-100-1, ``digits``:
64-256-10, csv: one hidden layer of 64), ReLU, no dropout.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from handgrad import nn as hnn
from handgrad.train import seeds

if TYPE_CHECKING:
    from handgrad.train.tasks import Backend, Task

Builder = Callable[["Task", dict[str, Any]], torch.nn.Module]
"""``build(task, options) -> torch.nn.Module``: the network in plain torch.nn, ``options``
complete (every option of the model, defaults filled in, values converted)."""

Converter = Callable[[Any], Any]
"""An option's converter: a value as typed (text from the command line, or a number, a
list, ... from a TOML file or Python) → the value the builder takes. Raises ``ValueError``
saying what was expected."""


@dataclass(frozen=True)
class ModelOption:
    """One option of a model: its converter, and a line of help (shown in errors and docs)."""

    convert: Converter
    help: str


@dataclass(frozen=True)
class ModelEntry:
    """A registered model (see :func:`register_model`)."""

    name: str
    build: Builder
    options: Mapping[str, ModelOption]
    defaults: Callable[[Task], dict[str, Any]]
    help: str


@dataclass(frozen=True)
class ModelSpec:
    """A model name and the options given for it (converted; options not given are absent,
    to be filled with the task's defaults by :func:`resolve_model`).

    ``str(spec)`` is the spec in the command line's syntax, options in name order.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        items = ",".join(f"{key}={format_option(self.options[key])}"
                         for key in sorted(self.options))
        return f"{self.name}:{items}"


_REGISTRY: dict[str, ModelEntry] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def register_model(
    name: str,
    build: Builder,
    *,
    options: Mapping[str, ModelOption],
    defaults: Callable[[Task], dict[str, Any]],
    help: str,
) -> None:
    """Make ``--model name[:key=value,...]`` build ``build(task, options)``.

    ``options`` maps each option's name to its :class:`ModelOption`; ``defaults(task)``
    returns a value for every one of them (the converted form). Registering a name again
    replaces its entry.
    """
    if not _NAME.match(name):
        raise ValueError(
            f"model name must be lowercase letters, digits, '-' or '_', got {name!r}"
        )
    bad = [key for key in options if not _NAME.match(key)]
    if bad:
        raise ValueError(f"model {name}: option names must be lowercase words, got {bad!r}")
    _REGISTRY[name] = ModelEntry(name, build, dict(options), defaults, help)


def model_names() -> list[str]:
    """The registered models' names, sorted."""
    return sorted(_REGISTRY)


def describe_models() -> str:
    """One line per model: ``name (option, option): help`` (for ``--help``)."""
    return "; ".join(
        f"{entry.name} ({', '.join(sorted(entry.options)) or 'no options'}): {entry.help}"
        for entry in (_REGISTRY[name] for name in model_names())
    )


def model_entry(name: str) -> ModelEntry:
    """The registered model ``name``; a ``ValueError`` listing the models otherwise."""
    entry = _REGISTRY.get(name.strip().lower()) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(model_names())}")
    return entry


def parse_model(spec: str | ModelSpec | Mapping[str, Any]) -> ModelSpec:
    """A :class:`ModelSpec` from ``"name"``, ``"name:key=value,key=value"``, a mapping
    ``{"name": ..., key: value, ...}`` (a TOML table) or a spec (re-validated).

    Unknown models and options, repeated options and values an option's converter refuses
    are ``ValueError``s of one line, naming the spec and listing what exists.
    """
    if isinstance(spec, ModelSpec):
        name, given = spec.name, dict(spec.options)
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"a model table needs its name (name = \"mlp\"), got {dict(spec)!r}")
        name = spec["name"]
        given = {key: value for key, value in spec.items() if key != "name"}
    elif isinstance(spec, str):
        name, given = _split_spec(spec)
    else:
        raise TypeError(f"model must be a string like 'mlp:hidden=100x100', got {spec!r}")
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {name!r}")
    entry = model_entry(name)
    options: dict[str, Any] = {}
    for key, value in given.items():
        option = entry.options.get(key)
        if option is None:
            known = ", ".join(sorted(entry.options)) or "none"
            raise ValueError(
                f"model {entry.name} has no option {key!r}; its options are: {known}"
            )
        try:
            options[key] = option.convert(value)
        except (ValueError, TypeError) as error:
            raise ValueError(f"model {entry.name}: {key}={value!r}: {error}") from None
    return ModelSpec(entry.name, options)


def _split_spec(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.strip().partition(":")
    options: dict[str, str] = {}
    if not rest.strip():
        return name.strip(), options
    for item in rest.split(","):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(
                f"model {text!r}: expected NAME:key=value,key=value, got the item {item!r}"
            )
        if key in options:
            raise ValueError(f"model {text!r}: option {key!r} given twice")
        options[key] = value.strip()
    return name.strip(), options


def resolve_model(spec: str | ModelSpec | Mapping[str, Any], task: Task) -> ModelSpec:
    """``spec`` with every option filled in: the task's defaults, then the options given."""
    parsed = parse_model(spec)
    entry = model_entry(parsed.name)
    return ModelSpec(entry.name, {**entry.defaults(task), **parsed.options})


def build_model(
    spec: str | ModelSpec | Mapping[str, Any],
    task: Task,
    seed: int,
    backend: Backend = "handgrad",
) -> torch.nn.Module:
    """The network ``spec`` names for ``task``, initialized from ``seed`` alone.

    Built in torch.nn inside ``fork_rng`` (the caller's RNG stream is left as it was); for
    ``backend="handgrad"`` converted by :func:`handgrad.nn.from_torch` (same weights).
    """
    model = reference_model(spec, task, seed)
    return model if backend == "torch" else hnn.from_torch(model)


def reference_model(
    spec: str | ModelSpec | Mapping[str, Any], task: Task, seed: int
) -> torch.nn.Module:
    """The network ``spec`` names for ``task`` in plain torch.nn, initialized from ``seed``."""
    resolved = resolve_model(spec, task)
    entry = model_entry(resolved.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.derived_seed(seeds.check_seed(seed), seeds.INIT))
        return entry.build(task, dict(resolved.options))


def format_option(value: Any) -> str:
    """An option's value in the command line's syntax (``(100, 100)`` → ``100x100``)."""
    if isinstance(value, tuple | list):
        return "x".join(str(item) for item in value) if value else "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- converters shared by models -------------------------------------------------------------


def widths(value: Any) -> tuple[int, ...]:
    """Layer widths: ``"100x100"``, ``"100"``, ``"none"`` (no hidden layer), ``100`` or
    ``[100, 100]``; each a positive integer."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "0"):
            return ()
        items: list[Any] = text.split("x")
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("expected widths like 100x100 (or none)")
    result = []
    for item in items:
        try:
            width = int(item) if not isinstance(item, bool | float) else None
        except ValueError:
            width = None
        if width is None or width < 1:
            raise ValueError(f"expected positive integer widths like 100x100, got {item!r}")
        result.append(width)
    return tuple(result)


def probability(value: Any) -> float:
    """A dropout probability p, 0 ≤ p < 1."""
    try:
        p = float(value) if not isinstance(value, bool) else None
    except ValueError:
        p = None
    if p is None or not 0 <= p < 1:
        raise ValueError("expected a probability 0 <= p < 1")
    return p


def _activation_classes() -> dict[str, type[torch.nn.Module]]:
    """Lowercase name → torch.nn class, for each element-wise activation handgrad converts
    (read from handgrad.nn, so an activation added there is offered here)."""
    names = ("ReLU", "Sigmoid", "Tanh", "GELU", "ELU", "LeakyReLU", "Softplus", "SiLU",
             "Identity")
    return {name.lower(): getattr(torch.nn, name) for name in names
            if hasattr(hnn, name) and hasattr(torch.nn, name)}


def activation(value: Any) -> str:
    """An activation's lowercase torch.nn name (``relu``, ``sigmoid``, ``tanh``, ...)."""
    known = _activation_classes()
    name = value.strip().lower() if isinstance(value, str) else None
    if name not in known:
        raise ValueError(f"expected an activation, one of: {', '.join(sorted(known))}")
    return name


# --- the multilayer perceptron ---------------------------------------------------------------


def mlp(task: Task, options: dict[str, Any]) -> torch.nn.Sequential:
    """Linear layers of the ``hidden`` widths, each followed by the ``activation`` (and
    Dropout(``dropout``) when positive), then a Linear layer to the task's outputs."""
    layer_widths = [task.num_inputs, *options["hidden"], task.num_outputs]
    make_activation = _activation_classes()[options["activation"]]
    layers: list[torch.nn.Module] = []
    for depth, (fan_in, fan_out) in enumerate(itertools.pairwise(layer_widths)):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if depth < len(layer_widths) - 2:  # no activation or dropout after the output layer
            layers.append(make_activation())
            if options["dropout"] > 0:
                layers.append(torch.nn.Dropout(options["dropout"]))
    return torch.nn.Sequential(*layers)


register_model(
    "mlp",
    mlp,
    options={
        "hidden": ModelOption(widths, "hidden widths, e.g. 100x100 (default: the task's)"),
        "activation": ModelOption(activation, "after each hidden layer (default: relu)"),
        "dropout": ModelOption(probability, "after each activation (default: the task's, 0)"),
    },
    defaults=lambda task: {"hidden": tuple(task.hidden), "activation": "relu",
                           "dropout": float(task.dropout)},
    help="fully connected layers (the task's network by default)",
)

DEFAULT_MODEL = "mlp"

__all__ = [
    "DEFAULT_MODEL",
    "ModelEntry",
    "ModelOption",
    "ModelSpec",
    "activation",
    "build_model",
    "describe_models",
    "format_option",
    "model_entry",
    "model_names",
    "parse_model",
    "probability",
    "reference_model",
    "register_model",
    "resolve_model",
    "widths",
]

# Models in modules of their own register themselves when imported.
from handgrad.train import cnn as _cnn  # noqa: E402, F401  (the "cnn" model)
from handgrad.train import text as _text  # noqa: E402, F401  (the "gpt" model)
