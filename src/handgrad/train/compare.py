"""Optimizer comparison: one model per optimizer, same initial weights, same batch order.

:func:`compare_optimizers` is everything ``handgrad train`` (and ``handgrad demo``) does
short of printing: it trains, measures every epoch, checkpoints after every epoch when asked,
and resumes bit for bit from such a checkpoint. Epochs are interleaved (epoch 1 of every
optimizer, then epoch 2, ...) so that a checkpoint always holds every run at the same epoch.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from handgrad import nn as hnn
from handgrad.optim import names
from handgrad.privacy.training import DPSettings, PoissonSchedule, epsilon_spent, private
from handgrad.train import checkpoint as ckpt
from handgrad.train import distributed, seeds
from handgrad.train import optimizers as setup
from handgrad.train import status as status_of
from handgrad.train.metrics import environment_document, metrics_document
from handgrad.train.models import ModelSpec, build_model, resolve_model
from handgrad.train.sampler import EpochSampler
from handgrad.train.schedules import Schedule, make_scheduler, parse_schedule
from handgrad.train.status import RunStatus
from handgrad.train.tasks import Backend, Kind, Task, load_task
from handgrad.train.trainer import (
    EpochRecord,
    TrainingDiverged,
    intra_op_threads,
    run_epoch,
    training_loss,
)

EpochCallback = Callable[[str, EpochRecord], None]
EpochEndCallback = Callable[[int, Sequence["RunResult"]], None]


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``None`` means the task's default (``lr``: per optimizer, see below).

    ``backend="torch"`` trains the same network as plain torch.nn with torch.optim and
    autograd: the reference handgrad is compared with.

    ``threads`` is torch's intra-op thread count while training, one by default (see
    :func:`~handgrad.train.trainer.intra_op_threads`); ``None`` keeps the caller's.

    ``model`` names the network (:mod:`handgrad.train.models`): ``"mlp"`` (the task's),
    ``"mlp:hidden=100x100,activation=sigmoid,dropout=0.1"``, or any registered model.

    ``options`` maps an optimizer's name (as in the list of optimizers) to its constructor
    arguments, ``{"sgd": {"momentum": 0.9, "nesterov": True}}``; Muon's and SparseAdam's
    companion AdamW takes its own under ``"adamw"`` (:mod:`handgrad.train.optimizers`).

    ``schedule`` is a learning-rate schedule of :mod:`handgrad.train.schedules`
    (``"cosine"``, ``"warmup:epochs=2+cosine"``, ...), stepped after every epoch.

    The learning rate of a run is ``options[name]["lr"]`` if given, else ``lr`` if given,
    else :func:`~handgrad.train.setup.default_lr`: the task's tuned rate (or the
    optimizer's own default) scaled to the batch size.
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "cpu"
    backend: Backend = "handgrad"
    threads: int | None = 1
    model: str | ModelSpec | None = None  # None: the task's own (mlp; gpt for text)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    schedule: str | Schedule | None = None
    dp: DPSettings | None = None
    """DP-SGD (:mod:`handgrad.privacy`): every optimizer wrapped in a DPOptimizer, Poisson
    batches (Opacus's loader: ⌈n/B⌉ steps an epoch at rate 1/⌈n/B⌉), ε reported at δ."""


@dataclass
class RunResult:
    """One optimizer's run: its trained model, per-epoch history, training seconds and how
    it ended (``status``; None until training is over)."""

    optimizer: str
    lr: float
    model: torch.nn.Module
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    status: RunStatus | None = None
    initial_loss: float | None = None
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]

    @property
    def diverged(self) -> bool:
        return self.status is not None and self.status.state == "diverged"


@dataclass
class ComparisonResult:
    """Every optimizer's run on one task; ``metrics()`` is the metrics.json document
    (``config``: the resolved settings, see :func:`compare_optimizers`)."""

    task: Task
    epochs: int
    batch_size: int
    runs: list[RunResult]
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    """With ``TrainConfig.dp``: the settings, the schedule and ``epsilon`` (ε at ``delta``)."""

    def metrics(self) -> dict[str, Any]:
        return metrics_document(self.task.name, self.runs, config=self.config,
                                environment=self.environment, privacy=self.privacy)

    @property
    def failed(self) -> list[RunResult]:
        """The runs that did not train (diverged, or not learning)."""
        return [run for run in self.runs if run.status is not None and not run.status.trained]

    def predictions(self) -> dict[str, Tensor]:
        """Each run's model output on the test inputs (CPU, eval mode); diverged runs are
        left out (their weights are not finite)."""
        outputs = {}
        for run in self.runs:
            if run.diverged:
                continue
            device = next(run.model.parameters()).device
            was_training = run.model.training
            run.model.eval()
            with torch.no_grad():
                outputs[run.optimizer] = run.model(self.task.x_test.to(device)).cpu()
            run.model.train(was_training)
        return outputs


