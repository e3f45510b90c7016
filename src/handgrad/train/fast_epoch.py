"""The training loop's one fast path: an epoch's steps checked once, not once per step.

A training step through the public objects checks everything a user may have changed since
the last one: the network's and the loss's hooks, the input's shape, dtype and device, each
layer's saved context, the optimizer's hooks, the flat layout and the flat state
(``optimizer.step()`` cannot know that nothing ran in between). Inside
:func:`handgrad.train.train_epoch` nothing of anyone else's runs between two steps: the
loop owns the network, the loss, the optimizer and the batches until the epoch ends. So after
one ordinary, fully checked step, the rest of the epoch runs the same kernels in the same
order with the checks left out:

    for each batch (x_b, y_b) after the first:
        ŷ, ctxs = forward kernels of the chain (x_b)              # Sequential's fast path
        ℓ, ctx_ℓ = loss kernel (ŷ, y_b);  stop if ℓ is not finite   # before any update
        g = loss backward kernel (1, ctx_ℓ)
        dθ = backward kernels of the chain (g, ctxs)                # into the flat gradient
        θ ← update(θ, dθ, state)                                     # the flat group's rule

The same kernels on the same tensors in the same order as the ordinary step, so the same
bits: parameters, optimizer state, losses, ``.grad`` and what each layer keeps (tested
against the per-step loop, tests/train/test_fast_epoch.py). What the first step checked
holds for the others: every batch is rows of the same ``x`` and ``y`` (so the same dtype,
device and trailing shape; class-index targets are checked once for all of ``y``), and
nothing else runs until the epoch ends. The loop runs under ``torch.inference_mode`` (see
:func:`_quiet_mode`).

When it applies (:meth:`FastEpoch.of`, then :meth:`FastEpoch.run` after the first step): the
model is a handgrad ``Sequential`` that runs as a chain (:mod:`handgrad.nn.fast_chain`:
plain ``Linear`` layers and element-wise activations, no hooks), the loss is ``MSELoss``
or ``CrossEntropyLoss`` with class-index targets (no weight, no label smoothing), reduced by
mean or sum, and without hooks, no per-sample gradients are being stored, and the optimizer
hands out its flat group (:meth:`handgrad.optim.Optimizer.flat_stepper`: one group over the
network's flattened parameters, its ``step`` unchanged and without hooks, the layout and
state ready). Anything else, or a first step that did not take the flat path, trains step
by step.

Measured for issue 12 (benchmarks/bench_train.py, per-sample part: 1-100-1 sigmoid, batch
1, flat Adam, 2-core AMD EPYC): the trainer's epoch is 4.9x (1 thread) and 4.8x (2 threads)
the classroom autograd loop's steps per second, where the same steps by the four public
calls (``zero_grad``, forward and loss, ``backward``, ``step``) are 2.9–3.0x: ~105 against
~175 µs per step. Of the difference, ~50 µs are the per-step checks and module bookkeeping
and ~20 µs the autograd dispatch that inference mode skips.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from handgrad import _compat
from handgrad.nn import functional as F
from handgrad.nn import per_sample as _per_sample
from handgrad.nn.container import Sequential
from handgrad.nn.fast_chain import Chain, chain_of
from handgrad.nn.loss import CLASS_INDEX_DTYPES, CrossEntropyLoss, MSELoss
from handgrad.nn.module import RELEASED
from handgrad.optim._base import FlatStepper, Optimizer

LossKernels = tuple[Callable[[Tensor, Tensor], tuple[Tensor, F.Ctx]], Callable[..., Tensor]]


class FastEpoch:
    """An epoch's steps after the first, for a network, loss and optimizer that allow it."""

    __slots__ = ("chain", "loss_fn", "model", "optimizer")

    def __init__(
        self, model: Sequential, chain: Chain, loss_fn: MSELoss | CrossEntropyLoss,
        optimizer: Optimizer,
    ) -> None:  # fmt: skip
        self.model = model
        self.chain = chain
        self.loss_fn = loss_fn
        self.optimizer = optimizer

    @classmethod
    def of(cls, model: Any, loss_fn: Any, optimizer: Any) -> FastEpoch | None:
        """The fast path for these three, or None where it does not apply (the types, the
        hooks and the per-sample mode; the optimizer's flat group is asked for in
        :meth:`run`, after the first step)."""
        if type(model) is not Sequential or not isinstance(optimizer, Optimizer):
            return None
        if type(loss_fn) not in (MSELoss, CrossEntropyLoss):
            return None
        if _per_sample._mode is not None or getattr(optimizer, "per_sample", False):
            return None
        if not (_compat.forward_runs_alone(model) and _compat.forward_runs_alone(loss_fn)):
            return None
        chain = chain_of(tuple(model._modules.values()), model.__dict__.get("_chain"))
        if chain is None:
            return None
        return cls(model, chain, loss_fn, optimizer)

    def run(self, x: Tensor, y: Tensor, batches: Sequence[Tensor]) -> list[float] | None:
        """Train on ``batches`` (index tensors into ``x`` and ``y``), one step each; the
        loss of each step, before its update. A last loss that is not finite is that of a
        step stopped before its update, as :func:`handgrad.train.train_step` stops.

        None (nothing done) where the optimizer does not hand out its flat group now: call
        after a first ordinary step of the epoch, which took the flat path and checked the
        input, the network and the optimizer.
        """
        stepper = self.optimizer.flat_stepper()
        if stepper is None:
            return None
        chain_parameters = self.chain.parameters()
        if len(stepper.params) != len(chain_parameters) or not all(
            map(operator.is_, stepper.params, chain_parameters)
        ):
            return None  # the group is not exactly this network's parameters, in order
        if not batches:
            return []
        sizes = [len(batch) for batch in batches]
        if 0 in sizes:  # an empty batch: the ordinary step says what is wrong with it
            return None
        loss_kernels = self._loss_kernels(y)
        if loss_kernels is None:
            return None
        # One gather for the whole epoch, then views: the same values x[index] gives.
        order = torch.cat(list(batches)).to(x.device)
        inputs, targets = x[order].split(sizes), y[order].split(sizes)
        with _quiet_mode(self.optimizer)():
            losses, grads, outputs, loss = self._steps(inputs, targets, loss_kernels, stepper)
        self._leave_as_a_step_does(grads, outputs, loss)
        return losses

    def _steps(
        self, inputs: Sequence[Tensor], targets: Sequence[Tensor], loss_kernels: LossKernels,
        stepper: FlatStepper,
    ) -> tuple[list[float], list[Tensor], list[Tensor], Tensor]:  # fmt: skip
        """The loop, with nothing checked that the first step checked; the losses, and the
        last step's gradients, kernel outputs and loss."""
        forward_kept, parameter_gradients = self.chain.forward_kept, self.chain.parameter_gradients
        loss_forward, loss_backward = loss_kernels
        gradients, update = stepper.gradients, stepper.update
        copy = torch._foreach_copy_
        losses: list[float] = []
        grads: list[Tensor] = []
        outputs: list[Tensor] = []
        loss = torch.empty(())
        for x_b, y_b in zip(inputs, targets, strict=True):
            prediction, ctxs, outputs = forward_kept(x_b)
            loss, loss_ctx = loss_forward(prediction, y_b)
            value = loss.item()
            losses.append(value)
            grads = parameter_gradients(loss_backward(1.0, loss_ctx), ctxs)
            if not math.isfinite(value):
                break  # stopped before the update, as train_step stops
            copy(gradients, grads)
            update()
        return losses, grads, outputs, loss

    def _leave_as_a_step_does(
        self, grads: list[Tensor], outputs: list[Tensor], loss: Tensor
    ) -> None:
        """What the last step's public calls would have left: each parameter's ``.grad`` that
        step's gradient, and every module its ctx released with its output's description."""
        if not grads:
            return
        for param, grad in zip(self.chain.parameters(), grads, strict=True):
            param.grad = grad.clone() if grad.is_inference() else grad
        self.chain.keep_released(outputs)
        last = outputs[-1]
        self.model.__dict__["_saved"] = (RELEASED, (last.shape, last.dtype, last.device))
        self.loss_fn.__dict__["_saved"] = (RELEASED, (loss.shape, loss.dtype, loss.device))

    def _loss_kernels(self, y: Tensor) -> LossKernels | None:
        """The loss's forward and backward kernels for targets drawn from ``y``: the ones its
        ``forward`` would choose for each batch, decided once for all of ``y``."""
        loss_fn = self.loss_fn
        reduction = loss_fn.reduction
        if reduction not in ("mean", "sum"):  # (a loss per example: the ordinary steps)
            return None
        if type(loss_fn) is MSELoss:
            return functools.partial(F.mse_forward, reduction=reduction), F.mse_backward
        # CrossEntropyLoss: its common case only, where every target of y is a class.
        parameters = self.chain.parameters()
        if not parameters:
            return None
        n_classes = parameters[-1].shape[0]  # the last Linear's out_features
        if (
            loss_fn.weight is not None
            or loss_fn.label_smoothing != 0.0
            or y.dtype not in CLASS_INDEX_DTYPES
            or y.dim() != 1
            or not loss_fn._every_target_a_class(y, n_classes)  # (forward's own test)
        ):
            return None
        forward = functools.partial(F.cross_entropy_of_labels_forward, reduction=reduction)
        return forward, F.cross_entropy_backward


def _quiet_mode(optimizer: Optimizer) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """The grad mode the loop runs in: ``torch.inference_mode`` for handgrad's own
    optimizers, else ``torch.no_grad``.

    Both record nothing; inference mode also skips torch's autograd and version-counter
    dispatch on every operation (measured: 124 → 105 µs per step of the 1-100-1 per-sample
    loop, one thread). Tensors made in it cannot be updated in place outside it, so it is
    only for optimizers known to keep nothing they make during a step (handgrad's: their
    state, scratch buffers and plans are made outside it; tested by stepping in the
    ordinary way after a fast epoch, tests/train/test_fast_epoch.py). A user's optimizer
    runs under ``no_grad``.
    """
    if type(optimizer).__module__.startswith("handgrad.optim."):
        return torch.inference_mode
    return torch.no_grad
