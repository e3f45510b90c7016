"""The whole original assignment, end to end: what ``handgrad demo`` runs.

1. **Check the forward and backward passes** of every layer, loss and a few deep networks
   against torch.nn + autograd and finite differences (:func:`handgrad.check.run_checks`).
2. **Compare optimizers** (SGD with momentum, RMSprop, Adam — all written by hand) training
   the classic 1-100-1 network on y = x³ (:func:`handgrad.train.compare_optimizers`), and
   their paths on the Rosenbrock function.
3. **Solve x² - 6x + 4 = 0 by gradient descent** on f(x)², beside Newton and the closed form
   (:func:`handgrad.roots.solve_quadratic`).

:func:`run_demo` writes ``report.md`` and ``report.html`` with the PNGs they show into one
folder and returns a :class:`DemoReport`.
"""

from __future__ import annotations

import html
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from handgrad import __version__
from handgrad.files import lock_folder, write_atomically
from handgrad.tables import html_table, markdown_table

# The comparison of the original assignment: SGD with momentum, RMSprop and Adam.
DEMO_OPTIMIZERS = ("sgd", "rmsprop", "adam")
QUADRATIC = (1.0, -6.0, 4.0)
Table = tuple[list[str], list[list[str]]]


@dataclass
class DemoReport:
    """What the demo found and where it wrote it."""

    out_dir: Path
    checks_passed: bool
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def report(self) -> Path:
        return self.out_dir / "report.md"


@dataclass
class _Section:
    title: str
    text: str
    tables: list[Table] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    note: str = ""


def _checks_section(device: str) -> tuple[_Section, bool]:
    from handgrad.check import run_checks

    report = run_checks(device=device, dtype=torch.float64)
    header, body = report.table()
    return (
        _Section(
            "1. Forward and backward passes, checked",
            "Every handgrad layer, loss (every reduction) and deep network beside its torch.nn "
            "twin with the same weights: outputs and every gradient compared with autograd, "
            "and with central finite differences, in float64.",
            tables=[(header, body)],
            note=report.summary(),
        ),
        report.passed,
    )


def _optimizers_section(out_dir: Path, device: str, epochs: int | None) -> _Section:
    from handgrad.landscapes.functions2d import ROSENBROCK
    from handgrad.landscapes.trajectories import run_trajectories
    from handgrad.plots.training import write_outputs
    from handgrad.plots.trajectories import plot_trajectories, save_png
    from handgrad.train import TrainConfig, compare_optimizers

    result = compare_optimizers(
        "cubic", DEMO_OPTIMIZERS, TrainConfig(epochs=epochs, device=device)
    )
    written = write_outputs(result, out_dir)
    body = [
        [
            run.optimizer,
            f"{run.lr:g}",
            f"{run.final.train_loss:.4f}",
            f"{run.final.test_loss:.4f}",
            f"{run.seconds:.1f}",
        ]
        for run in result.runs
    ]
    # The textbook picture includes SGD with momentum (0.9) beside plain SGD.
    trajectories = run_trajectories(ROSENBROCK, ["sgd", "momentum", "rmsprop", "adam"])
    save_png(plot_trajectories(ROSENBROCK, trajectories), out_dir / "trajectories.png")
    return _Section(
        "2. Optimizers compared on y = x³",
        f"A 1-100-1 ReLU network fitted to y = x³ on [-2, 2] (training targets with Gaussian "
        f"noise σ = 0.1, test targets noise-free), {result.epochs} epochs of mini-batches of "
        f"{result.batch_size}, from the same initial weights and batch order for every "
        "optimizer. Gradients by the hand-written backward; updates by the hand-written "
        "optimizers. Losses are mean squared errors in raw units. The last picture shows the "
        "same optimizers on the Rosenbrock function.",
        tables=[(["optimizer", "lr", "train MSE", "test MSE", "seconds"], body)],
        images=[path.name for path in written if path.suffix == ".png"] + ["trajectories.png"],
    )