def resolve_optimizer(name: str, backend: Backend) -> tuple[type[Optimizer], dict[str, Any]]:
    """The class (handgrad's, or torch's own for ``backend="torch"``) and the constructor
    arguments for an optimizer name of :mod:`handgrad.optim.names` (``"adam"``,
    ``"momentum"``, ...)."""
    return setup.resolve(name, backend)


def _check_config(config: TrainConfig, epochs: int, batch_size: int, lr: float | None) -> None:
    for label, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if lr is not None and not (isinstance(lr, int | float) and 0 < lr < float("inf")):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    seeds.check_seed(config.seed)
    if config.backend not in ("handgrad", "torch"):
        raise ValueError(f"backend must be 'handgrad' or 'torch', got {config.backend!r}")
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {config.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} asked for, but CUDA is not available here")
    if config.dp is not None and config.backend != "handgrad":
        raise ValueError("dp (DP-SGD) needs backend='handgrad': the per-sample gradients come "
                         "from the hand-written backward")  # fmt: skip


def _run_lrs(
    name: str, config: TrainConfig, task: Task, batch_size: int
) -> tuple[float, float | None]:
    """The learning rate of run ``name`` and of its companion AdamW (Muon, SparseAdam)."""
    options = config.options.get(name, {})
    lr = options.get("lr", config.lr)
    if lr is None:
        lr = setup.default_lr(name, task, batch_size, config.backend)
    if name not in setup.PARTIAL:
        return lr, None
    companion = options.get(setup.COMPANION, {})
    companion_lr = companion.get("lr") if isinstance(companion, Mapping) else None
    if companion_lr is None:
        companion_lr = config.lr if config.lr is not None else setup.default_lr(
            setup.COMPANION, task, batch_size, config.backend)
    return lr, companion_lr


