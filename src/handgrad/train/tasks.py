"""The learning tasks: data, network shape, loss and the defaults that train them well.

- ``cubic``: y = x³ on [-2, 2] with a 1-100-1 ReLU network (the classic fit). Training
  targets carry Gaussian noise σ = 0.1; test targets are noise-free on an even grid. The MSE
  is in raw units: targets are never rescaled.
- ``digits``: scikit-learn's bundled 8×8 digits (no download), 64-256-10 ReLU network,
  cross-entropy, a stratified 20 % test split, inputs standardized with the training
  split's mean and standard deviation.
- ``csv:PATH``: the user's own table, predicting the column named by ``target`` from all
  the others (which must be numeric). The target is treated as *classification* when it
  holds any non-numeric value, or only integers with at most
  :data:`MAX_CLASSES_FOR_INTEGER_TARGET` distinct values; otherwise as *regression*. A row
  the csv module cannot read (a field over its limit of 131,072 characters) is skipped and
  named in :attr:`Task.notes`; every other bad cell is an error naming its line and column.
  Values must fit float32, the networks' dtype.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from handgrad import nn as hnn
from handgrad.train import seeds

Kind = Literal["regression", "classification"]
Backend = Literal["handgrad", "torch"]

TASK_NAMES = ("cubic", "digits", "csv:PATH", "text[:PATH]")

# Learning rates at batch size 64, from `python -m benchmarks.tune_lr` (a sweep of three rates
# per decade; the figures are in docs/training.md): the best rate or, where the best sits
# next to divergence, the one below it. Adadelta, Rprop and Adafactor train well at their own
# defaults.
CUBIC_LR = {
    "sgd": 0.05, "asgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "lbfgs": 1.0,
    "rmsprop": 0.003, "adam": 0.005, "adamw": 0.005, "adamax": 0.05, "nadam": 0.01,
    "radam": 0.01, "adagrad": 0.1, "muon": 0.005,
    # beyond torch.optim (handgrad.optim.BEYOND_TORCH): the same kind of sweep (3e-4..1)
    "lion": 0.001, "sgdschedulefree": 0.03, "adamwschedulefree": 0.01, "prodigy": 0.03,
    "adan": 0.03, "lamb": 0.003, "adopt": 0.03, "soap": 0.01,
}
DIGITS_LR = {
    "sgd": 0.1, "asgd": 0.1, "momentum": 0.02, "nesterov": 0.02, "lbfgs": 1.0,
    "rmsprop": 0.001, "adam": 0.002, "adamw": 0.002, "adamax": 0.005, "nadam": 0.003,
    "radam": 0.005, "adagrad": 0.02, "muon": 0.005,
    "lion": 3e-4, "sgdschedulefree": 0.3, "adamwschedulefree": 0.003, "prodigy": 0.1,
    "adan": 0.003, "lamb": 0.003, "adopt": 0.003, "soap": 0.003,
}
# A user's table: standardized inputs like digits, so the adaptive optimizers' rates carry
# over (they do not depend on the gradient's scale); SGD-like ones keep their own defaults,
# as the targets' scale is unknown.
CSV_LR = {name: lr for name, lr in DIGITS_LR.items()
          if name not in ("sgd", "asgd", "momentum", "nesterov", "sgdschedulefree")
          } | {"adam": 0.003}
# Rprop's step sizes grow ×1.2 wherever the gradient's sign repeats, up to 50 (torch's
# default, meant for full-batch training). On classification mini-batches the logits' scale
# keeps its sign and runs away (digits: test loss 58 at accuracy 0.95): capped at 0.01.
MINIBATCH_RPROP: dict[str, dict[str, Any]] = {"rprop": {"step_sizes": (1e-6, 0.01)}}
TEST_FRACTION = 0.2
MAX_CLASSES_FOR_INTEGER_TARGET = 20


@dataclass(frozen=True)
class TaskDefaults:
    """Training settings that reach the task's goal quickly.

    ``lr`` maps lowercase optimizer names to a learning rate tuned at ``batch_size`` (the
    reference batch of :func:`handgrad.train.optimizers.scaled_lr`; the sweeps:
    ``python -m benchmarks.tune_lr``); an optimizer missing from it uses its own default
    learning rate. ``options`` maps optimizer names to constructor arguments that differ from
    the class's defaults on this task (the user's ``--opt`` wins). ``optimizers``: those
    ``handgrad train`` compares unless told otherwise.
    """

    epochs: int
    batch_size: int
    lr: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    optimizers: str = "sgd,rmsprop,adam"


@dataclass(frozen=True, eq=False)
class Task:
    """A data set split into train and test, with the network and loss that learn it.

    Inputs are float32 of shape ``(n, features)``; regression targets float32 ``(n, 1)``,
    classification targets int64 class indices ``(n,)``.
    """

    name: str
    kind: Kind
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    hidden: tuple[int, ...]
    defaults: TaskDefaults
    class_names: tuple[str, ...] = ()
    dropout: float = 0.0
    notes: tuple[str, ...] = ()  # what the user should know about the data (skipped rows)
    target: str | None = None  # csv tasks: the column predicted

    @property
    def num_inputs(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.kind == "classification" else 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (``(features,)`` for the tables here)."""
        return tuple(self.x_train.shape[1:])

    @property
    def parameter_dtype(self) -> torch.dtype:
        """The dtype of the networks' parameters: the inputs' (a float64 task trains a
        float64 network); a task of integer inputs (token ids) says its own."""
        return self.x_train.dtype

    @property
    def default_model(self) -> str:
        """The model (:mod:`handgrad.train.models`) trained unless ``--model`` says otherwise."""
        return "mlp"

    def check_model(self, name: str) -> None:
        """ValueError unless the registered model ``name`` can learn this task (a model's
        builder refuses tasks it cannot read; a task refuses models it cannot feed)."""

    def checkpoint_info(self) -> dict[str, Any]:
        """What a checkpoint must carry to rebuild this task's model without the data."""
        return {}

    def reference_model(self, seed: int) -> torch.nn.Module:
        """The task's network (its default model of :mod:`handgrad.train.models`) as plain
        ``torch.nn`` layers, initialized from ``seed`` alone.

        Built inside ``fork_rng`` so that the caller's global RNG stream is left as it was.
        """
        from handgrad.train.models import reference_model

        return reference_model(self.default_model, self, seed)

    def make_model(self, seed: int, backend: Backend = "handgrad") -> torch.nn.Module:
        """The network for ``backend``: handgrad layers, or torch.nn (trained by autograd).

        Both start from the same weights for the same ``seed``. Other networks:
        :func:`handgrad.train.models.build_model`.
        """
        from handgrad.train.models import build_model

        return build_model(self.default_model, self, seed, backend)

    def make_loss(self, backend: Backend = "handgrad") -> torch.nn.Module:
        """Mean squared error for regression, cross-entropy for classification."""
        if backend == "torch":
            return torch.nn.MSELoss() if self.kind == "regression" else torch.nn.CrossEntropyLoss()
        return hnn.MSELoss() if self.kind == "regression" else hnn.CrossEntropyLoss()

    def default_lr(self, optimizer: str) -> float | None:
        """The tuned learning rate for ``optimizer`` on this task, or None for its own default."""
        return self.defaults.lr.get(optimizer.lower())

    def digest(self) -> str:
        """A SHA-256 of the task's tensors: tells whether a checkpoint was made on this data."""
        sha = hashlib.sha256(f"{self.name}|{self.kind}|{self.hidden}|{self.dropout}".encode())
        for tensor in (self.x_train, self.y_train, self.x_test, self.y_test):
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return sha.hexdigest()


