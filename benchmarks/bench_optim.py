"""``step()`` of every handgrad optimizer against its torch.optim namesake, same process.

Usage: ``python -m benchmarks.bench_optim [--quick] [--only Adam,SGD] [--layouts matrices,flat]``.

For each optimizer and parameter layout both sides get identical float32 parameters and
gradients; their ``step()`` calls are timed alternately (ours, torch, ours, ...) in rounds;
each ratio is the median of the rounds' paired ratios. The reference is torch with
``foreach=True`` where torch has a multi-tensor path (its fastest non-fused path; torch's own
CPU default is the slower single-tensor loop), and ``fused=True`` as a further column where
torch has it. Ratios are ours/torch: below 1.0 we are faster.

The ``flat`` layouts put every parameter in one buffer and every gradient in another, for
both sides: ours by ``handgrad.nn.flatten_parameters`` (the layout handgrad's element-wise
optimizers recognise and update as one tensor), torch's as the same views built by hand.
``flat`` is the 1-100-1 network's parameters.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

LAYOUTS: dict[str, tuple[str, list[tuple[int, ...]]]] = {
    "matrices": ("10 params of 100x100", [(100, 100)] * 10),
    "many": ("200 params of 1,000", [(1000,)] * 200),
    "large": ("4 params of 1M", [(1_000_000,)] * 4),
    "flat": ("1-100-1 in one buffer (4 params, 301)", [(100, 1), (100,), (1, 100), (1,)]),
    "flat-many": ("200 params of 1,000 in one buffer", [(1000,)] * 200),
}
# Laid out as views of one parameter buffer and one gradient buffer.
FLAT_LAYOUTS = {"flat", "flat-many"}
DEFAULT_LAYOUTS = ("matrices", "many", "large", "flat")
# Muon only takes matrices: the same element counts, as 2-d shapes.
MATRIX_LAYOUTS: dict[str, list[tuple[int, ...]]] = {
    "matrices": [(100, 100)] * 10,
    "many": [(25, 40)] * 200,
    "large": [(1000, 1000)] * 4,
    "flat": [(100, 1), (1, 100), (10, 10), (1, 1)],
    "flat-many": [(25, 40)] * 200,
}
# Settings that exercise each optimizer's usual state (momentum on for SGD).
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.01, "momentum": 0.9},
    "RMSprop": {"lr": 0.01},
    "Adam": {"lr": 0.001},
    "AdamW": {"lr": 0.001},
    "Adamax": {"lr": 0.002},
    "NAdam": {"lr": 0.002},
    "RAdam": {"lr": 0.001},
    "Adagrad": {"lr": 0.01},
    "Adadelta": {"lr": 1.0},
    "Rprop": {"lr": 0.01},
    "ASGD": {"lr": 0.01},
    "Adafactor": {"lr": 0.01},
    "SparseAdam": {"lr": 0.001},
    "LBFGS": {"lr": 0.1, "max_iter": 5},
    "Muon": {"lr": 0.02},
}
# torch.optim classes with a multi-tensor path / a fused CPU kernel (torch 2.13).
TORCH_FOREACH = {
    "SGD", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta",
    "Rprop", "ASGD", "Adafactor",
}  # fmt: skip
TORCH_FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}


@dataclass
class Timing:
    """Median seconds per ``step()`` for ours and each torch variant, and the ratios ours/torch
    as the median of the rounds' paired ratios (steadier on a busy machine than a ratio of
    medians: a slow spell falls on both sides of a round)."""

    name: str
    layout: str
    ours: float
    torch_foreach: float
    torch_fused: float | None
    ratio_foreach: float
    ratio_fused: float | None


def _handgrad_names() -> list[str]:
    from handgrad import optim

    return sorted(optim.OPTIMIZERS)


def _load(name: str) -> type[torch.optim.Optimizer] | None:
    """Our class, or None while it is not written yet."""
    try:
        module = importlib.import_module("handgrad.optim")
        cls: type[torch.optim.Optimizer] = getattr(module, name)
    except (ImportError, AttributeError):
        return None
    return cls


def _make(
    cls: Callable[..., torch.optim.Optimizer],
    name: str,
    shapes: Sequence[tuple[int, ...]],
    kwargs: dict[str, Any],
    flat: bool = False,
) -> tuple[torch.optim.Optimizer, Callable[[], Any]]:
    """An optimizer on fresh parameters with fixed gradients, and its step call.

    With ``flat`` the parameters are views of one buffer and the gradients of another.
    """
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(shape, generator=generator) for shape in shapes]
    grads = [torch.randn(shape, generator=generator) * 0.1 for shape in shapes]
    if flat and getattr(cls, "__module__", "").startswith("handgrad"):
        from handgrad.nn import accumulate_grad, flatten_parameters

        flatten_parameters(params)
        for p, g in zip(params, grads, strict=True):
            accumulate_grad(p, g)  # into its slot of the layout's gradient buffer
        grads = [cast(torch.Tensor, p.grad) for p in params]
    elif flat:
        params, grads = _one_buffer(params), _one_buffer(grads)
    for p, g in zip(params, grads, strict=True):
        p.grad = g.to_sparse() if name == "SparseAdam" else g
    opt = cls(params, **kwargs)
    if name == "LBFGS":

        def closure() -> Any:
            # a quadratic whose gradient is p − target: enough to drive the line search
            loss = torch.zeros(())
            for p, g in zip(params, grads, strict=True):
                p.grad = p - g
                loss = loss + 0.5 * ((p - g) ** 2).sum()
            return loss

        return opt, lambda: opt.step(closure)
    return opt, opt.step


def _one_buffer(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same values as views of one contiguous buffer, in order."""
    buffer = torch.cat([t.reshape(-1) for t in tensors])
    views, offset = [], 0
    for t in tensors:
        views.append(buffer[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    return views


def _round_step_times(
    steppers: list[Callable[[], Any]], rounds: int, calls: int
) -> list[list[float]]:
    """Seconds per call of each stepper in each round, timed in alternation round by round.

    Each round makes at least ``calls`` calls, more for steps so short (the flat 1-100-1
    layout: tens of µs) that fewer would leave the timer's resolution and one-off stalls in
    the figure: every round lasts at least ``ROUND_SECONDS``.
    """
    for step in steppers:  # warm-up: state allocation, first-touch page faults
        for _ in range(2):
            step()
    slowest = 0.0
    for step in steppers:
        started = time.perf_counter()
        step()
        slowest = max(slowest, time.perf_counter() - started)
    calls = max(calls, min(1000, math.ceil(ROUND_SECONDS / max(slowest, 1e-9))))
    samples: list[list[float]] = [[] for _ in steppers]
    for _ in range(rounds):
        for index, step in enumerate(steppers):
            started = time.perf_counter()
            for _ in range(calls):
                step()
            samples[index].append((time.perf_counter() - started) / calls)
    return samples


ROUND_SECONDS = 0.005


def bfloat16_matmul_slowdown(size: int = 512) -> float:
    """How many times longer a bfloat16 matmul takes than a float32 one here (best of 5).

    Muon's Newton–Schulz iteration runs in bfloat16 (torch's and ours). A CPU without native
    bfloat16 arithmetic emulates it: on the 2-core AMD EPYC of RESULTS.md a 1000x1000 product
    took 0.85 s against 0.047 s in float32, so one Muon step on "4 params of 1M" took ~52 s a
    side and the row alone ~2 hours.
    """
    timings = []
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size).to(dtype)
        best = math.inf
        for _ in range(5):
            started = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - started)
        timings.append(best)
    return timings[1] / timings[0]