def compare_optimizers(
    task: Task | str,
    optimizers: str | Sequence[str],
    config: TrainConfig | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    checkpoint_every: float = ckpt.CHECKPOINT_EVERY,
    on_epoch: EpochCallback | None = None,
    on_epoch_end: EpochEndCallback | None = None,
) -> ComparisonResult:
    """Train one model per optimizer on ``task`` and measure every epoch.

    All runs start from the same initial weights (drawn from ``config.seed``) and see the
    same batches in the same order (:class:`EpochSampler`). With ``checkpoint``, the state
    of every run (model, optimizer, scheduler, history, seconds, status), the RNG states and
    the epoch are written there atomically: before the first epoch (so that a folder that
    cannot take it fails before any training), then after an epoch once ``checkpoint_every``
    seconds have passed since the last write (0: after every epoch), after the last epoch,
    and — the last finished epoch, kept in memory — when training is interrupted by any
    exception (KeyboardInterrupt included), which is then re-raised
    (:class:`~.checkpoint.Checkpointer`). With ``resume`` the runs continue from that file
    and end bit for bit where an uninterrupted run ends. A checkpoint made with other
    settings, or with a field that cannot be right, is a :class:`CheckpointError`.
    ``on_epoch(optimizer, record)`` is called after each epoch of each run (progress), and
    ``on_epoch_end(epoch, runs)`` once all runs have done the epoch.

    Every run ends with a :class:`~handgrad.train.status.RunStatus`: a run whose loss
    becomes NaN or infinite stops there as *diverged* (epoch and step recorded) while the
    others train on; a run whose final training loss is not below its initial one is *not
    learning*. Settings that cannot work (an unknown optimizer argument, a value the
    optimizer refuses, SparseAdam on dense gradients) are ``ValueError``s before any
    training. The result's ``config`` holds every setting as resolved (defaults filled in:
    each optimizer's full argument list, the model's options, the schedule).

    The caller's global RNG state is left untouched: training runs on a forked RNG seeded
    from ``config.seed`` (dropout draws from it).

    Data-parallel: called in every process of an initialized torch.distributed group (see
    :func:`handgrad.train.distributed.process_group`, or :func:`compare_data_parallel`),
    each rank trains its replica on its shard of every global batch of ``batch_size``, with
    gradients all-reduced (weighted by examples) before every step and dropout masks drawn
    for the global batch; the result equals one process's up to rounding. Rank 0 alone
    writes the checkpoint; every rank reads it on ``resume`` (same number of processes).
    ``on_epoch`` is called on every rank: pass one on rank 0 only for a single progress bar.
    """
    config = config or TrainConfig()
    task = load_task(task, seed=config.seed) if isinstance(task, str) else task
    optimizer_names = names.parse_optimizer_names(optimizers)
    epochs = config.epochs if config.epochs is not None else task.defaults.epochs
    batch_size = config.batch_size if config.batch_size is not None else task.defaults.batch_size
    _check_config(config, epochs, batch_size, config.lr)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from")
    ckpt.check_interval(checkpoint_every)
    model_spec = resolve_model(config.model or task.default_model, task)
    task.check_model(model_spec.name)
    schedule = parse_schedule(config.schedule)
    for name in config.options:
        if name not in optimizer_names:
            raise ValueError(
                f"settings given for {name}, which is not among the optimizers trained "
                f"({', '.join(optimizer_names)})"
            )
    for name in optimizer_names:
        resolve_optimizer(name, config.backend)  # an unknown name fails before any work
    device = torch.device(config.device)
    replicas = distributed.current_replicas()
    if config.dp is not None and replicas is not None:
        raise ValueError("dp (DP-SGD) runs in one process; launch without torchrun")
    if config.dp is not None and "lbfgs" in optimizer_names:
        # L-BFGS re-evaluates the loss within a step (its line search); DP-SGD privatises
        # one gradient per step, and the accountant counts exactly those.
        raise ValueError("dp (DP-SGD) takes one noisy gradient per step; lbfgs evaluates "
                         "several within a step: train it without dp")  # fmt: skip
    poisson = None if config.dp is None else PoissonSchedule(len(task.x_train), batch_size)
    # Rank 0 alone writes; the checkpoint's every field comes from state all ranks share.
    checkpointer = (
        ckpt.Checkpointer(checkpoint, checkpoint_every)
        if checkpoint is not None and (replicas is None or replicas.is_writer)
        else None
    )

    runs: list[RunResult] = []
    losses: list[torch.nn.Module] = []
    steppers: list[torch.optim.Optimizer] = []
    schedulers: list[LRScheduler | None] = []
    for name in optimizer_names:
        lr, companion_lr = _run_lrs(name, config, task, batch_size)
        # Parameters take the data's dtype: a float64 task trains a float64 network.
        model = build_model(model_spec, task, config.seed, config.backend)
        model = model.to(device, task.parameter_dtype)
        if config.backend == "handgrad":
            # One contiguous buffer for the parameters and one for their gradients: the
            # optimizer then updates the whole network in one pass (same values, fewer calls).
            hnn.flatten_parameters(model)
        if replicas is not None:
            distributed.shard_dropout(model, replicas.window)
        options = {**setup.RUN_DEFAULTS.get(name, {}), **task.defaults.options.get(name, {}),
                   **config.options.get(name, {})}
        stepper = setup.make_optimizer(
            name, model, lr, options, companion_lr=companion_lr, backend=config.backend,
        )
        arguments = setup.resolved_arguments(stepper)
        if config.dp is not None and poisson is not None:
            stepper = private(stepper, config.dp, poisson)
        runs.append(RunResult(name, float(stepper.param_groups[0]["lr"]), model,
                              arguments=arguments))
        losses.append(task.make_loss(config.backend))
        steppers.append(stepper)
        schedulers.append(make_scheduler(schedule, stepper, epochs))

    settings = {
        "task": task.name,
        "task_digest": task.digest(),
        "model": str(model_spec),
        "optimizers": optimizer_names,
        "lr": [run.lr for run in runs],
        "arguments": [run.arguments for run in runs],
        "schedule": str(schedule),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": config.seed,
        # The kind, not the index: every rank of a data-parallel run trains on its own GPU.
        "device": device.type,
        "backend": config.backend,
        "threads": config.threads,
        "world_size": 1 if replicas is None else replicas.world_size,
        "task_info": task.checkpoint_info(),  # a text task's vocabulary and context
        "dp": None if config.dp is None else config.dp.as_dict(),
    }
    data = (task.x_train.to(device), task.y_train.to(device), task.x_test.to(device),
            task.y_test.to(device))
    sampler = EpochSampler(len(task.x_train), batch_size, config.seed)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    fork_devices = [device] if device.type == "cuda" else []

    with intra_op_threads(config.threads), torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seeds.derived_seed(config.seed, seeds.DROPOUT))
        if device.type == "cuda":
            with torch.cuda.device(device):  # that device's generator, not the current one's
                torch.cuda.manual_seed(seeds.derived_seed(config.seed, seeds.DROPOUT))
        done = 0
        if resume:
            assert checkpoint is not None
            payload = ckpt.load_checkpoint(checkpoint)
            # Checkpoints from before these settings existed trained with their defaults.
            legacy = {"model": str(resolve_model(task.default_model, task)),
                      "schedule": "constant", "arguments": settings["arguments"], "dp": None}
            done = _restore(payload, checkpoint, settings, runs, steppers, schedulers,
                            device, task.kind, legacy)
        else:
            for run, loss_fn in zip(runs, losses, strict=True):
                # The first training loss (whole split, eval mode: no dropout draw) is what
                # the final one is judged against.
                run.initial_loss = training_loss(run.model, loss_fn, data[0], data[1],
                                                 task.kind)

        # Each record as the checkpoint stores it, made once: a snapshot then costs the
        # tensors' copies, not a walk over the whole history.
        histories = [[record.as_dict() for record in run.history] for run in runs]

        def snapshot(epoch: int) -> ckpt.Snapshot:
            return lambda frozen: _snapshot(settings, epoch, runs, steppers, schedulers,
                                            histories, device, frozen)

        if checkpointer is not None:
            checkpointer.write(snapshot(done)(False))
        try:
            for epoch in range(done + 1, epochs + 1):
                if poisson is None:
                    batches = sampler.batches(epoch)
                else:  # every optimizer sees the same Poisson batches
                    batches = list(poisson.batches(config.seed, epoch))
                for run, loss_fn, stepper, scheduler, history in zip(
                    runs, losses, steppers, schedulers, histories, strict=True
                ):
                    if run.diverged:
                        continue
                    start = time.perf_counter()
                    try:
                        record = run_epoch(
                            run.model, loss_fn, stepper, data, batches,
                            epoch=epoch, kind=task.kind, label=run.optimizer,
                            replicas=replicas,
                        )
                    except TrainingDiverged as error:
                        run.seconds += time.perf_counter() - start
                        run.status = status_of.diverged(run.initial_loss, epoch, error.step,
                                                        error.loss, error.what)
                        continue
                    if scheduler is not None:
                        scheduler.step()
                    run.seconds += time.perf_counter() - start
                    run.history.append(record)
                    history.append(record.as_dict())
                    if on_epoch is not None:
                        on_epoch(run.optimizer, record)
                if checkpointer is not None:
                    checkpointer.epoch_done(snapshot(epoch), last=epoch == epochs)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, runs)
        except BaseException:
            if checkpointer is not None:
                checkpointer.flush()  # the last finished epoch, if it is not on disk yet
            raise
        for run, loss_fn in zip(runs, losses, strict=True):
            if not run.diverged:
                run.status = _final_status(run, loss_fn, data, task.kind, epochs)
    config_document = _config_document(task, config, model_spec, schedule, epochs, batch_size,
                                       runs, 1 if replicas is None else replicas.world_size)
    environment = environment_document(device, config.threads)
    privacy = None
    if config.dp is not None and poisson is not None:
        privacy = {
            **config.dp.as_dict(),
            "sample_rate": poisson.sample_rate,
            "steps": epochs * poisson.steps_per_epoch,
            "epsilon": epsilon_spent(config.dp, poisson, epochs),
            "accountant": "rdp",
        }
    return ComparisonResult(task, epochs, batch_size, runs, config_document, environment,
                            privacy)


