"""Training: tasks, the loop, optimizer comparisons, checkpoints and exact resume.

- :func:`load_task` — ``"cubic"``, ``"digits"`` or ``"csv:PATH"`` as a :class:`Task`;
- :func:`compare_optimizers` — one model per optimizer, same weights and batches; what
  ``handgrad train`` runs; returns a :class:`ComparisonResult`;
- :func:`write_metrics` — metrics.json (the PNGs: :func:`handgrad.plots.training.write_outputs`);
- :class:`EpochSampler` — seeded shuffled global batches (shardable with :func:`shard`);
- :func:`build_model` / :func:`register_model` — networks by name (``"mlp:hidden=100x100"``),
  the registry ``--model`` reads (:mod:`handgrad.train.models`);
- :func:`fit` — any one model (handgrad or torch.nn) on a task;
- :func:`run_epoch`, :func:`train_epoch`, :func:`evaluate` — the loop's pieces;
- :func:`save_checkpoint` / :func:`load_checkpoint` — atomic, ``weights_only=True``;
- :func:`set_optimizer_mode` — a schedule-free optimizer's train/eval switch (the loop
  calls it around training steps and measurements);
- :func:`sweep_learning_rates` / :func:`with_chosen_rates` — a learning-rate sweep per
  optimizer before a comparison, each choice said (:class:`SweepResult`).
"""

from __future__ import annotations

from handgrad._lazy import lazy_getattr

_MODULE_OF = {
    "CheckpointError": "checkpoint",
    "ComparisonResult": "compare",
    "EpochRecord": "trainer",
    "EpochSampler": "sampler",
    "ModelOption": "models",
    "ModelSpec": "models",
    "RunResult": "compare",
    "SweepResult": "lr_sweep",
    "Task": "tasks",
    "TaskDefaults": "tasks",
    "TrainConfig": "compare",
    "TrainingDiverged": "trainer",
    "compare_data_parallel": "compare",
    "compare_optimizers": "compare",
    "build_model": "models",
    "evaluate": "trainer",
    "fit": "trainer",
    "load_checkpoint": "checkpoint",
    "load_task": "tasks",
    "parse_model": "models",
    "register_model": "models",
    "run_epoch": "trainer",
    "save_checkpoint": "checkpoint",
    "set_optimizer_mode": "trainer",
    "shard": "sampler",
    "sweep_learning_rates": "lr_sweep",
    "train_epoch": "trainer",
    "train_step": "trainer",
    "with_chosen_rates": "lr_sweep",
    "write_metrics": "metrics",
}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF)