# Above this bfloat16/float32 matmul time ratio, Muon's "large" row is left out unless
# ``--layouts`` names "large" explicitly.
SLOW_BFLOAT16 = 4.0


def time_optimizer(name: str, layout: str, rounds: int, calls: int) -> Timing | None:
    """One row: ours vs torch foreach (and fused) on one layout; None if ours is missing."""
    ours_cls = _load(name)
    torch_cls = getattr(torch.optim, name, None)
    if ours_cls is None or torch_cls is None:
        return None
    shapes = MATRIX_LAYOUTS[layout] if name == "Muon" else LAYOUTS[layout][1]
    kwargs = HYPERPARAMETERS.get(name, {})
    variants: list[tuple[Callable[..., torch.optim.Optimizer], dict[str, Any]]] = [
        (ours_cls, kwargs),
        (torch_cls, {**kwargs, "foreach": True} if name in TORCH_FOREACH else kwargs),
    ]
    if name in TORCH_FUSED:
        variants.append((torch_cls, {**kwargs, "fused": True}))
    steppers = []
    for cls, options in variants:
        _opt, step = _make(cls, name, shapes, options, flat=layout in FLAT_LAYOUTS)
        steppers.append(step)
    gc.collect()
    samples = _round_step_times(steppers, rounds, calls)
    times = [statistics.median(each) for each in samples]
    ratios = [
        statistics.median(ours / theirs for ours, theirs in zip(samples[0], each, strict=True))
        for each in samples[1:]
    ]
    fused = len(times) > 2
    return Timing(
        name,
        layout,
        times[0],
        times[1],
        times[2] if fused else None,
        ratios[0],
        ratios[1] if fused else None,
    )