def _roots_section(out_dir: Path) -> _Section:
    from handgrad.plots.roots import plot_descent
    from handgrad.roots import RootKind, default_learning_rate, format_root, solve_quadratic

    a, b, c = QUADRATIC
    lr = float(default_learning_rate(a, b, c))
    rows = []
    for method in ("gauss-newton", "gd", "newton", "closed"):
        rate = lr if method == "gd" else None
        result = solve_quadratic(a, b, c, method, lr=rate, return_path=method == "gd")
        if method == "gd":
            plot_descent(result, out_dir / "quadratic_descent.png")
        rows.append(
            [
                method if method != "gd" else f"gd, lr = {lr:g}",
                ", ".join(format_root(z) for z in result.roots.tolist()),
                RootKind(int(result.kind)).name,
                str(int(result.iterations)),
                ", ".join(f"{r:.1e}" for r in result.residual.tolist()),
            ]
        )
    # Written out: 3 - math.sqrt(5) itself loses a bit to cancellation.
    exact = "3 ± √5 = 0.76393202250021030359…, 5.23606797749978969640…"
    return _Section(
        "3. x² - 6x + 4 = 0 by gradient descent",
        "Descent on L(x) = f(x)² with the hand-derived gradient L'(x) = 2 f(x) f'(x), one "
        "start on each side of the vertex: gauss-newton takes the step 1/(2 f'(x)²), which "
        "makes it Newton's method (exact to the last bit); gd is gradient descent with a fixed "
        "learning rate, a quarter of the stability limit 1/|b² - 4ac| (converged to 1e-12; "
        "drawn); Newton's method in plain floating point and the numerically stable closed "
        f"form beside them. Exact roots: {exact}.",
        tables=[(["method", "roots", "kind", "iterations", "residual"], rows)],
        images=["quadratic_descent.png"],
    )


def _render(sections: Sequence[_Section], header: str) -> tuple[str, str]:
    md = [f"# handgrad demo\n\n{header}\n"]
    body = [f"<h1>handgrad demo</h1><p>{html.escape(header)}</p>"]
    for section in sections:
        md.append(f"## {section.title}\n\n{section.text}\n")
        body.append(f"<h2>{html.escape(section.title)}</h2><p>{html.escape(section.text)}</p>")
        for table in section.tables:
            md.append(markdown_table(*table) + "\n")
            body.append(html_table(*table))
        if section.note:
            md.append(section.note + "\n")
            body.append(f"<p>{html.escape(section.note)}</p>")
        for image in section.images:
            md.append(f"![{image}]({image})\n")
            body.append(f'<p><img src="{html.escape(image)}" alt="{html.escape(image)}"></p>')
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:100%}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>handgrad demo</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
    return "\n".join(md), page


def run_demo(
    out_dir: str | os.PathLike[str] = "handgrad-report",
    *,
    device: str = "cpu",
    epochs: int | None = None,
    log: Callable[[str], None] | None = None,
) -> DemoReport:
    """Run the three parts of the assignment and write the report into ``out_dir``.

    ``epochs`` overrides the cubic task's default (the tests use a short run); ``log``
    receives one line as each part starts. The folder is locked while the demo writes it
    (:func:`handgrad.files.lock_folder`): a second demo into it fails at once with
    :class:`~handgrad.files.OutputInUseError`.
    """
    started = time.perf_counter()
    # Refuse bad settings before the first part runs, not after it.
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                               or epochs < 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but CUDA is not available here")
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"out_dir {str(directory)!r} exists and is not a directory")
    say = log or (lambda line: None)
    with lock_folder(directory):  # one writer per report folder: a second one is refused
        say("checking forward and backward passes against autograd ...")
        checks, passed = _checks_section(device)
        say("training the cubic fit with SGD, RMSprop and Adam ...")
        optimizers = _optimizers_section(directory, device, epochs)
        say("solving x^2 - 6x + 4 = 0 by gradient descent ...")
        roots = _roots_section(directory)

        header = (
            f"handgrad {__version__}, torch {torch.__version__}, Python "
            f"{platform.python_version()}, device {device}."
        )
        markdown, page = _render([checks, optimizers, roots], header)
        write_atomically(directory / "report.md", markdown.encode("utf-8"))
        write_atomically(directory / "report.html", page.encode("utf-8"))
    files = [*sorted(directory.glob("*.png")), directory / "report.md", directory / "report.html"]
    return DemoReport(directory, passed, files, time.perf_counter() - started)
