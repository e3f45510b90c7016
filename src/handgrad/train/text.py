"""The text task: character-level language modelling with a GPT (``--task text[:PATH]``).

The text is read whole; its first 90% trains, the rest measures (the validation split). Its
characters are the vocabulary. An example is a window of ``context`` characters and, as
its target, the same window shifted by one: the model predicts every next character at once.
Training windows tile the training split; validation windows are spread evenly over the
validation split.

Losses are in nats per character, as every task's; ``bits = nats / ln 2``. The yardstick is
the *unigram entropy* of the training text, H = −Σ_c p(c) log₂ p(c): the bits per character
of a model that knows only how often each character occurs. A model below it has learnt
something about order.

Without ``PATH`` the text is Python's own reference documentation as shipped with the
interpreter (``pydoc_data.topics``, about 465,000 characters of English prose and code,
under the Python Software Foundation License): on every machine with Python, nothing to
download, nothing committed to this repository.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from handgrad import nn as hnn
from handgrad.train import seeds
from handgrad.train.models import ModelOption, probability, register_model
from handgrad.train.tasks import Task, TaskDefaults

VALIDATION_FRACTION = 0.1
VALIDATION_WINDOWS = 32
MIN_CHARACTERS = 1000

CONTEXT_LENGTH = 64
"""Characters per window, the GPT's context: the task's (its windows), not the model's."""

GPT_DEFAULTS: dict[str, Any] = {"n_layer": 3, "n_head": 4, "d_model": 128, "dropout": 0.0}
"""The ``gpt`` model's defaults: small enough for a few minutes on two cores."""

TEXT_DEFAULTS = TaskDefaults(
    epochs=3, batch_size=32, lr={"adamw": 3e-3, "adam": 3e-3}, optimizers="adamw"
)


def default_text() -> tuple[str, str]:
    """(name, text): Python's reference documentation topics, in a fixed order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # a Python built without its documentation data
        raise FileNotFoundError(
            "this Python has no pydoc_data (its documentation topics), the default text; "
            "give a file: --task text:PATH"
        ) from error
    return "python-docs", "\n\n".join(topics[key] for key in sorted(topics))


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; a clear error for a missing, binary or too short file."""
    if not path.exists():
        raise FileNotFoundError(f"text file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    if len(text) < MIN_CHARACTERS:
        raise ValueError(
            f"{path} has {len(text)} characters; a language model needs at least {MIN_CHARACTERS}"
        )
    return text


def unigram_entropy(text: str) -> float:
    """H = −Σ_c p(c) log₂ p(c), p(c) the frequency of character c in ``text``: bits/char."""
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in Counter(text).values())


class Vocabulary:
    """The characters of a text, each with an id (sorted by code point)."""

    def __init__(self, characters: str) -> None:
        self.characters = "".join(sorted(set(characters)))
        self._id = {c: i for i, c in enumerate(self.characters)}

    def __len__(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> Tensor:
        """Token ids (int64); ValueError naming a character outside the vocabulary."""
        unknown = sorted(set(text) - self._id.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:5])
            raise ValueError(f"{len(unknown)} character(s) not in the model's vocabulary: {shown}")
        return torch.tensor([self._id[c] for c in text], dtype=torch.int64)

    def decode(self, ids: Tensor) -> str:
        return "".join(self.characters[i] for i in ids.tolist())


class NextCharacterGPT(hnn.Module):
    """A GPT whose logits come as (batch, vocabulary, length): the layout of the class
    dimension that cross-entropy and accuracy read (dim 1), as for any classifier."""

    def __init__(self, gpt: hnn.GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, input: Tensor) -> Tensor:
        out = self.gpt(input).transpose(1, 2)
        self._remember((), out.new_empty(()).expand(out.shape))  # (its shape, not its values)
        return out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> None:
        self._recall(grad_output)
        self._saved = None
        self.gpt.backward(grad_output.transpose(1, 2))


class TorchNextCharacterGPT(torch.nn.Module):
    """:class:`NextCharacterGPT`'s torch.nn twin (the ``--backend torch`` reference)."""

    def __init__(self, gpt: torch.nn.Module) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, input: Tensor) -> Tensor:
        out: Tensor = self.gpt(input).transpose(1, 2)
        return out


@dataclass(frozen=True, eq=False)
class TextTask(Task):
    """A text as next-character classification over windows; the model is a GPT."""

    vocabulary: str = ""
    context_length: int = CONTEXT_LENGTH
    entropy_bits: float = 0.0  # unigram entropy of the training split

    @property
    def parameter_dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def default_model(self) -> str:
        return "gpt"

    def check_model(self, name: str) -> None:
        if name != "gpt":
            raise ValueError(f"the text task trains a GPT (--model gpt), not --model {name}")

    def sample_prompt(self, length: int = 16) -> str:
        """The first characters of the validation text: a prompt to continue."""
        return Vocabulary(self.vocabulary).decode(self.x_test[0][:length])

    def checkpoint_info(self) -> dict[str, Any]:
        """What ``handgrad generate`` needs beside the model spec: vocabulary and context."""
        return {"vocabulary": self.vocabulary, "context_length": self.context_length}

    def digest(self) -> str:
        return super().digest() + f"|{self.vocabulary}|{self.context_length}"


