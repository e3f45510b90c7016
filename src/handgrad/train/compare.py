"""Optimizer comparison: one model per optimizer, same initial weights, same batch order.

:func:`compare_optimizers` is everything ``handgrad train`` (and ``handgrad demo``) does
short of printing: it trains, measures every epoch, checkpoints after every epoch when asked,
and resumes bit for bit from such a checkpoint. Epochs are interleaved (epoch 1 of every
optimizer, then epoch 2, ...) so that a checkpoint always holds every run at the same epoch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch
from torch import Tensor
from torch.optim import Optimizer

from handgrad import nn as hnn
from handgrad.optim import names
from handgrad.privacy.training import DPSettings, PoissonSchedule, epsilon_spent, private
from handgrad.train import checkpoint as ckpt
from handgrad.train import distributed, seeds
from handgrad.train.metrics import metrics_document
from handgrad.train.models import ModelSpec, build_model, resolve_model
from handgrad.train.sampler import EpochSampler
from handgrad.train.tasks import Backend, Task, load_task
from handgrad.train.trainer import EpochRecord, intra_op_threads, run_epoch

EpochCallback = Callable[[str, EpochRecord], None]


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``None`` means the task's tuned default (``lr``: per optimizer).

    ``backend="torch"`` trains the same network as plain torch.nn with torch.optim and
    autograd: the reference handgrad is compared with.

    ``threads`` is torch's intra-op thread count while training, one by default (see
    :func:`~handgrad.train.trainer.intra_op_threads`); ``None`` keeps the caller's.

    ``model`` names the network (:mod:`handgrad.train.models`): ``"mlp"`` (the task's),
    ``"mlp:hidden=100x100,activation=sigmoid,dropout=0.1"``, or any registered model.
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "cpu"
    backend: Backend = "handgrad"
    threads: int | None = 1
    model: str | ModelSpec | None = None  # None: the task's own (mlp; gpt for text)
    dp: DPSettings | None = None
    """DP-SGD (:mod:`handgrad.privacy`): every optimizer wrapped in a DPOptimizer, Poisson
    batches (Opacus's loader: ⌈n/B⌉ steps an epoch at rate 1/⌈n/B⌉), ε reported at δ."""


@dataclass
class RunResult:
    """One optimizer's run: its trained model, per-epoch history and training seconds."""

    optimizer: str
    lr: float
    model: torch.nn.Module
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]


@dataclass
class ComparisonResult:
    """Every optimizer's run on one task; ``metrics()`` is the metrics.json document."""

    task: Task
    epochs: int
    batch_size: int
    runs: list[RunResult]
    privacy: dict[str, Any] | None = None
    """With ``TrainConfig.dp``: the settings, the schedule and ``epsilon`` (ε at ``delta``)."""

    def metrics(self) -> dict[str, Any]:
        return metrics_document(self.task.name, self.runs, self.privacy)

    def predictions(self) -> dict[str, Tensor]:
        """Each run's model output on the test inputs (CPU, eval mode)."""
        outputs = {}
        for run in self.runs:
            device = next(run.model.parameters()).device
            was_training = run.model.training
            run.model.eval()
            with torch.no_grad():
                outputs[run.optimizer] = run.model(self.task.x_test.to(device)).cpu()
            run.model.train(was_training)
        return outputs


# Optimizers that cannot train the tasks' networks, and why (said before any training).
UNSUITABLE = {
    "sparseadam": "sparseadam needs sparse gradients (embeddings); these networks' are dense",
}


def resolve_optimizer(name: str, backend: Backend) -> tuple[type[Optimizer], dict[str, Any]]:
    """The class (handgrad's, or torch's own for ``backend="torch"``) and the constructor
    arguments for an optimizer name of :mod:`handgrad.optim.names` (``"adam"``,
    ``"momentum"``, ...)."""
    if name in UNSUITABLE:
        raise ValueError(UNSUITABLE[name])
    lookup = names.torch_optimizer_class if backend == "torch" else None
    return names.resolve_optimizer(name, lookup)


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


