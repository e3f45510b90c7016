"""The text task: windows, vocabulary, entropy, the GPT it builds, and its errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import handgrad.nn as hn
from handgrad.train import load_task
from handgrad.train.compare import TrainConfig, compare_optimizers
from handgrad.train.models import build_model
from handgrad.train.text import (
    NextCharacterGPT,
    TextTask,
    TorchNextCharacterGPT,
    Vocabulary,
    bits,
    default_text,
    sample,
    text_task,
    unigram_entropy,
)

SMALL = "gpt:n_layer=1,n_head=2,d_model=8"


def _text_file(tmp_path: Path, repeats: int = 60) -> Path:
    path = tmp_path / "story.txt"
    path.write_text("the cat sat on the mat. " * repeats, encoding="utf-8")
    return path


def test_windows_are_the_text_and_the_text_shifted_by_one(tmp_path: Path) -> None:
    task = text_task(_text_file(tmp_path), context_length=8)
    chars = Vocabulary(task.vocabulary)
    assert task.vocabulary == "".join(sorted(set("the cat sat on the mat. ")))
    assert task.x_train.shape[1] == task.y_train.shape[1] == 8
    assert task.x_train.dtype == torch.int64
    assert chars.decode(task.x_train[0]) == "the cat "
    assert chars.decode(task.y_train[0]) == "he cat s"
    assert torch.equal(task.x_train[1], torch.cat([task.y_train[0][7:], task.x_train[1][1:]]))
    assert 1 <= len(task.x_test) <= 32
    assert task.kind == "classification"
    assert task.parameter_dtype == torch.float32


def test_unigram_entropy_and_bits() -> None:
    assert unigram_entropy("abab") == pytest.approx(1.0)
    assert unigram_entropy("aaaa") == 0.0
    assert unigram_entropy("abcd") == pytest.approx(2.0)
    assert bits(math.log(2)) == pytest.approx(1.0)


def test_the_default_text_is_pythons_documentation() -> None:
    name, text = default_text()
    assert name == "python-docs"
    assert len(text) > 100_000
    assert 4.0 < unigram_entropy(text) < 5.5


def test_the_models_logits_have_the_class_dim_second_and_train_beside_torch(
    tmp_path: Path,
) -> None:
    task = text_task(_text_file(tmp_path), context_length=8)
    ours, reference = build_model(SMALL, task, 3), build_model(SMALL, task, 3, "torch")
    assert isinstance(ours, NextCharacterGPT)
    assert isinstance(reference, TorchNextCharacterGPT)
    tokens = task.x_train[:4]
    logits = ours(tokens)
    assert logits.shape == (4, len(task.vocabulary), 8)
    torch.testing.assert_close(logits, reference(tokens).detach())
    config = TrainConfig(epochs=2, batch_size=8, seed=3, model=SMALL)
    mine = compare_optimizers(task, "adamw", config)
    theirs = compare_optimizers(
        task, "adamw", TrainConfig(epochs=2, batch_size=8, seed=3, backend="torch", model=SMALL)
    )
    for a, b in zip(mine.runs[0].history, theirs.runs[0].history, strict=True):
        assert a.test_loss == pytest.approx(b.test_loss, rel=1e-4)
    assert mine.runs[0].history[-1].test_accuracy is not None


def test_sampling_continues_the_prompt_reproducibly(tmp_path: Path) -> None:
    task = text_task(_text_file(tmp_path), context_length=8)
    model = build_model(SMALL, task, 0)
    first = sample(model, task.vocabulary, "the ", 20, seed=1)
    assert first.startswith("the ")
    assert len(first) == 24
    assert sample(model, task.vocabulary, "the ", 20, seed=1) == first
    assert set(first) <= set(task.vocabulary)
    torch_model = build_model(SMALL, task, 0, "torch")
    assert sample(torch_model, task.vocabulary, "the ", 20, seed=1) == first
    with pytest.raises(ValueError, match="not in the model's vocabulary: 'Z'"):
        sample(model, task.vocabulary, "Zebra", 5)
    with pytest.raises(ValueError, match="prompt is empty"):
        sample(model, task.vocabulary, "", 5)


def test_bad_texts_and_models_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="text file not found"):
        load_task(f"text:{tmp_path / 'missing.txt'}")
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    with pytest.raises(ValueError, match="needs at least 1000"):
        load_task(f"text:{short}")
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\xff\xfe" * 1000)
    with pytest.raises(ValueError, match="not UTF-8 text"):
        load_task(f"text:{binary}")
    text = load_task(f"text:{_text_file(tmp_path)}")
    with pytest.raises(ValueError, match="trains a GPT"):
        compare_optimizers(text, "adamw", TrainConfig(epochs=1, model="mlp"))
    with pytest.raises(ValueError, match="--model gpt reads token ids"):
        compare_optimizers("cubic", "adam", TrainConfig(epochs=1, model="gpt"))
    with pytest.raises(ValueError, match="model gpt has no option 'width'"):
        TrainConfig(model="gpt:width=3") and build_model("gpt:width=3", text, 0)
    assert isinstance(load_task(f"text:{_text_file(tmp_path)}"), TextTask)


def test_the_checkpoint_info_rebuilds_the_model(tmp_path: Path) -> None:
    task = text_task(_text_file(tmp_path), context_length=8)
    info = task.checkpoint_info()
    gpt = hn.GPT(len(info["vocabulary"]), info["context_length"], n_layer=1)
    assert gpt.context_length == 8
    assert gpt.vocab_size == len(task.vocabulary)
