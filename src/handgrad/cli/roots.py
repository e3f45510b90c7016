"""``handgrad roots``: roots of a x² + b x + c = 0 by descent on f(x)², from the command line.

    handgrad roots 1 -6 4 [--method gauss-newton|gd|newton|closed|all] [--lr LR]
        [--x0 X0 X1] [--max-iter N] [--tol TOL] [--plot FILE.png]
    handgrad roots 1 -6 4 --sweep-lr [--lr LR] [--x0 X0 X1] [--plot FILE.png]
    handgrad roots --csv IN.csv --out OUT.csv [--method ...] [--lr LR] [--quiet]

A thin layer over :func:`handgrad.roots.solve_quadratic`, :mod:`handgrad.roots.sweep` and
:mod:`handgrad.plots.roots`. Exit status: 0 when every method shown converged (for --csv:
every row was read and solved), 1 when one did not (each start of a fixed-step descent says
why), 2 for a usage error or a file that cannot be read or written.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from handgrad.cli import EXIT_IO, CLIError
from handgrad.files import lock_file, make_folder, os_error_reason, write_atomically
from handgrad.roots import (
    QuadraticRoots,
    RootKind,
    StartOutcome,
    default_learning_rate,
    format_root,
    solve_quadratic,
    stability_limit,
)
from handgrad.roots.fixed_step import outcome_help
from handgrad.roots.quadratic import MAX_ITER_LIMIT
from handgrad.tables import format_table

CSV_COLUMNS = ("a", "b", "c", "kind", "x1", "x2", "iterations", "error")
# --method choices: the methods, then "all".
METHOD_CHOICES = ("gauss-newton", "gd", "newton", "closed", "all")

_LEGEND = (
    "gauss-newton: descent on f^2 with the step 1/(2 f'(x)^2), which is Newton's step f/f'\n"
    "  (f compensated); gd: gradient descent on f^2 with a fixed learning rate;\n"
    "  newton: Newton's method in plain floating point; closed: the stable closed form"
)


def register(subparsers: Any) -> None:
    """Add the ``roots`` subcommand to the ``handgrad`` parser."""
    parser = subparsers.add_parser(
        "roots",
        help="roots of a x^2 + b x + c = 0 by descent on f^2",
        description=(
            "Find the roots of a x^2 + b x + c = 0 by descent on the loss f(x)^2: with the "
            "Gauss-Newton step 1/(2 f'^2) (which is Newton's method on f), by gradient "
            "descent with a fixed learning rate, by Newton's method in plain floating point "
            "and by the stable closed form, side by side. Negative coefficients are fine: "
            "handgrad roots 1 -6 4. Exit status 0 when every method converged, 1 when one did "
            "not, 2 for a usage or file error."
        ),
    )
    # Negative coefficients ("1 -6 4", "-1e-3", "-inf") reach the parser marked as values
    # (handgrad.cli.numbers_as_values).
    parser.add_argument("coefficients", nargs="*", type=float, metavar="A B C")
    parser.add_argument(
        "--method",
        choices=METHOD_CHOICES,
        default=None,
        help="gauss-newton (the step 1/(2f'^2): Newton's method), gd (fixed learning rate), "
        "newton (plain floating point), closed, or all side by side (default: all; "
        "gauss-newton for --csv)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="gd's fixed learning rate: x <- x - lr * 2 f(x) f'(x). Near a root it converges "
        "for lr < 1/f'(x*)^2 = 1/|b^2 - 4ac|; default a quarter of that",
    )
    parser.add_argument(
        "--x0",
        type=complex,
        nargs=2,
        metavar=("X0", "X1"),
        default=None,
        help="gd's two starts (real or complex, e.g. -1+2j); default v -/+ 1.25 d (v the "
        "vertex, d the roots' distance from it)",
    )
    parser.add_argument(
        "--max-iter", type=int, default=None, metavar="N", help="step limit (an integer >= 1)"
    )
    parser.add_argument("--tol", type=float, default=None, help="stopping tolerance (a number > 0)")
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
        help="gd from both starts at learning rates on both sides of 1/|D| (where it stops "
        "converging near a root), and from many starts at --lr (default 1/4|D|)",
    )
    parser.add_argument("--csv", metavar="IN", default=None, help="solve every a,b,c row of IN")
    parser.add_argument("--out", metavar="OUT", default=None, help="with --csv: the output file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr (--csv)")
    parser.set_defaults(func=run)


# ---------------------------------------------------------------------------------- checks


def _check_options(args: argparse.Namespace) -> None:
    """Every option's value and combination, before anything runs (every path)."""
    if args.lr is not None and not 0 < args.lr < math.inf:
        raise CLIError(f"--lr must be a finite number > 0; got {args.lr:g}")
    if args.tol is not None and not 0 < args.tol < math.inf:
        raise CLIError(f"--tol must be a finite number > 0; got {args.tol:g}")
    if args.max_iter is not None and not 1 <= args.max_iter <= MAX_ITER_LIMIT:
        raise CLIError(f"--max-iter must be an integer from 1 to 2**63 - 1; got {args.max_iter}")
    if args.x0 is not None:
        for z in args.x0:
            if not (math.isfinite(z.real) and math.isfinite(z.imag)):
                raise CLIError(f"--x0 must be two finite numbers; got {_number(z)}")
    if args.x0 is not None and args.method in ("gauss-newton", "newton", "closed"):
        raise CLIError(f"--x0 sets the starts of gd; got --method {args.method}")
    if args.lr is not None and args.method in ("gauss-newton", "newton", "closed"):
        raise CLIError(f"--lr applies to --method gd (or all); got --method {args.method}")
    if args.csv is not None and args.out is None:
        raise CLIError("--csv IN needs --out OUT")
    if args.out is not None and args.csv is None:
        raise CLIError("--out OUT goes with --csv IN")
    if args.csv is not None and args.coefficients:
        raise CLIError("give either coefficients A B C or --csv IN, not both")
    if args.csv is not None and (args.sweep_lr or args.plot):
        raise CLIError("--sweep-lr and --plot draw one equation; they do not go with --csv")
    if args.sweep_lr and args.method is not None:
        raise CLIError("--sweep-lr runs gd; it does not take --method")


