"""from_torch / to_torch: the same network in the other world, with copied weights.

One registry pairs each torch.nn class with its handgrad class: :func:`register_conversion`,
called once per pair by the file that defines the handgrad class (this one for the layers,
activations, losses and containers below). :func:`from_torch` and :func:`to_torch` walk a
module tree, convert each module by its pair's rule, and then, for the whole tree:

- parameters and buffers are copies (never shared with the source); parameters tied in the
  source (one tensor in two places) are tied in the twin too;
- every module's train/eval mode is the source module's;
- nothing is drawn from any RNG (layers with weights are built on the meta device and then
  given the source's tensors);
- a module without a rule is a TypeError naming its place in the tree, e.g.
  ``from_torch: model.2: torch.nn.Conv3d is not supported (supported: ...)``.

Classes are matched exactly: a subclass (with its own forward, perhaps) is refused, not
mistranslated. torch has no residual container, so :class:`TorchResidual` is
:class:`handgrad.nn.Residual`'s twin; ``torch.nn.ModuleList``/``ModuleDict`` convert to
themselves, holding converted modules, inside a tree.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from handgrad.nn import activations, container, layers, loss
from handgrad.nn.module import Module

Convert = Callable[[torch.nn.Module, str], torch.nn.Module]
"""``convert(child, name)``: the twin of a child module (``name``: its attribute name, which
error messages use to say where in the tree a problem is)."""

Build = Callable[[Any, Convert], torch.nn.Module]
"""A conversion rule for one direction: ``build(source, convert) -> twin``."""


@dataclass(frozen=True)
class _Rule:
    target: type[torch.nn.Module]
    build: Build
    copies_tensors: bool  # built from constructor arguments: copy the tensors afterwards


_TO_HANDGRAD: dict[type[torch.nn.Module], _Rule] = {}
_TO_TORCH: dict[type[torch.nn.Module], _Rule] = {}


def register_conversion(
    torch_type: type[torch.nn.Module],
    handgrad_type: type[torch.nn.Module],
    arguments: Callable[[Any], dict[str, Any]] | None = None,
    *,
    to_handgrad: Build | None = None,
    to_torch: Build | None = None,
) -> None:
    """Teach :func:`from_torch` and :func:`to_torch` to convert ``torch_type`` ⇄ ``handgrad_type``.

    A layer (a module without children) needs only ``arguments(module)``: the constructor's
    keyword arguments read from an instance of either class (the two mirror each other's
    attribute names). The twin is built from them, then given a copy of each of the source's
    own parameters and buffers by name (the two classes must have the same names, as their
    state_dicts do). A layer that would draw initial weights must be built without drawing:
    put ``"device": "meta"`` (and the dtype) among its arguments — no meta tensor survives
    the copy. For example::

        register_conversion(torch.nn.Linear, Linear, lambda m: {
            "in_features": m.in_features, "out_features": m.out_features,
            "bias": m.bias is not None, "device": "meta", "dtype": m.weight.dtype})

    A module with children (or one whose twin is built differently) gives its own rule for
    a direction, ``to_handgrad(source, convert)`` / ``to_torch(source, convert)``, returning
    the twin: it calls ``convert(child, name)`` for each child and :func:`copy_tensors` for
    the tensors the module holds itself. Train/eval modes, tied parameters and the final
    checks are done for the whole tree by the caller. A direction without a rule of its own
    uses ``arguments``.

    Registering a class again with the same counterpart replaces its rules; with another
    counterpart it is a ValueError.
    """
    for kind, name in ((torch_type, "torch_type"), (handgrad_type, "handgrad_type")):
        if not (isinstance(kind, type) and issubclass(kind, torch.nn.Module)):
            raise TypeError(f"register_conversion: {name} must be a torch.nn.Module class")
    for direction, build in (("to_handgrad", to_handgrad), ("to_torch", to_torch)):
        if build is None and arguments is None:
            raise ValueError(
                f"register_conversion({torch_type.__name__}, {handgrad_type.__name__}): "
                f"give arguments, or {direction} for that direction"
            )
    for table, source, target in (
        (_TO_HANDGRAD, torch_type, handgrad_type),
        (_TO_TORCH, handgrad_type, torch_type),
    ):
        known = table.get(source)
        if known is not None and known.target is not target:
            raise ValueError(
                f"register_conversion: {_name(source)} already converts to "
                f"{_name(known.target)}, not {_name(target)}"
            )
    _TO_HANDGRAD[torch_type] = _rule(handgrad_type, arguments, to_handgrad)
    _TO_TORCH[handgrad_type] = _rule(torch_type, arguments, to_torch)


def _rule(
    target: type[torch.nn.Module],
    arguments: Callable[[Any], dict[str, Any]] | None,
    build: Build | None,
) -> _Rule:
    if build is not None:
        return _Rule(target, build, copies_tensors=False)
    assert arguments is not None  # checked by register_conversion
    read = arguments
    return _Rule(target, lambda source, convert: target(**read(source)), copies_tensors=True)


def copy_tensors(source: torch.nn.Module, twin: torch.nn.Module) -> None:
    """Give ``twin`` a copy of each parameter and buffer that ``source`` holds itself (not
    those of its children), by name. Parameters of a handgrad twin do not require grad;
    those of a torch twin do. ValueError if the two do not hold the same names."""
    requires_grad = not isinstance(twin, Module)
    for kind, read in (("parameters", _own_parameters), ("buffers", _own_buffers)):
        theirs, ours = read(source), read(twin)
        if sorted(theirs) != sorted(ours):
            raise ValueError(
                f"{_name(type(twin))} holds {kind} {sorted(ours)} but {_name(type(source))} "
                f"holds {sorted(theirs)}: its conversion rule builds the wrong twin"
            )
        for name, tensor in theirs.items():
            copied = tensor.detach().clone()
            if kind == "parameters":
                copied = torch.nn.Parameter(copied, requires_grad=requires_grad)
            setattr(twin, name, copied)


def _own_parameters(module: torch.nn.Module) -> dict[str, Tensor]:
    return dict(module.named_parameters(recurse=False, remove_duplicate=False))


def _own_buffers(module: torch.nn.Module) -> dict[str, Tensor]:
    return dict(module.named_buffers(recurse=False, remove_duplicate=False))


def children(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, child) of each direct child, in order, a child held twice listed twice."""
    return [
        (name, child)
        for name, child in module.named_modules(remove_duplicate=False)
        if name and "." not in name
    ]


