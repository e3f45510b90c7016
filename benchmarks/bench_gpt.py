"""A GPT training step: handgrad's hand-written backward against torch + autograd, same process.

Usage: ``python -m benchmarks.bench_gpt [--quick] [--threads 1,0] [--rounds N] [--no-compile]``
(``--threads 0``: torch's default thread count).

The model: 4 blocks, d_model 128, 4 heads, context 128, batch 16, vocabulary 96, float32 on
the CPU, tied head. One step is ``zero_grad``, forward, cross-entropy, backward, AdamW step.

- **handgrad**: :class:`handgrad.nn.GPT`, :class:`handgrad.nn.CrossEntropyLoss`, the
  hand-written ``backward``, :class:`handgrad.optim.AdamW`, the parameters laid out in one
  buffer by ``handgrad.nn.flatten_parameters`` (as ``handgrad train`` does); "plain" is the
  same without that layout.
- **torch eager**: the same weights in :class:`handgrad.nn.TorchGPT` (torch.nn layers and
  ``scaled_dot_product_attention(is_causal=True)``, as nanoGPT writes it), ``loss.backward()``,
  ``torch.optim.AdamW``.
- **torch compiled**: the torch model through ``torch.compile`` (forward and the backward
  AOTAutograd derives from it); compilation is not timed.

Time: each side is paired with eager in a loop of its own: in each round the two run a
block of ``BLOCK`` consecutive steps each, in a shuffled order (seeded). A training loop runs
one model's steps back to back, so the figure is the steady state: the block's later steps,
averaged; the ratio is the median over rounds of the side's over eager's in the same round (a
slow spell of the machine falls on both). Beside it: the 95% confidence interval of that
median (:func:`median_interval`, from the order statistics, assuming nothing of the ratios'
distribution but independent rounds) and the middle half of the per-round ratios (their
quartiles). The block's first step, right after the other model's steps, is reported apart:
it finds the allocator and the caches as the other model left them, which a training loop
never does. Eager's own row gives its times in handgrad's loop.

Why a loop per pair: a third model's steps between a pair's blocks moved the pair's ratio.
With the compiled model's blocks in the same loop, handgrad against eager read 1.002–1.004 at
1 thread, against 0.992–0.997 without (30 rounds, four processes each, alternating; on the
shared 2-core host of benchmarks/RESULTS.md, 2026-12-07); a compiled model that was built
but not stepped changed nothing (0.996–1.003 against 0.997–1.006). The three benchmark runs
that night with all four sides in one loop read 1.009–1.014.

``ROUNDS`` = 40 per pair: there the per-round ratios spread about ±1.5% around their median,
and the median's interval came out 2–4% wide; it is the run's own, and the host's speed
also drifts over minutes (runs minutes apart have differed by up to 1%). On a noisier host
of the same kind (2026-12-07, 5 a.m.: a matrix product's rate moving ±10% from second to
second) the intervals came out 6–8% wide: read the interval before the median.

Peak memory: each side runs in a fresh process with torch's profiler recording every CPU
allocation from the start (``profile_memory=True``); the profiler reports, with each
allocation and free, the total bytes the process's tensors hold. The figure is the largest
total during the measured (third) step — parameters, gradients, optimizer state, activations
kept for the backward and the backward's temporaries, everything alive at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

import handgrad.nn as hnn
from handgrad.optim import AdamW

VOCAB, CONTEXT, BATCH = 96, 128, 16
CONFIG: dict[str, Any] = {"n_layer": 4, "n_head": 4, "d_model": 128}


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=generator)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def _models(flat: bool = True) -> tuple[hnn.GPT, torch.nn.Module]:
    torch.manual_seed(0)
    ours = hnn.GPT(VOCAB, CONTEXT, **CONFIG)
    reference = hnn.to_torch(ours)
    if flat:
        hnn.flatten_parameters(ours)
    return ours, reference


def handgrad_step(model: hnn.GPT) -> Callable[[], float]:
    """A training step of the hand-written GPT."""
    optimizer = AdamW(model.parameters(), lr=1e-3)
    loss_fn = hnn.CrossEntropyLoss()
    tokens, targets = _batch()

    def step() -> float:
        optimizer.zero_grad()
        logits = model(tokens)
        loss = loss_fn(logits.view(-1, VOCAB), targets.view(-1))
        model.backward(loss_fn.backward().view(logits.shape))
        optimizer.step()
        return loss.item()

    return step


def torch_step(model: torch.nn.Module) -> Callable[[], float]:
    """A training step of the torch model by autograd."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, targets = _batch()

    def step() -> float:
        optimizer.zero_grad()
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


