"""Settings as typed: --opt values, config files, learning-rate schedules, run statuses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from handgrad.train.schedules import make_scheduler, parse_schedule
from handgrad.train.settings import (
    optimizer_options,
    parse_optimizer_setting,
    parse_value,
    read_config,
)
from handgrad.train.status import RunStatus, diverged, judge


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.9", 0.9), ("5", 5), ("1e-3", 1e-3), ("-2", -2), ("true", True), ("False", False),
        ("none", None), ("0.9,0.99", (0.9, 0.99)), ("none,1e-3", (None, 1e-3)),
        ("strong_wolfe", "strong_wolfe"), ("inf", math.inf), ("1,2,3", (1, 2, 3)),
    ],
)
def test_values_as_typed(text: str, value: object) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_settings_and_overrides() -> None:
    assert parse_optimizer_setting("SGD.momentum=0.9") == ("sgd", ("momentum",), 0.9)
    assert parse_optimizer_setting("muon.adamw.lr=3e-3") == ("muon", ("adamw", "lr"), 3e-3)
    options = optimizer_options(
        ["sgd.momentum=0.5", "adam.betas=0.9,0.99", "muon.adamw.lr=0.1"],
        base={"sgd": {"momentum": 0.9, "nesterov": True}, "adam": {"eps": 1e-6}},
    )
    assert options == {"sgd": {"momentum": 0.5, "nesterov": True},
                       "adam": {"eps": 1e-6, "betas": (0.9, 0.99)},
                       "muon": {"adamw": {"lr": 0.1}}}


@pytest.mark.parametrize("text", ["sgd", "sgd.momentum", "momentum=0.9", ".lr=1", "sgd.lr="])
def test_malformed_settings_say_the_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected NAME\.KEY=VALUE, e\.g\. sgd\.momentum=0\.9"):
        parse_optimizer_setting(text)


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'task = "digits"\nbatch-size = 8\nOptimizers = ["sgd", "adam"]\n'
        'model = { name = "mlp", hidden = [32, 16] }\n'
        '[opt.SGD]\nmomentum = 0.9\nnesterov = true\n[opt.adam]\nbetas = [0.9, 0.99]\n'
    )
    assert read_config(path) == {
        "task": "digits", "batch_size": 8, "optimizers": ["sgd", "adam"],
        "model": {"name": "mlp", "hidden": [32, 16]},
        "opt": {"sgd": {"momentum": 0.9, "nesterov": True}, "adam": {"betas": (0.9, 0.99)}},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs = \n", "run.toml: Invalid value"),
        ("[opt]\nsgd = 3\n", "opt.sgd must be a table ([opt.sgd] with KEY = VALUE)"),
        ("epochs = 1\nEpochs = 2\n", "Epochs is given twice"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        read_config(path)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_config(tmp_path / "none.toml")
    with pytest.raises(ValueError, match="is not a file"):
        read_config(tmp_path)


def lrs_per_epoch(schedule: str, epochs: int, lr: float = 1.0) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = make_scheduler(schedule, optimizer, epochs)
    seen = []
    for _ in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return seen


def test_schedules_give_the_rates_of_their_formulas() -> None:
    assert lrs_per_epoch("constant", 3) == [1.0, 1.0, 1.0]
    assert lrs_per_epoch("step:step_size=2,gamma=0.5", 5) == [1, 1, 0.5, 0.5, 0.25]
    assert lrs_per_epoch("exponential:gamma=0.5", 3) == [1, 0.5, 0.25]
    cosine = lrs_per_epoch("cosine", 4)
    assert cosine == pytest.approx([(1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    warm = lrs_per_epoch("warmup:epochs=2,start_factor=0.2", 4)
    assert warm == pytest.approx([0.2, 0.6, 1.0, 1.0])
    both = lrs_per_epoch("warmup:epochs=2,start_factor=0.5+cosine:eta_min=0.1", 6)
    expected_cosine = [0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert both == pytest.approx([0.5, 0.75, *expected_cosine])
    assert str(parse_schedule("warmup:epochs=2+cosine")) == (
        "warmup:epochs=2,start_factor=0.1+cosine:eta_min=0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("linear", "unknown schedule 'linear'; expected one of: constant, cosine, step"),
        ("step", "step needs step_size=N"),
        ("step:size=3", "step has no option 'size'; its options are: step_size, gamma"),
        ("step:step_size=0", "step_size must be a positive integer"),
        ("cosine:eta_min=low", "eta_min='low' is not a number"),
        ("cosine:eta_min=-1", "eta_min must be >= 0, got -1"),
        ("step:step_size=2,gamma=-0.5", "gamma must be > 0, got -0.5"),
        ("exponential:gamma=0", "gamma must be > 0, got 0"),
        ("exponential:gamma=inf", "gamma='inf' is not a finite number"),
        ("cosine+warmup:epochs=1", "only a warmup can come before another part, not cosine"),
        ("", "schedule must be a name like 'cosine'"),
    ],
)
def test_bad_schedules(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        parse_schedule(text)


def test_schedule_errors_torch_finds_and_warmups_too_long() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    with pytest.raises(ValueError, match=r"schedule warmup:epochs=2,start_factor=2:.*"
                                         r"Starting multiplicative factor"):
        make_scheduler("warmup:epochs=2,start_factor=2", optimizer, 5)
    with pytest.raises(ValueError, match="a warmup of 5 epochs leaves none of the 5 epochs"):
        make_scheduler("warmup:epochs=5+cosine", optimizer, 5)


def test_statuses() -> None:
    assert judge(2.0, 1.0).state == "trained"
    assert judge(2.0, 2.0).state == "not learning"
    assert judge(2.0, 3.0).reason() == "not learning (training loss 2 -> 3, not lower)"
    status = diverged(2.0, 4, None, math.nan, "test loss")
    assert status.reason() == "diverged at epoch 4, after its last step (test loss nan)"
    assert status.short() == "diverged e4"
    for case in (judge(2.0, 1.0), status, diverged(None, 1, 3, -math.inf)):
        again = RunStatus.from_dict(case.as_dict())
        assert again.state == case.state
        assert again.reason() == case.reason()
    with pytest.raises(ValueError, match="unknown run status 'done'"):
        RunStatus.from_dict({"state": "done"})