def from_torch(module: torch.nn.Module) -> Module:
    """The handgrad twin of a torch.nn module tree of supported classes (tensors copied).

    Raises TypeError naming the place in the tree (``model``, ``model.2``, ...) of a module
    without a conversion rule (see :func:`register_conversion`).
    """
    twin = _convert_tree(module, _TO_HANDGRAD, "from_torch")
    if not isinstance(twin, Module):
        raise TypeError(
            f"from_torch: model: a {_name(type(module))} converts only as a part of a module "
            "(handgrad's containers are Sequential and Residual)"
        )
    return twin


def to_torch(module: torch.nn.Module) -> torch.nn.Module:
    """The torch.nn twin of a handgrad module tree (tensors copied; parameters require grad).

    A Dropout's private ``generator`` has no torch.nn counterpart: the twin uses torch's RNG.
    """
    return _convert_tree(module, _TO_TORCH, "to_torch")


def _convert_tree(
    root: torch.nn.Module, table: dict[type[torch.nn.Module], _Rule], direction: str
) -> torch.nn.Module:
    if not isinstance(root, torch.nn.Module):
        raise TypeError(f"{direction}: expected a torch.nn.Module, got {type(root).__name__}")

    def convert(module: torch.nn.Module, path: str) -> torch.nn.Module:
        rule = table.get(type(module))
        if rule is None:
            supported = ", ".join(sorted(_name(kind) for kind in table))
            raise TypeError(
                f"{direction}: {path}: {_name(type(module))} is not supported "
                f"(supported: {supported})"
            )
        twin = rule.build(module, lambda child, name: convert(child, f"{path}.{name}"))
        if rule.copies_tensors:
            copy_tensors(module, twin)
        return twin

    twin = convert(root, "model")
    _keep_modes(root, twin)
    _keep_ties(root, twin, direction)
    for name, tensor in itertools.chain(
        twin.named_parameters(remove_duplicate=False), twin.named_buffers(remove_duplicate=False)
    ):
        if tensor.is_meta:
            raise ValueError(
                f"{direction}: model.{name} of the twin is still on the meta device: the "
                "conversion rule of its module did not give it the source's tensor"
            )
    return twin


def _keep_modes(source: torch.nn.Module, twin: torch.nn.Module) -> None:
    """Each twin module in its source's train/eval mode (the root's where none matches)."""
    twin.train(source.training)
    for name, module in source.named_modules(remove_duplicate=False):
        try:
            twin.get_submodule(name).training = module.training
        except AttributeError:  # a rule built that part of the tree its own way
            continue


def _keep_ties(source: torch.nn.Module, twin: torch.nn.Module, direction: str) -> None:
    """Parameters that are one tensor in the source are one tensor in the twin."""
    places: dict[int, list[str]] = {}
    for name, param in source.named_parameters(remove_duplicate=False):
        places.setdefault(id(param), []).append(name)
    for names in places.values():
        if len(names) < 2:
            continue
        try:
            shared = twin.get_parameter(names[0])
            for name in names[1:]:
                owner, _, attribute = name.rpartition(".")
                setattr(twin.get_submodule(owner), attribute, shared)
        except AttributeError as error:
            raise ValueError(
                f"{direction}: parameters {', '.join(names)} are one tensor in the source, but "
                f"the twin does not hold them under those names ({error})"
            ) from error


