"""The run-time budgets of earlier issues: each workload run once, its wall time set beside its
budget.

Usage: ``python -m benchmarks.bench_budgets [--quick] [--workloads cubic,cnn,...]``.

These budgets are acceptance criteria of earlier issues; they are measured here rather than
asserted by the tests, which a shared machine would fail for reasons that are not the code's
(the tests keep every behavioural check: that a notebook runs, the accuracy, the loss):

- **walkthrough**, **attention** (notebooks/*.ipynb, executed from the top in a fresh kernel):
  90 s each, the budget their tests asserted since the notebooks came with issues 5 and 14
  (the walkthrough says "well under a minute on a laptop CPU");
- **convolutions** (notebooks/convolutions.ipynb, issue 13): 60 s, likewise;
- **cnn**: ``handgrad train --task digits --model cnn`` (sgd, rmsprop and adam) reaches >= 0.985
  test accuracy within 60 s on 2 cores (issue 13);
- **cubic**: ``handgrad train --task cubic --optimizers adam`` reaches test MSE <= 0.01 within
  30 s on 2 cores (issue 5).

Each workload runs once, in a fresh process (a kernel for a notebook, ``python -m handgrad
train`` for a training), start-up included. A wall time, not a ratio: it depends on the machine
and its load (the load average at the start is printed).
The exit status is 1 when a workload fails (a cell raises, training fails or misses its accuracy
or loss goal), never for time: a workload over its budget is named under the table.
``--quick`` is a smoke run of the same code: each notebook's first code cell only, one short
training; no budget applies to these.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@dataclass(frozen=True)
class Workload:
    """``run(workdir, quick)`` returns (met its functional goal, what it reached, as text);
    it may also raise, which counts as not met."""

    name: str
    what: str
    budget: float  # seconds
    run: Callable[[Path, bool], tuple[bool, str]]


def execute(notebook: Any, workdir: Path) -> None:
    """Execute ``notebook`` (an nbformat object, in place: its cells get their outputs) in a
    fresh kernel of this interpreter, headless plots and files written under ``workdir``.
    Raises nbclient's CellExecutionError, naming the cell, if one raises."""
    import nbclient

    # jupyter_client replaces the kernel spec's "python" by this interpreter, so the kernel
    # imports this venv's handgrad; the kernel inherits the environment.
    os.environ["MPLBACKEND"] = "Agg"
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120,  # per cell
        resources={"metadata": {"path": str(workdir)}},
    )  # fmt: skip
    client.execute()


def execute_notebook(path: Path, workdir: Path, cells: int | None = None) -> int:
    """:func:`execute` the notebook at ``path``, its first ``cells`` code cells or all;
    returns how many code cells ran."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    if cells is not None:
        code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
        notebook.cells = notebook.cells[: code[cells - 1] + 1]
    execute(notebook, workdir)
    return sum(cell.cell_type == "code" for cell in notebook.cells)


def notebook(name: str) -> Callable[[Path, bool], tuple[bool, str]]:
    def run(workdir: Path, quick: bool) -> tuple[bool, str]:
        ran = execute_notebook(NOTEBOOKS / name, workdir, cells=1 if quick else None)
        return True, f"{ran} code cell{'s' * (ran != 1)} ran"

    return run


def train(args: list[str], workdir: Path) -> list[dict[str, float]]:
    """``python -m handgrad train ARGS --out workdir`` in a fresh process, as a user runs it
    (start-up and data loading included); the runs of its metrics.json. Raises RuntimeError
    with the last line it wrote to stderr if it exits non-zero."""
    command = [sys.executable, "-m", "handgrad", "train", *args, "--quiet", "--out", str(workdir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"handgrad train {' '.join(args)} exited with {done.returncode}: {last}")
    runs: list[dict[str, float]] = json.loads((workdir / "metrics.json").read_text())["runs"]
    return runs


def cnn(workdir: Path, quick: bool) -> tuple[bool, str]:
    small = ["--model", "cnn:channels=4x8", "--optimizers", "adam", "--epochs", "1"]
    runs = train(["--task", "digits", *(small if quick else ["--model", "cnn"])], workdir)
    accuracy = min(run["test_accuracy"] for run in runs)
    names = ", ".join(str(run["optimizer"]) for run in runs)
    return quick or accuracy >= 0.985, f"lowest test accuracy {accuracy:.4f} ({names})"


def cubic(workdir: Path, quick: bool) -> tuple[bool, str]:
    quick_args = ["--epochs", "2"] if quick else []
    (run,) = train(["--task", "cubic", "--optimizers", "adam", *quick_args], workdir)
    return quick or run["test_loss"] <= 0.01, f"test MSE {run['test_loss']:.4g}"


WORKLOADS = {
    w.name: w
    for w in (
        Workload("walkthrough", "notebooks/walkthrough.ipynb", 90, notebook("walkthrough.ipynb")),
        Workload("attention", "notebooks/attention.ipynb", 90, notebook("attention.ipynb")),
        Workload("convolutions", "notebooks/convolutions.ipynb", 60,
                 notebook("convolutions.ipynb")),
        Workload("cnn", "train --task digits --model cnn, >= 0.985 accuracy", 60, cnn),
        Workload("cubic", "train --task cubic --optimizers adam, MSE <= 0.01", 30, cubic),
    )
}  # fmt: skip


def measure(workload: Workload, quick: bool) -> tuple[float, bool, str]:
    """(wall seconds, met its functional goal, what it reached or why it failed)."""
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        try:
            met, reached = workload.run(Path(workdir), quick)
        except Exception as error:  # reported in the table; the exit status says it failed
            met, reached = False, f"failed: {type(error).__name__}: {error}".splitlines()[0]
        return time.perf_counter() - started, met, reached


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_budgets", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: no budget applies")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated names")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; expected names from {list(WORKLOADS)}")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(
        "Each workload run once, wall time (a budget of an earlier issue; not a ratio: it "
        f"depends on the machine and its load). Load average at the start: {load} (1/5/15 min)."
        + (" `--quick`: shortened workloads, no budget applies." if args.quick else "")
        + "\n"
    )
    print("| workload | what | budget s | seconds | within budget | result |")
    print("|---|---|---|---|---|---|")
    over, failed = [], []
    for name in names:
        workload = WORKLOADS[name]
        seconds, met, reached = measure(workload, args.quick)
        timed = met and not args.quick  # a budget applies to a full run that did its job
        within = ("yes" if seconds <= workload.budget else "**no**") if timed else "—"
        if timed and seconds > workload.budget:
            over.append(f"{name} ({seconds:.1f} s against {workload.budget:.0f} s)")
        if not met:
            failed.append(name)
        budget = "—" if args.quick else f"{workload.budget:.0f}"
        reached = reached.replace("|", "\\|")  # a cell of the markdown table
        print(
            f"| {name} | {workload.what} | {budget} | {seconds:.1f} | {within} | {reached} |",
            flush=True,
        )
    print()
    if not args.quick:
        print(f"Over budget: {', '.join(over) or 'none'}.")
    if failed:
        print(f"**Failed: {', '.join(failed)}.**")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
