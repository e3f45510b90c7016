"""The walkthrough notebook is stored executed, with its outputs, so it reads on GitHub
without running; and it runs from top to bottom without an error, so it can never rot.

Store it again after changing it (or the library's output) with::

    .venv/bin/python tests/test_notebook.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
MAX_STORED_BYTES = 400_000  # the outputs are small pictures and short text


def execute(notebook: Any, workdir: Path) -> None:
    """Run every cell of ``notebook`` (an nbformat object) in place, in a fresh kernel of
    this interpreter with headless plots and files written under ``workdir``. Raises
    CellExecutionError naming the cell and the traceback. (Its run time is measured against
    its budget by ``python -m benchmarks --only budgets``, not by the tests.)"""
    import nbclient

    # jupyter_client replaces the kernel spec's "python" by this interpreter, so the kernel
    # imports this venv's handgrad; the kernel inherits the environment.
    os.environ["MPLBACKEND"] = "Agg"
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120,  # per cell
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()


def _code_cells(notebook: Any) -> list[Any]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def _images(notebook: Any) -> list[Any]:
    return [out for cell in _code_cells(notebook) for out in cell["outputs"]
            if out["output_type"] in {"display_data", "execute_result"}
            and "image/png" in out["data"]]


def test_walkthrough_notebook_executes_without_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("nbclient", reason="nbclient is not installed (pip install .[dev])")
    nbformat = pytest.importorskip(
        "nbformat", reason="nbformat is not installed (pip install .[dev])"
    )
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install .[dev])")
    monkeypatch.setenv("MPLBACKEND", "Agg")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in _code_cells(notebook):  # run from nothing, not from the stored outputs
        cell.outputs, cell.execution_count = [], None
    execute(notebook, tmp_path)

    code_cells = _code_cells(notebook)
    assert all(cell.execution_count is not None for cell in code_cells)
    errors = [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert errors == []
    assert len(_images(notebook)) >= 4  # network fit, two trajectory maps, the descent plot


def test_the_notebook_is_stored_executed_in_order_with_its_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code_cells = _code_cells(notebook)
    assert [cell["execution_count"] for cell in code_cells] == list(
        range(1, len(code_cells) + 1)
    ), "store it executed from the top: python tests/test_notebook.py"
    assert all(cell["outputs"] for cell in code_cells), "a code cell without its output"
    assert not [out for cell in code_cells for out in cell["outputs"]
                if out["output_type"] == "error"]
    assert len(_images(notebook)) >= 4
    size = NOTEBOOK.stat().st_size
    assert size < MAX_STORED_BYTES, f"stored notebook is {size} bytes: keep the pictures small"
    text = json.dumps([cell["outputs"] for cell in code_cells])
    for private in ("/home/", "/work/", "/tmp/", "/Users/"):
        assert private not in text, f"a path of the machine that ran it: {private}"


def store() -> int:
    """Execute the notebook from the top and write it back with its outputs."""
    import tempfile

    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in _code_cells(notebook):
        cell.outputs, cell.execution_count = [], None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        execute(notebook, Path(workdir))
    seconds = time.perf_counter() - start
    for cell in _code_cells(notebook):
        cell.metadata.pop("execution", None)  # timestamps: noise in every diff
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, NOTEBOOK)
    print(f"stored {NOTEBOOK} ({NOTEBOOK.stat().st_size} bytes, executed in {seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(store())
