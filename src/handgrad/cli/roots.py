"""``handgrad roots``: roots of a x² + b x + c = 0 by gradient descent, from the command line.

    handgrad roots 1 -6 4 [--method gd|newton|closed|all] [--lr LR] [--x0 X0 X1]
        [--max-iter N] [--plot FILE.png]
    handgrad roots 1 -6 4 --sweep-lr [--lr LR] [--plot FILE.png]
    handgrad roots --csv IN.csv --out OUT.csv [--method ...] [--lr LR]

A thin layer over :func:`handgrad.roots.solve_quadratic`, :mod:`handgrad.roots.sweep` and
:mod:`handgrad.plots.roots`.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch

from handgrad.cli import CLIError
from handgrad.files import write_atomically
from handgrad.roots import METHODS, QuadraticRoots, RootKind, format_root, solve_quadratic
from handgrad.tables import format_table

CSV_COLUMNS = ("a", "b", "c", "kind", "x1", "x2", "iterations", "error")
# Positional coefficients may be negative ("1 -6 4", "-1e-3", "-inf"): argparse must not take
# them for options. Our options all start with "--", so any "-<digit|.|inf|nan>" is a number.
_NEGATIVE_NUMBER = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def register(subparsers: Any) -> None:
    """Add the ``roots`` subcommand to the ``handgrad`` parser."""
    parser = subparsers.add_parser(
        "roots",
        help="roots of a x^2 + b x + c = 0 by gradient descent on f^2",
        description=(
            "Find the roots of a x^2 + b x + c = 0 by gradient descent on f(x)^2 (and, by "
            "default, Newton's method and the stable closed form side by side). Negative "
            "coefficients are fine: handgrad roots 1 -6 4."
        ),
    )
    parser._negative_number_matcher = _NEGATIVE_NUMBER  # argparse's hook, see above
    parser.add_argument("coefficients", nargs="*", type=float, metavar="A B C")
    parser.add_argument(
        "--method",
        choices=(*METHODS, "all"),
        default=None,
        help="gd (gradient descent), newton, closed, or all side by side (default: all; "
        "gd for --csv)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="the classroom fixed step: x <- x - lr * L'(x) (converges only for lr < 1/D)",
    )
    parser.add_argument(
        "--x0",
        type=float,
        nargs=2,
        metavar=("X0", "X1"),
        default=None,
        help="the two starts of the fixed-step descent (needs --lr)",
    )
    parser.add_argument("--max-iter", type=int, default=None, metavar="N", help="step limit")
    parser.add_argument("--tol", type=float, default=None, help="stopping tolerance")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="draw the parabola, the loss f^2 and the descent from each start "
        "(with --sweep-lr: steps vs learning rate and vs start)",
    )
    parser.add_argument(
        "--sweep-lr",
        action="store_true",
        help="steps to converge vs fixed learning rate (and where it diverges, lr > 1/D) "
        "and vs starting point (at --lr, default 1/4D)",
    )
    parser.add_argument("--csv", metavar="IN", default=None, help="solve every a,b,c row of IN")
    parser.add_argument("--out", metavar="OUT", default=None, help="with --csv: the output file")
    parser.set_defaults(func=run)


def _root_cells(result: QuadraticRoots) -> list[str]:
    return ["" if math.isnan(z.real) else format_root(z) for z in result.roots.tolist()]


def _solve_rows(
    args: argparse.Namespace, a: float, b: float, c: float
) -> list[tuple[str, QuadraticRoots]]:
    """(name, result) per method asked for (all: gd, gd with --lr if given, newton, closed)."""
    method = args.method or "all"
    results = []
    options = {"tol": args.tol, "max_iter": args.max_iter}
    if method in ("gd", "all"):
        if args.lr is None or method == "all":
            results.append(("gd", solve_quadratic(a, b, c, "gd", **options)))
        if args.lr is not None:
            fixed = solve_quadratic(a, b, c, "gd", lr=args.lr, x0=args.x0, **options)
            results.append((f"gd lr={args.lr:g}", fixed))
    if method in ("newton", "all"):
        results.append(("newton", solve_quadratic(a, b, c, "newton", **options)))
    if method in ("closed", "all"):
        results.append(("closed", solve_quadratic(a, b, c, "closed")))
    return results


def _coefficients(args: argparse.Namespace) -> tuple[float, float, float]:
    if len(args.coefficients) != 3:
        raise CLIError(
            f"expected three coefficients A B C (or --csv IN --out OUT); got "
            f"{len(args.coefficients)}: {' '.join(map(repr, args.coefficients)) or 'none'}"
        )
    a, b, c = args.coefficients
    return a, b, c


def _check_options(args: argparse.Namespace) -> None:
    if args.x0 is not None and args.lr is None:
        raise CLIError("--x0 sets the starts of the fixed-step descent; give --lr as well")
    if args.lr is not None and args.method in ("newton", "closed"):
        raise CLIError(f"--lr applies to --method gd (or all); got --method {args.method}")
    if args.csv is not None and args.out is None:
        raise CLIError("--csv IN needs --out OUT")
    if args.out is not None and args.csv is None:
        raise CLIError("--out OUT goes with --csv IN")
    if args.csv is not None and args.coefficients:
        raise CLIError("give either coefficients A B C or --csv IN, not both")
    if args.csv is not None and (args.sweep_lr or args.plot):
        raise CLIError("--sweep-lr and --plot draw one equation; they do not go with --csv")


def run(args: argparse.Namespace) -> int:
    """Solve, sweep or process a CSV file; print the results; return the exit status."""
    _check_options(args)
    if args.csv is not None:
        return run_csv(args)
    a, b, c = _coefficients(args)
    if args.sweep_lr:
        return run_sweep(args, a, b, c)
    results = _solve_rows(args, a, b, c)
    print(str(results[0][1]).splitlines()[0])
    rows = []
    for name, result in results:
        x1, x2 = _root_cells(result)
        residuals = [f"{r:.1e}" for r in result.residual.tolist() if not math.isnan(r)]
        rows.append(
            [
                name,
                RootKind(int(result.kind)).name,
                x1,
                x2,
                str(int(result.iterations)),
                "yes" if bool(result.converged) else "NO",
                ", ".join(residuals),
            ]
        )
    print(format_table(["method", "kind", "x1", "x2", "iterations", "converged", "residual"], rows))
    if args.plot:
        from handgrad.plots.roots import plot_descent

        plotted = solve_quadratic(
            a,
            b,
            c,
            "gd",
            lr=args.lr,
            x0=args.x0,
            tol=args.tol,
            max_iter=args.max_iter,
            return_path=True,
        )
        print(f"wrote {plot_descent(plotted, args.plot)}")
    return 0 if all(bool(r.converged) for _, r in results) else 1


def run_sweep(args: argparse.Namespace, a: float, b: float, c: float) -> int:
    """The learning-rate and starting-point tables (and plot)."""
    from handgrad.roots.sweep import (
        discriminant_value,
        sweep_learning_rates,
        sweep_starts,
    )

    max_iter = args.max_iter or 2_000
    tol = args.tol or 1e-12
    d = abs(discriminant_value(a, b, c))
    by_lr = sweep_learning_rates(a, b, c, x0=args.x0, max_iter=max_iter, tol=tol)
    lr = args.lr if args.lr is not None else (0.25 / d if d > 0 and math.isfinite(d) else 1e-3)
    by_start = sweep_starts(a, b, c, lr, max_iter=max_iter, tol=tol)
    sign_b, sign_c = ("-" if b < 0 else "+"), ("-" if c < 0 else "+")
    equation = f"{a:g}x^2 {sign_b} {abs(b):g}x {sign_c} {abs(c):g} = 0"
    print(f"fixed-step gradient descent on f(x)^2 for {equation}")
    if d > 0 and math.isfinite(d):
        print(
            f"|D| = {d:g}: fastest near a root at lr = 1/2D = {0.5 / d:.4g}, "
            f"diverges there for lr > 1/D = {1 / d:.4g}"
        )
    print()

    def cells(point: Any) -> list[str]:
        root = "" if math.isnan(point.root.real) else format_root(point.root)
        return [format_root(point.start), str(point.steps), point.outcome, root]

    rows = [[f"{p.lr:.4g}", f"{p.lr * d:.3g}" if d else "", *cells(p)] for p in by_lr]
    print(format_table(["lr", "lr*D", "start", "steps", "outcome", "root"], rows))
    print()
    print(f"vs starting point, lr = {lr:.4g}:")
    print(format_table(["start", "steps", "outcome", "root"], [cells(p) for p in by_start]))
    if args.plot:
        from handgrad.plots.roots import plot_sweep

        print(f"wrote {plot_sweep(a, b, c, by_lr, by_start, args.plot)}")
    return 0


def _parse_row(line: int, row: list[str]) -> tuple[tuple[float, float, float] | None, str]:
    """The coefficients of one CSV row, or None and the reason it is bad."""
    if len(row) != 3:
        return None, f"line {line}: expected 3 columns a,b,c; got {len(row)}"
    values = []
    for name, text in zip("abc", row, strict=True):
        try:
            value = float(text)
        except ValueError:
            return None, f"line {line}: {name} is not a number: {text.strip()!r}"
        if not math.isfinite(value):
            return None, f"line {line}: {name} must be finite; got {text.strip()!r}"
        values.append(value)
    return (values[0], values[1], values[2]), ""


def run_csv(args: argparse.Namespace) -> int:
    """Solve every row of --csv IN into --out OUT; bad rows are reported, not fatal."""
    source = Path(args.csv)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise CLIError(f"cannot read --csv {source}: {error.strerror or error}") from error
    records = []  # (line number, raw cells, coefficients or None, error)
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if number == 1 and [cell.strip().lower() for cell in row] == ["a", "b", "c"]:
            continue
        coefficients, reason = _parse_row(number, row)
        records.append((number, row, coefficients, reason))
    good = [r for r in records if r[2] is not None]
    method = "gd" if args.method in (None, "all") else args.method
    solved: dict[int, list[str]] = {}
    if good:
        columns = list(zip(*(r[2] for r in good), strict=True))
        a, b, c = (torch.tensor(col, dtype=torch.float64) for col in columns)
        fixed = {"lr": args.lr, "x0": args.x0} if args.lr is not None else {}
        result = solve_quadratic(a, b, c, method, tol=args.tol, max_iter=args.max_iter, **fixed)
        for i, record in enumerate(good):
            roots = ["" if math.isnan(z.real) else format_root(z) for z in result.roots[i].tolist()]
            kind = RootKind(int(result.kind[i])).name
            note = "" if bool(result.converged[i]) else "did not converge"
            solved[record[0]] = [kind, *roots, str(int(result.iterations[i])), note]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    bad = 0
    for number, row, coefficients, reason in records:
        if coefficients is None:
            bad += 1
            print(f"handgrad roots: {args.csv}: {reason}", file=sys.stderr)
            cells = [*row, "", "", ""][:3]
            writer.writerow([*cells, "", "", "", "", reason])
        else:
            writer.writerow([*row, *solved[number]])
    write_atomically(args.out, buffer.getvalue().encode("utf-8"))
    print(
        f"solved {len(good)} of {len(records)} rows into {args.out}"
        + (f"; {bad} bad rows (see the error column)" if bad else "")
    )
    return 1 if bad else 0
