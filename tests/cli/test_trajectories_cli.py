"""``handgrad trajectories``: the PNG, the table, and one-line errors."""

from __future__ import annotations

import errno
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
import torch

import handgrad.optim
from handgrad.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _torch_optim_where_handgrad_has_none_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the handgrad class; its torch.optim namesake only while that one is unwritten."""
    handgrad_class = handgrad.optim.optimizer_class

    def lookup(name: str) -> type[Any]:
        try:
            return handgrad_class(name)
        except ImportError:
            cls: type[Any] = {n.lower(): getattr(torch.optim, n) for n in dir(torch.optim)}[name]
            return cls

    monkeypatch.setattr(handgrad.optim, "optimizer_class", lookup)


def _table(stdout: str) -> dict[str, list[str]]:
    """Rows of the printed table by optimizer name, split on runs of two or more spaces."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    rows = {}
    for line in lines[header + 2 :]:  # below the rule
        if line.startswith("wrote "):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def test_writes_a_valid_png_and_adam_ends_near_rosenbrocks_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rosen.png"
    status = main(["trajectories", "--function", "rosenbrock", "--optimizers", "adam",
                   "--out", str(out)])  # fmt: skip
    assert status == 0
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert image.shape[0] > 500
    assert image.shape[1] > 500

    stdout = capsys.readouterr().out
    rows = _table(stdout)
    assert set(rows) == {"adam"}
    # optimizer, lr, steps, final point, final value, distance to minimum
    assert rows["adam"][1:3] == ["0.03", "2000"]
    assert float(rows["adam"][5]) < 1e-2
    assert stdout.rstrip().endswith(f"wrote {out}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rosen.png"]


def test_steps_and_lr_apply_to_every_optimizer_and_saddle_has_no_distance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "saddle.png"
    status = main(["trajectories", "--function", "saddle", "--optimizers", "SGD, momentum",
                   "--steps", "25", "--lr", "0.01", "--out", str(out)])  # fmt: skip
    assert status == 0
    rows = _table(capsys.readouterr().out)
    assert set(rows) == {"sgd", "momentum"}
    for cells in rows.values():
        assert cells[1:3] == ["0.01", "25"]
        assert cells[5] == "-"
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_default_output_name_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        main(["trajectories", "--function", "beale", "--optimizers", "adam", "--steps", "5"]) == 0
    )
    assert (tmp_path / "trajectories-beale.png").read_bytes().startswith(PNG_SIGNATURE)


def test_divergence_is_reported_in_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["trajectories", "--optimizers", "sgd", "--lr", "0.1",
                   "--out", str(tmp_path / "d.png")])  # fmt: skip
    assert status == 0
    row = _table(capsys.readouterr().out)["sgd"]
    assert re.search(r"\(diverged at step \d+\)$", row[4])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--function", "booth"], "unknown function 'booth'; expected one of: beale, himmelblau"),
        (["--optimizers", "sgd,adma"], "unknown optimizer 'adma'"),
        (["--optimizers", "lbfgs"], "optimizer 'lbfgs' cannot draw a trajectory"),
        (["--optimizers", " , "], "--optimizers must name at least one optimizer"),
        (["--steps", "0"], "--steps must be a positive integer, got 0"),
        (["--lr", "-1"], "--lr must be a positive finite number, got -1.0"),
        (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
        (["--out", "picture.jpg"], "--out must name a .png file, got 'picture.jpg'"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "never.png")]
    assert main(["trajectories", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("handgrad trajectories: error: ")
    assert message in lines[0]
    assert not (tmp_path / "never.png").exists()


def test_a_failed_write_leaves_the_old_png_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keep.png"
    out.write_bytes(b"old picture")

    def failing_replace(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # The last moment of the write: the new PNG is complete in its temporary file.
    monkeypatch.setattr(os, "replace", failing_replace)
    status = main(["trajectories", "--optimizers", "adam", "--steps", "3", "--out", str(out)])
    assert status == 74
    assert capsys.readouterr().err == (
        f"handgrad trajectories: error: cannot write {out}: No space left on device\n"
    )
    assert out.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_out_naming_a_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "picture.png"
    out.mkdir()
    status = main(["trajectories", "--optimizers", "adam", "--steps", "3", "--out", str(out)])
    assert status == 74
    err = capsys.readouterr().err
    assert err.startswith(f"handgrad trajectories: error: cannot write {out}: ")
    assert err.count("\n") == 1
    assert out.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.png"]


def test_missing_matplotlib_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "handgrad.plots.trajectories", raising=False)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    out = tmp_path / "never.png"
    assert main(["trajectories", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "install it with: pip install 'handgrad[all]'" in err
    assert not out.exists()


def test_help_lists_the_functions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["trajectories", "--help"])
    assert exit_info.value.code == 0
    assert "beale, himmelblau, rosenbrock, saddle" in capsys.readouterr().out
