"""A convolutional network's training step: handgrad against torch.nn + autograd, same process.

Usage: ``python -m benchmarks.bench_conv [--quick] [--threads 1,0] [--nets lenet,resnet]``
(``--threads 0`` means torch's default thread count).

Two networks, float32 on the CPU:

- **lenet** — LeNet-5 with ReLU and max pooling (conv 5×5 1→6, pool, conv 5×5 6→16, pool,
  120-84-10 head) on 1×28×28 images, batch 64;
- **resnet** — a 3×3 stem (3→64, batch norm, ReLU) and four ResNet basic blocks of 64
  channels (conv–BN–ReLU–conv–BN plus the identity, ReLU), global average pooling and a
  linear head, on 3×32×32 images, batch 32.

One step is ``zero_grad``, forward, cross-entropy, backward, optimizer step. Ours: the handgrad
twin of the torch network (``from_torch``: the same weights) with its hand-written backward
(``input_grad=False`` for the images); reference: the torch network and ``loss.backward()``.
Both use the same optimizer, ``torch.optim.SGD(lr=0.01, momentum=0.9, foreach=True)``, so the
ratio is the networks' forward and backward. Steps are timed alternately (ours, torch, ...)
in rounds; the ratio is the median of the rounds' paired ratios (< 1: handgrad faster).

**Peak memory of a step** is measured in a fresh process per network and side: glibc is told to
map every allocation of 64 KiB or more on its own (``MALLOC_MMAP_THRESHOLD_=65536``), so that a
freed tensor's memory goes back to the system at once and the resident set follows the live
tensors (tracemalloc does not see torch's allocations). The resident set is read once the
networks, the batch and the optimizers are built (R0); a warm-up step runs; the resident set is
read again (R1: the optimizer state, the gradients, the first step's one-time allocations such
as kernel caches and heap growth); the kernel's high-water mark is reset
(``/proc/self/clear_refs``), one more step runs, and two figures are reported:

- **step**: VmHWM − R1, the memory a training step needs above what stays between steps (what
  the forward keeps for the backward, gradients in flight, temporaries): the figure the
  "keeps only what its backward needs" goal is about;
- **total**: VmHWM − R0, the same plus the optimizer state and the first step's one-time
  allocations (equal tensors on both sides; the one-time allocations differ by a fraction of
  a MiB, which dominates the ratio of a small network such as LeNet).

Both sides free what the forward kept in backward (autograd its graph, each handgrad module
its context). Linux only.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import handgrad.nn as hnn

nn = torch.nn
Step = Callable[[], object]


def lenet() -> torch.nn.Module:
    """LeNet-5 with ReLU and max pooling, for 1×28×28 images."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )  # fmt: skip


def basic_block(channels: int) -> torch.nn.Module:
    """ResNet's basic block: relu(bn(conv(relu(bn(conv(x))))) + x)."""
    block = nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
    )  # fmt: skip
    return nn.Sequential(hnn.TorchResidual(block), nn.ReLU())


