"""``handgrad train``'s settings from the command line: models, optimizer arguments,
schedules and config files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text())


def test_optimizer_arguments_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, _ = train(capsys, "--optimizers", "sgd,adam,momentum", *QUICK, "--quiet",
                         "--opt", "sgd.momentum=0.9", "--opt", "sgd.nesterov=true",
                         "--opt", "adam.betas=0.9,0.99", "--opt", "momentum.dampening=0.1",
                         "--out", str(tmp_path))
    assert status == 0
    sgd, adam, momentum = metrics(tmp_path)["config"]["optimizers"]
    assert (sgd["arguments"]["momentum"], sgd["arguments"]["nesterov"]) == (0.9, True)
    assert adam["arguments"]["betas"] == [0.9, 0.99]
    assert (momentum["arguments"]["momentum"], momentum["arguments"]["dampening"]) == (0.9, 0.1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--opt", "sgd.momentm=0.9"], "sgd.momentm: SGD has no argument 'momentm'"),
        (["--opt", "sgd.momentum=-1"], "Invalid momentum value: -1"),
        (["--opt", "adam.betas=0.9"], "adam.betas=0.9: expected 2 comma-separated values"),
        (["--opt", "rmsprop.lr=0.1"], "settings given for rmsprop, which is not among the "
                                      "optimizers trained (sgd, adam)"),
        (["--opt", "sgd=0.1"], "expected NAME.KEY=VALUE"),
        (["--schedule", "linear"], "unknown schedule 'linear'"),
        (["--schedule", "warmup:epochs=2+cosine"], "a warmup of 2 epochs leaves none"),
    ],
)
def test_bad_settings_are_one_line_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = train(capsys, "--optimizers", "sgd,adam", *QUICK, *args,
                             "--out", str(tmp_path / "run"))
    assert (status, out) == (2, "")
    assert err.startswith("handgrad train: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_every_setting_from_a_config_file_and_the_command_line_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f'optimizers = ["sgd", "adam"]\nepochs = 3\nbatch-size = 32\nseed = 4\n'
        f'schedule = "cosine"\nmodel = "mlp:hidden=8,activation=tanh"\nquiet = true\n'
        f'out = "{tmp_path / "from-file"}"\n'
        '[opt.sgd]\nmomentum = 0.9\nlr = 0.01\n[opt.adam]\nbetas = [0.8, 0.9]\n'
    )
    status, _, err = train(capsys, "--config", str(config), "--epochs", "2",
                           "--opt", "sgd.momentum=0.5", "--out", str(tmp_path / "cli"))
    assert status == 0
    assert err == ""  # quiet = true in the file
    document = metrics(tmp_path / "cli")["config"]
    assert (document["epochs"], document["batch_size"], document["seed"]) == (2, 32, 4)
    assert document["schedule"] == "cosine:eta_min=0"
    assert document["model"]["spec"] == "mlp:activation=tanh,dropout=0,hidden=8"
    sgd, adam = document["optimizers"]
    assert (sgd["lr"], sgd["arguments"]["momentum"]) == (0.01, 0.5)
    assert adam["arguments"]["betas"] == [0.8, 0.9]
    assert not (tmp_path / "from-file").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epoch = 3\n", "unknown key 'epoch'; the keys are: backend, batch-size,"),
        ("epochs = \"3\"\n", "epochs = '3': expected an integer"),
        ("lr = true\n", "lr = True: expected a number"),
        ("device = \"tpu\"\n", "device = 'tpu': expected one of cpu, cuda"),
        ("quiet = 1\n", "quiet = 1: expected true or false"),
        ("config = \"other.toml\"\n", "unknown key 'config'"),
        ("[dp]\nmax_grad_norm = true\n", "dp.max_grad_norm = True: expected a number"),
        ("dp = 3\n", "dp = 3: expected a string"),
    ],
)
def test_bad_config_keys_and_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(text)
    status, _, err = train(capsys, "--config", str(config), "--out", str(tmp_path / "o"))
    assert status == 2
    assert f"handgrad train: error: config {config}: {message}" in err
    assert err.count("\n") == 1


def test_one_progress_line_per_epoch_off_a_terminal_and_none_when_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = train(capsys, "--optimizers", "sgd,adam", "--epochs", "3", "--out",
                           str(tmp_path / "a"))
    assert status == 0
    lines = err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["epoch 1/3", "epoch 2/3",
                                                               "epoch 3/3"]
    assert all(line.startswith("train cubic: epoch ") and " | adam train " in line
               for line in lines)
    assert "\r" not in err
    status, _, err = train(capsys, "--optimizers", "sgd", "--epochs", "2", "--quiet", "--out",
                           str(tmp_path / "b"))
    assert (status, err) == (0, "")
