"""The package's public face: version, entry points, typing marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import handgrad
from handgrad.cli import main


def test_version_is_a_release_string() -> None:
    parts = handgrad.__version__.split(".")
    assert len(parts) == 3
    assert all(part.isdigit() for part in parts)


def test_py_typed_marker_ships() -> None:
    assert (Path(handgrad.__file__).parent / "py.typed").is_file()


def test_main_without_command_prints_help_and_fails(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([]) == 2
    assert "usage: handgrad" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "handgrad", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"handgrad {handgrad.__version__}"


def test_a_closed_pipe_is_not_a_traceback() -> None:
    done = subprocess.run(
        f"{sys.executable} -m handgrad check | head -1",
        shell=True, capture_output=True, text=True, check=False,
    )
    assert done.stdout.startswith("module")
    assert "Traceback" not in done.stderr


def test_check_exports_its_result_types() -> None:
    from handgrad import check

    for name in check.__all__:
        assert getattr(check, name) is not None