def compare_optimizers(
    task: Task | str,
    optimizers: str | Sequence[str],
    config: TrainConfig | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    checkpoint_every: float = ckpt.CHECKPOINT_EVERY,
    on_epoch: EpochCallback | None = None,
) -> ComparisonResult:
    """Train one model per optimizer on ``task`` and measure every epoch.

    All runs start from the same initial weights (drawn from ``config.seed``) and see the
    same batches in the same order (:class:`EpochSampler`). With ``checkpoint``, the state
    of every run (model, optimizer, history, seconds), the RNG states and the epoch are
    written there atomically: before the first epoch (so that a folder that cannot take it
    fails before any training), then after an epoch once ``checkpoint_every`` seconds have
    passed since the last write (0: after every epoch), after the last epoch, and — the last
    finished epoch, kept in memory — when training is interrupted by any exception
    (KeyboardInterrupt included), which is then re-raised (:class:`~.checkpoint.Checkpointer`).
    With ``resume`` the runs continue from that file and end bit for bit where an
    uninterrupted run ends. A checkpoint made with other settings, or with a field that
    cannot be right, is a :class:`CheckpointError`. ``on_epoch(optimizer, record)`` is
    called after each epoch of each run (progress bars).

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
    choices = [resolve_optimizer(name, config.backend) for name in optimizer_names]
    device = torch.device(config.device)
    replicas = distributed.current_replicas()
    if config.dp is not None and replicas is not None:
        raise ValueError("dp (DP-SGD) runs in one process; launch without torchrun")
    schedule = None if config.dp is None else PoissonSchedule(len(task.x_train), batch_size)
    # Rank 0 alone writes; the checkpoint's every field comes from state all ranks share.
    checkpointer = (
        ckpt.Checkpointer(checkpoint, checkpoint_every)
        if checkpoint is not None and (replicas is None or replicas.is_writer)
        else None
    )

    runs: list[RunResult] = []
    losses: list[torch.nn.Module] = []
    steppers: list[torch.optim.Optimizer] = []
    for name, (cls, options) in zip(optimizer_names, choices, strict=True):
        lr = config.lr if config.lr is not None else task.default_lr(name)
        # Parameters take the data's dtype: a float64 task trains a float64 network.
        model = build_model(model_spec, task, config.seed, config.backend)
        model = model.to(device, task.parameter_dtype)
        if config.backend == "handgrad":
            # One contiguous buffer for the parameters and one for their gradients: the
            # optimizer then updates the whole network in one pass (same values, fewer calls).
            hnn.flatten_parameters(model)
        if replicas is not None:
            distributed.shard_dropout(model, replicas.window)
        if lr is not None:
            options = {**options, "lr": lr}
        stepper = cls(model.parameters(), **options)
        if config.dp is not None and schedule is not None:
            stepper = private(stepper, config.dp, schedule)
        runs.append(RunResult(name, float(stepper.param_groups[0]["lr"]), model))
        losses.append(task.make_loss(config.backend))
        steppers.append(stepper)

    settings = {
        "task": task.name,
        "task_digest": task.digest(),
        "model": str(model_spec),
        "optimizers": optimizer_names,
        "lr": [run.lr for run in runs],
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
            # Checkpoints from before --model trained the task's default network.
            legacy = {"model": str(resolve_model(task.default_model, task))}
            done = _restore(payload, checkpoint, settings, runs, steppers, device, task.kind,
                            legacy)

        # Each record as the checkpoint stores it, made once: a snapshot then costs the
        # tensors' copies, not a walk over the whole history.
        histories = [[record.as_dict() for record in run.history] for run in runs]

        def snapshot(epoch: int) -> ckpt.Snapshot:
            return lambda frozen: _snapshot(settings, epoch, runs, steppers, histories, device,
                                            frozen)

        if checkpointer is not None:
            checkpointer.write(snapshot(done)(False))
        try:
            for epoch in range(done + 1, epochs + 1):
                if schedule is None:
                    batches = sampler.batches(epoch)
                else:  # every optimizer sees the same Poisson batches
                    batches = list(schedule.batches(config.seed, epoch))
                for run, loss_fn, stepper, history in zip(runs, losses, steppers, histories,
                                                          strict=True):
                    start = time.perf_counter()
                    record = run_epoch(
                        run.model, loss_fn, stepper, data, batches,
                        epoch=epoch, kind=task.kind, label=run.optimizer, replicas=replicas,
                    )
                    run.seconds += time.perf_counter() - start
                    run.history.append(record)
                    history.append(record.as_dict())
                    if on_epoch is not None:
                        on_epoch(run.optimizer, record)
                if checkpointer is not None:
                    checkpointer.epoch_done(snapshot(epoch), last=epoch == epochs)
        except BaseException:
            if checkpointer is not None:
                checkpointer.flush()  # the last finished epoch, if it is not on disk yet
            raise
    privacy = None
    if config.dp is not None and schedule is not None:
        privacy = {
            **config.dp.as_dict(),
            "sample_rate": schedule.sample_rate,
            "steps": epochs * schedule.steps_per_epoch,
            "epsilon": epsilon_spent(config.dp, schedule, epochs),
            "accountant": "rdp",
        }
    return ComparisonResult(task, epochs, batch_size, runs, privacy)


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
            }
            for run, stepper, history in zip(runs, steppers, histories, strict=True)
        ],
    }


def _restore(
    payload: dict[str, Any],
    path: str | os.PathLike[str],
    settings: dict[str, Any],
    runs: Sequence[RunResult],
    steppers: Sequence[torch.optim.Optimizer],
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
        if key != "task_digest" and saved.get(key) != value
    ]
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
        for run, stepper, state in zip(runs, steppers, payload["runs"], strict=True):
            run.model.load_state_dict(state["model"])
            stepper.load_state_dict(state["optimizer_state"])
            run.history = [EpochRecord.from_dict(figures) for figures in state["history"]]
            run.seconds = float(state["seconds"])
        ckpt.restore_rng_states(payload["rng"], device)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as error:
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
        history = state.get("history")
        if not isinstance(history, list) or len(history) != epoch:
            count = len(history) if isinstance(history, list) else "no"
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
        if not isinstance(optimizer_state, dict) or not isinstance(
            optimizer_state.get("param_groups"), list
        ) or not isinstance(optimizer_state.get("state"), dict):
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
