"""``step()`` of each optimizer beyond torch.optim against its authors' implementation.

Usage: ``python -m benchmarks.bench_new_optim [--quick] [--only Lion,SOAP] [--layouts ...]``.

The same layouts, parameters, gradients and timing as ``bench_optim`` (whose helpers this
module uses): both sides get identical float32 parameters and gradients, their ``step()``
calls are timed alternately round by round, each ratio is the median of the rounds' paired
ratios (ours/reference: below 1.0 we are faster). The references are the packages the tests
compare with (lion-pytorch, schedulefree, prodigyopt, adan-pytorch, pytorch-optimizer);
where a reference has a ``foreach`` switch it is on (its fastest path on the CPU). Both
schedule-free sides are put in train mode.

On the ``flat`` layouts every parameter is a view of one buffer and every gradient of
another, for both sides: ours by ``handgrad.nn.flatten_parameters`` (the element-wise rules
then update the whole network as one tensor), the reference's as the same views.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.bench_optim import DEFAULT_LAYOUTS, FLAT_LAYOUTS, LAYOUTS, _make, _round_step_times

# name: (reference "module:Class", hyperparameters for both sides, options for the reference)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "Lion": ("lion_pytorch:Lion", {"lr": 1e-4, "weight_decay": 0.01}, {}),
    "SGDScheduleFree": ("schedulefree:SGDScheduleFree", {"lr": 0.1, "weight_decay": 1e-4},
                        {"foreach": True}),
    "AdamWScheduleFree": ("schedulefree:AdamWScheduleFree", {"lr": 2.5e-3,
                                                             "weight_decay": 1e-4},
                          {"foreach": True}),
    "Prodigy": ("prodigyopt:Prodigy", {"lr": 1.0, "weight_decay": 0.01}, {}),
    "Adan": ("adan_pytorch:Adan", {"lr": 1e-3, "weight_decay": 0.02}, {}),
    "Lamb": ("pytorch_optimizer:Lamb", {"lr": 1e-3, "weight_decay": 0.01}, {"foreach": True}),
    "ADOPT": ("pytorch_optimizer:ADOPT", {"lr": 1e-3, "weight_decay": 0.01}, {"foreach": True}),
    "SOAP": ("pytorch_optimizer:SOAP", {"lr": 3e-3}, {}),
}  # fmt: skip


@dataclass
class Timing:
    """Median seconds per ``step()`` for ours and the reference, and the median paired ratio."""

    name: str
    layout: str
    ours: float
    reference: float
    ratio: float


def _reference(name: str) -> type[torch.optim.Optimizer] | None:
    """The authors' class, or None where its package is not installed."""
    module, _, attribute = OPTIMIZERS[name][0].partition(":")
    try:
        cls: type[torch.optim.Optimizer] = getattr(importlib.import_module(module), attribute)
    except ImportError:
        return None
    return cls


Stepped = tuple[torch.optim.Optimizer, Callable[[], Any]]  # an optimizer and its step call


def _built(cls: Callable[..., torch.optim.Optimizer], shapes: Sequence[tuple[int, ...]],
           kwargs: dict[str, Any], flat: bool) -> Stepped:  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # prodigyopt prints its decay mode
        optimizer, step = _make(cls, cls.__name__, shapes, kwargs, flat=flat)
    if callable(getattr(optimizer, "train", None)):  # schedule-free: steps in train mode
        optimizer.train()  # type: ignore[attr-defined]
    return optimizer, step


def pair(
    name: str, shapes: Sequence[tuple[int, ...]], flat: bool
) -> tuple[Stepped, Stepped] | None:
    """(ours, reference), each an optimizer on the same parameters and gradients and its step
    call; None where the reference is not installed."""
    from handgrad import optim

    reference = _reference(name)
    if reference is None:
        return None
    _, kwargs, reference_options = OPTIMIZERS[name]
    return (_built(getattr(optim, name), shapes, dict(kwargs), flat),
            _built(reference, shapes, {**kwargs, **reference_options}, flat))  # fmt: skip


def time_optimizer(name: str, layout: str, rounds: int, calls: int) -> Timing | None:
    """One row: ours vs the reference on one layout; None where the reference is missing."""
    both = pair(name, LAYOUTS[layout][1], layout in FLAT_LAYOUTS)
    if both is None:
        return None
    steppers = [step for _, step in both]
    gc.collect()
    ours, theirs = _round_step_times(steppers, rounds, calls)
    ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    return Timing(name, layout, statistics.median(ours), statistics.median(theirs), ratio)


def _format(timings: list[Timing]) -> str:
    lines = ["| optimizer | reference | layout | ours (ms) | reference (ms) | ours/reference |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for t in timings:
        package = OPTIMIZERS[t.name][0].partition(":")[0]
        lines.append(f"| {t.name} | {package} | {LAYOUTS[t.layout][0]} | {t.ours * 1e3:.3f} | "
                     f"{t.reference * 1e3:.3f} | {t.ratio:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_new_optim",
                                     description=__doc__)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument("--only", default="", help=f"comma-separated names from {list(OPTIMIZERS)}")
    parser.add_argument("--layouts", default=",".join(DEFAULT_LAYOUTS),
                        help=f"comma-separated layouts from {list(LAYOUTS)} "
                             f"(default: {','.join(DEFAULT_LAYOUTS)})")  # fmt: skip
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(OPTIMIZERS)
    layouts = [n.strip() for n in args.layouts.split(",") if n.strip()]
    unknown = sorted(set(names) - set(OPTIMIZERS)) + sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        parser.error(f"unknown optimizer(s) or layout(s) {unknown}; expected names from "
                     f"{list(OPTIMIZERS)} and layouts from {list(LAYOUTS)}")  # fmt: skip
    rounds, calls = (3, 1) if args.quick else (15, 5)
    timings: list[Timing] = []
    missing: list[str] = []
    for name in names:
        for layout in layouts:
            print(f"  {name} / {layout} ...", file=sys.stderr, flush=True)
            row = time_optimizer(name, layout, rounds, calls)
            if row is None:
                missing.append(OPTIMIZERS[name][0])
                break
            timings.append(row)
    print(f"Median `step()` time, float32, CPU, {torch.get_num_threads()} threads; {rounds} "
          f"alternating rounds of {calls} calls or more. Ratio = ours / the authors' "
          "implementation (< 1: faster), the median of the rounds' paired ratios.\n")  # fmt: skip
    print(_format(timings))
    if missing:
        print(f"\n_not benchmarked (reference not installed): {', '.join(missing)}_")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