def resnet(blocks: int = 4, channels: int = 64) -> torch.nn.Module:
    """A 3×3 stem and ``blocks`` basic blocks, for 3×32×32 images."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        *(basic_block(channels) for _ in range(blocks)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10),
    )  # fmt: skip


# name: (torch network, batch, image shape, description)
NETS: dict[str, tuple[Callable[[], torch.nn.Module], int, tuple[int, ...], str]] = {
    "lenet": (lenet, 64, (1, 28, 28), "LeNet-5, 1×28×28, batch 64"),
    "resnet": (resnet, 32, (3, 32, 32), "stem + 4 basic blocks (64 ch), 3×32×32, batch 32"),
}


def _optimizer(params: object) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=True)  # type: ignore[arg-type]


def make_steps(name: str, seed: int = 0) -> tuple[Step, Step]:
    """(our step, torch's step) for the network ``name``, the same weights and batch."""
    build, batch, shape, _ = NETS[name]
    torch.manual_seed(seed)
    reference = build()
    hand = hnn.from_torch(reference)
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((batch, *shape), generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    hand_optimizer, torch_optimizer = (
        _optimizer(hand.parameters()),
        _optimizer(reference.parameters()),
    )
    loss_fn = hnn.CrossEntropyLoss()

    def ours() -> object:
        hand_optimizer.zero_grad()
        loss = loss_fn(hand(x), y)
        hand.backward(loss_fn.backward(), input_grad=False)
        hand_optimizer.step()
        return loss

    def theirs() -> object:
        torch_optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(reference(x), y)
        loss.backward()
        torch_optimizer.step()
        return loss

    return ours, theirs


def time_steps(name: str, rounds: int, steps: int) -> tuple[float, float, float]:
    """(our median step seconds, torch's, median of the rounds' paired ratios)."""
    ours, theirs = make_steps(name)
    for step in (ours, theirs, ours, theirs):  # warm-up: caches, lazy state, kernels
        step()
    our_times, their_times, ratios = [], [], []
    for _ in range(rounds):
        pair = []
        for step in (ours, theirs):
            gc.collect()
            started = time.perf_counter()
            for _ in range(steps):
                step()
            pair.append((time.perf_counter() - started) / steps)
        our_times.append(pair[0])
        their_times.append(pair[1])
        ratios.append(pair[0] / pair[1])
    return statistics.median(our_times), statistics.median(their_times), statistics.median(ratios)


# ----------------------------------------------------------------------------- peak memory


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def probe_peak(name: str, side: str) -> tuple[int, int]:
    """(step, total): peak bytes resident during a training step above what was resident
    after a warm-up step, and above what was resident before training (the networks, the
    batch and the optimizers built, no step taken yet)."""
    ours, theirs = make_steps(name)
    step = ours if side == "handgrad" else theirs
    gc.collect()
    before = _status_kib("VmRSS")
    step()  # warm-up: optimizer state, caches (and what the step keeps until the next)
    gc.collect()
    between = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    step()
    peak = _status_kib("VmHWM")
    return (peak - between) * 1024, (peak - before) * 1024


def peak_in_subprocess(name: str, side: str, threads: int) -> tuple[int, int] | None:
    """:func:`probe_peak` in a fresh interpreter with glibc's mmap threshold fixed at 64 KiB
    (so that freed tensors leave the resident set); None where that cannot be done."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    command = [
        sys.executable, "-m", "benchmarks.bench_conv", "--probe", f"{name}:{side}",
        "--threads", str(threads),
    ]  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"_memory probe {name}:{side} failed: {done.stderr.strip()[-300:]}_")
        return None
    step, total = done.stdout.strip().splitlines()[-1].split()
    return int(step), int(total)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_conv", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument(
        "--threads", default="1,0", help="comma-separated torch thread counts; 0 = default"
    )
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated networks")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # NAME:SIDE, in a subprocess
    args = parser.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    default_threads = torch.get_num_threads()
    if args.probe:
        name, side = args.probe.split(":")
        torch.set_num_threads(threads[0] or default_threads)
        print(*probe_peak(name, side))
        return 0
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(NETS))
    if unknown:
        parser.error(f"unknown network(s) {unknown}; expected names from {list(NETS)}")
    print(
        "float32, CPU, the same SGD (momentum 0.9, foreach) on both sides. Ratio = handgrad / "
        "torch autograd (< 1: handgrad faster), median of paired alternating rounds. Peak "
        "memory: resident set of a fresh process per side (glibc MALLOC_MMAP_THRESHOLD_=65536, "
        "so freed tensors leave it), VmHWM over one step after a warm-up step; step: minus "
        "VmRSS after the warm-up step (what a step needs above what stays between steps); "
        "total: minus VmRSS once the networks, batch and optimizers are built (adds the "
        "optimizer state and the first step's one-time allocations).\n"
    )
    try:
        for count in threads:
            torch.set_num_threads(count or default_threads)
            print(f"### {torch.get_num_threads()} torch thread(s)\n")
            print(
                "| network | handgrad ms | torch ms | ratio | step MiB handgrad | torch | ratio "
                "| total MiB handgrad | torch | ratio |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|")
            for name in names:
                rounds, steps = (3, 1) if args.quick else ((15, 4) if name == "lenet" else (9, 1))
                if name == "lenet" and not args.quick:
                    steps = 10
                ours, theirs, ratio = time_steps(name, rounds, steps)
                memory = ["-"] * 6
                if not args.no_memory:
                    mine, torch_peaks = (peak_in_subprocess(name, s, count)
                                         for s in ("handgrad", "torch"))  # fmt: skip
                    if mine is not None and torch_peaks is not None:
                        memory = []
                        for ours_bytes, torch_bytes in zip(mine, torch_peaks, strict=True):
                            memory += [f"{ours_bytes / 2**20:.1f}", f"{torch_bytes / 2**20:.1f}",
                                       f"{ours_bytes / torch_bytes:.2f}"]  # fmt: skip
                print(
                    f"| {NETS[name][3]} | {ours * 1e3:.1f} | {theirs * 1e3:.1f} | {ratio:.2f} | "
                    + " | ".join(memory)
                    + " |",
                    flush=True,
                )
            print()
    finally:
        torch.set_num_threads(default_threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
