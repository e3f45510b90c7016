"""Where the default learning rates of ``handgrad train`` come from, and whether they hold
at other batch sizes.

    python -m benchmarks.tune_lr --task cubic [--optimizers adam,sgd] [--batch-sizes 1,16,256]

For each optimizer: a sweep of learning rates (factors of ~2) at the task's reference batch
size and default epochs, printing the final test loss (and accuracy) of each and the best;
then the default rate (the task's table scaled by ``handgrad.train.optimizers.scaled_lr``)
at the other batch sizes, with each run's status. Not a ratio benchmark (it is not run by
``python -m benchmarks``): the figures it prints are the ones behind the table in
``handgrad/train/tasks.py``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from handgrad.optim import OPTIMIZERS
from handgrad.train.compare import TrainConfig, compare_optimizers
from handgrad.train.optimizers import default_lr
from handgrad.train.tasks import Task, load_task

GRID = tuple(10 ** (k / 3) for k in range(-13, 2))  # 1e-4.33 ... 10: three per decade
ALL = [name.lower() for name in OPTIMIZERS if name != "SparseAdam"] + ["momentum", "nesterov"]


def _score(task: Task, name: str, lr: float | None, batch_size: int, epochs: int) -> tuple[
        float, float | None, str]:
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, backend="handgrad")
    try:
        run = compare_optimizers(task, [name], config).runs[0]
    except ValueError as error:
        return math.inf, None, f"error: {error}"
    assert run.status is not None
    if run.diverged or not run.history:
        return math.inf, None, run.status.short()
    return run.final.test_loss, run.final.test_accuracy, run.status.short()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cubic")
    parser.add_argument("--optimizers", default=",".join(ALL))
    parser.add_argument("--batch-sizes", default="1,16,256")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args(argv)
    task = load_task(args.task)
    epochs = args.epochs or task.defaults.epochs
    reference = task.defaults.batch_size
    for name in args.optimizers.split(","):
        if not args.no_sweep:
            results = [(lr, *_score(task, name, lr, reference, epochs)) for lr in GRID]
            best = min(results, key=lambda row: row[1])
            cells = "  ".join(f"{lr:.2g}:{loss:.3g}" for lr, loss, _, _ in results)
            print(f"{name:10s} B={reference} best lr {best[0]:.3g} (test loss {best[1]:.4g}"
                  f"{'' if best[2] is None else f', acc {best[2]:.3f}'})  | {cells}",
                  flush=True)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            lr = default_lr(name, task, batch_size)
            loss, accuracy, status = _score(task, name, None, batch_size, epochs)
            extra = "" if accuracy is None else f" acc {accuracy:.3f}"
            print(f"{name:10s} B={batch_size:<4d} default lr {lr:.3g}: test loss {loss:.4g}"
                  f"{extra} {status}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