def _coefficients(args: argparse.Namespace) -> tuple[float, float, float]:
    if len(args.coefficients) != 3:
        raise CLIError(
            f"expected three coefficients A B C (or --csv IN --out OUT); got "
            f"{len(args.coefficients)}: {' '.join(map(repr, args.coefficients)) or 'none'}"
        )
    a, b, c = args.coefficients
    return a, b, c


def run(args: argparse.Namespace) -> int:
    """Solve, sweep or process a CSV file; print the results; return the exit status."""
    _check_options(args)
    if args.csv is not None:
        return run_csv(args)
    a, b, c = _coefficients(args)
    if args.sweep_lr:
        return run_sweep(args, a, b, c)
    return run_equation(args, a, b, c)


# ---------------------------------------------------------------------------- one equation


def _number(z: complex | float) -> str:
    z = complex(z)
    return f"{z.real:g}" if z.imag == 0 else f"{z.real:g}{z.imag:+g}j"


def _has_root(a: float, b: float, c: float) -> bool:
    kind = RootKind(int(solve_quadratic(a, b, c, "closed").kind))
    return kind <= RootKind.LINEAR


def _gd_rate(args: argparse.Namespace, a: float, b: float, c: float) -> float:
    """--lr, or the default 1/(4|D|) (1.0 where the equation has no root to descend to)."""
    if args.lr is not None:
        return float(args.lr)
    rate = float(default_learning_rate(a, b, c))
    return rate if 0 < rate < math.inf else 1.0


def _solve_rows(
    args: argparse.Namespace, a: float, b: float, c: float
) -> list[tuple[str, QuadraticRoots]]:
    """(name, result) per method asked for (all: gauss-newton, gd, newton, closed)."""
    method = args.method or "all"
    options = {"tol": args.tol, "max_iter": args.max_iter}
    results = []
    if method in ("gauss-newton", "all"):
        results.append(("gauss-newton", solve_quadratic(a, b, c, "gauss-newton", **options)))
    if method == "gd" or (method == "all" and (_has_root(a, b, c) or args.lr is not None)):
        lr = _gd_rate(args, a, b, c)
        x0 = None if args.x0 is None else list(args.x0)
        fixed = solve_quadratic(a, b, c, "gd", lr=lr, x0=x0, **options)
        results.append((f"gd lr={lr:.4g}", fixed))
    if method in ("newton", "all"):
        results.append(("newton", solve_quadratic(a, b, c, "newton", **options)))
    if method in ("closed", "all"):
        results.append(("closed", solve_quadratic(a, b, c, "closed")))
    return results


