"""Trajectories of the optimizers beyond torch.optim: each one's default rate on each function,
the schedule-free pair drawn at their averaged point, and the command line taking them."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from handgrad.cli import main
from handgrad.landscapes.functions2d import FUNCTIONS
from handgrad.landscapes.trajectories import default_lr, run_trajectory
from handgrad.optim import BEYOND_TORCH, SGDScheduleFree

NAMES = sorted(name.lower() for name in BEYOND_TORCH)


@pytest.mark.parametrize("function", ["rosenbrock", "beale", "himmelblau"])
@pytest.mark.parametrize("name", NAMES)
def test_each_default_rate_draws_a_finite_path_downhill(name: str, function: str) -> None:
    f = FUNCTIONS[function]
    path = run_trajectory(f, name, steps=300)  # the functions' own counts: up to 2000
    assert path.diverged_at is None
    assert bool(torch.isfinite(path.points).all())
    assert path.final_value < 0.5 * float(path.values[0]), (name, path.final_value)


def test_prodigy_takes_lr_1_and_sgd_schedule_free_the_sgd_rate() -> None:
    f = FUNCTIONS["rosenbrock"]
    assert default_lr(f, "prodigy") == 1.0
    assert default_lr(f, "sgdschedulefree") == f.learning_rates["sgd"]
    assert default_lr(f, "lion") == f.learning_rates["adaptive"]


def test_a_schedule_free_path_is_its_averaged_point() -> None:
    """The path is x (what eval() puts in the parameter), not y where gradients are taken:
    the same run by hand, switching only at the end, ends at the same point (to the rounding
    of the switches made at every step of the drawn run)."""
    f = FUNCTIONS["himmelblau"]
    path = run_trajectory(f, "sgdschedulefree", steps=50, lr=0.01)
    p = torch.tensor(f.start, dtype=torch.float64)
    optimizer = SGDScheduleFree([p], lr=0.01)
    optimizer.train()
    for _ in range(50):
        p.grad = torch.stack(f.gradient(p[0], p[1]))
        optimizer.step()
    y = p.clone()
    optimizer.eval()
    torch.testing.assert_close(path.points[-1], p, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(path.points[-1], y, rtol=1e-6, atol=0.0)


def test_the_command_line_draws_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "paths.png"
    status = main(["trajectories", "--function", "himmelblau", "--optimizers",
                   ",".join(NAMES), "--steps", "200", "--out", str(out)])  # fmt: skip
    assert status == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    stdout = capsys.readouterr().out
    for name in NAMES:
        row = next(line for line in stdout.splitlines() if line.startswith(name + " "))
        value = float(re.split(r"\s{2,}", row.strip())[4])
        assert math.isfinite(value)
        assert value < 182.0  # f at the start
