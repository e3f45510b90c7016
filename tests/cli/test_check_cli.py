"""``handgrad check``: prints the table; exit 0 when all pass, 1 on a failure, 2 on bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from handgrad.cli import main
from handgrad.nn import functional


def test_check_prints_the_table_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--dtype", "float32", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "module", "forward", "input", "grad", "param", "grads", "finite", "diff", "result"
    ]  # fmt: skip
    assert "deep net, depth 6" in out
    assert "FAIL" not in out
    assert "checks on cpu, float32, seed 2: all passed" in out


def test_check_exits_one_when_a_check_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def forgets_the_slope(grad_out: torch.Tensor, ctx: tuple) -> torch.Tensor:
        x, _ = ctx
        return torch.where(x > 0, grad_out, 0.0)

    monkeypatch.setattr(functional, "leaky_relu_backward", forgets_the_slope)
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert [line.split("  ")[0] for line in failing] == [
        "LeakyReLU(0.1)",
        "deep net, depth 6: ReLU/Tanh/Sigmoid/GELU/LeakyReLU",
    ]
    assert "2 FAILED" in out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_check_on_cuda_prints_the_table_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every module's hand-written backward against autograd on the GPU, in float64
    (dropout in training mode is compared on the CPU only)."""
    assert main(["check", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "checks on cuda" in out
    assert "all passed" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-CUDA message")
def test_check_on_missing_cuda_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "handgrad check: error: run_checks: device 'cuda' requested but CUDA is not available"
    )


def test_check_rejects_unknown_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--dtype", "float16"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_check_is_listed_in_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "handgrad", "check", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "--device {cpu,cuda}" in done.stdout
    assert "--dtype {float32,float64}" in done.stdout