def stability_sentence(a: float, b: float, c: float) -> str:
    """The learning-rate range in which a fixed step on f² converges near a root."""
    limit = float(stability_limit(a, b, c))
    if math.isnan(limit):
        return "no root: nothing for a fixed step to converge to"
    if math.isinf(limit):
        return (
            "a double root: f'(x*) = 0, so every lr > 0 is stable near it and none is fast "
            "(the error falls like 1/sqrt(k))"
        )
    slope = "b^2" if a == 0 else "|b^2 - 4ac|"
    return (
        f"near a root a fixed step on f^2 converges for 0 < lr < 1/f'(x*)^2 = 1/{slope} = "
        f"{limit:.4g} (fastest at half of that, {limit / 2:.4g})"
    )


def run_equation(args: argparse.Namespace, a: float, b: float, c: float) -> int:
    """The table of methods for one equation, each gd start's outcome, and the plot."""
    results = _solve_rows(args, a, b, c)
    print(str(results[0][1]).splitlines()[0])
    rows = []
    for name, result in results:
        x1, x2 = ("" if math.isnan(z.real) else format_root(z) for z in result.roots.tolist())
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
    print(_LEGEND)
    for name, result in results:
        if result.per_start is not None and _ran(result):
            default = " (the default lr: a quarter of 1/|D|)" if args.lr is None else ""
            print(f"{name}{default}: {stability_sentence(a, b, c)}")
            for line in result.per_start.describe():
                print(f"  {line}")
            shown = {StartOutcome(int(o)) for o in result.per_start.outcome.tolist()}
            for outcome in sorted(shown - {StartOutcome.CONVERGED, StartOutcome.NOT_RUN}):
                print(f"  ({_word(outcome)}: {outcome_help(outcome)})")
        elif name == "newton" and not bool(result.converged):
            print(
                "newton: not within 4 ulp of the true roots (checked with a compensated "
                "residual): in plain floating point f is rounding noise near a double or "
                "close pair of roots; gauss-newton compensates"
            )
    if args.plot:
        _plot_equation(args, a, b, c, results)
    return 0 if all(bool(r.converged) for _, r in results) else 1


def _word(outcome: StartOutcome) -> str:
    """'at vertex' for AT_VERTEX: the outcome as the tables write it."""
    return outcome.name.lower().replace("_", " ")


def _ran(result: QuadraticRoots) -> bool:
    """Whether any start of a fixed-step result ran."""
    assert result.per_start is not None
    return bool((result.per_start.outcome != int(StartOutcome.NOT_RUN)).any())


def _plot_equation(
    args: argparse.Namespace, a: float, b: float, c: float, results: list[tuple[str, Any]]
) -> None:
    """Draw the gd descent if it ran, else the method asked for (closed: gauss-newton)."""
    from handgrad.plots.roots import plot_descent

    options: dict[str, Any] = {"tol": args.tol, "max_iter": args.max_iter}
    names = [name for name, _ in results]
    if any(name.startswith("gd") for name in names):
        x0 = None if args.x0 is None else list(args.x0)
        lr = _gd_rate(args, a, b, c)
        plotted = solve_quadratic(a, b, c, "gd", lr=lr, x0=x0, return_path=True, **options)
    else:
        method = "newton" if names == ["newton"] else "gauss-newton"
        plotted = solve_quadratic(a, b, c, method, return_path=True, **options)
    try:
        written = plot_descent(plotted, args.plot)
    except OSError as error:
        raise CLIError(f"cannot write --plot {args.plot}: {os_error_reason(error)}",
                       EXIT_IO) from None
    print(f"wrote {written}")


