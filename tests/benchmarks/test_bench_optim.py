"""bench_optim's choice of rows: Muon's 1M row is left out where bfloat16 is emulated."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import bench_optim


@pytest.fixture
def rows(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The (optimizer, layout) rows main() asks for, without timing anything."""
    asked: list[tuple[str, str]] = []

    def fake_time(name: str, layout: str, rounds: int, calls: int) -> Any:
        asked.append((name, layout))
        return bench_optim.Timing(name, layout, 1.0, 1.0, None, 1.0, None)

    monkeypatch.setattr(bench_optim, "time_optimizer", fake_time)
    monkeypatch.setattr(bench_optim, "_format", lambda timings: "")
    return asked


@pytest.mark.parametrize(("slowdown", "runs_large"), [(100.0, False), (1.5, True)])
def test_muon_large_row_follows_bfloat16_speed(
    monkeypatch: pytest.MonkeyPatch, rows: list[tuple[str, str]], slowdown: float,
    runs_large: bool, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(bench_optim, "bfloat16_matmul_slowdown", lambda: slowdown)
    assert bench_optim.main(["--quick", "--only", "Muon,Adam"]) == 0
    assert (("Muon", "large") in rows) is runs_large
    assert ("Adam", "large") in rows
    assert ("Muon", "matrices") in rows
    assert ("is not run on 4 params of 1M" in capsys.readouterr().out) is not runs_large


def test_muon_large_row_runs_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, rows: list[tuple[str, str]]
) -> None:
    monkeypatch.setattr(bench_optim, "bfloat16_matmul_slowdown", lambda: 100.0)
    assert bench_optim.main(["--quick", "--only", "Muon", "--layouts", "large"]) == 0
    assert rows == [("Muon", "large")]
