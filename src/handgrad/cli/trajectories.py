"""``handgrad trajectories``: optimizers' paths on a 2-D test function, as a picture and a table.

    handgrad trajectories --function rosenbrock --optimizers sgd,momentum,rmsprop,adam \\
        [--steps N] [--lr LR] [--out FILE.png]

Every optimizer starts from the function's start point; each takes its own default learning
rate on that function unless ``--lr`` sets one for all.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from handgrad.cli import CLIError
from handgrad.files import lock_file
from handgrad.landscapes.functions2d import FUNCTIONS, get_function
from handgrad.landscapes.trajectories import Trajectory, run_trajectories
from handgrad.optim.names import parse_optimizer_names
from handgrad.tables import format_table

DEFAULT_OPTIMIZERS = "sgd,momentum,rmsprop,adam"


def register(subparsers: Any) -> None:
    """Add the ``trajectories`` subcommand to the ``handgrad`` parser."""
    parser = subparsers.add_parser(
        "trajectories",
        help="plot optimizers' paths on a 2-D test function",
        description=(
            "Run each optimizer from the same start on a 2-D test function with its "
            "hand-written gradient; draw the paths over the contour map and print where "
            "each one ended."
        ),
    )
    parser.add_argument(
        "--function",
        default="rosenbrock",
        help=f"one of {', '.join(sorted(FUNCTIONS))} (default: rosenbrock)",
    )
    parser.add_argument(
        "--optimizers",
        default=DEFAULT_OPTIMIZERS,
        help=(
            "comma-separated lowercase optimizer names: torch.optim's, lion, "
            "sgdschedulefree, adamwschedulefree, prodigy, adan, lamb, adopt, soap, plus "
            "'momentum' and 'nesterov' "
            f"(SGD with momentum 0.9) (default: {DEFAULT_OPTIMIZERS})"
        ),
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per optimizer (default: per function)"
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="one learning rate for all (default: per optimizer)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="PNG file to write (default: trajectories-FUNCTION.png)",
    )
    parser.set_defaults(func=run)


def _results_table(trajectories: list[Trajectory], distances: list[float | None]) -> str:
    header = ["optimizer", "lr", "steps", "final point", "final value", "distance to minimum"]
    rows = []
    for trajectory, distance in zip(trajectories, distances, strict=True):
        x, y = trajectory.final_point
        value = f"{trajectory.final_value:.4g}"
        if trajectory.diverged_at is not None:
            value += f" (diverged at step {trajectory.diverged_at})"
        rows.append(
            [
                trajectory.optimizer,
                f"{trajectory.lr:g}",
                str(trajectory.steps_taken),
                f"({x:.6g}, {y:.6g})",
                value,
                "-" if distance is None else f"{distance:.3g}",
            ]
        )
    return format_table(header, rows)


def run(args: argparse.Namespace) -> int:
    """Run the optimizers, write the PNG, print the table; returns the exit status."""
    function = get_function(args.function)
    try:
        optimizers = parse_optimizer_names(args.optimizers)
    except ValueError:
        raise CLIError(
            f"--optimizers must name at least one optimizer, each once, got {args.optimizers!r}"
        ) from None
    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be a positive integer, got {args.steps}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise CLIError(f"--lr must be a positive finite number, got {args.lr}")
    out = Path(args.out if args.out is not None else f"trajectories-{function.name}.png")
    if out.suffix.lower() != ".png":
        raise CLIError(f"--out must name a .png file, got {str(out)!r}")

    # Imported here: matplotlib is optional, and `handgrad --help` imports every subcommand.
    try:
        from handgrad.plots.trajectories import plot_trajectories, save_png
    except ImportError as error:
        raise CLIError(
            f"drawing needs matplotlib ({error}); install it with: pip install 'handgrad[all]'"
        ) from None

    with lock_file(out):  # one writer per output file: a second run is refused at once
        trajectories = run_trajectories(function, optimizers, steps=args.steps, lr=args.lr)
        save_png(plot_trajectories(function, trajectories), out)
    distances = [function.distance_to_minimum(t.final_point) for t in trajectories]
    print(f"{function.name}: f(x, y) = {function.formula}, start {function.start}")
    print(_results_table(trajectories, distances))
    print(f"wrote {out}")
    return 0