BLOCK = 5
"""Consecutive steps of one side in a round: the first after another model's, then four."""

ROUNDS = 40
"""Rounds of each pair's loop (the side's block and eager's, in a shuffled order)."""


def median_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """A confidence interval for the median of independent ``values`` (z = 1.96: 95%).

    The number of values below the true median is Binomial(n, ½), about normal with mean
    n/2 and standard deviation √n/2; so the order statistics x₍ⱼ₎ and x₍ₖ₎ (1-based) with
    j = ⌊n/2 − z√n/2⌋ and k = ⌈1 + n/2 + z√n/2⌉ bracket it with that confidence, whatever
    the values' distribution (clipped to the sample for small n).
    """
    if not values:
        raise ValueError("median_interval: needs at least one value")
    ordered = sorted(values)
    n = len(ordered)
    spread = z * math.sqrt(n) / 2
    low = max(1, math.floor(n / 2 - spread))
    high = min(n, math.ceil(1 + n / 2 + spread))
    return ordered[low - 1], ordered[high - 1]


EAGER = "torch eager autograd"


def _blocks(
    steps: dict[str, Callable[[], float]], rounds: int, block: int, shuffler: random.Random
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``rounds`` rounds in which each of ``steps`` runs ``block`` consecutive steps, in a
    new shuffled order each round: per side, each round's steady state (the block's later
    steps, averaged) and its first step, in seconds."""
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    first: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps.items())
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name, step in order:
            times = []
            for _ in range(block):
                started = time.perf_counter()
                step()
                times.append(time.perf_counter() - started)
            first[name].append(times[0])
            seconds[name].append(statistics.mean(times[1:]))
    return seconds, first


def _row(
    name: str, times: list[float], eager: list[float], first: list[float], eager_first: list[float]
) -> str:
    """A table row: the side's median, its per-round ratios to eager's summarised."""
    ratios = [a / b for a, b in zip(times, eager, strict=True)]
    sure_low, sure_high = median_interval(ratios)
    low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    after_switch = statistics.median(a / b for a, b in zip(first, eager_first, strict=True))
    return (
        f"| {name} | {statistics.median(times) * 1e3:.1f} | {statistics.median(ratios):.3f} | "
        f"{sure_low:.3f}–{sure_high:.3f} | {low:.3f}–{high:.3f} | {after_switch:.3f} |"
    )


def timing(rounds: int, compiled: bool, block: int = BLOCK) -> str:
    """handgrad's, plain handgrad's (and compiled) steps, each paired with eager's in its own
    loop of ``rounds`` rounds of blocks (:func:`_blocks`): a markdown table."""
    if block < 2:
        raise ValueError(f"timing: block must be at least 2 steps (one untimed), got {block}")
    ours, reference = _models()
    plain, _ = _models(flat=False)
    sides: dict[str, Callable[[], float]] = {
        "handgrad": handgrad_step(ours),
        "handgrad, plain": handgrad_step(plain),
    }
    eager = torch_step(reference)
    notes = []
    if compiled:
        twin = hnn.to_torch(ours)
        started = time.perf_counter()
        try:
            sides["torch.compile autograd"] = torch_step(cast(torch.nn.Module, torch.compile(twin)))
            sides["torch.compile autograd"]()  # compiles
            notes.append(f"compilation took {time.perf_counter() - started:.0f} s (not timed)")
        except Exception as error:  # no C++ compiler, ...: report, keep the rest
            sides.pop("torch.compile autograd", None)
            notes.append(f"torch.compile unavailable: {type(error).__name__}: {error}")
    for step in (*sides.values(), eager):  # warm up (allocator, lazy initialisation)
        step()
        step()
    shuffler = random.Random(0)
    rows: dict[str, str] = {}
    for name, step in sides.items():  # (the module docstring: one pair per loop)
        seconds, first = _blocks({name: step, EAGER: eager}, rounds, block, shuffler)
        rows[name] = _row(name, seconds[name], seconds[EAGER], first[name], first[EAGER])
        if EAGER not in rows:  # eager's own row: its times in handgrad's loop
            rows[EAGER] = _row(EAGER, seconds[EAGER], seconds[EAGER], first[EAGER], first[EAGER])
    lines = [
        "| step | median ms | ratio to eager (median of rounds) | its 95% interval "
        "| middle half of rounds | first step of a block: ratio |",
        "|---|---|---|---|---|---|",
        *(rows[name] for name in ("handgrad", "handgrad, plain", EAGER) if name in rows),
        *(row for name, row in rows.items() if name.startswith("torch.compile")),
    ]
    return "\n".join(lines + [""] + [f"_{note}_" for note in notes])


# ------------------------------------------------------------------ peak memory (subprocess)


def _child_peak(side: str) -> dict[str, float]:
    """(In a fresh process.) MiB held before the measured step and at its peak."""
    from torch.profiler import ProfilerActivity, profile, record_function

    profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    profiler.start()
    ours, reference = _models(flat=side == "handgrad")
    if side.startswith("handgrad"):
        del reference
        step = handgrad_step(ours)
    else:
        del ours
        step = torch_step(reference)
    step()
    step()
    with record_function("measured step"):
        step()
    profiler.stop()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        profiler.export_chrome_trace(path)
        with open(path, encoding="utf-8") as file:
            events = json.load(file)["traceEvents"]
    marker = next(e for e in events if e.get("name") == "measured step")
    start, end = float(marker["ts"]), float(marker["ts"]) + float(marker["dur"])
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]"), key=lambda e: float(e["ts"])
    )
    before = [e["args"]["Total Allocated"] for e in memory if float(e["ts"]) < start]
    during = [e["args"]["Total Allocated"] for e in memory if start <= float(e["ts"]) <= end]
    mib = 2.0**20
    return {"before": before[-1] / mib, "peak": max(during) / mib}


def memory() -> str:
    """Peak memory of a step, each side in its own process: a markdown table."""
    results: dict[str, dict[str, float]] = {}
    for side in ("handgrad", "handgrad-plain", "torch"):
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_gpt", "--memory-child", side],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
        )
        results[side] = json.loads(completed.stdout.strip().splitlines()[-1])
    ratio = results["handgrad"]["peak"] / results["torch"]["peak"]
    plain = results["handgrad-plain"]["peak"] / results["torch"]["peak"]
    lines = [
        "| step | held before the step, MiB | peak during the step, MiB |",
        "|---|---|---|",
        *(
            f"| {name} | {r['before']:.1f} | {r['peak']:.1f} |"
            for name, r in (
                ("handgrad", results["handgrad"]),
                ("handgrad, plain", results["handgrad-plain"]),
                ("torch eager autograd", results["torch"]),
            )
        ),
        "",
        f"Peak ratio handgrad / torch: **{ratio:.2f}** (plain: {plain:.2f}; the flat layout "
        "keeps its gradient buffer between steps, where torch frees its gradients).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpt", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds, no compile: a smoke run")
    parser.add_argument(
        "--threads", default="1,0", help="comma-separated thread counts; 0 = default"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"rounds of blocks (default {ROUNDS}; --quick: 3)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument(
        "--memory-child", choices=["handgrad", "handgrad-plain", "torch"], help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(_child_peak(args.memory_child)))
        return 0
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    default_threads = torch.get_num_threads()
    model = ", ".join(f"{k} {v}" for k, v in CONFIG.items())
    print(
        f"GPT ({model}, context {CONTEXT}, batch {BATCH}, vocabulary {VOCAB}), float32, CPU. "
        "Ratio = handgrad / torch eager (< 1: handgrad faster).\n"
    )
    rounds = args.rounds if args.rounds is not None else 3 if args.quick else ROUNDS
    if rounds < 1:
        parser.error(f"--rounds must be a positive integer, got {rounds}")
    try:
        for count in threads:
            torch.set_num_threads(count or default_threads)
            print(f"### {torch.get_num_threads()} torch thread(s)\n")
            compiled = not (args.quick or args.no_compile)
            block = 2 if args.quick else BLOCK
            print(f"#### time\n\n{timing(rounds, compiled, block)}\n", flush=True)
            print(f"#### peak memory\n\n{memory()}\n", flush=True)
    finally:
        torch.set_num_threads(default_threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
