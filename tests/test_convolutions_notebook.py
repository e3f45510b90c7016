"""notebooks/convolutions.ipynb runs from top to bottom without an error, in well under a minute."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "convolutions.ipynb"


def test_convolutions_notebook_executes_without_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip(
        "nbclient", reason="nbclient is not installed (pip install .[dev])"
    )
    nbformat = pytest.importorskip(
        "nbformat", reason="nbformat is not installed (pip install .[dev])"
    )
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install .[dev])")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless plots; the kernel inherits it

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,  # per cell
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell and the traceback
    seconds = time.perf_counter() - start

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    text = "".join(
        out.get("text", "") for cell in code_cells for out in cell.outputs
        if out.output_type == "stream"
    )  # fmt: skip
    assert "passed=False" not in text
    assert text.count("passed=True") == 3
    accuracy = float(text.split("test accuracy after 8 epochs: ")[1].split()[0])
    assert accuracy >= 0.97
    images = [
        out
        for cell in code_cells
        for out in cell.outputs
        if out.output_type in {"display_data", "execute_result"} and "image/png" in out.data
    ]
    assert len(images) == 2  # the loss curves and the digits
    assert seconds < 60, f"the notebook took {seconds:.0f} s; keep it short"
