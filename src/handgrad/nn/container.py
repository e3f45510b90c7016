"""Sequential: modules in a chain; backward runs the chain in reverse."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from handgrad.nn.module import Module


class Sequential(Module):
    """y = f_n(… f_2(f_1(x))); backward hands each module's input gradient to the one before.

    Indexable (an int gives a module, a slice a new Sequential sharing the modules), sized
    and iterable, like torch.nn.Sequential.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential: module {index} is {type(module).__module__}."
                    f"{type(module).__name__}, not a handgrad Module "
                    "(convert torch layers with handgrad.nn.from_torch)"
                )
            # A module keeps the context of its last forward only, so one instance in two
            # places would hand the first place the second place's context in backward.
            first = next((i for i, m in enumerate(modules[:index]) if m is module), None)
            if first is not None:
                raise ValueError(
                    f"Sequential: module {index} is the same object as module {first} "
                    f"({module._get_name()}); use a separate instance for each position"
                )
            self.add_module(str(index), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers())

    def __getitem__(self, index: int | slice) -> Module:
        layers = self._layers()
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]

    def _layers(self) -> list[Module]:
        return [module for module in self._modules.values() if isinstance(module, Module)]

    def forward(self, x: Tensor) -> Tensor:
        layers = [module for module in self._modules.values() if isinstance(module, Module)]
        for module in layers:
            x = module(x)
        # The container's ctx is the chain that ran; each layer keeps its own ctx.
        return self._remember((layers,), x)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        (layers,) = self._recall(grad_output)
        grad = grad_output
        for position in range(len(layers) - 1, 0, -1):
            upstream = layers[position].backward(grad, input_grad=True)
            if upstream is None:
                raise ValueError(
                    f"Sequential: layer {position} ({layers[position]._get_name()}) returned "
                    "None from backward(input_grad=True); the layer before it needs a gradient"
                )
            grad = upstream
        if not layers:
            return grad if input_grad else None
        # Only the first layer may skip its input gradient: nothing upstream needs it.
        return layers[0].backward(grad, input_grad=input_grad)
