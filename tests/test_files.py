"""handgrad.files: atomic writes, one line for every write error, one writer per output."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handgrad.files import (
    FOLDER_LOCK,
    OutputInUseError,
    WriteError,
    describe_os_error,
    lock_file,
    lock_folder,
    make_folder,
    write_atomically,
)


def test_write_atomically_creates_the_folder_and_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.txt"
    write_atomically(path, b"first")
    write_atomically(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["out.txt"]


def test_write_atomically_cleans_up_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.json"
    path.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_atomically(path, b"new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]


def test_every_os_error_of_a_write_names_the_file_and_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.json"
    path.write_text("old")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(WriteError) as caught:
        write_atomically(path, b"new")
    assert str(caught.value) == f"cannot write {path}: No space left on device"
    assert caught.value.errno == errno.ENOSPC
    assert describe_os_error(caught.value) == str(caught.value)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_folder_where_the_file_should_be(tmp_path: Path) -> None:
    (tmp_path / "out.json").mkdir()
    with pytest.raises(WriteError, match=r"cannot write .*out\.json: Is a directory"):
        write_atomically(tmp_path / "out.json", b"new")
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_folder_below_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    with pytest.raises(WriteError, match=r"cannot write .*file/sub: Not a directory"):
        make_folder(tmp_path / "file" / "sub")
    with pytest.raises(WriteError, match=r"cannot write .*file: it exists and is not a folder"):
        lock_folder(tmp_path / "file").__enter__()
    with pytest.raises(WriteError, match=r"cannot write .*file/sub: Not a directory"):
        write_atomically(tmp_path / "file" / "sub" / "out.png", b"png")
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match=r"cannot write .*ro/keep.txt: Permission denied"):
            write_atomically(folder / "keep.txt", b"new")
        with pytest.raises(WriteError, match=r"cannot write .*ro: Permission denied"):
            lock_folder(folder).__enter__()
    finally:
        folder.chmod(0o755)
    assert (folder / "keep.txt").read_text() == "keep"


def test_describe_os_error_is_one_line() -> None:
    error = PermissionError(errno.EACCES, "Permission denied", "/x/y.csv")
    assert describe_os_error(error) == "/x/y.csv: Permission denied"
    assert describe_os_error(OSError("plain")) == "plain"


# --- one writer per output --------------------------------------------------------------------

HOLD = """
import sys, time
from handgrad.files import lock_folder, lock_file
lock = lock_file if sys.argv[2] == "file" else lock_folder
with lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def hold_lock(target: Path, kind: str = "folder") -> subprocess.Popen[str]:
    """Another process holding the lock on ``target`` (until killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target), kind], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "locked\n"
    return process


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path: Path, kind: str) -> None:
    target = tmp_path / ("out" if kind == "folder" else "out.png")
    lock = lock_folder if kind == "folder" else lock_file
    holder = hold_lock(target, kind)
    try:
        start = time.monotonic()
        with pytest.raises(OutputInUseError) as caught, lock(target):
            pass
        assert time.monotonic() - start < 1.0
        assert caught.value.pid == holder.pid
        assert str(caught.value).startswith(f"{target} is being written by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    holder = hold_lock(tmp_path)
    holder.kill()  # SIGKILL: no clean-up ran, the lock file stays behind
    holder.wait()
    assert (tmp_path / FOLDER_LOCK).read_text() == f"{holder.pid}\n"
    with lock_folder(tmp_path):
        assert (tmp_path / FOLDER_LOCK).read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / FOLDER_LOCK).exists()  # released: nothing left in the folder


def test_a_released_lock_can_be_taken_again_and_leaves_nothing(tmp_path: Path) -> None:
    for _ in range(3):
        with lock_folder(tmp_path / "run") as folder:
            assert folder == tmp_path / "run"
            with pytest.raises(OutputInUseError):  # another open file description: refused
                hold_in_thread(folder)
    assert os.listdir(tmp_path / "run") == []


def hold_in_thread(folder: Path) -> None:
    # flock locks belong to an open file description: a second open in this very process
    # conflicts with the first, as another process's would.
    with lock_folder(folder):
        pass


def test_many_processes_racing_for_one_folder_never_hold_it_together(tmp_path: Path) -> None:
    """Eight processes each take the lock 20 times and, while holding it, check that no one
    else is inside (a marker file) — under the unlink-on-release scheme's worst interleaving."""
    script = """
import os, sys, time
from pathlib import Path
from handgrad.files import OutputInUseError, lock_folder
folder, marker = Path(sys.argv[1]), Path(sys.argv[1]) / "inside"
taken = 0
while taken < 20:
    try:
        with lock_folder(folder):
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if someone is in
            time.sleep(0.001)
            os.close(fd)
            os.unlink(marker)
            taken += 1
    except OutputInUseError:
        time.sleep(0.0005)
"""
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stderr=subprocess.PIPE,
                         text=True)
        for _ in range(8)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert os.listdir(tmp_path) == []
