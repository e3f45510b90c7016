"""``handgrad train --task text:PATH --model gpt`` and ``handgrad generate`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handgrad.cli import main


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "poem.txt"
    path.write_text("the cat sat on the mat; the dog sat on the log.\n" * 40, encoding="utf-8")
    return path


def test_train_text_reports_bits_per_character_and_a_sample_then_generate_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    status = main(
        [
            "train",
            "--task",
            f"text:{_text(tmp_path)}",
            "--model",
            "gpt",
            "--epochs",
            "2",
            "--out",
            str(out_dir),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    assert lines[2].split()[0] == "adamw"  # the text task's default optimizer
    assert "unigram entropy of the training text:" in out
    assert "adamw: validation" in out
    assert "bits/char" in out
    assert "x the unigram entropy" in out
    assert "sample (adamw, temperature 0.8" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["task"].startswith("text:")
    assert (out_dir / "loss_curves.png").is_file()

    checkpoint = str(out_dir / "checkpoint.pt")
    status = main(["generate", "--checkpoint", checkpoint, "--prompt", "the ", "--length", "30"])
    generated = capsys.readouterr().out[:-1]  # (print's newline)
    assert status == 0
    assert generated.startswith("the ")
    assert len(generated) == 34
    status = main(["generate", "--checkpoint", checkpoint, "--prompt", "the ", "--length", "30"])
    assert capsys.readouterr().out[:-1] == generated  # seeded

    status = main(["generate", "--checkpoint", checkpoint, "--prompt", "Quux"])
    assert status == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--prompt", "a", "--temperature", "-1"], "--temperature must be >= 0"),
        (["--prompt", "a", "--top-k", "0"], "--top-k must be a positive integer"),
        (["--prompt", "a", "--length", "-3"], "--length must be >= 0"),
    ],
)
def test_generate_bad_arguments_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    status = main(["generate", "--checkpoint", str(tmp_path / "none.pt"), *arguments])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_generate_refuses_a_missing_file_and_a_checkpoint_without_a_language_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["generate", "--checkpoint", str(tmp_path / "none.pt"), "--prompt", "a"])
    assert status == 2
    assert "no checkpoint" in capsys.readouterr().err
    run = tmp_path / "cubic"
    assert (
        main(
            ["train", "--task", "cubic", "--optimizers", "adam", "--epochs", "1", "--out", str(run)]
        )
        == 0
    )
    capsys.readouterr()
    status = main(["generate", "--checkpoint", str(run / "checkpoint.pt"), "--prompt", "a"])
    assert status == 2
    assert "holds no language model" in capsys.readouterr().err


def test_model_gpt_is_refused_for_other_tasks_and_mlp_for_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--task", f"text:{_text(tmp_path)}", "--model", "mlp"]) == 2
    assert "the text task trains a GPT (--model gpt)" in capsys.readouterr().err
    assert main(["train", "--task", f"text:{_text(tmp_path)}", "--model", "gpt:n_head=3"]) == 2
    assert "not divisible by n_head=3" in capsys.readouterr().err
    assert main(["train", "--task", "cubic", "--model", "gpt"]) == 2
    assert "--model gpt reads token ids: it trains on the text task" in capsys.readouterr().err
