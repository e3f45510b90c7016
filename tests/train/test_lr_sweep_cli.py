"""``handgrad train --sweep-lr`` on a text task with the gpt model, in one process and under
torchrun (two gloo ranks on the CPU): the same grid, validation losses, chosen rate and final
result either way, and rank 0 alone reports the sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handgrad.cli import main
from handgrad.train import distributed

TINY_GPT = "gpt:n_layer=1,n_head=2,d_model=8"


def _arguments(tmp_path: Path, out: Path) -> list[str]:
    text = tmp_path / "poem.txt"
    text.write_text("the cat sat on the mat; the dog sat on the log.\n" * 40, encoding="utf-8")
    return ["train", "--task", f"text:{text}", "--model", TINY_GPT, "--epochs", "1",
            "--sweep-lr", "--out", str(out)]  # fmt: skip


def _sweep(out: Path) -> tuple[list[Any], list[Any]]:
    metrics = json.loads((out / "metrics.json").read_text())
    runs = [(run["optimizer"], run["lr"], run["test_loss"]) for run in metrics["runs"]]
    return metrics["config"]["lr_sweep"], runs


def test_sweep_lr_on_text_with_gpt_in_one_process_and_under_torchrun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one"
    assert main(_arguments(tmp_path, one)) == 0
    out = capsys.readouterr().out
    assert "learning rates chosen by --sweep-lr:" in out
    assert "adamw: lr " in out  # the text task's default optimizer, swept
    sweep, runs = _sweep(one)
    (adamw,) = sweep
    assert adamw["optimizer"] == "adamw"
    assert len(adamw["candidates"]) == 5
    assert adamw["chosen"] in [c["lr"] for c in adamw["candidates"]]
    assert runs[0][1] == adamw["chosen"]  # the comparison trained at the chosen rate

    two = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", str(distributed.free_port()), "-m", "handgrad",
               *_arguments(tmp_path, two), "--dist-timeout", "30"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("learning rates chosen by --sweep-lr:") == 1  # rank 0 alone
    two_sweep, two_runs = _sweep(two)
    assert two_sweep[0]["chosen"] == adamw["chosen"]
    for a, b in zip(two_sweep[0]["candidates"], adamw["candidates"], strict=True):
        assert a["lr"] == b["lr"]
        assert a["validation_loss"] == pytest.approx(b["validation_loss"], rel=1e-4)
    assert two_runs[0][:2] == runs[0][:2]
    assert two_runs[0][2] == pytest.approx(runs[0][2], rel=1e-4)