def _final_status(
    run: RunResult, loss_fn: torch.nn.Module, data: tuple[Tensor, Tensor, Tensor, Tensor],
    kind: Kind, epochs: int,
) -> RunStatus:
    """Trained or not learning, from the training loss of the final network (measured as
    the initial one was); a non-finite one is a divergence after the last step."""
    final = training_loss(run.model, loss_fn, data[0], data[1], kind)
    initial = run.initial_loss if run.initial_loss is not None else math.inf
    if not math.isfinite(final):
        return status_of.diverged(run.initial_loss, epochs, None, final, "training loss")
    return status_of.judge(initial, final)


def _config_document(
    task: Task, config: TrainConfig, model_spec: ModelSpec, schedule: Schedule, epochs: int,
    batch_size: int, runs: Sequence[RunResult], world_size: int,
) -> dict[str, Any]:
    """Every setting of the comparison, resolved (metrics.json's ``config``)."""
    return {
        "task": task.name,
        "target": task.target,
        "kind": task.kind,
        # Task.digest, hashed once more: one 64-digit form for every task (a text task's
        # digest also spells out its vocabulary).
        "data_digest": hashlib.sha256(task.digest().encode()).hexdigest(),
        "model": {"spec": str(model_spec), "name": model_spec.name,
                  "options": setup.json_value(dict(model_spec.options))},
        "optimizers": [
            {"name": run.optimizer, "lr": run.lr, "arguments": run.arguments}
            for run in runs
        ],
        "lr_given": config.lr,
        "lr_rule": {
            "reference_batch_size": task.defaults.batch_size,
            "linear": sorted(setup.LINEAR_SCALING),
            "rule": "lr = lr_ref * min(1, B / B_ref) ** k; k = 1 for the linear family, "
                    "1/2 for the others",
        },
        "schedule": str(schedule),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": config.seed,
        "device": config.device,
        "backend": config.backend,
        "threads": config.threads,
        "world_size": world_size,
        "dp": None if config.dp is None else config.dp.as_dict(),
        "train_size": len(task.x_train),
        "test_size": len(task.x_test),
    }


