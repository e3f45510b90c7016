"""The text task beside the run statuses: a diverged run is named in the report, left out
of the sample and of ``generate``; predictions.csv has one row per predicted character;
metrics.json follows the schema."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from handgrad.cli import main
from handgrad.train.tasks import load_task


def test_a_diverged_text_run_is_reported_and_skipped_by_generate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "poem.txt"
    text.write_text("the cat sat on the mat; the dog sat on the log.\n" * 40, encoding="utf-8")
    out_dir = tmp_path / "run"
    status = main(["train", "--task", f"text:{text}", "--optimizers", "adamw,sgd",
                   "--opt", "sgd.lr=1e30", "--model", "gpt:n_layer=1,n_head=2,d_model=16",
                   "--epochs", "1", "--quiet", "--out", str(out_dir)])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 1
    assert "sgd: diverged at epoch 1" in captured.out  # the text report's line
    assert "sample (adamw" in captured.out
    assert "1 of 2 runs did not train: sgd: diverged" in captured.err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert [run["status"] for run in metrics["runs"]] == ["trained", "diverged"]
    jsonschema = pytest.importorskip("jsonschema")
    from handgrad.train.metrics import load_schema

    jsonschema.validate(metrics, load_schema(), cls=jsonschema.Draft202012Validator)

    task = load_task(f"text:{text}")
    with (out_dir / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["row", "target", "adamw", "sgd"]
    assert len(rows) - 1 == task.y_test.numel()  # one per predicted character
    characters = task.vocabulary
    assert "".join(row[1] for row in rows[1 : 1 + task.context_length]) == "".join(
        characters[int(i)] for i in task.y_test[0])  # fmt: skip
    assert all(row[3] == "" for row in rows[1:])  # the diverged run predicts nothing

    checkpoint = str(out_dir / "checkpoint.pt")
    assert main(["generate", "--checkpoint", checkpoint, "--prompt", "the ",
                 "--length", "5"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("the ")
    assert main(["generate", "--checkpoint", checkpoint, "--prompt", "the ",
                 "--optimizer", "sgd"]) == 2  # fmt: skip
    assert "the sgd run in" in capsys.readouterr().err
