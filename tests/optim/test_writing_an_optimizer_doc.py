"""docs/writing-an-optimizer.md: every Python block runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from handgrad.optim._base import flat_updates

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-an-optimizer.md"


def test_the_guide_runs_as_written(capsys) -> None:  # type: ignore[no-untyped-def]
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 4
    namespace: dict[str, object] = {"__name__": "writing_an_optimizer"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "Lion vs TextbookLion (lr=0.01, weight_decay=0.1): agree" in out
    assert "on 7 layouts (separate, float32, flat, large, float16, bfloat16, complex" in out
    assert "LionWithoutDecay vs TextbookLion" in out
    assert "part at step 1" in out
    assert "weight decay" in out
    # The guide's Lion on a flattened network takes the flat path, and its state holds only
    # what it declares (no forced step).
    lion = namespace["Lion"]
    import handgrad.nn as hn

    model = hn.Sequential(hn.Linear(2, 3))
    hn.flatten_parameters(model)
    optimizer = lion(model.parameters(), lr=0.01)  # type: ignore[operator]
    model(torch.ones(4, 2))
    model.backward(torch.ones(4, 3), input_grad=False)
    optimizer.step()
    assert flat_updates(optimizer) == 1
    assert all(set(state) == {"exp_avg"} for state in optimizer.state.values())
