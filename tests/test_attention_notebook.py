"""The attention notebook runs from top to bottom without an error, so it can never rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebook_runner import execute_notebook


def test_attention_notebook_executes_without_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_cells = execute_notebook("attention.ipynb", tmp_path, monkeypatch)
    outputs = [out for cell in code_cells for out in cell.outputs]
    assert [out for out in outputs if out.output_type == "error"] == []
    printed = "".join(out.text for out in outputs if out.output_type == "stream")
    # the hand-written gradients agree with autograd to float64 round-off
    for line in printed.splitlines():
        if "hand - autograd" in line:
            assert float(line.rsplit("=", 1)[1]) < 1e-12, line
    images = [out for out in outputs if "image/png" in getattr(out, "data", {})]
    assert len(images) == 2  # the attention weights, the training curve
