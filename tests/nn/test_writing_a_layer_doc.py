"""docs/writing-a-layer.md: every Python block runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-layer.md"


def test_the_guide_runs_as_written(capsys) -> None:  # type: ignore[no-untyped-def]
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5
    namespace: dict[str, object] = {"__name__": "writing_a_layer"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "check_module(SiLU): PASSED" in out
    assert "check_module(WrongSiLU): FAILED" in out
    assert "['input', 'gamma']" in out
