"""Sequential: modules in a chain; backward runs the chain in reverse.

A chain of plain Linear layers and element-wise activations runs by its kernels, without the
children's module calls: Sequential's one fast path, :mod:`handgrad.nn.fast_chain`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from torch import Tensor

from handgrad.nn.fast_chain import Chain, chain_of
from handgrad.nn.module import Module
from handgrad.nn.per_sample import PerSample


class Sequential(Module):
    """y = f_n(… f_2(f_1(x))); backward hands each module's input gradient to the one before.

    Indexable (an int gives a module, a slice a new Sequential sharing the modules), sized
    and iterable, like torch.nn.Sequential.

    Forward calls each child; backward calls each child's backward, last to first. A chain
    of plain ``Linear`` layers and element-wise activations without hooks instead runs
    their kernels directly (the same operations, the same bits;
    :mod:`handgrad.nn.fast_chain`): this container's one fast path.
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
        if isinstance(input, Tensor):
            chain = chain_of(tuple(self._modules.values()), self.__dict__.get("_chain"))
            if chain is not None:
                self.__dict__["_chain"] = chain  # (not a submodule: kept past __setattr__)
                try:
                    out = chain.forward(input)
                except (RuntimeError, TypeError, ValueError, IndexError):
                    pass  # a kernel refused the input: the layers below raise their error
                else:
                    return self._remember((chain,), out)
        layers = self._layers()
        for module in layers:
            input = module(input)
        return self._remember((layers,), input)

    def backward(
        self, grad_output: Tensor, input_grad: bool = True, per_sample: PerSample = False
    ) -> Tensor | None:
        """Each layer's backward, last to first. ``per_sample=True`` also stores every
        parameter's per-sample gradients, ``p.grad_sample`` (:mod:`handgrad.nn.per_sample`)."""
        if per_sample:
            return self._per_sample_backward(grad_output, input_grad, per_sample)
        ctx = self._recall(grad_output)
        if type(ctx[0]) is Chain:  # a forward by the fast path
            return ctx[0].backward(grad_output, input_grad)
        (layers,) = ctx
        if not layers:  # the identity
            return grad_output if input_grad else None
        # The gradient in flight is held by this list alone and handed to each layer by
        # pop(), so that it is freed as soon as the layer that reads it is done (CPython
        # moves a call's arguments into the callee's frame), not when the next one is: one
        # activation-sized tensor less alive through a deep backward, as in autograd.
        grads = [grad_output]
        del grad_output
        for position in range(len(layers) - 1, 0, -1):
            module = layers[position]
            grad = module.backward(grads.pop(), input_grad=True)
            if grad is None:
                raise ValueError(
                    f"Sequential: layer {position} ({module._get_name()}) returned None from "
                    "backward(input_grad=True); the layer before it needs a gradient"
                )
            grads.append(grad)
            del grad
        # Only the first layer may skip its input gradient: nothing before it needs one.
        first: Tensor | None = layers[0].backward(grads.pop(), input_grad=input_grad)
        return first


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

    def backward(
        self, grad_output: Tensor, input_grad: bool = True, per_sample: PerSample = False
    ) -> Tensor | None:
        """Both paths' backward, summed; ``per_sample=True`` as in :meth:`Sequential.backward`."""
        if per_sample:
            return self._per_sample_backward(grad_output, input_grad, per_sample)
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
