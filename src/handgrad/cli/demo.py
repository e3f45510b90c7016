"""``handgrad demo``: the original assignment end to end, as a report folder."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole assignment and write a report (the main job)",
        description="Check every backward pass against autograd, compare SGD, RMSprop and "
        "Adam on y = x^3, and solve x^2 - 6x + 4 = 0 by gradient descent; write "
        "report.md/report.html with plots.",
    )
    parser.add_argument(
        "--out", default="handgrad-report", help="report folder (default: handgrad-report)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs of the cubic fit (default: tuned)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from handgrad.demo import run_demo

    report = run_demo(
        args.out,
        device=args.device,
        epochs=args.epochs,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(f"report written to {report.report} (and report.html) in {report.seconds:.0f} s")
    if not report.checks_passed:
        print("some gradient checks FAILED: see the report's first table", file=sys.stderr)
        return 1
    return 0
