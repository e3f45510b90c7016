"""Stress test of data-parallel training: many torchrun jobs at once on saturated CPUs.

Usage: ``python -m benchmarks.stress_distributed [--runs 30] [--parallel 3] [--burners 2]
[--tty] [--threads N] [--out DIR] [-- extra train arguments]``.

Not part of CI (it takes minutes and loads the machine on purpose). Each job is the command
of issue 16's report::

    torchrun --standalone --nproc-per-node 2 -m handgrad train --task digits \\
        --optimizers adam --epochs 2 --batch-size 64 --seed 5 --out DIR/run-K

``--parallel`` jobs run at a time, beside ``--burners`` busy-looping processes, so that the
ranks are descheduled at random moments (the condition under which a rank once ended with
SIGABRT). Every job runs with ``PYTHONFAULTHANDLER=1`` (a fatal signal prints every thread's
Python stack) and ``TORCH_SHOW_CPP_STACKTRACES=1``; its full output is kept in
``DIR/run-K.log``. ``--tty`` runs each job on a pseudo-terminal (``script``), as in an
interactive shell, where rank 0 draws its progress bar; ``--threads`` sets
``OMP_NUM_THREADS`` (default: left as the caller has it). The summary counts exit statuses
and lists every job that did not exit 0 with the lines of its log that say why (an abort,
a signal, a timeout, a traceback).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

TRAIN = ["--task", "digits", "--optimizers", "adam", "--epochs", "2", "--batch-size", "64",
         "--seed", "5"]
# Lines of a failed job's log worth showing: the causes, not the noise around them.
WHY = re.compile(r"abort|signal|terminate|what\(\)|error|exception|timed? ?out|killed|fatal",
                 re.IGNORECASE)


def burn(stop_at: float) -> None:
    """Keep one core busy until ``stop_at`` (time.monotonic)."""
    x = 0
    while time.monotonic() < stop_at:
        x = (x * 31 + 7) % 1_000_003


def job(
    index: int, out: Path, extra: Sequence[str], tty: bool, threads: int | None
) -> subprocess.Popen[bytes]:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "handgrad",
               "train", *TRAIN, *extra, "--out", str(out / f"run-{index}")]
    if tty:  # `script` gives the job a pseudo-terminal and copies what it shows
        command = ["script", "-qefc", shlex.join(command), "/dev/null"]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "TORCH_SHOW_CPP_STACKTRACES": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    log = (out / f"run-{index}.log").open("wb")
    log.write((" ".join(command) + "\n").encode())
    log.flush()
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stress_distributed")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=3, help="jobs at a time (default: 3)")
    parser.add_argument("--burners", type=int, default=2,
                        help="busy-looping processes beside them (default: 2)")
    parser.add_argument("--out", default="stress-distributed", help="logs and run folders")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per job")
    parser.add_argument("--tty", action="store_true", help="run each job on a pseudo-terminal")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS")
    parser.add_argument("extra", nargs="*", help="more `handgrad train` arguments (after --)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    burners = [
        multiprocessing.Process(target=burn, args=(started + 24 * 3600,), daemon=True)
        for _ in range(args.burners)
    ]
    for burner in burners:
        burner.start()
    statuses: dict[int, int] = {}
    seconds: dict[int, float] = {}
    running: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    upcoming = list(range(1, args.runs + 1))
    try:
        while upcoming or running:
            while upcoming and len(running) < args.parallel:
                index = upcoming.pop(0)
                process = job(index, out, args.extra, args.tty, args.threads)
                running[index] = (process, time.monotonic())
            for index, (process, since) in list(running.items()):
                if process.poll() is None and time.monotonic() - since > args.timeout:
                    process.kill()
                if process.poll() is not None:
                    statuses[index] = process.returncode
                    seconds[index] = time.monotonic() - since
                    del running[index]
                    print(f"run {index}: exit {process.returncode} in {seconds[index]:.0f} s",
                          flush=True)
            time.sleep(0.2)
    finally:
        for burner in burners:
            burner.terminate()
        for process, _ in running.values():
            process.kill()

    counts = collections.Counter(statuses.values())
    print(f"\n{args.runs} runs, {args.parallel} at a time, {args.burners} burners, "
          f"{time.monotonic() - started:.0f} s; exit statuses: {dict(sorted(counts.items()))}")
    for index, status in sorted(statuses.items()):
        log = (out / f"run-{index}.log").read_text(errors="replace")
        aborted = "Fatal Python error: Aborted" in log or "SIGABRT" in log or status in (-6, 134)
        if status == 0 and not aborted:
            continue
        print(f"\n--- run {index}: exit {status}{' (ABORT)' if aborted else ''}")
        for line in [line for line in log.splitlines() if WHY.search(line)][:25]:
            print("   ", line[:200])
    return 0 if set(counts) == {0} else 1


if __name__ == "__main__":
    raise SystemExit(main())
