"""notebooks/convolutions.ipynb runs from top to bottom without an error (its run time is a
budget of ``python -m benchmarks --only budgets``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebook_runner import execute_notebook


def test_convolutions_notebook_executes_without_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_cells = execute_notebook("convolutions.ipynb", tmp_path, monkeypatch)
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