def _compare_in_group(
    task: Task | str, optimizers: str | Sequence[str], config: TrainConfig,
    checkpoint: str | os.PathLike[str] | None, resume: bool, timeout: float,
    checkpoint_every: float,
) -> ComparisonResult | None:
    # One process of compare_data_parallel: rank 0 returns the result (the others' are equal).
    with distributed.process_group(config.device, timeout=timeout) as replicas:
        result = compare_optimizers(task, optimizers, config, checkpoint=checkpoint,
                                    resume=resume, checkpoint_every=checkpoint_every)
        return result if replicas is None or replicas.is_writer else None


def compare_data_parallel(
    task: Task | str,
    optimizers: str | Sequence[str],
    config: TrainConfig | None = None,
    *,
    processes: int,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    timeout: float = distributed.DEFAULT_TIMEOUT,
    checkpoint_every: float = ckpt.CHECKPOINT_EVERY,
) -> ComparisonResult:
    """:func:`compare_optimizers` data-parallel in ``processes`` fresh processes on this
    machine (gloo on the CPU); returns rank 0's result.

    ``timeout`` (seconds) bounds every wait on a peer: a process that dies makes the call
    raise :class:`~handgrad.train.distributed.DistributedError` instead of hanging.
    """
    config = config or TrainConfig()
    if config.device != "cpu":
        raise ValueError(
            f"compare_data_parallel runs on the CPU, got device {config.device!r}; "
            "launch with torchrun for one GPU per process"
        )
    result: ComparisonResult = distributed.launch(
        _compare_in_group, processes, task, optimizers, config, checkpoint, resume, timeout,
        checkpoint_every,
    )
    return result


def _snapshot(
    settings: dict[str, Any],
    epoch: int,
    runs: Sequence[RunResult],
    steppers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[LRScheduler | None],
    histories: Sequence[list[dict[str, Any]]],
    device: torch.device,
    frozen: bool,
) -> dict[str, Any]:
    """The checkpoint's payload now. ``frozen``: with copies of the tensors (state_dicts
    hold the live ones) and of the history lists, so that training on cannot change it."""
    copy = ckpt.detached_copy if frozen else (lambda value: value)
    return {
        "settings": settings,
        "epoch": epoch,
        "rng": ckpt.rng_states(device),
        "runs": [
            {
                "optimizer": run.optimizer,
                "model": copy(run.model.state_dict()),
                "optimizer_state": copy(stepper.state_dict()),
                "history": list(history),  # the records' dicts are never changed
                "seconds": run.seconds,
                "initial_loss": run.initial_loss,
                # None while training; a diverged run keeps its status (and stops there).
                "status": None if run.status is None else run.status.as_dict(),
                "scheduler_state": None if scheduler is None else copy(scheduler.state_dict()),
            }
            for run, stepper, scheduler, history in zip(runs, steppers, schedulers, histories,
                                                        strict=True)
        ],
    }


