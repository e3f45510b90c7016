"""The training loop: mini-batch steps, per-epoch metrics, and a guard against divergence.

One step on a batch ``(x, y)``::

    pred = model(x);  loss = loss_fn(pred, y)            # forward
    g = loss_fn.backward();  model.backward(g)           # ∂loss/∂pred, then ∂loss/∂θ into θ.grad
    optimizer.step()                                     # θ ← update(θ, θ.grad, state)

for handgrad networks (hand-written backward, no autograd). Any ``torch.nn.Module`` whose
parameters require grad is trained the ordinary way, ``loss.backward()``, so that handgrad
can be compared with torch on the same loop. ``batch_size=1`` is the classroom's per-sample
loop.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from handgrad.nn.per_sample import empty_grad_sample, per_sample_gradients
from handgrad.train.fast_epoch import FastEpoch
from handgrad.train.sampler import EpochSampler
from handgrad.train.tasks import Kind, Task

if TYPE_CHECKING:
    from handgrad.train.distributed import Replicas


class TrainingDiverged(ArithmeticError):
    """The loss became NaN or infinite; the message names the run, the epoch and the step.

    The same facts as attributes: ``loss`` (the value), ``what`` (``"training loss"`` or
    ``"test loss"``), ``epoch`` and ``step`` (1-based; None where not known, or for the test
    loss measured after the epoch's last step).
    """

    def __init__(
        self, message: str, *, loss: float = math.nan, what: str = "training loss",
        epoch: int | None = None, step: int | None = None,
    ) -> None:
        super().__init__(message)
        self.loss = loss
        self.what = what
        self.epoch = epoch
        self.step = step


@dataclass(frozen=True)
class EpochRecord:
    """Figures after one epoch (numbered from 1).

    ``train_loss`` is the mean of the epoch's mini-batch losses weighted by batch size (the
    loss the optimizer saw, in train mode); ``test_loss`` and ``test_accuracy`` (a fraction,
    classification only) are measured on the test split in eval mode after the epoch.
    """

    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float | None = None

    def as_dict(self) -> dict[str, float | int]:
        figures: dict[str, float | int] = {
            "epoch": self.epoch, "train_loss": self.train_loss, "test_loss": self.test_loss
        }
        if self.test_accuracy is not None:
            figures["test_accuracy"] = self.test_accuracy
        return figures

    @classmethod
    def from_dict(cls, figures: dict[str, Any]) -> EpochRecord:
        return cls(
            epoch=int(figures["epoch"]),
            train_loss=float(figures["train_loss"]),
            test_loss=float(figures["test_loss"]),
            test_accuracy=(
                float(figures["test_accuracy"]) if "test_accuracy" in figures else None
            ),
        )


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block (``None``: unchanged).

    Training uses one thread by default: these networks are too small to gain from more,
    on a busy machine threads wait on each other (measured 10-40x slower with two threads on
    two shared cores), and a fixed count keeps the bits independent of the machine.
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"threads must be a positive integer or None, got {count!r}")
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def uses_autograd(model: torch.nn.Module) -> bool:
    """Whether ``model`` is trained by autograd (a plain torch.nn module) rather than by hand."""
    return any(p.requires_grad for p in model.parameters())


def set_optimizer_mode(optimizer: Any, training: bool) -> None:
    """Put a schedule-free optimizer (one with ``train()``/``eval()``: handgrad's
    SGDScheduleFree and AdamWScheduleFree, schedulefree's) in train mode before training
    steps and in eval mode before the model is measured or saved: in eval mode the
    parameters hold the averaged weights the method evaluates. Other optimizers are left
    alone; a wrapper (DPOptimizer's ``original_optimizer``) or several optimizers acting as
    one (``parts``) are switched inside. Switching to the mode it is in changes nothing."""
    inner = getattr(optimizer, "original_optimizer", None)
    if inner is not None:
        set_optimizer_mode(inner, training)
        return
    parts = getattr(optimizer, "parts", None)
    if isinstance(parts, dict):
        for part in parts.values():
            set_optimizer_mode(part, training)
        return
    switch = getattr(optimizer, "train" if training else "eval", None)
    if callable(switch):
        switch()


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` must be given a closure: its ``closure`` parameter has no
    default. L-BFGS (torch's and handgrad's) is written so, as it re-evaluates the loss several
    times per step; so may any user's optimizer. Decided by what the step asks for, never by
    the class's name."""
    return _step_needs_closure(type(optimizer).step)


@functools.cache
def _step_needs_closure(step: Callable[..., Any]) -> bool:
    try:
        closure = inspect.signature(step).parameters.get("closure")
    except (TypeError, ValueError):  # no readable signature: call it as step()
        return False
    return closure is not None and closure.default is inspect.Parameter.empty


def train_step(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    by_autograd: bool | None = None,
    replicas: Replicas | None = None,
    global_count: int | None = None,
) -> float:
    """One optimizer step on the batch ``(x, y)``; returns the batch loss before the step.

    ``by_autograd`` (default: :func:`uses_autograd`) lets a loop decide it once per epoch.

    Data-parallel: ``(x, y)`` is this rank's shard of a global batch of ``global_count``
    examples; the shard's gradient is all-reduced by ``replicas`` into the global batch's
    (weighted by examples) before the step, and the returned loss is the global batch's.
    An empty shard still runs the forward (its dropout draws keep the RNG in step with the
    other ranks) and contributes a zero gradient.

    Raises :class:`TrainingDiverged` when that loss is not finite, before stepping (L-BFGS,
    which evaluates the loss inside its step, has stepped by then).
    """
    if by_autograd is None:
        by_autograd = uses_autograd(model)
    hand_model, hand_loss = cast(Any, model), cast(Any, loss_fn)  # the .backward methods
    losses: list[float] = []

    # DP-SGD (handgrad.privacy.DPOptimizer) needs every example's gradient: the backward
    # then also stores them (handgrad.nn.per_sample), factored where a layer can.
    per_sample = getattr(optimizer, "per_sample", False)

    def closure() -> float:
        optimizer.zero_grad()
        if replicas is not None and len(x) == 0:
            with torch.no_grad():
                model(x)
            value = 0.0
        elif per_sample and len(x) == 0:  # an empty Poisson batch: the step is noise alone
            empty_grad_sample(model.parameters())
            value = 0.0
        else:
            loss: Tensor = loss_fn(model(x), y)
            if by_autograd:
                loss.backward()
            elif per_sample:
                with per_sample_gradients(factored=per_sample == "factored"):
                    hand_model.backward(hand_loss.backward(), input_grad=False)
            else:
                hand_model.backward(hand_loss.backward(), input_grad=False)
            value = float(loss.detach())
        if replicas is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            value = replicas.all_reduce_gradients(
                params, value, len(x), len(x) if global_count is None else global_count
            )
        losses.append(value)
        return value

    closure_driven = needs_closure(optimizer)
    if closure_driven:
        optimizer.step(closure)  # evaluates the closure one or more times
    else:
        closure()
    if not math.isfinite(losses[0]):
        raise TrainingDiverged(f"the training loss is {losses[0]}", loss=losses[0])
    if not closure_driven:
        optimizer.step()
    return losses[0]


def train_epoch(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    batches: Sequence[Tensor],
    *,
    epoch: int,
    label: str = "training",
    replicas: Replicas | None = None,
) -> float:
    """One pass over ``batches`` (index tensors into ``x``/``y``); the mean training loss.

    With ``replicas``, ``batches`` are global batches: each rank trains on its shard, with
    gradients all-reduced every step (see :func:`train_step`).

    A NaN or infinite loss stops training with :class:`TrainingDiverged` naming ``label``,
    ``epoch`` and the 1-based step within the epoch.
    """
    model.train()
    set_optimizer_mode(optimizer, training=True)
    by_autograd = uses_autograd(model)
    # After one ordinary step, the rest of the epoch may run with its checks made once
    # (handgrad.train.fast_epoch): the same kernels, the same bits.
    fast = None if by_autograd or replicas is not None else FastEpoch.of(model, loss_fn, optimizer)
    total = 0.0
    count = 0
    for step, batch in enumerate(batches, start=1):
        index = (batch if replicas is None else replicas.shard(batch)).to(x.device)
        try:
            loss = train_step(
                model, loss_fn, optimizer, x[index], y[index], by_autograd=by_autograd,
                replicas=replicas, global_count=len(batch),
            )
        except TrainingDiverged as error:
            raise _diverged(error.loss, label, epoch, step) from None
        total += loss * len(batch)
        count += len(batch)
        if fast is not None:
            rest = batches[step:]
            losses = fast.run(x, y, rest)
            fast = None
            if losses is not None:
                # (fewer losses than batches where a step diverged)
                steps_run = zip(losses, rest, strict=False)
                for later, (loss, batch) in enumerate(steps_run, start=step + 1):
                    if not math.isfinite(loss):
                        raise _diverged(loss, label, epoch, later)
                    total += loss * len(batch)
                    count += len(batch)
                break
    return total / count if count else 0.0  # (Poisson batches may all be empty)


def _diverged(loss: float, label: str, epoch: int, step: int) -> TrainingDiverged:
    """The error of a training loss that is not finite at ``step`` of ``epoch``."""
    return TrainingDiverged(
        f"{label} diverged at epoch {epoch}, step {step}: the training loss is {loss}; "
        "try a smaller learning rate", loss=loss, epoch=epoch, step=step,
    )  # fmt: skip


def evaluate(
    model: torch.nn.Module, loss_fn: torch.nn.Module, x: Tensor, y: Tensor, kind: Kind
) -> tuple[float, float | None]:
    """The loss on ``(x, y)`` in eval mode, and the accuracy (fraction) for classification."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred = model(x)
            loss = float(loss_fn(pred, y))
    finally:
        model.train(was_training)
    accuracy = None
    if kind == "classification":
        accuracy = float((pred.argmax(dim=1) == y).double().mean())
    return loss, accuracy


EVAL_CHUNK = 256
"""Examples per forward pass of :func:`training_loss`: the whole training split of a text
task (thousands of windows through a GPT) would not fit in memory at once. With 1,024 the
default text run peaked at 2.06 GB resident (each layer keeps its last forward's context),
with 256 at 0.94 GB, and finished sooner (1 min 47 s against 1 min 58 s, 2 cores)."""


def training_loss(
    model: torch.nn.Module, loss_fn: torch.nn.Module, x: Tensor, y: Tensor, kind: Kind,
    chunk: int = EVAL_CHUNK,
) -> float:
    """The mean loss on the whole of ``(x, y)`` in eval mode, ``chunk`` examples at a time
    (each chunk's mean weighted by its size: the mean over every example)."""
    if len(x) <= chunk:
        return evaluate(model, loss_fn, x, y, kind)[0]
    total = 0.0
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        total += evaluate(model, loss_fn, x[part], y[part], kind)[0] * len(x[part])
    return total / len(x)


def run_epoch(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    batches: Sequence[Tensor],
    *,
    epoch: int,
    kind: Kind,
    label: str = "training",
    replicas: Replicas | None = None,
) -> EpochRecord:
    """Train one epoch on ``data = (x_train, y_train, x_test, y_test)`` and measure it.

    With ``replicas`` (data-parallel), every rank measures the whole test split on its
    replica; the replicas are identical, so every rank gets the same record."""
    x_train, y_train, x_test, y_test = data
    train_loss = train_epoch(
        model, loss_fn, optimizer, x_train, y_train, batches, epoch=epoch, label=label,
        replicas=replicas,
    )
    # Measured, saved and handed back with a schedule-free optimizer's averaged weights.
    set_optimizer_mode(optimizer, training=False)
    test_loss, accuracy = evaluate(model, loss_fn, x_test, y_test, kind)
    if not math.isfinite(test_loss):
        raise TrainingDiverged(
            f"{label} diverged at epoch {epoch}, after its last step: the test loss is "
            f"{test_loss}; try a smaller learning rate",
            loss=test_loss, what="test loss", epoch=epoch,
        )
    return EpochRecord(epoch, train_loss, test_loss, accuracy)



def fit(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    task: Task,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    label: str = "training",
    on_epoch: Callable[[EpochRecord], None] | None = None,
    threads: int | None = 1,
) -> list[EpochRecord]:
    """Train any model (handgrad, or torch.nn with a torch loss) on ``task``; one record per
    epoch. Batches come from :class:`EpochSampler` with ``seed``, so two models fitted with
    the same seed see the same batches in the same order. ``threads``: see
    :func:`intra_op_threads`."""
    device = next(model.parameters()).device
    data = (task.x_train.to(device), task.y_train.to(device), task.x_test.to(device),
            task.y_test.to(device))
    sampler = EpochSampler(len(task.x_train), batch_size, seed)
    history = []
    with intra_op_threads(threads):
        for epoch in range(1, epochs + 1):
            record = run_epoch(model, loss_fn, optimizer, data, sampler.batches(epoch),
                               epoch=epoch, kind=task.kind, label=label)
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    return history
