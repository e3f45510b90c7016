"""docs/privacy.md: every Python block runs, in order, in one namespace, and prints what the
page says it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"

pytest.importorskip("opacus", reason="the guide's accountant needs opacus")


def test_the_guide_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 5
    namespace: dict[str, object] = {"__name__": "privacy_guide"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    for shown in re.findall(r"```text\n(.*?)```", text, re.S):
        assert shown.strip() in out
    epsilon = float(re.search(r"ε = ([0-9.]+) at δ", out).group(1))  # type: ignore[union-attr]
    assert 0 < epsilon < 100
