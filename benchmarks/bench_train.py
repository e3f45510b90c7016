"""A whole training step of handgrad against torch.nn + autograd + torch.optim, same process.

Usage: ``python -m benchmarks.bench_train [--quick] [--threads 1,0] [--parts grid,scaling]``
(``--threads 0`` means torch's default thread count; parts: grid, persample, scaling).

1. **Grid** — one step is ``zero_grad``, forward, loss, backward, Adam step. Ours: handgrad.nn
   with the hand-written backward (``input_grad=False`` for the network input) and
   ``handgrad.optim.Adam`` on its default path, twice: "flat", the network's parameters laid
   out in one buffer by ``handgrad.nn.flatten_parameters`` (the fast path), and "plain", a
   ``Sequential`` and ``Adam(model.parameters())`` with nothing else called. Reference: the
   same weights in torch.nn, ``loss.backward()`` and ``torch.optim.Adam(foreach=True)``.
   Steps are timed alternately (flat, plain, torch, ...) in rounds; each ratio is the median
   over rounds of that round's ratio. On the largest configuration the achieved rate
   6·batch·Σ(in·out) FLOP per step is set against the best float32 2048x2048 matmul rate
   measured in the same run.
2. **Per-sample** — epochs of the classic task (y = x³ on [-2, 2], 2,000 samples, 1-100-1
   sigmoid, batch 1): steps/s of handgrad's trainer (``train_epoch``, what ``handgrad train
   --batch-size 1`` runs: after one ordinary step, the fast epoch of
   :mod:`handgrad.train.fast_epoch`) and of a hand-written loop of the four public calls,
   flat parameters (and without), against the classroom loop (nn.Module, autograd,
   ``torch.optim.Adam()`` with its defaults). The loops train side by side, 250 steps each in
   turn; rates come from the median chunk.
3. **Scaling** — our step time and the ratio over width x batch, to show where the overhead
   regime (time flat in size) gives way to the compute regime (time grows with FLOPs).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

import handgrad.nn as hnn
from handgrad.optim import Adam
from handgrad.train import train_epoch


@dataclass(frozen=True)
class Config:
    """A multilayer perceptron: layer sizes, batch, hidden activation and loss."""

    sizes: tuple[int, ...]
    batch: int
    activation: str  # "relu" or "sigmoid"
    loss: str  # "mse" or "ce"

    @property
    def name(self) -> str:
        return "-".join(map(str, self.sizes))

    @property
    def flops(self) -> int:
        """6·batch·Σ in·out: forward, dW and dx matmuls, 2 FLOP per multiply-add each."""
        pairs = zip(self.sizes[:-1], self.sizes[1:], strict=True)
        return 6 * self.batch * sum(a * b for a, b in pairs)


GRID = [
    Config((1, 100, 1), 1, "sigmoid", "mse"),
    Config((1, 100, 1), 64, "relu", "mse"),
    Config((1, 100, 1), 2000, "relu", "mse"),
    Config((64, 256, 256, 10), 128, "relu", "ce"),
    Config((784, 512, 512, 10), 256, "relu", "ce"),
    Config((784, 1024, 1024, 10), 1024, "relu", "ce"),
]
Step = Callable[[], object]


def handgrad_net(config: Config, seed: int = 0) -> hnn.Sequential:
    """The configuration's network with handgrad layers, weights drawn from ``seed``."""
    torch.manual_seed(seed)
    layers: list[hnn.Module] = []
    for index, (a, b) in enumerate(zip(config.sizes[:-1], config.sizes[1:], strict=True)):
        if index:
            layers.append(hnn.Sigmoid() if config.activation == "sigmoid" else hnn.ReLU())
        layers.append(hnn.Linear(a, b))
    return hnn.Sequential(*layers)