def load_task(spec: str, *, seed: int = 0, target: str | None = None) -> Task:
    """The task named by ``spec``: ``"cubic"``, ``"digits"``, ``"csv:PATH"`` or
    ``"text[:PATH]"`` (:mod:`handgrad.train.text`).

    ``seed`` fixes the data's noise and the test split; ``target`` names the csv column to
    predict (required for csv, refused otherwise).
    """
    seeds.check_seed(seed)
    if spec == "text" or spec.startswith("text:"):
        if target is not None:
            raise ValueError("--target is only for csv tasks, not for the text task")
        from handgrad.train.text import text_task

        path = Path(spec[len("text:") :]) if spec.startswith("text:") else None
        return text_task(path, seed=seed)
    if spec.startswith("csv:"):
        if not target:
            raise ValueError("the csv task needs the column to predict: --target COLUMN")
        return csv_task(Path(spec[len("csv:") :]), target, seed=seed)
    if target is not None:
        raise ValueError(f"--target is only for csv tasks, not for task {spec!r}")
    if spec == "cubic":
        return cubic_task(seed=seed)
    if spec == "digits":
        return digits_task(seed=seed)
    raise ValueError(f"unknown task {spec!r}; expected one of: {', '.join(TASK_NAMES)}")


def cubic_task(
    *, seed: int = 0, num_train: int = 1000, num_test: int = 201, noise: float = 0.1,
    dropout: float = 0.0,
) -> Task:
    """y = x³: ``num_train`` points uniform on [-2, 2] with N(0, noise²) added to the
    targets, and ``num_test`` noise-free points on an even grid over [-2, 2]."""
    gen = seeds.generator(seed, seeds.DATA)
    x_train = torch.rand(num_train, 1, generator=gen) * 4 - 2
    y_train = x_train**3 + noise * torch.randn(num_train, 1, generator=gen)
    x_test = torch.linspace(-2, 2, num_test).unsqueeze(1)
    return Task(
        name="cubic",
        kind="regression",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=x_test**3,
        hidden=(100,),
        dropout=dropout,
        defaults=TaskDefaults(epochs=80, batch_size=64, lr=CUBIC_LR),
    )