def _argument_differences(saved: Any, here: list[dict[str, Any]], names: list[str]) -> list[str]:
    """``sgd.momentum=0 there, 0.9 here`` for each optimizer argument that differs."""
    if not isinstance(saved, list) or len(saved) != len(here):
        return [] if saved == here else [f"arguments={saved!r} there, {here!r} here"]
    found = []
    for name, old, new in zip(names, saved, here, strict=True):
        old = old if isinstance(old, dict) else {}
        for key in sorted(set(old) | set(new)):
            if key != "lr" and old.get(key) != new.get(key):  # lr: said once, above
                found.append(f"{name}.{key}={old.get(key)!r} there, {new.get(key)!r} here")
    return found


def _restore(
    payload: dict[str, Any],
    path: str | os.PathLike[str],
    settings: dict[str, Any],
    runs: Sequence[RunResult],
    steppers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[LRScheduler | None],
    device: torch.device,
    kind: str,
    legacy: dict[str, Any] | None = None,
) -> int:
    """Load the checkpoint's state into the runs; returns the number of epochs it holds.

    Every field is checked before anything is loaded: the settings against this run's, the
    epoch against the run's length, each run's name, history, seconds and tensors against
    what this run would have written. The payload was read onto the CPU:
    ``load_state_dict`` copies weights into the model's parameters on ``device``, and
    torch's optimizer contract moves each state tensor to its parameter's device (``step``
    stays on the CPU unless capturable or fused)."""
    saved = payload.get("settings")
    if not isinstance(saved, dict):
        raise ckpt.CheckpointError(f"checkpoint {path} is damaged: it has no settings")
    # Checkpoints from before data-parallel training have no world_size: one process;
    # those from before text tasks no task_info.
    saved = {"world_size": 1, "task_info": {}, **(legacy or {}), **saved}
    differences = [
        f"{key}={saved.get(key)!r} there, {value!r} here"
        for key, value in settings.items()
        if key not in ("task_digest", "arguments") and saved.get(key) != value
    ]
    differences += _argument_differences(saved.get("arguments"), settings["arguments"],
                                         settings["optimizers"])
    if not differences and saved.get("task_digest") != settings["task_digest"]:
        differences.append("the task's data differ")
    if differences:
        raise ckpt.CheckpointError(
            f"checkpoint {path} belongs to a run with other settings ("
            + "; ".join(differences)
            + "); resume with the same arguments, or start afresh without resuming"
        )
    epoch = _check_fields(payload, settings, runs, kind)
    if isinstance(epoch, str):
        raise ckpt.CheckpointError(f"checkpoint {path} is damaged: {epoch}")
    try:
        for run, stepper, scheduler, state in zip(runs, steppers, schedulers, payload["runs"],
                                                  strict=True):
            run.model.load_state_dict(state["model"])
            stepper.load_state_dict(state["optimizer_state"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler_state"])
            run.history = [EpochRecord.from_dict(figures) for figures in state["history"]]
            run.seconds = float(state["seconds"])
            # Checkpoints from before run statuses: no initial loss, and no run diverged.
            initial = state.get("initial_loss")
            run.initial_loss = None if initial is None else float(initial)
            saved_status = state.get("status")
            run.status = None if saved_status is None else RunStatus.from_dict(saved_status)
        ckpt.restore_rng_states(payload["rng"], device)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError) as error:
        raise ckpt.CheckpointError(
            f"checkpoint {path} is incomplete or damaged: {error}"
        ) from error
    return epoch


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_fields(
    payload: dict[str, Any], settings: dict[str, Any], runs: Sequence[RunResult], kind: str
) -> int | str:
    """The checkpoint's epoch, or what is wrong with it (a phrase) — every field that
    :func:`_snapshot` writes, checked against what this run would write."""
    epoch, epochs = payload.get("epoch"), settings["epochs"]
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return f"its epoch is {epoch!r}, not a whole number"
    if not 0 <= epoch <= epochs:
        return f"it claims epoch {epoch} of a {epochs}-epoch run"
    states = payload.get("runs")
    if not isinstance(states, list) or len(states) != len(runs):
        return f"it holds {len(states) if isinstance(states, list) else 'no'} runs, not {len(runs)}"
    rng = payload.get("rng")
    if not isinstance(rng, dict) or not isinstance(rng.get("cpu"), torch.Tensor):
        return "it has no random-number generator state"
    for run, state in zip(runs, states, strict=True):
        if not isinstance(state, dict) or state.get("optimizer") != run.optimizer:
            return f"its runs are not {', '.join(r.optimizer for r in runs)} in that order"
        name = run.optimizer
        seconds = state.get("seconds")
        if not _is_number(seconds) or not 0 <= seconds < math.inf:
            return f"{name}: training time {seconds!r} is not a number of seconds"
        status = state.get("status")
        if status is not None and not (isinstance(status, dict)
                                       and status.get("state") in status_of.STATES):
            return f"{name}: its status {status!r} is not a run status"
        # A run that diverged stopped there: its history ends before that epoch.
        stopped = status.get("epoch") if status and status["state"] == "diverged" else None
        if stopped is not None and (not isinstance(stopped, int) or not 1 <= stopped <= epoch):
            return f"{name}: it diverged at epoch {stopped!r} of a checkpoint at epoch {epoch}"
        length = epoch if stopped is None else stopped - 1
        initial = state.get("initial_loss")
        if initial is not None and (not _is_number(initial) or not 0 <= initial < math.inf):
            return f"{name}: initial loss {initial!r} is not a finite loss"
        history = state.get("history")
        if not isinstance(history, list) or len(history) != length:
            count = len(history) if isinstance(history, list) else "no"
            if stopped is not None:
                return (f"{name}: {count} epochs of history, but it diverged in epoch "
                        f"{stopped}")
            return f"{name}: {count} epochs of history for epoch {epoch}"
        for number, figures in enumerate(history, start=1):
            problem = _check_record(figures, number, kind)
            if problem:
                return f"{name}, epoch {number} of the history: {problem}"
        weights = state.get("model")
        expected = run.model.state_dict()
        if not isinstance(weights, dict) or set(weights) != set(expected):
            return f"{name}: the model's tensors are not this network's ({', '.join(expected)})"
        for key, tensor in expected.items():
            saved = weights[key]
            if not isinstance(saved, torch.Tensor) or (saved.shape, saved.dtype) != (
                tensor.shape, tensor.dtype
            ):
                what = (f"{tuple(saved.shape)} {saved.dtype}" if isinstance(saved, torch.Tensor)
                        else type(saved).__name__)
                return (f"{name}: {key} is {what}, this network's is "
                        f"{tuple(tensor.shape)} {tensor.dtype}")
        optimizer_state = state.get("optimizer_state")
        parts = (optimizer_state.get("parts") if isinstance(optimizer_state, dict)
                 and "parts" in optimizer_state else {"": optimizer_state})  # Partitioned
        if not isinstance(parts, dict) or not all(
            isinstance(part, dict) and isinstance(part.get("param_groups"), list)
            and isinstance(part.get("state"), dict) for part in parts.values()
        ):
            return f"{name}: the optimizer state is not a torch.optim state_dict"
    return epoch


def _check_record(figures: Any, number: int, kind: str) -> str:
    if not isinstance(figures, dict) or figures.get("epoch") != number:
        return "out of order"
    for key in ("train_loss", "test_loss"):
        value = figures.get(key)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            return f"{key} is {value!r}, not a finite loss"
    accuracy = figures.get("test_accuracy")
    if kind == "classification" and (not _is_number(accuracy) or not 0 <= accuracy <= 1):
        return f"test_accuracy is {accuracy!r}, not a fraction"
    if kind != "classification" and accuracy is not None:
        return "a test accuracy in a regression run"
    return ""


__all__ = [
    "ComparisonResult",
    "RunResult",
    "TrainConfig",
    "compare_data_parallel",
    "compare_optimizers",
    "resolve_optimizer",
]