def make_data(config: Config, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets: regression targets for MSE, class indices for cross-entropy."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(config.batch, config.sizes[0], generator=generator)
    if config.loss == "mse":
        return x, torch.randn(config.batch, config.sizes[-1], generator=generator)
    return x, torch.randint(0, config.sizes[-1], (config.batch,), generator=generator)


def handgrad_step(config: Config, flat: bool = True) -> Step:
    """One handgrad training step on fixed data (hand-written backward, handgrad Adam), with
    the parameters in one flat buffer unless ``flat`` is False."""
    net = handgrad_net(config)
    if flat:
        hnn.flatten_parameters(net)
    loss_fn = hnn.MSELoss() if config.loss == "mse" else hnn.CrossEntropyLoss()
    optimizer = Adam(net.parameters(), lr=1e-3)
    x, y = make_data(config)

    def step() -> object:
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        net.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()
        return loss

    return step


def torch_step(config: Config) -> Step:
    """The reference step: the same weights in torch.nn, autograd, Adam(foreach=True)."""
    net = hnn.to_torch(handgrad_net(config))
    loss_fn = torch.nn.MSELoss() if config.loss == "mse" else torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
    x, y = make_data(config)

    def step() -> object:
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def round_times(steps: Sequence[Step], rounds: int, calls: int) -> list[list[float]]:
    """Seconds per call of each step function in each round, timed in alternation."""
    for step in steps:  # warm-up: optimizer state, allocator caches, first-touch page faults
        for _ in range(3):
            step()
    gc.collect()
    samples: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):
        for index, step in enumerate(steps):
            started = time.perf_counter()
            for _ in range(calls):
                step()
            samples[index].append((time.perf_counter() - started) / calls)
    return samples


def median_times(steps: Sequence[Step], rounds: int, calls: int) -> list[float]:
    """Median seconds per call of each step function, timed in alternation round by round."""
    return [statistics.median(each) for each in round_times(steps, rounds, calls)]


def paired_ratios(samples: Sequence[Sequence[float]], reference: int = -1) -> list[float]:
    """Per step function, the median over rounds of its time over the reference's in the same
    round: a slow spell of the shared machine falls on both sides of a ratio."""
    return [
        statistics.median(
            ours / theirs for ours, theirs in zip(each, samples[reference], strict=True)
        )
        for each in samples
    ]


