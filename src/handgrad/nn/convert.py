"""from_torch / to_torch: the same network in the other world, with copied weights.

Supported: Linear, the activations (ReLU, Sigmoid, Tanh, LeakyReLU, ELU, GELU, Softplus,
Identity), Dropout, Flatten, Sequential (nested too) and the losses (MSELoss, L1Loss,
HuberLoss, CrossEntropyLoss, BCEWithLogitsLoss). Parameters and buffers are copied (never
shared), the train/eval mode is kept, and converting draws nothing from any RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from handgrad.nn import activations, container, layers, loss
from handgrad.nn.module import Module


def _copy(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().clone()


def _linear(source: Any, target_type: Any, requires_grad: bool) -> Any:
    # Built on the meta device so that no initialisation is drawn, then given the weights.
    twin = target_type(
        source.in_features,
        source.out_features,
        bias=source.bias is not None,
        device="meta",
        dtype=source.weight.dtype,
    )
    twin.weight = torch.nn.Parameter(source.weight.detach().clone(), requires_grad=requires_grad)
    if source.bias is not None:
        twin.bias = torch.nn.Parameter(source.bias.detach().clone(), requires_grad=requires_grad)
    return twin


# Each pair: (torch class, handgrad class, the constructor arguments read from an instance).
_PAIRS: list[tuple[type[torch.nn.Module], type[Module], Callable[[Any], dict[str, Any]]]] = [
    (torch.nn.Identity, activations.Identity, lambda m: {}),
    (torch.nn.ReLU, activations.ReLU, lambda m: {}),
    (torch.nn.Sigmoid, activations.Sigmoid, lambda m: {}),
    (torch.nn.Tanh, activations.Tanh, lambda m: {}),
    (torch.nn.LeakyReLU, activations.LeakyReLU, lambda m: {"negative_slope": m.negative_slope}),
    (torch.nn.ELU, activations.ELU, lambda m: {"alpha": m.alpha}),
    (torch.nn.GELU, activations.GELU, lambda m: {"approximate": m.approximate}),
    (torch.nn.Softplus, activations.Softplus, lambda m: {"beta": m.beta, "threshold": m.threshold}),
    (torch.nn.Dropout, layers.Dropout, lambda m: {"p": m.p}),
    (torch.nn.Flatten, layers.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    (torch.nn.MSELoss, loss.MSELoss, lambda m: {"reduction": m.reduction}),
    (torch.nn.L1Loss, loss.L1Loss, lambda m: {"reduction": m.reduction}),
    (torch.nn.HuberLoss, loss.HuberLoss, lambda m: {"reduction": m.reduction, "delta": m.delta}),
    (
        torch.nn.CrossEntropyLoss,
        loss.CrossEntropyLoss,
        lambda m: {
            "weight": _copy(m.weight),
            "ignore_index": m.ignore_index,
            "reduction": m.reduction,
            "label_smoothing": m.label_smoothing,
        },
    ),
    (
        torch.nn.BCEWithLogitsLoss,
        loss.BCEWithLogitsLoss,
        lambda m: {
            "weight": _copy(m.weight),
            "reduction": m.reduction,
            "pos_weight": _copy(m.pos_weight),
        },
    ),
]
_HANDGRAD_OF = {torch_type: (hg_type, args) for torch_type, hg_type, args in _PAIRS}
_TORCH_OF = {hg_type: (torch_type, args) for torch_type, hg_type, args in _PAIRS}


def _unsupported(module: object, known: list[str], direction: str) -> TypeError:
    return TypeError(
        f"{direction}: {type(module).__module__}.{type(module).__name__} is not supported; "
        f"supported layers: {', '.join(sorted(known))}"
    )


def _positions(sequential: torch.nn.Module) -> list[Any]:
    """A Sequential's modules, one per position (``children()`` would drop repeats).

    A parameter-free module repeated (``act = ReLU(); Sequential(l1, act, l2, act)``)
    becomes one twin per position; a repeated module with parameters (weight tying) has no
    faithful twin and is refused.
    """
    layers = [m for m in sequential._modules.values() if m is not None]
    for index, module in enumerate(layers):
        if any(m is module for m in layers[:index]) and any(True for _ in module.parameters()):
            raise ValueError(
                f"{type(module).__name__} appears more than once in a Sequential with shared "
                "parameters (weight tying); handgrad cannot convert shared parameters"
            )
    return layers


def from_torch(module: torch.nn.Module) -> Module:
    """The handgrad twin of a torch.nn network of supported layers (weights copied).

    Raises ``TypeError`` naming the layer (and listing the supported ones) for anything else;
    exact types are matched, so a subclass with its own forward is refused, not mistranslated.
    """
    kind = type(module)
    twin: Module
    if kind is torch.nn.Linear:
        twin = _linear(module, layers.Linear, requires_grad=False)
    elif kind is torch.nn.Sequential:
        twin = container.Sequential(*(from_torch(child) for child in _positions(module)))
    elif kind in _HANDGRAD_OF:
        hg_type, args = _HANDGRAD_OF[kind]
        twin = hg_type(**args(module))
    else:
        known = ["Linear", "Sequential", *(t.__name__ for t in _HANDGRAD_OF)]
        raise _unsupported(module, known, "from_torch")
    return twin.train(module.training)


def to_torch(module: Module) -> torch.nn.Module:
    """The torch.nn twin of a handgrad network (weights copied; parameters require grad).

    A Dropout's private ``generator`` has no torch.nn counterpart: the twin uses torch's RNG.
    """
    kind = type(module)
    twin: torch.nn.Module
    if kind is layers.Linear:
        twin = _linear(module, torch.nn.Linear, requires_grad=True)
    elif kind is container.Sequential:
        twin = torch.nn.Sequential(*(to_torch(child) for child in _positions(module)))
    elif kind in _TORCH_OF:
        torch_type, args = _TORCH_OF[kind]
        twin = torch_type(**args(module))
    else:
        known = ["Linear", "Sequential", *(t.__name__ for t in _TORCH_OF)]
        raise _unsupported(module, known, "to_torch")
    return twin.train(module.training)
