"""Data-parallel training throughput on the digits task: 1 process against N (gloo, CPU).

Usage: ``python -m benchmarks.bench_distributed [--quick] [--processes 2]
[--batch-sizes 64,256] [--epochs E]``.

Each row trains handgrad's digits network with Adam, once in this process and once with
:func:`~handgrad.train.compare_data_parallel` in N fresh processes, on the same global
batches. Throughput is training examples per second of training time (rank 0's time inside
the epochs: its shard's steps, the all-reduces and the per-epoch test evaluation; process
start-up and the rendezvous are left out). Speed-up is N-process throughput over 1-process;
the last column checks that both reach the same final test loss. Every process uses one
intra-op thread, so N processes need N free cores to scale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from handgrad.train.compare import (
    ComparisonResult,
    TrainConfig,
    compare_data_parallel,
    compare_optimizers,
)
from handgrad.train.tasks import load_task

OPTIMIZER = "adam"


def throughput(result: ComparisonResult, num_train: int) -> float:
    """Training examples per second over the whole run."""
    run = result.runs[0]
    return len(run.history) * num_train / run.seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_distributed")
    parser.add_argument("--quick", action="store_true", help="2 epochs, one batch size")
    parser.add_argument("--processes", type=int, default=2, help="N (default: 2)")
    parser.add_argument("--batch-sizes", default=None, help="global batch sizes, e.g. 64,256")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    if args.processes < 2:
        parser.error(f"--processes must be at least 2, got {args.processes}")
    epochs = args.epochs or (2 if args.quick else 10)
    default_sizes = "64" if args.quick else "32,128,512"
    sizes = [int(size) for size in (args.batch_sizes or default_sizes).split(",")]
    task = load_task("digits")
    num_train = len(task.x_train)

    print(
        f"digits ({num_train} training examples, 64-256-10 MLP), {OPTIMIZER}, {epochs} epochs; "
        f"1 process vs {args.processes} gloo processes on the CPU, one thread each.\n"
    )
    print(
        f"| global batch | 1 process (examples/s) | {args.processes} processes (examples/s) "
        "| speed-up | final test loss, rel. difference |"
    )
    print("|---:|---:|---:|---:|---:|")
    for size in sizes:
        config = TrainConfig(epochs=epochs, batch_size=size)
        print(f"batch {size}: 1 process ...", file=sys.stderr, flush=True)
        one = compare_optimizers(task, OPTIMIZER, config)
        print(f"batch {size}: {args.processes} processes ...", file=sys.stderr, flush=True)
        many = compare_data_parallel(task, OPTIMIZER, config, processes=args.processes)
        single, parallel = throughput(one, num_train), throughput(many, num_train)
        loss_one, loss_many = one.runs[0].final.test_loss, many.runs[0].final.test_loss
        print(
            f"| {size} | {single:,.0f} | {parallel:,.0f} | {parallel / single:.2f}x "
            f"| {abs(loss_many - loss_one) / loss_one:.1e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
