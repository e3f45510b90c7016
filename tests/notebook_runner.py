"""Executing a notebook of notebooks/ in a fresh kernel, for the tests that keep them from rot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_budgets import execute

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute_notebook(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """Run ``notebooks/NAME`` top to bottom (skipped without the dev extra's nbclient,
    nbformat, ipykernel); its code cells, every one executed. A cell that raises fails the
    test with CellExecutionError naming the cell. (Its run time is measured against its
    budget by ``python -m benchmarks --only budgets``, not here.)"""
    pytest.importorskip("nbclient", reason="nbclient is not installed (pip install .[dev])")
    nbformat = pytest.importorskip(
        "nbformat", reason="nbformat is not installed (pip install .[dev])"
    )
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install .[dev])")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless plots; the kernel inherits it
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    execute(notebook, tmp_path)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    return code_cells
