"""handgrad demo: the report folder and what it says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from handgrad.cli import main
from handgrad.demo import run_demo


def test_run_demo_writes_a_report_with_every_part(tmp_path: Path, device: torch.device) -> None:
    report = run_demo(tmp_path / "report", epochs=2, device=device.type)
    assert report.checks_passed
    names = {path.name for path in report.files}
    assert {"report.md", "report.html", "loss_curves.png", "predictions.png",
            "trajectories.png", "quadratic_descent.png"} <= names
    for path in report.files:
        assert path.stat().st_size > 0
    assert (report.out_dir / "metrics.json").is_file()
    text = report.report.read_text(encoding="utf-8")
    assert "all passed" in text
    for optimizer in ("| sgd |", "| rmsprop |", "| adam |"):
        assert optimizer in text
    # Both roots of x^2 - 6x + 4 by descent on f^2 (Gauss-Newton step), to the last digit.
    assert "| gauss-newton | 0.7639320225002103, 5.23606797749979 | TWO_REAL |" in text
    assert "| gd, lr = 0.0125 | 0.76393202249" in text  # a fixed step: 1e-12, not the last bit
    html = (report.out_dir / "report.html").read_text(encoding="utf-8")
    assert html.count("<img ") == 4


def test_demo_cli_prints_where_the_report_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path / "r"), "--epochs", "1"]) == 0
    assert f"report written to {tmp_path / 'r' / 'report.md'}" in capsys.readouterr().out


def test_demo_refuses_a_file_as_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert main(["demo", "--out", str(target)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "epochs must be a positive integer, got 0"),
        pytest.param(
            ["--device", "cuda"],
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available"),
        ),
    ],
)
def test_demo_refuses_bad_settings_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "r"
    assert main(["demo", "--out", str(out), *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert not out.exists()


def test_demo_cli_rejects_an_unknown_device(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--device", "tpu"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
