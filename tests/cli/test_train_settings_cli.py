"""``handgrad train``'s settings from the command line: models, optimizer arguments,
schedules and config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from handgrad.cli import main

QUICK = ["--epochs", "2", "--batch-size", "64"]


def train(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["train", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_model_spec_builds_that_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, _ = train(capsys, "--optimizers", "adam", *QUICK, "--out", str(tmp_path),
                         "--model", "mlp:hidden=16x8,activation=sigmoid,dropout=0.1")
    assert status == 0
    from handgrad.train import checkpoint as ckpt

    saved = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["settings"]["model"] == "mlp:activation=sigmoid,dropout=0.1,hidden=16x8"
    shapes = [tuple(t.shape) for t in saved["runs"][0]["model"].values()]
    assert shapes == [(16, 1), (16,), (8, 16), (8,), (1, 8), (1,)]


def test_resuming_with_another_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(capsys, "--optimizers", "adam", *QUICK, "--out", str(tmp_path),
                 "--model", "mlp:hidden=8")[0] == 0
    status, _, err = train(capsys, "--optimizers", "adam", *QUICK, "--out", str(tmp_path),
                           "--model", "mlp:hidden=9", "--resume")
    assert status == 2
    assert "model='mlp:activation=relu,dropout=0,hidden=8' there" in err


def test_unknown_model_option_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = train(capsys, "--model", "mlp:width=3", "--out", str(tmp_path))
    assert status == 2
    assert out == ""
    assert err == ("handgrad train: error: model mlp has no option 'width'; its options are: "
                   "activation, dropout, hidden\n")
    assert not (tmp_path / "metrics.json").exists()