def digits_task(*, seed: int = 0) -> Task:
    """scikit-learn's 1797 handwritten 8×8 digits, 10 classes, stratified 80/20 split."""
    from sklearn.datasets import load_digits

    x_np, y_np = load_digits(return_X_y=True)
    x = torch.as_tensor(x_np, dtype=torch.float32)
    y = torch.as_tensor(y_np, dtype=torch.int64)
    train, test = stratified_split(y, TEST_FRACTION, seed)
    x_train, x_test = standardize(x[train], x[test])
    return Task(
        name="digits",
        kind="classification",
        x_train=x_train,
        y_train=y[train],
        x_test=x_test,
        y_test=y[test],
        hidden=(256,),
        class_names=tuple(str(digit) for digit in range(10)),
        defaults=TaskDefaults(epochs=20, batch_size=64, lr=DIGITS_LR,
                              options=MINIBATCH_RPROP),
    )


def stratified_split(labels: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Train and test indices with each class split in the proportion ``test_fraction``.

    Every class with at least two samples puts at least one in each split; a class with a
    single sample goes to training.
    """
    gen = seeds.generator(seed, seeds.SPLIT)
    train: list[Tensor] = []
    test: list[Tensor] = []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = min(max(round(test_fraction * len(members)), 1), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def random_split(num_samples: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Train and test indices: a seeded random ``test_fraction`` (at least one) for testing."""
    order = torch.randperm(num_samples, generator=seeds.generator(seed, seeds.SPLIT))
    n_test = min(max(round(test_fraction * num_samples), 1), num_samples - 1)
    return order[n_test:].sort().values, order[:n_test].sort().values


def standardize(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
    """Both splits shifted and scaled by the *training* mean and standard deviation.

    Constant columns (std 0, e.g. the digits' always-blank corner pixels) are only shifted.
    """
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x_train - mean) / std, (x_test - mean) / std


def csv_task(path: Path, target: str, *, seed: int = 0) -> Task:
    """The user's table at ``path`` predicting ``target`` from every other column."""
    header, rows, target_line_numbers, notes = _read_csv(path)
    if target not in header:
        raise ValueError(
            f"column {target!r} not found in {path}; columns are: {', '.join(header)}"
        )
    if len(header) < 2:
        raise ValueError(f"{path} has only the target column {target!r}; no inputs to learn from")
    if len(rows) < 2:
        raise ValueError(f"{path} has {len(rows)} data row; need at least 2 (train and test)")
    t = header.index(target)
    features = [
        [_number(path, line, header[i], cell) for i, cell in enumerate(row) if i != t]
        for line, row in zip(target_line_numbers, rows, strict=True)
    ]
    x = torch.tensor(features, dtype=torch.float32)
    inputs = [name for i, name in enumerate(header) if i != t]
    _check_float32(path, x, target_line_numbers, inputs)
    kind, y, class_names = _target(path, [row[t] for row in rows], target_line_numbers, target)
    if kind == "classification":
        train, test = stratified_split(y, TEST_FRACTION, seed)
        if len(test) == 0:
            raise ValueError(
                f"{path}: the test split is empty: each of its {len(class_names)} classes has "
                "a single row, and a class needs at least 2 rows to lend one to the test "
                f"split; add rows (at least {len(rows) + 1}: a second row of one class)"
            )
    else:
        _check_float32(path, y, target_line_numbers, [target])
        train, test = random_split(len(rows), TEST_FRACTION, seed)
    x_train, x_test = standardize(x[train], x[test])
    return Task(
        name=f"csv:{path}",
        kind=kind,
        x_train=x_train,
        y_train=y[train],
        x_test=x_test,
        y_test=y[test],
        hidden=(64,),
        class_names=class_names,
        defaults=TaskDefaults(epochs=100, batch_size=32, lr=CSV_LR, options=MINIBATCH_RPROP),
        notes=notes,
        target=target,
    )


def _check_float32(
    path: Path, values: Tensor, lines: Sequence[int], columns: Sequence[str]
) -> None:
    """A ``ValueError`` naming the first cell that float32 cannot hold (it became ±inf)."""
    overflow = torch.isinf(values)
    if bool(overflow.any()):
        row, column = (int(i) for i in torch.nonzero(overflow)[0])
        raise ValueError(
            f"{path} line {lines[row]}, column {columns[column]!r}: the value is beyond "
            f"float32's range (±{torch.finfo(torch.float32).max:.4g}), the networks' dtype; "
            "rescale the column"
        )


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int], tuple[str, ...]]:
    """Header, data rows, each row's line number, and the notes on rows skipped because the
    csv module could not read them (a field over its size limit); blank lines are skipped."""
    if not path.exists():
        raise FileNotFoundError(f"csv file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header: list[str] | None = None
        rows: list[list[str]] = []
        lines: list[int] = []
        notes: list[str] = []
        while True:
            first_line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:  # the reader goes on with the next line
                where = (f"lines {first_line}-{reader.line_num}"
                         if reader.line_num > first_line else f"line {first_line}")
                problem = f"{path} {where}: cannot be read: {error}"
                if header is None:
                    raise ValueError(f"{problem}; it is the header") from None
                notes.append(f"{problem}; row skipped")
                continue
            if not row or all(not cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            if header is None:
                header = cells
                duplicates = sorted({name for name in header if header.count(name) > 1})
                if duplicates:
                    raise ValueError(f"{path} header repeats column(s): {', '.join(duplicates)}")
                continue
            if len(cells) != len(header):
                raise ValueError(
                    f"{path} line {reader.line_num}: {len(cells)} fields, expected "
                    f"{len(header)} as in the header"
                )
            rows.append(cells)
            lines.append(reader.line_num)
    if header is None:
        raise ValueError(f"{path} is empty; expected a header row and data rows")
    if not rows:
        raise ValueError(f"{path} has a header but no data rows")
    return header, rows, lines, tuple(notes)


def _number(path: Path, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(
            f"{path} line {line}, column {column!r}: {cell!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{path} line {line}, column {column!r}: {cell!r} is not a finite number")
    return value


def _target(
    path: Path, cells: Sequence[str], lines: Sequence[int], column: str
) -> tuple[Kind, Tensor, tuple[str, ...]]:
    """The target's kind, its tensor, and the class names (classification)."""
    for cell, line in zip(cells, lines, strict=True):
        if not cell:
            raise ValueError(f"{path} line {line}, column {column!r}: the target is empty")
    try:
        values = [float(cell) for cell in cells]
    except ValueError:
        values = []
    if values:
        for value, cell, line in zip(values, cells, lines, strict=True):
            if not math.isfinite(value):
                raise ValueError(
                    f"{path} line {line}, column {column!r}: {cell!r} is not a finite number"
                )
        distinct = sorted(set(values))
        if len(distinct) > MAX_CLASSES_FOR_INTEGER_TARGET or any(v != int(v) for v in distinct):
            return "regression", torch.tensor(values, dtype=torch.float32).unsqueeze(1), ()
        names = tuple(str(int(v)) for v in distinct)
        index = {v: i for i, v in enumerate(distinct)}
        labels = [index[v] for v in values]
    else:
        names = tuple(sorted(set(cells)))
        index_of = {name: i for i, name in enumerate(names)}
        labels = [index_of[cell] for cell in cells]
    if len(names) < 2:
        raise ValueError(
            f"{path} column {column!r} has a single class {names[0]!r}; nothing to classify"
        )
    return "classification", torch.tensor(labels, dtype=torch.int64), names
