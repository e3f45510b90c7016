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

Time: in each round every side runs a block of ``BLOCK`` consecutive steps, the sides in a
new shuffled order each round (seeded). A training loop runs one model's steps back to back,
so the figure is the steady state: the block's later steps, averaged; the ratio is the median
over rounds of handgrad's over eager's in the same round (a slow spell of the machine falls on
both). Beside it: the 95% confidence interval of that median (:func:`median_interval`, from
the order statistics, assuming nothing of the ratios' distribution but independent rounds)
and the middle half of the per-round ratios (their quartiles). The block's
first step, right after another model's steps, is reported apart: it finds the allocator and
the caches as the other model left them, which a training loop never does. (On the shared
2-core host of benchmarks/RESULTS.md the two differ by less than a run's spread, and so did
steps interleaved one by one, the method before.) There the per-round ratios spread about
±1.5% around their median, and a median of 15 rounds moved as much from run to run: hence
``ROUNDS`` = 60, and the median's interval beside it. That interval is the run's own; the
host's speed also drifts over minutes, and medians of 30 to 60 rounds in runs minutes apart
ranged from 0.987 to 1.014 (handgrad against eager at 1 thread, 2026-12-07).

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

ROUNDS = 60
"""Rounds of a full run (each side's block once per round, in a shuffled order)."""


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


def timing(rounds: int, compiled: bool, block: int = BLOCK) -> str:
    """Paired rounds of blocks of handgrad, eager (and compiled) steps: a markdown table."""
    if block < 2:
        raise ValueError(f"timing: block must be at least 2 steps (one untimed), got {block}")
    ours, reference = _models()
    plain, _ = _models(flat=False)
    steps: dict[str, Callable[[], float]] = {
        "handgrad": handgrad_step(ours),
        "handgrad, plain": handgrad_step(plain),
        "torch eager autograd": torch_step(reference),
    }
    notes = []
    if compiled:
        twin = hnn.to_torch(ours)
        started = time.perf_counter()
        try:
            steps["torch.compile autograd"] = torch_step(cast(torch.nn.Module, torch.compile(twin)))
            steps["torch.compile autograd"]()  # compiles
            notes.append(f"compilation took {time.perf_counter() - started:.0f} s (not timed)")
        except Exception as error:  # no C++ compiler, ...: report, keep the rest
            steps.pop("torch.compile autograd", None)
            notes.append(f"torch.compile unavailable: {type(error).__name__}: {error}")
    for step in steps.values():  # warm up (allocator, lazy initialisation)
        step()
        step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}  # steady state
    first: dict[str, list[float]] = {name: [] for name in steps}  # after another model's
    order = list(steps.items())
    shuffler = random.Random(0)
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
    eager, eager_first = seconds["torch eager autograd"], first["torch eager autograd"]
    lines = [
        "| step | median ms | ratio to eager (median of rounds) | its 95% interval "
        "| middle half of rounds | first step of a block: ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, times in seconds.items():
        ratios = [a / b for a, b in zip(times, eager, strict=True)]
        ratio = statistics.median(ratios)
        sure_low, sure_high = median_interval(ratios)
        low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        after_switch = statistics.median(
            a / b for a, b in zip(first[name], eager_first, strict=True)
        )
        lines.append(
            f"| {name} | {statistics.median(times) * 1e3:.1f} | {ratio:.3f} | "
            f"{sure_low:.3f}–{sure_high:.3f} | {low:.3f}–{high:.3f} | {after_switch:.3f} |"
        )
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
