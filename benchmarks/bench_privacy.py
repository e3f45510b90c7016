"""Per-sample gradients and DP-SGD: handgrad against torch.func and Opacus, same process.

Usage: ``python -m benchmarks.bench_privacy [--quick] [--device cpu|cuda] [--batch 256]``.

The network is a 784-512-512-10 ReLU MLP with a mean cross-entropy loss, float32.

- **Per-sample gradients**: every parameter's (batch, *shape) gradients. handgrad:
  ``clear_grad_sample(params)`` then forward + ``backward(..., per_sample=True)``, as a user
  writes it (the default: the cleared storage is refilled, see
  :mod:`handgrad.nn.per_sample`); a row with the buffers zeroed in place instead
  (``set_to_none=False``) and one with the storage released every step
  (``release_grad_sample_storage``: fresh memory each time, what the default did before);
  reference: ``torch.func.vmap(torch.func.grad(loss))`` over the examples (fresh tensors).
- **Per-sample norms only**: the examples' gradient norms. handgrad: ``per_sample="factored"``
  then :func:`handgrad.privacy.per_sample_norms` (‖g_i‖‖x_i‖ per layer, nothing of
  batch × parameters formed); reference: vmap(grad), then the norms.
- **DP-SGD step**: zero_grad, forward, backward, clip, noise, SGD step. handgrad:
  :class:`handgrad.privacy.DPOptimizer` on ``per_sample="factored"`` (and on
  ``per_sample=True``), ``zero_grad()`` with its defaults; reference: Opacus's
  ``GradSampleModule`` + ``DPOptimizer``.
  Memory, beyond the model and data: the step's peak (on CUDA
  ``torch.cuda.max_memory_allocated``; on CPU the peak resident set, each side in a fresh
  process), and what stays held after ``step()`` and after the next ``zero_grad()``.

Times are medians of alternating rounds; ratios are the medians of the rounds' paired
ratios, handgrad / reference (< 1: handgrad faster).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import torch

import handgrad.nn as hnn
from handgrad.nn.per_sample import PerSample, clear_grad_sample, release_grad_sample_storage
from handgrad.privacy import DPOptimizer, per_sample_norms

WIDTHS = (784, 512, 512, 10)
Step = Callable[[], object]


def torch_mlp(device: str) -> torch.nn.Sequential:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(WIDTHS):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).to(device)


def handgrad_mlp(device: str) -> hnn.Sequential:
    """The same network (same weights) as handgrad layers."""
    return cast(hnn.Sequential, hnn.from_torch(torch_mlp(device)))


def data(batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, WIDTHS[0], generator=generator)
    y = torch.randint(0, WIDTHS[-1], (batch,), generator=generator)
    return x.to(device), y.to(device)


def handgrad_per_sample(batch: int, device: str, buffers: str) -> Step:
    """``buffers``: "default" (clear_grad_sample()), "zeroed" (set_to_none=False) or
    "released" (the kept storage freed every step: fresh memory each time)."""
    model = handgrad_mlp(device)
    loss_fn = hnn.CrossEntropyLoss()
    x, y = data(batch, device)
    params = list(model.parameters())

    def step() -> object:
        clear_grad_sample(params, set_to_none=buffers != "zeroed")
        if buffers == "released":
            release_grad_sample_storage(params)
        for param in params:
            param.grad = None
        loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False, per_sample=True)
        return getattr(params[0], "grad_sample", None)

    return step


def vmap_grad(batch: int, device: str) -> Callable[[], dict[str, torch.Tensor]]:
    model = torch_mlp(device)
    params = {name: p.detach() for name, p in model.named_parameters()}
    x, y = data(batch, device)

    def example_loss(
        params: dict[str, torch.Tensor], x_i: torch.Tensor, y_i: torch.Tensor
    ) -> torch.Tensor:
        out = torch.func.functional_call(model, params, (x_i.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, y_i.unsqueeze(0)) / batch

    per_sample = torch.func.vmap(torch.func.grad(example_loss), (None, 0, 0))
    return lambda: per_sample(params, x, y)


def handgrad_norms(batch: int, device: str) -> Step:
    model = handgrad_mlp(device)
    loss_fn = hnn.CrossEntropyLoss()
    x, y = data(batch, device)
    params = list(model.parameters())

    def step() -> object:
        clear_grad_sample(params)
        for param in params:
            param.grad = None
        loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False, per_sample="factored")
        return per_sample_norms(params)

    return step


def vmap_norms(batch: int, device: str) -> Step:
    grads = vmap_grad(batch, device)

    def step() -> object:
        samples = grads().values()
        return torch.stack([g.reshape(batch, -1).pow(2).sum(1) for g in samples]).sum(0).sqrt()

    return step


def handgrad_dp_step(batch: int, device: str, per_sample: PerSample) -> Step:
    """handgrad's DP-SGD step as a user writes it: zero_grad() (its defaults; with
    per_sample=True the cleared storage is refilled by the next backward), forward,
    backward, step."""
    return handgrad_dp_step_and_optimizer(batch, device, per_sample)[0]


def handgrad_dp_step_and_optimizer(
    batch: int, device: str, per_sample: PerSample
) -> tuple[Step, torch.optim.Optimizer]:
    model = handgrad_mlp(device)
    loss_fn = hnn.CrossEntropyLoss()
    x, y = data(batch, device)
    optimizer = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.01), 1.0, 1.0, batch)

    def step() -> object:
        optimizer.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False, per_sample=per_sample)
        return optimizer.step()

    return step, optimizer


def opacus_dp_step(batch: int, device: str) -> Step:
    return opacus_dp_step_and_optimizer(batch, device)[0]


def opacus_dp_step_and_optimizer(batch: int, device: str) -> tuple[Step, torch.optim.Optimizer]:
    import warnings

    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer as OpacusDPOptimizer

    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    model = GradSampleModule(torch_mlp(device))
    x, y = data(batch, device)
    optimizer = OpacusDPOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.01),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
    )

    def step() -> object:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return optimizer.step()

    return step, optimizer


def _synchronised(step: Step, device: str) -> Step:
    if device != "cuda":
        return step

    def run() -> object:
        result = step()
        torch.cuda.synchronize()
        return result

    return run


def round_times(steps: Sequence[Step], rounds: int, calls: int) -> list[list[float]]:
    """Seconds per call of each step in each round, the steps timed in alternation."""
    for step in steps:
        for _ in range(2):
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


def compare(
    steps: Sequence[Step], device: str, rounds: int, calls: int
) -> list[tuple[float, float]]:
    """(median seconds, median paired ratio to the last step) for each step."""
    samples = round_times([_synchronised(s, device) for s in steps], rounds, calls)
    return [
        (
            statistics.median(each),
            statistics.median(a / b for a, b in zip(each, samples[-1], strict=True)),
        )
        for each in samples
    ]


# ---------------------------------------------------------------------- memory
MEMORY_FIELDS = ("peak", "after_step", "after_zero_grad")


def memory_of(kind: str, batch: int, device: str, steps: int = 3) -> dict[str, int]:
    """Bytes beyond the model and data (see the module docstring): the peak over ``steps``
    DP-SGD steps, what is held after the last ``step()`` and after the next ``zero_grad()``."""
    if device == "cuda":
        step, optimizer = _dp_step(kind, batch, device)
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        peak, after_step = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
        optimizer.zero_grad()
        after_zero_grad = torch.cuda.memory_allocated()
        return {
            "peak": peak - baseline,
            "after_step": after_step - baseline,
            "after_zero_grad": after_zero_grad - baseline,
        }
    # CPU: a fresh process per side, so that one side's peak cannot hide the other's.
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_privacy",
        "--memory-of",
        kind,
        "--batch",
        str(batch),
    ]
    root = Path(__file__).resolve().parent.parent
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=root)
    measured = json.loads(output.stdout.strip().splitlines()[-1])
    return {field: int(measured[field]) for field in MEMORY_FIELDS}


def _dp_step(kind: str, batch: int, device: str) -> tuple[Step, torch.optim.Optimizer]:
    if kind == "opacus":
        return opacus_dp_step_and_optimizer(batch, device)
    per_sample: PerSample = "factored" if kind == "factored" else True
    return handgrad_dp_step_and_optimizer(batch, device, per_sample)


def _cpu_memory_of(kind: str, batch: int, steps: int = 3) -> dict[str, int]:
    """In this (fresh) process: growth of the peak resident set over the steps, and of the
    resident set after the last step() and after the next zero_grad().

    The peak is /proc's VmHWM (reset by exec, unlike getrusage's ru_maxrss, which a child
    inherits from the parent it was forked from)."""
    step, optimizer = _dp_step(kind, batch, "cpu")
    gc.collect()
    baseline = _proc_status_bytes("VmRSS")
    for _ in range(steps):
        step()
    after_step = _proc_status_bytes("VmRSS")
    optimizer.zero_grad()
    gc.collect()
    return {
        "peak": _proc_status_bytes("VmHWM") - baseline,
        "after_step": after_step - baseline,
        "after_zero_grad": _proc_status_bytes("VmRSS") - baseline,
    }


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


# ---------------------------------------------------------------------- report
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_privacy", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--memory-of", choices=["factored", "tensors", "opacus"], help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_of:  # the child process of memory_of on CPU
        print(json.dumps(_cpu_memory_of(args.memory_of, args.batch)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    batch, device = args.batch, args.device
    rounds, calls = (3, 1) if args.quick else (11, 2)
    net = "-".join(map(str, WIDTHS))
    print(
        f"{net} MLP, batch {batch}, float32, {device}, {torch.get_num_threads()} thread(s). "
        "Ratio = handgrad / reference (< 1: handgrad faster).\n"
    )
    rows: list[tuple[str, str, float, float]] = []

    grads = vmap_grad(batch, device)
    timed = compare(
        [
            handgrad_per_sample(batch, device, "default"),
            handgrad_per_sample(batch, device, "zeroed"),
            handgrad_per_sample(batch, device, "released"),
            grads,
        ],
        device,
        rounds,
        calls,
    )
    rows += [
        ("per-sample gradients, clear_grad_sample() (default)", "torch.func vmap(grad)",
         *timed[0]),
        ("per-sample gradients, zeroed in place (set_to_none=False)", "torch.func vmap(grad)",
         *timed[1]),
        ("per-sample gradients, storage released every step", "torch.func vmap(grad)",
         *timed[2]),
    ]  # fmt: skip
    timed = compare(
        [handgrad_norms(batch, device), vmap_norms(batch, device)], device, rounds, calls
    )
    rows.append(("per-sample norms (factored)", "vmap(grad), then norms", *timed[0]))
    try:
        reference = opacus_dp_step(batch, device)
    except ImportError:
        reference = None
    if reference is not None:
        timed = compare(
            [
                handgrad_dp_step(batch, device, "factored"),
                handgrad_dp_step(batch, device, True),
                reference,
            ],
            device,
            rounds,
            calls,
        )
        rows += [
            ("DP-SGD step, per_sample='factored'", "Opacus", *timed[0]),
            ("DP-SGD step, per_sample=True", "Opacus", *timed[1]),
        ]
    print("| handgrad | reference | handgrad ms | ratio |\n|---|---|---:|---:|")
    for name, against, seconds, ratio in rows:
        print(f"| {name} | {against} | {seconds * 1e3:.1f} | {ratio:.2f} |")
    if reference is None:
        print("\n_DP-SGD rows not run: Opacus is not installed (pip install 'handgrad[privacy]')_")
        return 0
    memory = {kind: memory_of(kind, batch, device) for kind in ("factored", "tensors", "opacus")}
    print(
        "\nMemory of a DP-SGD step beyond the model and data, MiB "
        f"({'CUDA allocator' if device == 'cuda' else 'resident set, fresh process each'}; "
        "zero_grad() at the start of each step, its defaults):\n"
    )
    print(
        "| step | peak | peak / Opacus | held after step() | held after zero_grad() |\n"
        "|---|---:|---:|---:|---:|"
    )
    for kind, label in (
        ("factored", "handgrad, per_sample='factored'"),
        ("tensors", "handgrad, per_sample=True"),
        ("opacus", "Opacus"),
    ):
        used = {field: memory[kind][field] / 2**20 for field in MEMORY_FIELDS}
        print(
            f"| {label} | {used['peak']:.0f} | "
            f"{memory[kind]['peak'] / memory['opacus']['peak']:.2f} | "
            f"{used['after_step']:.0f} | {used['after_zero_grad']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