def text_task(
    path: Path | None = None, *, seed: int = 0, context_length: int = CONTEXT_LENGTH
) -> TextTask:
    """The text at ``path`` (default: :func:`default_text`) as a :class:`TextTask` of
    windows of ``context_length`` characters."""
    seeds.check_seed(seed)
    if path is None:
        name, text = default_text()
    else:
        name, text = str(path), read_text(path)
    context = context_length
    split = int(len(text) * (1 - VALIDATION_FRACTION))
    train_text, validation_text = text[:split], text[split:]
    if len(validation_text) <= context + 1:
        raise ValueError(
            f"{name}: {len(text)} characters leave {len(validation_text)} for validation, "
            f"fewer than a window of {context + 1}; give a longer text"
        )
    vocabulary = Vocabulary(text)
    ids = vocabulary.encode(text)
    train_ids, validation_ids = ids[:split], ids[split:]
    train_starts = torch.arange(0, len(train_ids) - context, context)
    count = min(VALIDATION_WINDOWS, len(validation_ids) - context)
    validation_starts = torch.linspace(0, len(validation_ids) - context - 1, count).long()
    offsets = torch.arange(context)

    def windows(source: Tensor, starts: Tensor, shift: int) -> Tensor:
        return source[starts.unsqueeze(1) + offsets + shift]

    return TextTask(
        name=f"text:{name}",
        kind="classification",
        x_train=windows(train_ids, train_starts, 0),
        y_train=windows(train_ids, train_starts, 1),
        x_test=windows(validation_ids, validation_starts, 0),
        y_test=windows(validation_ids, validation_starts, 1),
        hidden=(),
        defaults=TEXT_DEFAULTS,
        class_names=tuple(vocabulary.characters),
        vocabulary=vocabulary.characters,
        context_length=context,
        entropy_bits=unigram_entropy(train_text),
    )


def bits(nats: float) -> float:
    """A loss in nats per character as bits per character."""
    return nats / math.log(2)


def sample(
    model: torch.nn.Module,
    vocabulary: str,
    prompt: str,
    length: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """``prompt`` continued by ``length`` characters sampled from a trained model
    (:class:`NextCharacterGPT` or its torch twin, or a bare GPT of either kind)."""
    gpt = model.gpt if isinstance(model, NextCharacterGPT | TorchNextCharacterGPT) else model
    if isinstance(gpt, hnn.TorchGPT):
        gpt = hnn.from_torch(gpt)
    if not isinstance(gpt, hnn.GPT):
        raise TypeError(f"sample: expected a handgrad GPT, got {type(gpt).__name__}")
    chars = Vocabulary(vocabulary)
    if not prompt:
        raise ValueError("the prompt is empty; give at least one character")
    device = next(gpt.parameters()).device
    tokens = chars.encode(prompt).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = gpt.generate(tokens, length, temperature=temperature, top_k=top_k, generator=generator)
    return chars.decode(out.cpu())


def text_report(result: Any) -> str:
    """Lines for ``handgrad train --task text``: each run's validation loss in bits per
    character against the unigram entropy, and a sample from the best run."""
    task = result.task
    assert isinstance(task, TextTask)
    lines = [f"unigram entropy of the training text: {task.entropy_bits:.3f} bits/char"]
    # A run that diverged has no figures worth reading and weights that are not finite.
    finished = [run for run in result.runs if run.history and not run.diverged]
    for run in result.runs:
        if run not in finished:
            lines.append(f"{run.optimizer}: {run.status.reason() if run.status else 'no epoch'}")
            continue
        validation = bits(run.final.test_loss)
        lines.append(
            f"{run.optimizer}: validation {validation:.3f} bits/char = "
            f"{validation / task.entropy_bits:.2f} x the unigram entropy"
        )
    if not finished:
        return "\n".join(lines)
    best = min(finished, key=lambda run: run.final.test_loss)
    prompt = task.sample_prompt()
    text = sample(best.model, task.vocabulary, prompt, 300, seed=0)
    lines += [f"sample ({best.optimizer}, temperature 0.8, prompt {prompt!r}):", text]
    return "\n".join(lines)


# ----------------------------------------------------------------- the gpt model, by name


def _positive(value: Any) -> int:
    """A positive integer (``"4"`` or ``4``)."""
    try:
        number = int(value) if not isinstance(value, bool | float) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise ValueError("expected a positive integer")
    return number


def gpt_model(task: Task, options: dict[str, Any]) -> torch.nn.Module:
    """``--model gpt``: a :class:`handgrad.nn.GPT` for a text task (its vocabulary and
    context), drawn with GPT-2's initialisation, as torch.nn layers (the registry converts
    them for the handgrad backend)."""
    if not isinstance(task, TextTask):
        raise ValueError(
            f"--model gpt reads token ids: it trains on the text task (--task text), "
            f"not {task.name!r}"
        )
    gpt = hnn.GPT(len(task.vocabulary), task.context_length, **options)
    return TorchNextCharacterGPT(hnn.to_torch(gpt))


register_model(
    "gpt",
    gpt_model,
    options={
        "n_layer": ModelOption(_positive, f"blocks (default: {GPT_DEFAULTS['n_layer']})"),
        "n_head": ModelOption(_positive, f"attention heads (default: {GPT_DEFAULTS['n_head']})"),
        "d_model": ModelOption(_positive, f"features (default: {GPT_DEFAULTS['d_model']})"),
        "dropout": ModelOption(probability, "dropout probability (default: 0)"),
    },
    defaults=lambda task: dict(GPT_DEFAULTS),
    help="a GPT (transformer language model) for the text task",
)
hnn.register_conversion(
    TorchNextCharacterGPT,
    NextCharacterGPT,
    to_handgrad=lambda source, convert: NextCharacterGPT(cast(hnn.GPT, convert(source.gpt, "gpt"))),
    to_torch=lambda source, convert: TorchNextCharacterGPT(convert(source.gpt, "gpt")),
)
