"""``handgrad train``: compare optimizers on a task; metrics, plots, checkpoints, resume.

    handgrad train --task cubic --optimizers sgd,rmsprop,adam [--epochs N] [--batch-size B]
        [--model mlp:hidden=100x100,activation=sigmoid] [--opt sgd.momentum=0.9 ...]
        [--lr LR] [--schedule cosine] [--seed S] [--device cpu|cuda] [--out DIR] [--resume]
        [--config run.toml] [--quiet] [--checkpoint-every SECONDS] [--dist-timeout SECONDS]
        [--dp max_grad_norm=C,noise_multiplier=S[,delta=D]]
    handgrad train --task text[:PATH] [--model gpt]   (a character-level language model)

A thin layer over :func:`handgrad.train.compare_optimizers` and
:func:`handgrad.plots.training.write_outputs`. Under
``torchrun --nproc-per-node N -m handgrad train`` it trains data-parallel (``--batch-size``
stays the global batch); rank 0 alone prints and writes the files.

The output folder is locked for the whole run (:func:`handgrad.files.lock_folder`): a second
``train`` into it is refused at once. The checkpoint is written before the first epoch (the
check that the folder can take it), every ``--checkpoint-every`` seconds, after the last
epoch, and on Ctrl-C or SIGTERM (the last finished epoch).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handgrad.cli import CLIError, sigterm_raises
from handgrad.files import WriteError, lock_folder
from handgrad.tables import format_table

if TYPE_CHECKING:
    from handgrad.train.compare import ComparisonResult, TrainConfig
    from handgrad.train.tasks import Task

DEFAULT_OPTIMIZERS = "sgd,rmsprop,adam"


# What an option is when neither the command line nor --config sets it.
DEFAULTS: dict[str, Any] = {
    "task": "cubic", "seed": 0, "device": "cpu",
    "backend": "handgrad", "resume": False, "quiet": False, "threads": 1,
}

# Exit status when training ran but a run did not train (diverged, or not learning); the
# outputs of every run are written all the same.
EXIT_NOT_TRAINED = 1

_ACTIONS: dict[str, argparse.Action] = {}  # the parser's options by dest, for --config


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand to the ``handgrad`` parser."""
    parser = subparsers.add_parser(
        "train",
        help="train one network per optimizer on a task and compare them",
        description=(
            "Train one model per optimizer from the same initial weights on the same batch "
            "order; print a table and write metrics.json, loss_curves.png, predictions.png "
            "(regression), predictions.csv and checkpoint.pt into --out. Each run ends "
            "trained, diverged or not learning; the exit status is 1 when any run did not "
            "train (its outputs are written all the same)."
        ),
    )
    parser.add_argument(
        "--config", metavar="FILE.toml", default=None,
        help="read settings from a TOML file: keys are the long options (batch-size = 8), "
        "[opt.NAME] tables the optimizers' arguments, a [dp] table --dp's; options given "
        "here win",
    )
    parser.add_argument(
        "--task", default=None,
        help="cubic (y = x^3), digits (scikit-learn's 8x8 digits), csv:PATH, or text[:PATH] "
        "(next-character prediction on a UTF-8 text; default text: Python's documentation) "
        "(default: cubic)",
    )
    parser.add_argument(
        "--target", metavar="COLUMN", default=None,
        help="csv tasks: the column to predict (strings, or integers with at most 20 values, "
        "are classes; other numbers are regression)",
    )
    parser.add_argument(
        "--optimizers", default=None,
        help="comma-separated lowercase names of handgrad.optim's optimizers, plus "
        "'momentum' and 'nesterov' (SGD with momentum 0.9); muon trains the 2-D weights and "
        "sparseadam the sparse-gradient layers, AdamW the rest "
        f"(default: {DEFAULT_OPTIMIZERS}; adamw for text)",
    )
    parser.add_argument(
        "--opt", metavar="NAME.KEY=VALUE", action="append", default=None,
        help="an argument of optimizer NAME (repeatable): sgd.momentum=0.9, "
        "sgd.nesterov=true, adam.betas=0.9,0.99, lbfgs.line_search_fn=strong_wolfe; "
        "muon.adamw.KEY for the AdamW beside Muon or SparseAdam",
    )
    parser.add_argument(
        "--model", metavar="NAME[:KEY=VALUE,...]", default=None,
        help="the network, e.g. mlp:hidden=100x100,activation=sigmoid,dropout=0.1; "
        + _models_help() + " (default: mlp, the task's network; gpt for text)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: per task")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="1 is per-sample training (default: per task)")
    parser.add_argument("--lr", type=float, default=None,
                        help="one learning rate for every optimizer (default: per task and "
                        "optimizer, tuned at the task's batch size and scaled to --batch-size: "
                        "linearly for SGD-like optimizers, by the square root for adaptive "
                        "ones)")
    parser.add_argument(
        "--schedule", metavar="SCHEDULE", default=None,
        help="learning-rate schedule, stepped every epoch: constant, cosine[:eta_min=X], "
        "step:step_size=N[,gamma=G], exponential:gamma=G, warmup:epochs=N[,start_factor=F], "
        "or a warmup then another: warmup:epochs=2+cosine (default: constant)",
    )
    parser.add_argument("--seed", type=int, default=None, help="data noise, split, initial "
                        "weights, batch order and dropout all follow it (default: 0)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cpu")
    parser.add_argument(
        "--backend", choices=("handgrad", "torch"), default=None,
        help="torch: the same networks in torch.nn with torch.optim and autograd, the "
        "reference (default: handgrad)",
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's intra-op threads while training (default: 1)")
    parser.add_argument(
        "--dp", metavar="max_grad_norm=C,noise_multiplier=S[,delta=D]", default=None,
        help="train with DP-SGD (handgrad.privacy): clip each example's gradient to C, add "
        "Gaussian noise of std S*C, Poisson batches; reports ε at δ (default 1e-5) beside "
        "the accuracy",
    )
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output directory (default: runs/TASK)")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in DIR from DIR/checkpoint.pt (same arguments)")
    parser.add_argument("--quiet", action="store_true", default=None,
                        help="no progress on stderr (by default: a bar on a terminal, one "
                        "line per epoch elsewhere)")
    parser.add_argument(
        "--checkpoint-every", metavar="SECONDS", type=float, default=None,
        help="write checkpoint.pt after an epoch once this many seconds have passed since the "
        "last write (0: after every epoch); always before the first epoch, after the last "
        "and on Ctrl-C or SIGTERM (default: 60)",
    )
    parser.add_argument(
        "--dist-timeout", metavar="SECONDS", type=float, default=None,
        help="under torchrun: how long a process waits for a dead or stuck peer before "
        "exiting with an error (default: 120)",
    )
    parser.set_defaults(func=run)
    _ACTIONS.update({action.dest: action for action in parser._actions
                     if action.option_strings and action.dest != "help"})