def calls_for(config: Config, quick: bool) -> tuple[int, int]:
    """(rounds, calls per round): about the same wall time for cheap and expensive steps."""
    cost = config.flops
    calls = 50 if cost < 1e6 else 10 if cost < 1e8 else 2
    rounds = 5 if quick else 21
    return rounds, max(1, calls // 5) if quick else calls


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 size x size matmul rate (GFLOP/s) of ``repeats`` runs."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def grid_table(quick: bool) -> str:
    lines = [
        "| network | batch | activation / loss | flat (µs) | plain (µs) | torch (µs) | "
        "flat/torch | plain/torch |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    largest: tuple[Config, float] | None = None
    for config in GRID:
        print(f"  grid {config.name} @ {config.batch} ...", file=sys.stderr, flush=True)
        rounds, calls = calls_for(config, quick)
        steps = [handgrad_step(config), handgrad_step(config, flat=False), torch_step(config)]
        samples = round_times(steps, rounds, calls)
        ours, plain, theirs = (statistics.median(each) for each in samples)
        flat_ratio, plain_ratio, _ = paired_ratios(samples)
        lines.append(
            f"| {config.name} | {config.batch} | {config.activation} / {config.loss} | "
            f"{ours * 1e6:,.0f} | {plain * 1e6:,.0f} | {theirs * 1e6:,.0f} | "
            f"{flat_ratio:.2f} | {plain_ratio:.2f} |"
        )
        largest = (config, ours)
    assert largest is not None
    config, seconds = largest
    achieved = config.flops / seconds / 1e9
    peak = matmul_gflops(repeats=3 if quick else 10)
    lines.append("")
    lines.append(
        "flat: the parameters laid out by `handgrad.nn.flatten_parameters`; plain: a "
        "`Sequential` and `Adam(model.parameters())`, nothing else called (goals: flat <= 0.5 "
        "on the two small rows and <= 1.0 on every row; plain <= 0.55 on the small rows and "
        "<= 1.0 elsewhere). Ratios: median over rounds of each round's paired ratio."
    )
    lines.append("")
    lines.append(
        f"Largest ({config.name} @ {config.batch}): {achieved:.0f} GFLOP/s achieved "
        f"(6·batch·Σ in·out = {config.flops / 1e9:.2f} GFLOP per step) against {peak:.0f} "
        f"GFLOP/s for the best float32 2048x2048 matmul in this run: {achieved / peak:.0%}."
    )
    return "\n".join(lines)


def cubic_data(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The classic task: x ~ U(-2, 2), y = x³, as (n, 1) columns."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=generator) * 4 - 2
    return x, x**3


Sample = tuple[torch.Tensor, torch.Tensor]
StepLoop = Callable[[Sequence[Sample]], None]


def per_sample_net() -> hnn.Sequential:
    """A fresh 1-100-1 sigmoid network (the same weights every time)."""
    return handgrad_net(Config((1, 100, 1), 1, "sigmoid", "mse"))


def per_sample_loop_handgrad(flat: bool = True, net: hnn.Sequential | None = None) -> StepLoop:
    """The per-sample loop with handgrad (hand-written backward, handgrad Adam) on ``net``
    (default: a fresh :func:`per_sample_net`), its parameters in one flat buffer unless
    ``flat`` is False."""
    net = per_sample_net() if net is None else net
    if flat:
        hnn.flatten_parameters(net)
    loss_fn = hnn.MSELoss()
    optimizer = Adam(net.parameters(), lr=1e-3)

    def run(samples: Sequence[Sample]) -> None:
        for xi, yi in samples:
            optimizer.zero_grad()
            loss_fn(net(xi), yi)
            net.backward(loss_fn.backward(), input_grad=False)
            optimizer.step()

    return run


def per_sample_loop_trainer(net: hnn.Sequential | None = None) -> StepLoop:
    """The per-sample loop as ``handgrad train --batch-size 1`` runs it: handgrad's trainer
    (``handgrad.train.train_epoch``) on ``net`` (default: a fresh :func:`per_sample_net`),
    flattened, each chunk of samples one call (one ordinary step, then the fast epoch:
    handgrad.train.fast_epoch)."""
    net = per_sample_net() if net is None else net
    hnn.flatten_parameters(net)
    loss_fn = hnn.MSELoss()
    optimizer = Adam(net.parameters(), lr=1e-3)

    def run(samples: Sequence[Sample]) -> None:
        x = torch.cat([xi for xi, _ in samples])
        y = torch.cat([yi for _, yi in samples])
        batches = list(torch.arange(len(samples)).split(1))
        train_epoch(net, loss_fn, optimizer, x, y, batches, epoch=1)

    return run


def per_sample_loop_classroom() -> StepLoop:
    """The per-sample loop written the classroom way: nn.Module, autograd, Adam()."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(1, 100), nn.Sigmoid(), nn.Linear(100, 1))
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run(samples: Sequence[Sample]) -> None:
        for xi, yi in samples:
            optimizer.zero_grad()
            loss = criterion(model(xi), yi)
            loss.backward()
            optimizer.step()

    return run


PER_SAMPLE_CHUNK = 250


def per_sample_table(quick: bool) -> str:
    n = 500 if quick else 2000
    x, y = cubic_data(n)
    samples = [(x[i : i + 1], y[i : i + 1]) for i in range(n)]
    chunks = [samples[i : i + PER_SAMPLE_CHUNK] for i in range(0, n, PER_SAMPLE_CHUNK)]
    makers: dict[str, Callable[[], StepLoop]] = {
        "trainer": per_sample_loop_trainer,
        "ours": per_sample_loop_handgrad,
        "not_flat": lambda: per_sample_loop_handgrad(flat=False),
        "theirs": per_sample_loop_classroom,
    }
    # Per chunk of steps: (wall, thread CPU) seconds. The three loops train side by side,
    # a chunk each in turn, so that a disturbance of the machine falls on all of them alike.
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in makers}
    epochs = 2 if quick else 7
    for _ in range(epochs):
        loops = {name: make() for name, make in makers.items()}
        for chunk in chunks:
            for name, loop in loops.items():
                wall, cpu = time.perf_counter(), time.thread_time()
                loop(chunk)
                times[name].append((time.perf_counter() - wall, time.thread_time() - cpu))
    # Steps/s from the median chunk; and from the fastest chunk in thread CPU time, which
    # other processes on a shared machine disturb least.
    rate = {
        name: PER_SAMPLE_CHUNK / statistics.median(w for w, _ in runs)
        for name, runs in times.items()
    }
    cpu_rate = {name: PER_SAMPLE_CHUNK / min(c for _, c in runs) for name, runs in times.items()}
    # And the median over chunks of each chunk's paired speed-up (same turn, same disturbance).
    paired = {
        name: statistics.median(
            theirs / ours for (ours, _), (theirs, _) in zip(runs, times["theirs"], strict=True)
        )
        for name, runs in times.items()
    }
    return "\n".join(
        [
            "| loop | steps/s (median chunk, wall) | steps/s (fastest chunk, thread CPU) |",
            "|---|---:|---:|",
            f"| handgrad's trainer (`train_epoch`: the fast epoch) | {rate['trainer']:,.0f} | "
            f"{cpu_rate['trainer']:,.0f} |",
            f"| handgrad, a hand-written loop (the four public calls per step) | "
            f"{rate['ours']:,.0f} | {cpu_rate['ours']:,.0f} |",
            f"| handgrad, parameters not flattened | {rate['not_flat']:,.0f} | "
            f"{cpu_rate['not_flat']:,.0f} |",
            f"| classroom (nn.Module, autograd, torch.optim.Adam) | {rate['theirs']:,.0f} | "
            f"{cpu_rate['theirs']:,.0f} |",
            "",
            f"{epochs} epochs of {n} samples at batch 1, 1-100-1 sigmoid, MSE, each loop on a "
            f"fresh network per epoch; handgrad with flat parameters "
            f"(`handgrad.nn.flatten_parameters`) unless said. The loops run side by side in "
            f"chunks of {PER_SAMPLE_CHUNK} steps, in turn, each chunk timed (the trainer: one "
            f"`train_epoch` call per chunk, its first step an ordinary one). Speed-up of "
            f"handgrad's trainer over the classroom loop: **{paired['trainer']:.1f}x** as the "
            f"median of the chunks' paired speed-ups, "
            f"{rate['trainer'] / rate['theirs']:.1f}x by median chunk wall time, "
            f"{cpu_rate['trainer'] / cpu_rate['theirs']:.1f}x by fastest chunk thread CPU "
            f"time (goal >= 4x). The hand-written loop: {paired['ours']:.1f}x paired "
            f"({rate['ours'] / rate['theirs']:.1f}x, {cpu_rate['ours'] / cpu_rate['theirs']:.1f}x);"
            f" not flattened: {paired['not_flat']:.1f}x paired.",
        ]
    )


def scaling_table(quick: bool) -> str:
    widths = (16, 128, 1024) if quick else (16, 64, 256, 1024)
    batches = (1, 64, 1024) if quick else (1, 16, 256, 2048)
    header = "| width \\ batch | " + " | ".join(str(b) for b in batches) + " |"
    lines = [
        "Network 32-W-W-10, ReLU, cross-entropy. Each cell: our step time (µs, handgrad, flat "
        "parameters) and handgrad/torch.\n",
        header,
        "|---|" + "---:|" * len(batches),
    ]
    for width in widths:
        cells = []
        for batch in batches:
            config = Config((32, width, width, 10), batch, "relu", "ce")
            print(f"  scaling {config.name} @ {batch} ...", file=sys.stderr, flush=True)
            rounds, calls = calls_for(config, quick=True)
            rounds = rounds if quick else 9
            ours, theirs = median_times([handgrad_step(config), torch_step(config)], rounds, calls)
            cells.append(f"{ours * 1e6:,.0f} ({ours / theirs:.2f})")
        lines.append(f"| {width} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PARTS = {"grid": grid_table, "persample": per_sample_table, "scaling": scaling_table}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument(
        "--threads", default="1,0", help="comma-separated torch thread counts; 0 = default"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; expected names from {list(PARTS)}")
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    default_threads = torch.get_num_threads()
    print(
        "float32, CPU. Ratio = handgrad / torch (< 1: handgrad faster); medians of "
        "alternating rounds.\n"
    )
    try:
        for count in threads:
            torch.set_num_threads(count or default_threads)
            print(f"### {torch.get_num_threads()} torch thread(s)\n")
            for part in parts:
                print(f"#### {part}\n\n{PARTS[part](args.quick)}\n", flush=True)
    finally:
        torch.set_num_threads(default_threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
