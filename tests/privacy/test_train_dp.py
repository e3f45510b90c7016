"""``handgrad train --dp``: DP-SGD runs of the optimizer comparison, ε beside the accuracy,
exact resume, and the errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import handgrad.nn as hn
from handgrad.cli import main
from handgrad.optim import SGD
from handgrad.privacy import DPOptimizer
from handgrad.privacy.training import DPSettings, PoissonSchedule, epsilon_spent
from handgrad.train.compare import TrainConfig, compare_optimizers
from handgrad.train.models import build_model, resolve_model
from handgrad.train.tasks import load_task
from handgrad.train.trainer import EpochRecord, train_step

pytest.importorskip("opacus", reason="ε comes from Opacus's accountant")

DP = "max_grad_norm=1.0,noise_multiplier=1.1"


def train(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["train", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_digits_reports_epsilon_in_table_and_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--task", "digits", "--optimizers", "sgd,adam", "--epochs", "2", "--batch-size", "64"]
    status, out, _ = train(capsys, *args, "--dp", DP, "--out", str(tmp_path))
    assert status == 0
    header = out.splitlines()[0].split()
    assert header[header.index("accuracy") + 1] == "ε"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    task = load_task("digits", seed=0)
    schedule = PoissonSchedule(len(task.x_train), 64)
    expected = epsilon_spent(DPSettings(1.0, 1.1), schedule, 2)
    assert metrics["privacy"]["epsilon"] == pytest.approx(expected, rel=1e-12)
    assert metrics["privacy"]["steps"] == 2 * schedule.steps_per_epoch
    assert metrics["privacy"]["sample_rate"] == schedule.sample_rate
    assert [run["epsilon"] for run in metrics["runs"]] == [metrics["privacy"]["epsilon"]] * 2
    assert f"{expected:.3g}" in out
    assert all(0 <= run["test_accuracy"] <= 1 for run in metrics["runs"])


def test_dp_metrics_follow_the_schema_with_config_file_and_opt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dp beside the experiment settings: given as a [dp] table of a --config file, with
    --opt, a schedule and a model; every run has a status, metrics.json validates against
    the shipped schema and records the DP settings in config and privacy."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (.[dev])")
    from handgrad.train.metrics import load_schema

    (tmp_path / "run.toml").write_text(
        'task = "digits"\noptimizers = ["sgd", "momentum"]\nepochs = 2\nbatch-size = 128\n'
        'model = "mlp:hidden=16,activation=sigmoid"\nschedule = "cosine"\n'
        "[dp]\nmax_grad_norm = 1.0\nnoise_multiplier = 0.8\ndelta = 1e-4\n"
    )
    out_dir = tmp_path / "out"
    status, out, _ = train(capsys, "--config", str(tmp_path / "run.toml"),
                           "--opt", "sgd.momentum=0.5", "--out", str(out_dir))  # fmt: skip
    metrics = json.loads((out_dir / "metrics.json").read_text())
    jsonschema.validate(metrics, load_schema(), cls=jsonschema.Draft202012Validator)
    assert status == 0
    assert metrics["config"]["dp"] == {"max_grad_norm": 1.0, "noise_multiplier": 0.8,
                                       "delta": 1e-4}
    assert metrics["privacy"]["delta"] == 1e-4
    assert metrics["privacy"]["epsilon"] > 0
    assert metrics["config"]["optimizers"][0]["arguments"]["momentum"] == 0.5
    assert metrics["config"]["schedule"].startswith("cosine")
    assert [run["status"] for run in metrics["runs"]] == ["trained", "trained"]
    assert "ε" in out.splitlines()[0]
    assert "status" in out.splitlines()[0]
    # Without noise ε is infinite: null in the file, still valid.
    status, _, _ = train(capsys, "--task", "cubic", "--optimizers", "adam", "--epochs", "1",
                         "--batch-size", "64", "--dp", "max_grad_norm=1,noise_multiplier=0",
                         "--out", str(tmp_path / "free"))  # fmt: skip
    metrics = json.loads((tmp_path / "free" / "metrics.json").read_text())
    jsonschema.validate(metrics, load_schema(), cls=jsonschema.Draft202012Validator)
    assert metrics["privacy"]["epsilon"] is None
    assert metrics["runs"][0]["epsilon"] is None
    assert metrics["config"]["dp"]["noise_multiplier"] == 0


def test_dp_run_is_dp_sgd_on_poisson_batches() -> None:
    """compare_optimizers with dp equals the hand-written DP-SGD loop: the same Poisson
    batches, DPOptimizer(SGD) and noise from the forked global RNG."""
    task = load_task("digits", seed=0)
    settings = DPSettings(0.5, 0.0)  # no noise: the RNG of the dropout-free MLP is unused
    config = TrainConfig(epochs=2, batch_size=128, lr=0.1, dp=settings, threads=None)
    result = compare_optimizers(task, "sgd", config)
    schedule = PoissonSchedule(len(task.x_train), 128)
    model = result.runs[0].model
    # The same initial network, trained by hand.
    net = build_model(resolve_model("mlp", task), task, 0, "handgrad").to(task.x_train.dtype)
    optimizer = DPOptimizer(SGD(net.parameters(), lr=0.1), 0.0, 0.5,
                            schedule.expected_batch_size)  # fmt: skip
    loss_fn = task.make_loss("handgrad")
    for epoch in (1, 2):
        for batch in schedule.batches(0, epoch):
            optimizer.zero_grad()
            loss_fn(net(task.x_train[batch]), task.y_train[batch])
            net.backward(loss_fn.backward(), input_grad=False, per_sample="factored")
            optimizer.step()
    for got, expected in zip(model.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert result.privacy is not None
    assert result.privacy["epsilon"] == math.inf
    assert result.metrics()["privacy"]["epsilon"] is None  # JSON has no infinity


class Interrupted(Exception):
    pass


def test_resume_ends_where_an_uninterrupted_run_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stopped after epoch 1 and resumed: the same figures and weights as an uninterrupted
    run (the Poisson batches of an epoch and the noise RNG are restored)."""
    config = TrainConfig(epochs=2, batch_size=128, dp=DPSettings(1.0, 1.1))
    whole = compare_optimizers("digits", "adam", config)

    def stop_after_first(optimizer: str, record: EpochRecord) -> None:
        if record.epoch == 2:  # epoch 1 is in the checkpoint by then
            raise Interrupted

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        compare_optimizers("digits", "adam", config, checkpoint=checkpoint,
                           on_epoch=stop_after_first)  # fmt: skip
    resumed = compare_optimizers("digits", "adam", config, checkpoint=checkpoint, resume=True)
    assert resumed.metrics()["runs"][0]["history"] == whole.metrics()["runs"][0]["history"]
    assert resumed.privacy == whole.privacy
    for a, b in zip(resumed.runs[0].model.parameters(), whole.runs[0].model.parameters(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    status, _, err = train(capsys, "--task", "digits", "--optimizers", "adam", "--epochs", "2",
                           "--batch-size", "128", "--out", str(tmp_path), "--resume")  # fmt: skip
    assert status == 2
    assert "dp=" in err  # a DP checkpoint is not resumed without --dp


def test_an_empty_poisson_batch_is_a_step_of_noise_alone() -> None:
    model = hn.Sequential(hn.Linear(3, 2))
    before = [p.clone() for p in model.parameters()]
    optimizer = DPOptimizer(SGD(model.parameters(), lr=1.0), 1.0, 1.0, 4)
    loss = train_step(model, hn.CrossEntropyLoss(), optimizer, torch.zeros(0, 3),
                      torch.zeros(0, dtype=torch.long))  # fmt: skip
    assert loss == 0.0
    for param, old in zip(model.parameters(), before, strict=True):
        assert not torch.equal(param, old)  # moved by the noise


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dp", "max_grad_norm=0,noise_multiplier=1"], "max_grad_norm must be a number > 0"),
        (["--dp", "noise_multiplier=1"], "give max_grad_norm"),
        (["--dp", "max_grad_norm=1,noise_multiplier=-2"], "noise_multiplier must be"),
        (["--dp", DP, "--backend", "torch"], "--dp needs --backend handgrad"),
        (["--dp", DP, "--optimizers", "sgd,lbfgs"], "lbfgs evaluates several"),
    ],
)
def test_dp_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = train(capsys, *args, "--out", str(tmp_path))
    assert status == 2
    assert message in err
    assert err.count("\n") == 1
    assert out == ""


def test_text_task_trains_a_gpt_with_dp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dp on the text task's GPT: per-sample gradients of embeddings, LayerNorm, attention
    and the tied head (handgrad.nn.gpt); ε beside the validation loss."""
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    args = ["--task", f"text:{text}", "--model", "gpt:d_model=8,n_layer=1,n_head=2",
            "--epochs", "1", "--dp", DP, "--out", str(tmp_path / "run")]  # fmt: skip
    status, out, _ = train(capsys, *args)
    assert status == 0, out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["privacy"]["epsilon"] > 0
    assert math.isfinite(metrics["runs"][0]["test_loss"])
