"""Run every benchmark and write benchmarks/RESULTS.md.

Usage: ``python -m benchmarks [--quick] [--only optim,roots] [--no-write]``.

Each benchmark module ``benchmarks/bench_<name>.py`` exposes ``main(argv) -> int`` and prints
markdown (ratios against the torch/numpy reference measured in the same process; ``budgets``:
wall times against the issues' run-time budgets). This runner
collects their output, each section under the date and the machine it ran on, into
RESULTS.md: the sections it ran replace their old versions, the others and the hand-written
summary at the top are kept.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

BENCHMARKS = (
    "train", "optim", "roots", "distributed", "conv", "gpt", "privacy", "new_optim", "budgets",
)
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_description() -> str:
    """CPU model, cores, memory, library versions and GPU (if any), as markdown bullets."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    import numpy

    return "\n".join(
        [
            f"- CPU: {cpu}, {os.cpu_count()} logical cores{memory}; "
            f"torch threads: {torch.get_num_threads()}",
            f"- GPU: {gpu}",
            f"- Python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {numpy.__version__}, {platform.system()} {platform.release()}",
        ]
    )


def run_benchmark(name: str, quick: bool) -> str:
    """One benchmark's markdown output (its stdout), or a line saying why it did not run."""
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
    except ModuleNotFoundError as error:
        return f"_not run: {error}_\n"
    buffer = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        status = module.main(["--quick"] if quick else [])
    seconds = time.perf_counter() - started
    footer = f"\n_{name}: {seconds:.0f} s, exit status {status}_\n"
    return buffer.getvalue() + footer


def merge_results(previous: str, fresh: dict[str, str]) -> str:
    """RESULTS.md with the ``fresh`` sections (name -> markdown) replacing those of
    ``previous``; every other section and the hand-written summary above the first section
    are kept (``--only`` refreshes part of the file without losing the rest). Sections are
    written in the order of :data:`BENCHMARKS`, unknown old ones after them."""
    title = "# Benchmark results\n"
    head, *parts = ("\n" + previous).split("\n## ")
    preamble = head.strip()
    if preamble.startswith(title.strip()):
        preamble = preamble[len(title.strip()):].strip()
    sections: dict[str, str] = {}
    for part in parts:
        name, _, body = part.partition("\n")
        sections[name.strip()] = body.strip()
    sections.update({name: body.strip() for name, body in fresh.items()})
    order = [name for name in BENCHMARKS if name in sections]
    order += [name for name in sections if name not in BENCHMARKS]
    blocks = [title] + ([preamble + "\n"] if preamble else [])
    blocks += [f"## {name}\n\n{sections[name]}\n" for name in order]
    return "\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    parser.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; expected names from {list(BENCHMARKS)}")
    machine = machine_description()
    fresh: dict[str, str] = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        # Each section names its own date and machine: --only refreshes some of them.
        stamp = f"Run on {time.strftime('%Y-%m-%d')}{' (--quick)' if args.quick else ''}:\n\n"
        fresh[name] = stamp + machine + "\n\n" + run_benchmark(name, args.quick)
        print(f"## {name}\n\n{fresh[name]}", flush=True)
    if not args.no_write:
        previous = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
        temporary = RESULTS.with_suffix(".md.tmp")
        temporary.write_text(merge_results(previous, fresh), encoding="utf-8")
        temporary.replace(RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
