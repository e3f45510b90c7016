"""``handgrad train --sweep-lr``: each optimizer's rate chosen by a sweep before the
comparison, said in the table and in metrics.json, and kept (not re-swept) on --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handgrad.cli import main
from handgrad.train import checkpoint as ckpt
from handgrad.train.lr_sweep import SWEEP_FACTORS
from handgrad.train.metrics import load_schema

TINY = ["--task", "cubic", "--epochs", "1", "--batch-size", "64", "--quiet"]


def train(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["train", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_sweep_lr_trains_at_the_chosen_rates_says_how_and_resumes_without_sweeping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*TINY, "--optimizers", "sgd,lion,adam", "--opt", "adam.lr=0.01", "--sweep-lr",
            "--out", str(tmp_path)]
    status, out, _ = train(capsys, *args)
    assert status == 0
    lines = out.splitlines()
    assert [line.split()[:3:2] for line in lines[2:5]] == [["sgd", "swept"], ["lion", "swept"],
                                                           ["adam", "--opt"]]
    assert lines[5] == "learning rates chosen by --sweep-lr:"
    assert lines[6].startswith("  sgd: lr ")
    assert lines[7].startswith("  lion: lr ")

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(metrics, load_schema(), cls=jsonschema.Draft202012Validator)
    config = metrics["config"]
    sweeps = config["lr_sweep"]
    assert [sweep["optimizer"] for sweep in sweeps] == ["sgd", "lion"]
    for sweep, entry, line in zip(sweeps, config["optimizers"], lines[6:8], strict=False):
        assert entry["lr_source"] == "swept"
        assert len(sweep["candidates"]) == len(SWEEP_FACTORS)
        scored = [(c["validation_loss"], c["lr"]) for c in sweep["candidates"]
                  if c["validation_loss"] is not None]
        assert sweep["chosen"] == min(scored)[1] == entry["lr"]  # trained at the chosen rate
        assert (sweep["epochs"], sweep["seed"]) == (1, 0)
        assert f"lr {sweep['chosen']:.3g}, the lowest validation loss" in line
    assert (config["optimizers"][2]["lr"], config["optimizers"][2]["lr_source"]) == (0.01, "option")
    saved = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["settings"]
    assert saved["lr_sweep"] == sweeps

    # --resume takes the checkpoint's sweep: nothing is swept again, the rates are the same.
    status, out, err = train(capsys, *[a for a in args if a != "--quiet"], "--resume")
    assert status == 0
    assert "train cubic: epoch" not in err  # the one epoch is done (the progress said nothing)
    assert "sweeping" not in err
    assert json.loads((tmp_path / "metrics.json").read_text())["config"] == config
    # ... and without --sweep-lr it is another run's checkpoint.
    status, _, err = train(capsys, *[a for a in args if a != "--sweep-lr"], "--resume")
    assert status == 2
    assert "learning rates swept for ['sgd', 'lion'] there, [] here" in err


def test_sweep_lr_from_the_config_file_and_progress_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text('sweep-lr = true\noptimizers = ["sgd"]\n')
    status, out, err = train(capsys, "--config", str(config), "--task", "cubic", "--epochs", "1",
                             "--out", str(tmp_path / "out"))
    assert status == 0
    assert "handgrad train: sweeping the learning rate of sgd ...\nhandgrad train: sgd: lr " in err
    assert out.splitlines()[2].split()[2] == "swept"


def test_sweep_lr_resume_of_a_run_that_did_not_sweep_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(capsys, *TINY, "--optimizers", "sgd", "--out", str(tmp_path))[0] == 0
    status, _, err = train(capsys, *TINY, "--optimizers", "sgd", "--out", str(tmp_path),
                           "--sweep-lr", "--resume")
    assert status == 2
    assert err.count("\n") == 1
    assert "did not sweep its learning rates; resume it without --sweep-lr" in err


def test_sweep_lr_with_every_rate_given_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = train(capsys, *TINY, "--optimizers", "sgd", "--opt", "sgd.lr=0.1",
                           "--sweep-lr", "--out", str(tmp_path))
    assert status == 2
    assert "every optimizer's learning rate is given by --opt NAME.lr" in err


def test_backend_torch_refuses_an_optimizer_torch_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = train(capsys, *TINY, "--optimizers", "adam,prodigy", "--backend", "torch",
                           "--out", str(tmp_path))
    assert status == 2
    assert err.count("\n") == 1
    assert "'prodigy' (Prodigy) has no torch.optim counterpart" in err