# ------------------------------------------------------------------------------- the sweep


def run_sweep(args: argparse.Namespace, a: float, b: float, c: float) -> int:
    """The learning-rate and starting-point tables (and plot); the header states what the
    table shows and what theory says."""
    from handgrad.roots.sweep import (
        learning_rate_scale,
        summarize,
        sweep_learning_rates,
        sweep_starts,
    )

    if not _has_root(a, b, c):
        raise CLIError(f"{_equation(a, b, c)} has no root for gd to descend to")
    max_iter = args.max_iter if args.max_iter is not None else 2_000
    tol = args.tol if args.tol is not None else 1e-12
    x0 = None if args.x0 is None else (args.x0[0], args.x0[1])
    by_lr = sweep_learning_rates(a, b, c, x0=x0, max_iter=max_iter, tol=tol)
    lr = args.lr if args.lr is not None else 0.25 * learning_rate_scale(a, b, c)
    by_start = sweep_starts(a, b, c, lr, max_iter=max_iter, tol=tol)
    limit = float(stability_limit(a, b, c))
    starts = sorted({p.start for p in by_lr}, key=lambda z: (z.real, z.imag))
    print(
        f"gd (fixed-step gradient descent on f(x)^2) for {_equation(a, b, c)}, "
        f"from x0 = {' and '.join(_number(z) for z in starts)}, at most {max_iter} steps"
    )
    print(f"theory: {stability_sentence(a, b, c)}")
    print(f"this table: {_sweep_finding(summarize(by_lr))}")
    print()

    def row(point: Any) -> list[str]:
        root = "" if not point.converged else format_root(point.root)
        return [_number(point.start), str(point.steps), point.label(), root]

    scale = limit if math.isfinite(limit) else learning_rate_scale(a, b, c)
    column = "lr*|D|" if math.isfinite(limit) else "lr*(b^2+4|ac|)"
    rows = [[f"{p.lr:.4g}", f"{p.lr / scale:.3g}", *row(p)] for p in by_lr]
    print(format_table(["lr", column, "x0", "steps", "outcome", "root"], rows))
    print()
    print(f"vs starting point, lr = {lr:.4g}:")
    print(format_table(["x0", "steps", "outcome", "root"], [row(p) for p in by_start]))
    shown = {p.outcome for p in [*by_lr, *by_start]} - {StartOutcome.CONVERGED}
    if shown:
        print()
        for outcome in sorted(shown):
            print(f"{_word(outcome)}: {outcome_help(outcome)}")
    if args.plot:
        from handgrad.plots.roots import plot_sweep

        try:
            written = plot_sweep(a, b, c, by_lr, by_start, args.plot)
        except OSError as error:
            raise CLIError(f"cannot write --plot {args.plot}: {os_error_reason(error)}",
                       EXIT_IO) from None
        print(f"wrote {written}")
    return 0


def _sweep_finding(summary: Any) -> str:
    """What the learning-rate table shows, in one sentence, from its own numbers."""
    if not summary.converging:
        return "no learning rate converged from every start"
    parts = []
    if summary.stable_up_to is not None:
        if summary.first_failure is None:
            parts.append("every rate converged from every start")
        else:
            parts.append(
                f"every start converged at each lr <= {summary.stable_up_to:.4g}; "
                f"the first failure is at lr = {summary.first_failure:.4g}"
            )
    else:
        parts.append(
            "every start converged only at lr = "
            + ", ".join(f"{lr:.4g}" for lr in summary.converging)
        )
    parts.append(f"fastest at lr = {summary.fastest:.4g} ({summary.fastest_steps} steps)")
    return "; ".join(parts)


def _equation(a: float, b: float, c: float) -> str:
    sign_b, sign_c = ("-" if b < 0 else "+"), ("-" if c < 0 else "+")
    return f"{a:g}x^2 {sign_b} {abs(b):g}x {sign_c} {abs(c):g} = 0"


# ---------------------------------------------------------------------------------- --csv

