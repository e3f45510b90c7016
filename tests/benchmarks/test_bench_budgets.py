"""benchmarks/bench_budgets.py reports wall time against the budgets, fails only on a functional
failure, and its quick run works."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_budgets
from benchmarks.bench_budgets import Workload


def rows(output: str) -> dict[str, list[str]]:
    """The table's rows by workload: the cells after the name."""
    cells = [line.strip("|").split(" | ") for line in output.splitlines() if line.startswith("| ")]
    return {row[0].strip(): [cell.strip() for cell in row[1:]] for row in cells[1:]}


def test_every_budget_of_the_issues_is_measured() -> None:
    budgets = {name: w.budget for name, w in bench_budgets.WORKLOADS.items()}
    assert budgets == {"walkthrough": 90, "attention": 90, "convolutions": 60, "cnn": 60,
                       "cubic": 30}  # fmt: skip
    for name in ("walkthrough", "attention", "convolutions"):
        assert (bench_budgets.NOTEBOOKS / f"{name}.ipynb").is_file()


def test_quick_run_trains_and_prints_a_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_budgets.main(["--quick", "--workloads", "cubic"]) == 0
    out = capsys.readouterr().out
    (budget, seconds, within, result) = rows(out)["cubic"][1:]
    assert (budget, within) == ("—", "—")  # no budget applies to a shortened run
    assert float(seconds) > 0
    assert result.startswith("test MSE ")
    assert "Over budget" not in out
    assert "Failed" not in out


def test_quick_run_executes_a_notebook_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("nbclient", reason="nbclient is not installed (pip install .[dev])")
    nbformat = pytest.importorskip(
        "nbformat", reason="nbformat is not installed (pip install .[dev])"
    )
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install .[dev])")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # restored after the test; the runner sets it
    cells = [nbformat.v4.new_markdown_cell("# two cells"), nbformat.v4.new_code_cell("x = 1"),
             nbformat.v4.new_code_cell("1 / 0")]  # fmt: skip
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "two.ipynb")
    monkeypatch.setattr(bench_budgets, "NOTEBOOKS", tmp_path)
    two = Workload("walkthrough", "two cells", 90, bench_budgets.notebook("two.ipynb"))
    monkeypatch.setitem(bench_budgets.WORKLOADS, "walkthrough", two)
    # --quick runs the first cell only; the second, which raises, is what a full run meets.
    assert bench_budgets.main(["--quick", "--workloads", "walkthrough"]) == 0
    assert rows(capsys.readouterr().out)["walkthrough"][-1] == "1 code cell ran"
    assert bench_budgets.main(["--workloads", "walkthrough"]) == 1
    out = capsys.readouterr().out
    (_, budget, _, within, result) = rows(out)["walkthrough"]
    assert (budget, within) == ("90", "—")
    assert result.startswith("failed: CellExecutionError")
    assert "**Failed: walkthrough.**" in out


def fake(name: str, budget: float, met: bool) -> Workload:
    return Workload(name, f"a fake {name}", budget, lambda workdir, quick: (met, f"{name} done"))


def test_over_budget_is_reported_and_only_a_functional_failure_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_budgets, "WORKLOADS", {
        "slow": fake("slow", 0.0, met=True), "fine": fake("fine", 1e9, met=True)})  # fmt: skip
    assert bench_budgets.main([]) == 0  # over budget is reported, not a failure
    out = capsys.readouterr().out
    table = rows(out)
    assert table["slow"][3:] == ["**no**", "slow done"]
    assert table["fine"][3:] == ["yes", "fine done"]
    assert "Over budget: slow (" in out
    assert "against 0 s)." in out

    monkeypatch.setitem(bench_budgets.WORKLOADS, "short", fake("short", 1e9, met=False))
    assert bench_budgets.main(["--workloads", "fine,short"]) == 1
    out = capsys.readouterr().out
    assert rows(out)["short"][3:] == ["—", "short done"]
    assert "Over budget: none." in out
    assert "**Failed: short.**" in out


def test_a_training_that_exits_non_zero_is_a_failure_naming_its_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"exited with 2: .* unknown task 'nonsense'"):
        bench_budgets.train(["--task", "nonsense"], tmp_path)


def test_unknown_workloads_are_refused() -> None:
    with pytest.raises(SystemExit):
        bench_budgets.main(["--workloads", "cubic,notebook"])
