"""Sequential: modules in a chain; backward runs the chain in reverse."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from torch import Tensor

from handgrad.nn.functional import Ctx
from handgrad.nn.module import Module, direct_calls_allowed


class Sequential(Module):
    """y = f_n(… f_2(f_1(x))); backward hands each module's input gradient to the one before.

    Indexable (an int gives a module, a slice a new Sequential sharing the modules), sized
    and iterable, like torch.nn.Sequential.
    """

    def __init__(self, *modules: Module | OrderedDict[str, Module]) -> None:
        super().__init__()
        named: list[tuple[str, object]]
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            named = list(modules[0].items())  # torch.nn.Sequential(OrderedDict(...)) too
        else:
            named = [(str(index), module) for index, module in enumerate(modules)]
        for index, (name, module) in enumerate(named):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential: module {name} is {type(module).__module__}."
                    f"{type(module).__name__}, not a handgrad Module "
                    "(convert torch layers with handgrad.nn.from_torch)"
                )
            # A module keeps the context of its last forward only, so one instance in two
            # places would hand the first place the second place's context in backward.
            first = next((n for n, m in named[:index] if m is module), None)
            if first is not None:
                raise ValueError(
                    f"Sequential: module {name} is the same object as module {first} "
                    f"({module._get_name()}); use a separate instance for each position"
                )
            self.add_module(name, module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers())

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):  # a new Sequential of the same modules, names kept
            return Sequential(OrderedDict(list(self._modules.items())[index]))  # type: ignore[arg-type]
        return self._layers()[index]

    def _layers(self) -> list[Module]:
        return [module for module in self._modules.values() if isinstance(module, Module)]

    def forward(self, input: Tensor) -> Tensor:
        x = input
        layers = [module for module in self._modules.values() if isinstance(module, Module)]
        # Chainable layers without hooks run through their ctx functions (no per-layer
        # __call__, no grad_output checks in backward); the rest are called as usual.
        # Each layer still keeps its own ctx, as if called. The per-layer condition is the
        # instance half of Module.__call__'s, written out (a method call per layer measured
        # as much as the checks); the global half is checked once.
        direct = direct_calls_allowed()
        ctxs: list[Ctx | None] = []
        for module in layers:
            if (
                direct
                and module._chainable
                and module._compiled_call_impl is None
                and not (
                    module._forward_pre_hooks
                    or module._forward_hooks
                    or module._backward_pre_hooks
                    or module._backward_hooks
                )
            ):
                x, ctx = module._forward_ctx(x)
                object.__setattr__(module, "_saved", (ctx, x))
                ctxs.append(ctx)
            else:
                x = module(x)
                ctxs.append(None)
        return self._remember((layers, ctxs), x)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        (layers, ctxs) = self._recall(grad_output)
        grad = grad_output
        # A gradient is vouched for when it is grad_output (checked against the output just
        # now) or came from a chained layer (our kernels give the input's shape); one from any
        # other layer is checked by the next layer's own backward.
        vouched = True
        for position in range(len(layers) - 1, -1, -1):
            module, ctx = layers[position], ctxs[position]
            # Only the first layer may skip its input gradient: nothing upstream needs it.
            wanted = input_grad or position > 0
            if ctx is not None and vouched:
                upstream = module._backward_ctx(grad, ctx, wanted)
            else:
                upstream = module.backward(grad, input_grad=wanted)
                vouched = ctx is not None
            if position == 0:
                return upstream
            if upstream is None:
                raise ValueError(
                    f"Sequential: layer {position} ({module._get_name()}) returned "
                    "None from backward(input_grad=True); the layer before it needs a gradient"
                )
            grad = upstream
        return grad if input_grad else None  # no layers: the identity


class Residual(Module):
    """y = block(x) + shortcut(x), the shortcut being the identity unless given (ResNet).

    Backward: dx = block.backward(g) + shortcut.backward(g) (g alone for the identity), since
    x reaches y along both paths; each path accumulates its own parameter gradients.
    ``handgrad.nn.TorchResidual`` is its torch.nn twin (torch has no residual container), so
    ``from_torch``/``to_torch`` convert networks that use it.
    """

    shortcut: Module | None

    def __init__(self, block: Module, shortcut: Module | None = None) -> None:
        super().__init__()
        for name, module in (("block", block), ("shortcut", shortcut)):
            if module is not None and not isinstance(module, Module):
                raise TypeError(
                    f"Residual: {name} is {type(module).__module__}.{type(module).__name__}, "
                    "not a handgrad Module (convert torch layers with handgrad.nn.from_torch)"
                )
        if block is shortcut:
            raise ValueError("Residual: block and shortcut are the same object; use two")
        self.block = block
        self.add_module("shortcut", shortcut)  # None is kept as a slot, as torch does

    def forward(self, input: Tensor) -> Tensor:
        out = self.block(input)
        skip = input if self.shortcut is None else self.shortcut(input)
        if not isinstance(out, Tensor) or out.shape != skip.shape:
            raise ValueError(
                f"Residual: the block maps an input of shape {tuple(input.shape)} to "
                f"{_shape_of(out)}, but the shortcut gives {tuple(skip.shape)}; the two "
                "are added, so they must have the same shape"
            )
        return self._remember((), out + skip)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        self._recall(grad_output)
        through_block = self.block.backward(grad_output, input_grad=input_grad)
        if self.shortcut is None:
            through_skip: Tensor | None = grad_output
        else:
            through_skip = self.shortcut.backward(grad_output, input_grad=input_grad)
        if not input_grad:
            return None
        if through_block is None or through_skip is None:
            raise ValueError(
                "Residual: a branch returned None from backward(input_grad=True); "
                "the input gradient needs both"
            )
        return through_block + through_skip


def _shape_of(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__
