"""The attention notebook runs from top to bottom without an error, so it can never rot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "attention.ipynb"


def test_attention_notebook_executes_without_errors(
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
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell and the traceback
    seconds = time.perf_counter() - start

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [out for cell in code_cells for out in cell.outputs]
    assert all(cell.execution_count is not None for cell in code_cells)
    assert [out for out in outputs if out.output_type == "error"] == []
    printed = "".join(out.text for out in outputs if out.output_type == "stream")
    # the hand-written gradients agree with autograd to float64 round-off
    for line in printed.splitlines():
        if "hand - autograd" in line:
            assert float(line.rsplit("=", 1)[1]) < 1e-12, line
    images = [out for out in outputs if "image/png" in getattr(out, "data", {})]
    assert len(images) == 2  # the attention weights, the training curve
    assert seconds < 90, f"the notebook took {seconds:.0f} s; keep it under a minute"