# Rows per solve: the unit of progress (solving in pieces changes no result: every equation
# is solved on its own).
CSV_CHUNK = 1 << 15
# Bad rows named on stderr; the rest are in the error column.
SHOWN_BAD_ROWS = 20
# A cell a spreadsheet would take for a formula starts with one of these (OWASP, "CSV
# injection"); plain numbers such as -6 are numbers to it, not formulas.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

_clock = time.monotonic  # the progress clock (tests replace it)


def spreadsheet_safe(cell: str) -> str:
    """``cell``, with an apostrophe in front when a spreadsheet would run it as a formula (it
    starts with = + - @, a tab or a carriage return and is not a plain number)."""
    if cell[:1] in _FORMULA_START and cell and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def csv_root(z: complex) -> str:
    """A root for the CSV: the real number, or a complex one in parentheses as Python writes
    it, "(-1.0-2.0j)" (complex() reads it back; a spreadsheet shows text, not a formula)."""
    if math.isnan(z.real):
        return ""
    text = format_root(z)
    return text if z.imag == 0 else f"({text})"


class Progress:
    """Progress lines on stderr for a long run: nothing for the first DELAY seconds; then on
    a terminal one line rewritten in place, elsewhere (a log file, a pipe) a new line per
    STEP of the work or per INTERVAL seconds, whichever comes first."""

    DELAY = 2.0
    INTERVAL = 10.0
    STEP = 0.1

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = _clock()
        self.last_time = self.started
        self.last_fraction = -1.0
        self.drawn = False

    def update(self, what: str, fraction: float, detail: str = "") -> None:
        """Report ``what`` at ``fraction`` (0..1) done, if it is time to."""
        if self.quiet:
            return
        now = _clock()
        if now - self.started < self.DELAY:
            return
        due = fraction - self.last_fraction >= self.STEP or now - self.last_time >= self.INTERVAL
        if not (self.terminal or due):
            return
        line = f"handgrad roots: {what} {fraction:.0%}" + (f" ({detail})" if detail else "")
        if self.terminal:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.drawn = True
        self.last_time, self.last_fraction = now, fraction

    def close(self) -> None:
        """End the line on a terminal."""
        if self.terminal and self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _parse_row(line: int, row: list[str]) -> tuple[tuple[float, float, float] | None, str]:
    """The coefficients of one CSV row, or None and the reason it is bad."""
    if len(row) != 3:
        return None, f"line {line}: expected 3 columns a,b,c; got {len(row)}"
    values = []
    for name, text in zip("abc", row, strict=True):
        try:
            value = float(text)
        except ValueError:
            shown = text.strip()
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return None, f"line {line}: {name} is not a number: {shown!r}"
        if not math.isfinite(value):
            return None, f"line {line}: {name} must be finite; got {text.strip()!r}"
        values.append(value)
    return (values[0], values[1], values[2]), ""


Record = tuple[int, list[str], tuple[float, float, float] | None, str]


def _read_records(text: str, progress: Progress) -> list[Record]:
    """(first line, raw cells, coefficients or None, reason) per non-empty row; a row the csv
    module cannot read (a field over its limit of 131,072 characters) is a bad row too."""
    records: list[Record] = []
    stream = io.StringIO(text)
    reader = csv.reader(stream)
    total = max(len(text), 1)
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            records.append((line, [], None, f"line {line}: unreadable CSV: {error}"))
            line = reader.line_num + 1
            continue
        first, line = line, reader.line_num + 1
        if len(records) % 4096 == 0:
            progress.update("reading", stream.tell() / total)
        if not row or all(not cell.strip() for cell in row):
            continue
        if first == 1 and [cell.strip().lower() for cell in row] == ["a", "b", "c"]:
            continue
        coefficients, reason = _parse_row(first, row)
        records.append((first, row, coefficients, reason))
    return records


