"""Files handgrad writes follow the umask, as files from open(path, "w") do (mkstemp alone
would make every one of them private, 0o600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from handgrad.files import current_umask, write_atomically


@pytest.fixture
def umask() -> Iterator[None]:
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    assert current_umask() == mask
    path = tmp_path / "out.txt"
    write_atomically(path, b"data")
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    write_atomically(path, b"again")  # a replaced file too
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_train_outputs_follow_the_umask(
    tmp_path: Path, umask: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from handgrad.cli import main

    os.umask(0o002)
    assert main(["train", "--optimizers", "adam", "--epochs", "1", "--out", str(tmp_path),
                 "--quiet"]) == 0
    capsys.readouterr()
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()
             if not path.name.startswith(".")}
    assert set(modes) >= {"metrics.json", "loss_curves.png", "predictions.png",
                          "predictions.csv", "checkpoint.pt"}
    assert set(modes.values()) == {0o664}