def apply_config(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` completed from ``--config`` (for the options not given on the command
    line), then from :data:`DEFAULTS`; ``args.options`` becomes the optimizers' arguments,
    the file's ``[opt.NAME]`` tables overridden key by key by ``--opt``.

    Each key of the file must be one of the command's long options and its value of the
    kind the option takes (a ``ValueError`` naming the file, the key and what is expected).
    """
    from handgrad.train.settings import optimizer_options, read_config

    file = read_config(args.config) if args.config else {}
    for key, value in file.items():
        if key == "opt":
            continue
        action = _ACTIONS.get(key)
        if action is None or key in ("config", "func"):
            known = ", ".join(sorted(dest.replace("_", "-") for dest in _ACTIONS
                                     if dest != "config"))
            raise CLIError(f"config {args.config}: unknown key {key!r}; the keys are: {known}")
        if getattr(args, key, None) is None:
            setattr(args, key, _config_value(args.config, key, value, action))
    for key, value in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.options = optimizer_options(args.opt or [], base=file.get("opt"))
    return args


def _config_value(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    """A config file's value for ``action``, checked as argparse would check the option's."""
    name = key.replace("_", "-")
    if key == "optimizers" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if key == "model" and isinstance(value, dict):
        return value  # a table: parse_model reads it
    if key == "dp" and isinstance(value, dict):  # [dp] max_grad_norm = 1.0 ...: as --dp
        for item, number in value.items():
            if not isinstance(number, int | float) or isinstance(number, bool):
                raise CLIError(f"config {path}: dp.{item} = {number!r}: expected a number")
        return ",".join(f"{item}={number!r}" for item, number in value.items())
    if action.nargs == 0:  # a flag
        expected, ok = "true or false", isinstance(value, bool)
    elif action.type is int:
        expected, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif action.type is float:
        expected = "a number"
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        expected, ok = "a string", isinstance(value, str)
    if ok and action.choices is not None and value not in action.choices:
        expected, ok = "one of " + ", ".join(map(str, action.choices)), False
    if not ok:
        raise CLIError(f"config {path}: {name} = {value!r}: expected {expected}")
    return value


def _models_help() -> str:
    from handgrad.train.models import describe_models

    return "models: " + describe_models()


def default_out_dir(task: str) -> Path:
    """``runs/cubic``, ``runs/digits``, ``runs/csv-<file stem>``."""
    if task.startswith(("csv:", "text:")):
        kind, _, path = task.partition(":")
        name = f"{kind}-{Path(path).stem}"
    else:
        name = task
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def results_table(rows: list[dict[str, Any]], classification: bool) -> str:
    """The results as an aligned text table, one row per optimizer (with ε for DP-SGD); a
    run without figures (diverged in its first epoch) shows ``-``."""
    private = any("epsilon" in row for row in rows)
    header = ["optimizer", "lr", "train loss", "test loss"]
    header += ["test accuracy"] if classification else []
    header += ["ε"] if private else []
    header += ["seconds", "status"]
    body = []

    def number(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    for row in rows:
        cells = [row["optimizer"], f"{row['lr']:g}", number(row["train_loss"], ".4g"),
                 number(row["test_loss"], ".4g")]
        cells += [number(row.get("test_accuracy"), ".4f")] if classification else []
        if private:
            epsilon = row.get("epsilon")
            cells += ["inf" if epsilon is None else f"{epsilon:.3g}"]
        cells += [f"{row['seconds']:.2f}", row.get("status_short", row.get("status", ""))]
        body.append(cells)
    return format_table(header, body, right=range(1, len(header) - 1))


def run(args: argparse.Namespace) -> int:
    """Train, write the outputs, print the table; 0 when every run trained,
    :data:`EXIT_NOT_TRAINED` when one did not.

    Under torchrun every process trains its shard; a peer that dies or hangs makes the
    others exit with an error within ``--dist-timeout`` seconds.
    """
    from handgrad.optim.names import parse_optimizer_names
    from handgrad.privacy.training import DPSettings
    from handgrad.train import distributed
    from handgrad.train.checkpoint import CHECKPOINT_EVERY, CHECKPOINT_FILE
    from handgrad.train.compare import TrainConfig
    from handgrad.train.models import parse_model
    from handgrad.train.schedules import parse_schedule
    from handgrad.train.tasks import load_task

    args = apply_config(args)
    out_dir = Path(args.out) if args.out else default_out_dir(args.task)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} is a file; expected a directory")
    checkpoint = out_dir / CHECKPOINT_FILE
    if args.resume and not checkpoint.is_file():
        raise CLIError(f"--resume: no checkpoint at {checkpoint}; start the run without --resume")
    if args.optimizers is not None:
        parse_optimizer_names(args.optimizers)  # a typo is reported before any data is read
    timeout = distributed.DEFAULT_TIMEOUT if args.dist_timeout is None else args.dist_timeout
    if not 0 < timeout < 1e7:
        raise CLIError(f"--dist-timeout must be a positive number of seconds, got {timeout:g}")
    if args.model is not None:
        parse_model(args.model)  # likewise
    schedule = parse_schedule(args.schedule)
    try:
        dp = None if args.dp is None else DPSettings.parse(args.dp)
    except ValueError as error:
        raise CLIError(str(error)) from None
    if dp is not None and args.backend != "handgrad":
        raise CLIError("--dp needs --backend handgrad: the per-sample gradients come from "
                       "the hand-written backward")
    every = CHECKPOINT_EVERY if args.checkpoint_every is None else args.checkpoint_every
    if not 0 <= every < math.inf:
        raise CLIError(f"--checkpoint-every must be a number of seconds >= 0, got {every:g}")
    # Rank 0 alone writes, so rank 0 alone locks (the others would find its lock).
    info = distributed.process_info()
    writer = info is None or info.rank == 0
    try:  # before training, not after: the plots need matplotlib
        from handgrad.plots.training import write_outputs
    except ImportError as error:
        raise CLIError(
            f"the plots need matplotlib ({error}); install it with: pip install 'handgrad[all]'"
        ) from None
    with lock_folder(out_dir) if writer else contextlib.nullcontext(out_dir):
        task = load_task(args.task, seed=args.seed, target=args.target)
        names = parse_optimizer_names(args.optimizers or task.defaults.optimizers)
        model = parse_model(args.model or task.default_model)  # gpt for text, else mlp
        if writer:
            for note in task.notes:
                print(f"handgrad train: warning: {note}", file=sys.stderr)
        device = str(distributed.local_device(args.device))
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, device=device, backend=args.backend,
                             threads=args.threads, model=model, options=args.options,
                             schedule=schedule, dp=dp)
        checkpoint = out_dir / CHECKPOINT_FILE
        try:
            # Every rank trains in the group and leaves it together with the others; rank 0
            # writes the outputs after that, so no peer waits on (or is torn from) its writes.
            with distributed.process_group(device, timeout=timeout) as replicas:
                writer = replicas is None or replicas.is_writer
                result = _train(task, names, config, checkpoint, args.resume, writer, every,
                                args.quiet)
        except distributed.DistributedError as error:
            raise CLIError(str(error)) from None
        if not writer:
            return 0 if not result.failed else EXIT_NOT_TRAINED
        try:
            written = write_outputs(result, out_dir)
        except WriteError as error:
            raise _with_resume_hint(error, checkpoint) from error
    rows = [{**document, "lr": run.lr,
             "status_short": run.status.short() if run.status is not None else ""}
            for document, run in zip(result.metrics()["runs"], result.runs, strict=True)]
    print(results_table(rows, task.kind == "classification"))
    from handgrad.train.text import TextTask, text_report

    if isinstance(task, TextTask):
        print(text_report(result))
    print("wrote " + ", ".join(str(path) for path in [*written, checkpoint]))
    if result.failed:
        reasons = "; ".join(f"{run.optimizer}: {run.status.reason() if run.status else ''}"
                            for run in result.failed)
        count = len(result.failed)
        print(f"handgrad train: {count} of {len(result.runs)} runs did not train: {reasons}",
              file=sys.stderr)
        return EXIT_NOT_TRAINED
    return 0


def _train(
    task: Task, names: list[str], config: TrainConfig, checkpoint: Path, resume: bool,
    writer: bool, checkpoint_every: float, quiet: bool = False,
) -> ComparisonResult:
    """Train; the writer (rank 0, or the only process) shows progress and writes the
    checkpoint."""
    from handgrad.cli.progress import EpochProgress
    from handgrad.train.compare import compare_optimizers

    epochs = config.epochs if config.epochs is not None else task.defaults.epochs
    mode = "quiet" if quiet or not writer else "auto"
    try:
        with EpochProgress(f"train {task.name}", names, epochs, mode=mode) as progress, \
                sigterm_raises():  # SIGTERM, like Ctrl-C, saves the last finished epoch
            return compare_optimizers(
                task, names, config, checkpoint=checkpoint, resume=resume,
                checkpoint_every=checkpoint_every, on_epoch=progress.run_done,
                on_epoch_end=progress.epoch_done,
            )
    except KeyboardInterrupt:
        if writer and checkpoint.is_file():
            print(f"the last finished epoch is in {checkpoint}; add --resume to continue",
                  file=sys.stderr)
        raise
    except WriteError as error:
        raise _with_resume_hint(error, checkpoint) from error


def _with_resume_hint(error: WriteError, checkpoint: Path) -> WriteError:
    """The same error, saying what the checkpoint (intact: writes are atomic) still holds."""
    from handgrad.train.checkpoint import CheckpointError, load_checkpoint

    try:
        epoch = load_checkpoint(checkpoint)["epoch"]
    except (OSError, CheckpointError):
        return error
    hint = f"{checkpoint.name} holds epoch {epoch}: make room, then add --resume"
    return WriteError(error.errno, f"{error.strerror}; {hint}", error.filename)
