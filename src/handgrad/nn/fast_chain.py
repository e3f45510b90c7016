"""Sequential's one fast path: a chain of plain layers run by their kernels, not their modules.

A ``Sequential`` of ``Linear`` layers and element-wise activations computes nothing a list of
kernel calls does not: each child's ``forward`` is its kernel (``F.linear_forward``,
``F.sigmoid_forward``, …) and its ``backward`` the matching kernel backward plus
``accumulate_grad``. What the children add around the kernels — the module call, the hook
check, keeping and checking a ctx per layer — is the same each time and costs more than the
kernels on a small network (the 1-100-1 per-sample step: ~60 Python calls of which the kernels
are ~20; issue 12). So when a ``Sequential`` is such a chain, its forward calls the kernels
itself and its backward calls the kernels' backward in reverse:

    forward:  x_{i+1}, ctx_i = forward_i(x_i, θ_i)            for i = 0 … n−1
    backward: g_i, dθ_i = backward_i(g_{i+1}, ctx_i);  θ_i.grad += dθ_i   for i = n−1 … 0

The same kernels on the same tensors in the same order as the per-module path, so the same
bits (tests/nn/test_fast_chain.py: forward outputs, every ``.grad`` and the parameters after
Adam steps, float32 and float64). The contract to the outside is the per-module path's: the
output, ``.grad`` accumulated (not overwritten), the input gradient, per-sample gradients
(``backward(..., per_sample=True)`` stores each layer's, as its ``_recall`` would), the
errors of a bad input (a kernel that refuses an input hands it to the per-module path, which
raises the layer's error), and each child keeping the ctx of its part of the forward with
its output's shape, dtype and device (so ``net[i].backward`` works after ``net(x)`` and
releases it, and a second backward is refused, as after a per-module forward).

When it applies (:func:`chain_of`): every child is exactly a :class:`~handgrad.nn.Linear`,
:class:`~handgrad.nn.Sigmoid`, :class:`~handgrad.nn.Tanh`, :class:`~handgrad.nn.ReLU` or
:class:`~handgrad.nn.Identity` (not a subclass), none with hooks or a compiled call
(:func:`handgrad._compat.forward_runs_alone_each`), and the input a tensor. Anything else
runs the per-module path.

Measured for issue 12 (benchmarks/bench_train.py, per-sample part: 1-100-1 sigmoid, batch 1,
flat Adam; one thread, shared machine): −6% instructions per step (callgrind, 637k → 600k),
speed-up over the classroom loop 2.7–2.8x → 2.9–3.0x (paired chunks, three runs each); the
grid rows unchanged or faster.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from handgrad import _compat
from handgrad.nn import functional as F
from handgrad.nn import per_sample as _per_sample
from handgrad.nn.activations import Identity, ReLU, Sigmoid, Tanh
from handgrad.nn.gradients import accumulate_grad
from handgrad.nn.layers import Linear
from handgrad.nn.module import RELEASED, Module


def _identity_forward(x: Tensor) -> tuple[Tensor, F.Ctx]:
    return x, ()


def _identity_backward(grad_out: Tensor, ctx: F.Ctx) -> Tensor:
    return grad_out


# A layer's kernels, the very functions its module calls: (forward, backward); the
# activations' backward is (g, ctx) -> dx.
_ACTIVATIONS: dict[type, tuple[Any, Any]] = {
    Sigmoid: (F.sigmoid_forward, F.sigmoid_backward),
    Tanh: (F.tanh_forward, F.tanh_backward),
    ReLU: (F.relu_forward, F.relu_backward),
    Identity: (_identity_forward, _identity_backward),
}


class Chain:
    """The plan of one ``Sequential`` as a chain: per child, its kernels and parameters.

    ``steps[i]`` is ``(module, forward, backward, parameters)``; ``parameters`` is the
    ``Linear``'s own ``_parameters`` dict (read at every call, so a replaced weight is seen),
    None for an activation.
    """

    __slots__ = ("modules", "steps")

    def __init__(self, modules: tuple[Any, ...]) -> None:
        self.modules = modules
        steps: list[tuple[Module, Any, Any, dict[str, Any] | None]] = []
        for module in modules:
            if type(module) is Linear:
                steps.append((module, F.linear_forward, F.linear_backward, module._parameters))
            else:
                forward, backward = _ACTIVATIONS[type(module)]
                steps.append((module, forward, backward, None))
        self.steps: tuple[tuple[Module, Any, Any, dict[str, Any] | None], ...] = tuple(steps)

    def __reduce__(self) -> tuple[type[Chain], tuple[tuple[Any, ...]]]:
        """Pickled as its modules (and made again from them): its kernels are found by the
        modules' types, not pickled by name."""
        return Chain, (self.modules,)

    @staticmethod
    def eligible(modules: tuple[object, ...]) -> bool:
        """Whether these children form a chain: plain Linear and activation layers only."""
        return bool(modules) and all(type(m) is Linear or type(m) in _ACTIVATIONS for m in modules)

    def runs_alone(self) -> bool:
        """Whether calling each child would run its forward alone (no hooks, no compiled
        call, no trace): the condition under which skipping the modules changes nothing."""
        return _compat.forward_runs_alone_each(self.modules)

    def forward(self, x: Tensor) -> Tensor:
        """The chain's output; each child keeps its kernel's ctx as its own forward would
        (``Module._remember``), so a child's own ``backward`` still works after it."""
        for module, forward, _, parameters in self.steps:
            if parameters is None:
                x, ctx = forward(x)
            else:
                x, ctx = forward(x, parameters["weight"], parameters["bias"])
            module.__dict__["_saved"] = (ctx, (x.shape, x.dtype, x.device))
        return x

    def backward(self, grad: Tensor, input_grad: bool) -> Tensor | None:
        """dL/d(input) (None unless ``input_grad``); each Linear's dW, db accumulated into
        ``.grad``, per-sample gradients stored where a per-sample backward runs. Each child
        lets go of its ctx (``Module._take``: the same errors if one was already taken)."""
        per_sample = _per_sample._mode is not None
        for position in range(len(self.steps) - 1, -1, -1):
            module, _, backward, parameters = self.steps[position]
            saved = module.__dict__["_saved"]
            if saved is None or saved[0] is RELEASED:
                module._take()  # raises the ValueError that says which
            ctx = saved[0]
            module.__dict__["_saved"] = (RELEASED, saved[1])
            if per_sample:  # what the layer's _recall does in a per-sample backward
                _per_sample.store_per_sample(module, grad, ctx)
            wanted = input_grad or position > 0  # only the first layer may skip dx
            if parameters is None:
                if not wanted:
                    return None
                grad = backward(grad, ctx)
                continue
            grad_x, grad_weight, grad_bias = backward(grad, ctx, wanted)
            _, weight, bias = ctx
            accumulate_grad(weight, grad_weight)
            if bias is not None:
                accumulate_grad(bias, grad_bias)
            grad = grad_x
        return grad

    # -- for a loop that owns the network (handgrad.train.fast_epoch) -------------------------

    def forward_kept(self, x: Tensor) -> tuple[Tensor, list[F.Ctx], list[Tensor]]:
        """The chain's output, each kernel's ctx and each kernel's output, in order; nothing
        kept by the children (see :meth:`keep_released`)."""
        ctxs: list[F.Ctx] = []
        outputs: list[Tensor] = []
        for _, forward, _, parameters in self.steps:
            if parameters is None:
                x, ctx = forward(x)
            else:
                x, ctx = forward(x, parameters["weight"], parameters["bias"])
            ctxs.append(ctx)
            outputs.append(x)
        return x, ctxs, outputs

    def parameter_gradients(self, grad: Tensor, ctxs: list[F.Ctx]) -> list[Tensor]:
        """dL/dθ of every parameter from dL/d(output) and :meth:`forward_kept`'s ctxs, in
        parameter order (each Linear's weight, then its bias): the kernels :meth:`backward`
        runs with ``input_grad=False``, returning the gradients instead of accumulating
        them."""
        grads: list[Tensor] = []
        for position in range(len(self.steps) - 1, -1, -1):
            _, _, backward, parameters = self.steps[position]
            if parameters is None:
                if position == 0:
                    break
                grad = backward(grad, ctxs[position])
                continue
            grad_x, grad_weight, grad_bias = backward(grad, ctxs[position], position > 0)
            if grad_bias is not None:
                grads.append(grad_bias)
            grads.append(grad_weight)
            grad = grad_x
        grads.reverse()
        return grads

    def parameters(self) -> list[Tensor]:
        """The chain's parameters in :meth:`parameter_gradients`' order."""
        return [
            tensor
            for _, _, _, parameters in self.steps
            if parameters is not None
            for tensor in (parameters["weight"], parameters["bias"])
            if tensor is not None
        ]

    def keep_released(self, outputs: list[Tensor]) -> None:
        """Leave each child as a forward and backward of its own leave it: its ctx released,
        the shape, dtype and device of its output (``outputs``, as :meth:`forward_kept`
        returned them) kept, so that its next ``backward`` is refused until a forward."""
        for module, output in zip(self.modules, outputs, strict=True):
            module.__dict__["_saved"] = (RELEASED, (output.shape, output.dtype, output.device))


def chain_of(modules: tuple[object, ...], cached: Chain | None) -> Chain | None:
    """The chain for these children (``cached`` if it was made for the very same ones), or
    None where the fast path does not apply to them now."""
    if cached is None or cached.modules != modules:
        if not Chain.eligible(modules):
            return None
        cached = Chain(modules)
    return cached if cached.runs_alone() else None
