"""The walkthrough notebook runs from top to bottom without an error, so it can never rot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_notebook_executes_without_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip(
        "nbclient", reason="nbclient is not installed (pip install .[dev])"
    )
    nbformat = pytest.importorskip(
        "nbformat", reason="nbformat is not installed (pip install .[dev])"
    )
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install .[dev])")

    # Headless plots; the kernel inherits the environment. jupyter_client replaces the kernel
    # spec's "python" by this interpreter, so the kernel imports this venv's handgrad.
    monkeypatch.setenv("MPLBACKEND", "Agg")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,  # per cell
        resources={"metadata": {"path": str(tmp_path)}},  # files the notebook writes go here
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell and the traceback
    seconds = time.perf_counter() - start

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    errors = [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert errors == []
    images = [
        out
        for cell in code_cells
        for out in cell.outputs
        if out.output_type in {"display_data", "execute_result"} and "image/png" in out.data
    ]
    assert len(images) >= 4  # network fit, two trajectory maps, the descent plot
    assert seconds < 90, f"the notebook took {seconds:.0f} s; keep it under a minute"
