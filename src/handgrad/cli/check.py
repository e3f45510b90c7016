"""``handgrad check``: every module, loss and deep network against torch.nn + autograd.

Prints the table of :func:`handgrad.check.run_checks`; exit status 0 when every check
passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from handgrad.check.suite import run_checks

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand to the top-level parser."""
    parser = subparsers.add_parser(
        "check",
        help="verify every module and loss against torch.nn + autograd",
        description=(
            "Compare the forward output, input gradient and parameter gradients of every "
            "handgrad module, loss (all reductions) and a few deep networks with torch.nn + "
            "autograd, and with central finite differences in float64. Exit status 0 if all "
            "pass, 1 otherwise."
        ),
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    parser.add_argument(
        "--dtype", choices=tuple(_DTYPES), default="float64", help="default: float64"
    )
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default: 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the table; 0 if all passed, else 1."""
    report = run_checks(device=args.device, dtype=_DTYPES[args.dtype], seed=args.seed)
    print(report.to_text())
    return 0 if report.passed else 1