def _name(kind: type) -> str:
    """torch.nn.Linear, handgrad.nn.Linear, or the full name of a class outside the two."""
    import handgrad.nn as handgrad_nn  # the package imports this module

    for prefix, namespace in (("torch.nn", torch.nn), ("handgrad.nn", handgrad_nn)):
        if getattr(namespace, kind.__name__, None) is kind:
            return f"{prefix}.{kind.__name__}"
    return f"{kind.__module__}.{kind.__qualname__}"


class TorchResidual(torch.nn.Module):
    """y = block(x) + shortcut(x) (the identity unless given) in torch.nn, which has no
    residual container: :class:`handgrad.nn.Residual`'s twin for from_torch/to_torch."""

    shortcut: torch.nn.Module | None

    def __init__(self, block: torch.nn.Module, shortcut: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.block = block
        self.add_module("shortcut", shortcut)

    def forward(self, input: Tensor) -> Tensor:
        skip = input if self.shortcut is None else self.shortcut(input)
        out: Tensor = self.block(input) + skip
        return out


# ----------------------------------------------------------------------- handgrad's own pairs


def _no_arguments(module: torch.nn.Module) -> dict[str, Any]:
    return {}


for _torch_type, _handgrad_type in (
    (torch.nn.Identity, activations.Identity),
    (torch.nn.ReLU, activations.ReLU),
    (torch.nn.Sigmoid, activations.Sigmoid),
    (torch.nn.Tanh, activations.Tanh),
):
    register_conversion(_torch_type, _handgrad_type, _no_arguments)
register_conversion(
    torch.nn.LeakyReLU, activations.LeakyReLU, lambda m: {"negative_slope": m.negative_slope}
)
register_conversion(torch.nn.ELU, activations.ELU, lambda m: {"alpha": m.alpha})
register_conversion(torch.nn.SiLU, activations.SiLU, lambda m: {"inplace": m.inplace})
register_conversion(torch.nn.Softmax, activations.Softmax, lambda m: {"dim": m.dim})
register_conversion(torch.nn.LogSoftmax, activations.LogSoftmax, lambda m: {"dim": m.dim})
register_conversion(torch.nn.GELU, activations.GELU, lambda m: {"approximate": m.approximate})
register_conversion(
    torch.nn.Softplus, activations.Softplus, lambda m: {"beta": m.beta, "threshold": m.threshold}
)
register_conversion(
    torch.nn.Linear,
    layers.Linear,
    lambda m: {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
        "device": "meta",  # no initial weights drawn: the source's are copied in
        "dtype": m.weight.dtype,
    },
)
register_conversion(torch.nn.Dropout, layers.Dropout, lambda m: {"p": m.p})
register_conversion(
    torch.nn.Flatten, layers.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}
)
register_conversion(torch.nn.MSELoss, loss.MSELoss, lambda m: {"reduction": m.reduction})
register_conversion(torch.nn.L1Loss, loss.L1Loss, lambda m: {"reduction": m.reduction})
register_conversion(
    torch.nn.HuberLoss, loss.HuberLoss, lambda m: {"reduction": m.reduction, "delta": m.delta}
)
register_conversion(
    torch.nn.CrossEntropyLoss,
    loss.CrossEntropyLoss,
    lambda m: {
        "weight": m.weight,  # the buffer, copied afterwards like every buffer
        "ignore_index": m.ignore_index,
        "reduction": m.reduction,
        "label_smoothing": m.label_smoothing,
    },
)
register_conversion(
    torch.nn.BCEWithLogitsLoss,
    loss.BCEWithLogitsLoss,
    lambda m: {"weight": m.weight, "reduction": m.reduction, "pos_weight": m.pos_weight},
)


def _sequential(kind: Callable[..., torch.nn.Module]) -> Build:
    def build(source: Any, convert: Convert) -> torch.nn.Module:
        named: OrderedDict[str, Any] = OrderedDict(
            (name, convert(child, name)) for name, child in children(source)
        )
        return kind(named)

    return build


register_conversion(
    torch.nn.Sequential,
    container.Sequential,
    to_handgrad=_sequential(container.Sequential),
    to_torch=_sequential(torch.nn.Sequential),
)


def _residual(kind: Callable[..., torch.nn.Module]) -> Build:
    def build(source: Any, convert: Convert) -> torch.nn.Module:
        shortcut = None if source.shortcut is None else convert(source.shortcut, "shortcut")
        return kind(convert(source.block, "block"), shortcut)

    return build


register_conversion(
    TorchResidual,
    container.Residual,
    to_handgrad=_residual(container.Residual),
    to_torch=_residual(TorchResidual),
)


def _module_list(source: Any, convert: Convert) -> torch.nn.Module:
    return torch.nn.ModuleList(convert(child, name) for name, child in children(source))


def _module_dict(source: Any, convert: Convert) -> torch.nn.Module:
    return torch.nn.ModuleDict({name: convert(child, name) for name, child in children(source)})


for _kind, _build in ((torch.nn.ModuleList, _module_list), (torch.nn.ModuleDict, _module_dict)):
    register_conversion(_kind, _kind, to_handgrad=_build, to_torch=_build)