def _format(timings: list[Timing]) -> str:
    lines = [
        "| optimizer | layout | ours (ms) | torch foreach (ms) | ours/foreach | "
        "torch fused (ms) | ours/fused |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        fused = (
            f"{t.torch_fused * 1e3:.3f} | {t.ratio_fused:.2f}"
            if t.torch_fused is not None and t.ratio_fused is not None
            else "– | –"
        )
        lines.append(
            f"| {t.name} | {LAYOUTS[t.layout][0]} | {t.ours * 1e3:.3f} | "
            f"{t.torch_foreach * 1e3:.3f} | {t.ratio_foreach:.2f} | {fused} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_optim", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument("--only", default="", help="comma-separated optimizer names")
    parser.add_argument(
        "--layouts",
        default=None,
        help=f"comma-separated layouts from {list(LAYOUTS)} (default: {','.join(DEFAULT_LAYOUTS)})",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or _handgrad_names()
    chosen = args.layouts is not None
    requested = args.layouts or ",".join(DEFAULT_LAYOUTS)
    layouts = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        parser.error(f"unknown layout(s) {unknown}; expected names from {list(LAYOUTS)}")
    rounds, calls = (3, 2) if args.quick else (15, 5)
    timings: list[Timing] = []
    missing: list[str] = []
    skipped_muon = None
    if "Muon" in names and "large" in layouts and not chosen:
        slowdown = bfloat16_matmul_slowdown()
        if slowdown > SLOW_BFLOAT16:
            skipped_muon = slowdown
    for name in names:
        for layout in layouts:
            if name == "Muon" and layout == "large" and skipped_muon is not None:
                continue
            if name == "SparseAdam" and layout in FLAT_LAYOUTS:
                # torch 2.13's dense.add_(sparse) applies a view's storage offset twice: the
                # reference would write to the wrong elements, past the buffer (heap corruption).
                continue
            print(f"  {name} / {layout} ...", file=sys.stderr, flush=True)
            row = time_optimizer(name, layout, rounds, calls)
            if row is None:
                missing.append(name)
                break
            timings.append(row)
    print(
        f"Median `step()` time, float32, CPU, {torch.get_num_threads()} threads; "
        f"{rounds} alternating rounds of {calls} calls. Ratio = ours / torch (< 1: faster), "
        "the median of the rounds' paired ratios.\n"
    )
    print(_format(timings))
    if missing:
        print(f"\n_not benchmarked (no handgrad class yet): {', '.join(missing)}_")
    if skipped_muon is not None:
        print(
            f"\n_Muon is not run on {LAYOUTS['large'][0]}: a bfloat16 matmul takes "
            f"{skipped_muon:.0f}x as long as a float32 one on this CPU (no native bfloat16), "
            "and Newton–Schulz runs in bfloat16 on both sides, so the row would take hours. "
            "`--only Muon --layouts large` runs it anyway._"
        )
    if "SparseAdam" in names and FLAT_LAYOUTS & set(layouts):
        print(
            "\n_SparseAdam is not run on the flat layouts: torch 2.13's `dense.add_(sparse)` "
            "applies a view's storage offset twice, so torch.optim.SparseAdam updates the wrong "
            "elements of a view (ours works around it)._"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