def _solve_csv_rows(
    args: argparse.Namespace, good: list[Record], progress: Progress
) -> dict[int, list[str]]:
    """kind, x1, x2, iterations, error per good row (keyed by line), CSV_CHUNK rows a solve."""
    method = "gauss-newton" if args.method in (None, "all") else args.method
    names = [kind.name for kind in RootKind]
    solved: dict[int, list[str]] = {}
    for start in range(0, len(good), CSV_CHUNK):
        chunk = good[start : start + CSV_CHUNK]
        values = torch.tensor([record[2] for record in chunk], dtype=torch.float64)
        a, b, c = values.reshape(-1, 3).unbind(dim=1)
        fixed: dict[str, Any] = {}
        if method == "gd":
            lr: Any = args.lr
            if lr is None:
                # Rows without roots have no rate (NaN); beyond float64 (|D| over 1e308) it
                # underflows to 0: such rows run at 1.0, and their outcome says what happened.
                rates = default_learning_rate(a, b, c)
                lr = torch.where((rates > 0) & (rates < math.inf), rates, 1.0)
            fixed = {"lr": lr, "x0": None if args.x0 is None else list(args.x0)}
        result = solve_quadratic(a, b, c, method, tol=args.tol, max_iter=args.max_iter, **fixed)
        roots = result.roots.tolist()
        kinds = [names[kind] for kind in result.kind.tolist()]
        iterations = result.iterations.tolist()
        converged = result.converged.tolist()
        for i, record in enumerate(chunk):
            note = "" if converged[i] else "did not converge"
            if not converged[i] and result.per_start is not None:
                note = "did not converge: " + "; ".join(result.per_start.describe((i,)))
            solved[record[0]] = [
                kinds[i],
                csv_root(roots[i][0]),
                csv_root(roots[i][1]),
                str(iterations[i]),
                note,
            ]
        done = start + len(chunk)
        progress.update("solving", done / len(good), f"{done:,} of {len(good):,} rows")
    return solved


def run_csv(args: argparse.Namespace) -> int:
    """Solve every row of --csv IN into --out OUT; bad rows are reported, not fatal. --out is
    locked for the whole run (:func:`handgrad.files.lock_file`): a second roots run writing
    the same file is refused at once, naming the first one's pid (exit 75)."""
    try:  # the lock file goes beside --out: its folder first, named by the option on error
        make_folder(Path(args.out).parent)
    except OSError as error:
        raise CLIError(f"cannot write --out {args.out}: {os_error_reason(error)}",
                       EXIT_IO) from None
    with lock_file(args.out):
        return _run_csv(args)


def _run_csv(args: argparse.Namespace) -> int:
    progress = Progress(args.quiet)
    try:
        with open(args.csv, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except OSError as error:
        raise CLIError(f"cannot read --csv {args.csv}: {os_error_reason(error)}") from None
    except UnicodeDecodeError as error:
        raise CLIError(
            f"cannot read --csv {args.csv}: not UTF-8 text (byte {error.object[error.start]:#04x} "
            f"at offset {error.start})"
        ) from None
    records = _read_records(text, progress)
    good = [record for record in records if record[2] is not None]
    solved = _solve_csv_rows(args, good, progress) if good else {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    bad = [record for record in records if record[2] is None]
    for number, row, coefficients, reason in records:
        if coefficients is None:
            cells = [*(cell if len(cell) <= 1000 else cell[:1000] + "..." for cell in row)]
            cells = [*cells, "", "", ""][:3]
            out = [*cells, "", "", "", "", reason]
        else:
            out = [*row, *solved[number]]
        writer.writerow([spreadsheet_safe(cell) for cell in out])
    progress.close()
    for _, _, _, reason in bad[:SHOWN_BAD_ROWS]:
        print(f"handgrad roots: {args.csv}: {reason}", file=sys.stderr)
    if len(bad) > SHOWN_BAD_ROWS:
        print(
            f"handgrad roots: {args.csv}: ... and {len(bad) - SHOWN_BAD_ROWS} more bad rows "
            "(see the error column)",
            file=sys.stderr,
        )
    try:
        write_atomically(args.out, buffer.getvalue().encode("utf-8"))
    except OSError as error:
        raise CLIError(f"cannot write --out {args.out}: {os_error_reason(error)}",
                       EXIT_IO) from None
    unsolved = sum(1 for record in good if solved[record[0]][-1])
    print(
        f"solved {len(good)} of {len(records)} rows into {args.out}"
        + (f"; {len(bad)} bad rows (see the error column)" if bad else "")
        + (f"; {unsolved} did not converge" if unsolved else "")
    )
    return 1 if bad or unsolved else 0
