"""docs/writing-a-layer.md: every Python block runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

from handgrad.nn import convert

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-layer.md"


def test_the_guide_runs_as_written(capsys) -> None:  # type: ignore[no-untyped-def]
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5
    namespace: dict[str, object] = {"__name__": "writing_a_layer"}
    registered = dict(convert._TO_HANDGRAD), dict(convert._TO_TORCH)
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:  # the guide registers a conversion of its own
        for table, saved in zip((convert._TO_HANDGRAD, convert._TO_TORCH), registered, strict=True):
            table.clear()
            table.update(saved)
    out = capsys.readouterr().out
    assert "check_module(SiLU): PASSED" in out
    assert "check_module(WrongSiLU): FAILED" in out
    assert "['input', 'gamma']" in out
    assert "['input', 'other']" in out
    assert "['input', 'value.weight', 'value.bias', 'gate.0.weight', 'gate.0.bias']" in out
