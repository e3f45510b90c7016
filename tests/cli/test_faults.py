"""Faults from outside: concurrent writers, full disks, read-only folders, signals, damaged
inputs. Each test is a row of the README's table "fault → what handgrad does", and
:func:`test_the_readme_fault_table_names_these_tests` keeps the table and the tests together.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from handgrad.cli import EXIT_STATUS, main
from handgrad.files import FOLDER_LOCK
from handgrad.train import checkpoint as ckpt
from handgrad.train import compare
from tests.test_files import hold_lock

QUICK = ["--optimizers", "sgd,adam", "--epochs", "3", "--batch-size", "64"]
README = Path(__file__).resolve().parents[2] / "README.md"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(err: str, command: str = "train") -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"handgrad {command}: error")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def saved_epoch(folder: Path) -> int:
    return int(ckpt.load_checkpoint(folder / "checkpoint.pt")["epoch"])


def epochs_trained(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The epochs run_epoch is called for (one entry per optimizer and epoch)."""
    seen: list[int] = []
    real = compare.run_epoch

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["epoch"])
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "run_epoch", counting)
    return seen


def wait_until(condition: Any, process: subprocess.Popen[Any], timeout: float = 120) -> None:
    """Poll ``condition()`` while ``process`` runs; fail if it ends or time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the process ended first"
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.01)


def fsync_fails_after(monkeypatch: pytest.MonkeyPatch, good: int) -> None:
    """The disk fills up: every fsync after the first ``good`` raises ENOSPC."""
    calls = [0]
    real = os.fsync

    def fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] > good:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


# --- one writer per output folder ------------------------------------------------------------


def test_a_second_train_into_a_folder_being_written_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's two `handgrad train ... --out D &` runs: the second is refused at once,
    naming the first one's pid, and the first ends as if it were alone."""
    folder = tmp_path / "D"
    args = ["train", "--optimizers", "sgd,adam", "--epochs", "4", "--batch-size", "2",
            "--out", str(folder)]
    first = subprocess.Popen([sys.executable, "-m", "handgrad", *args, "--seed", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until((folder / FOLDER_LOCK).is_file, first)
        start = time.monotonic()
        status, out, err = run(capsys, *args, "--seed", "1")
        assert time.monotonic() - start < 5  # refused before any training
        assert status == 75
        assert out == ""
        assert one_error_line(err) == (
            f"handgrad train: error: {folder} is being written by process {first.pid} "
            "(another handgrad run); wait for it to finish or choose another output"
        )
        stdout, _ = first.communicate(timeout=300)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0
    assert "wrote " in stdout
    assert ckpt.load_checkpoint(folder / "checkpoint.pt")["settings"]["seed"] == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.pt", "loss_curves.png", "metrics.json", "predictions.csv", "predictions.png"
    ]


@pytest.mark.parametrize("command", ["demo", "trajectories", "train"])
def test_every_writing_command_refuses_a_locked_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    target = tmp_path / ("t.png" if command == "trajectories" else "out")
    holder = hold_lock(target, "file" if command == "trajectories" else "folder")
    try:
        status, _, err = run(capsys, command, "--out", str(target))
    finally:
        holder.kill()
        holder.wait()
    assert status == 75
    assert f"{target} is being written by process {holder.pid}" in one_error_line(err, command)


def test_roots_csv_refuses_an_out_file_being_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("1,-3,2\n")
    target = tmp_path / "out.csv"
    target.write_text("earlier results\n")
    holder = hold_lock(target, "file")
    try:
        status, _, err = run(capsys, "roots", "--csv", str(source), "--out", str(target))
    finally:
        holder.kill()
        holder.wait()
    assert status == 75
    assert f"{target} is being written by process {holder.pid}" in one_error_line(err, "roots")
    assert target.read_text() == "earlier results\n"  # untouched
    status, _, _ = run(capsys, "roots", "--csv", str(source), "--out", str(target))
    assert status == 0  # the kernel dropped the killed holder's lock
    assert "1,-3,2" in target.read_text()


def test_a_lock_left_by_a_killed_train_is_recovered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--optimizers", "adam", "--epochs", "8", "--batch-size", "4",
            "--checkpoint-every", "0", "--out", str(tmp_path)]
    process = subprocess.Popen([sys.executable, "-m", "handgrad", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (tmp_path / "checkpoint.pt").is_file() and saved_epoch(tmp_path) >= 1,
                   process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert (tmp_path / FOLDER_LOCK).read_text() == f"{process.pid}\n"  # stale, left behind
    assert run(capsys, *args, "--resume")[0] == 0
    assert saved_epoch(tmp_path) == 8
    assert not (tmp_path / FOLDER_LOCK).exists()


# --- every OSError while writing: one line, exit 74, earlier files intact --------------------


def test_a_full_disk_before_the_first_epoch_stops_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = epochs_trained(monkeypatch)
    fsync_fails_after(monkeypatch, 0)
    status, out, err = run(capsys, "train", *QUICK, "--out", str(tmp_path))
    assert status == 74
    assert out == ""
    assert one_error_line(err) == (
        f"handgrad train: error: cannot write {tmp_path}/checkpoint.pt: No space left on device"
    )
    assert trained == []  # the check came before the first epoch
    assert list(tmp_path.iterdir()) == []


def test_a_disk_filling_up_during_training_keeps_the_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync_fails_after(monkeypatch, 2)  # epoch 0's and epoch 1's checkpoints fit
    status, _, err = run(capsys, "train", *QUICK, "--checkpoint-every", "0",
                         "--out", str(tmp_path))
    assert status == 74
    assert one_error_line(err) == (
        f"handgrad train: error: cannot write {tmp_path}/checkpoint.pt: No space left on "
        "device; checkpoint.pt holds epoch 1: make room, then add --resume"
    )
    assert saved_epoch(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    monkeypatch.undo()
    assert run(capsys, "train", *QUICK, "--out", str(tmp_path), "--resume")[0] == 0


def test_a_full_disk_when_writing_the_outputs_keeps_the_trained_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync_fails_after(monkeypatch, 3)  # epochs 0, 1 and 3 (the last): then metrics.json
    status, _, err = run(capsys, "train", *QUICK, "--out", str(tmp_path))
    assert status == 74
    assert one_error_line(err).startswith(
        f"handgrad train: error: cannot write {tmp_path}/metrics.json: No space left on device;"
        " checkpoint.pt holds epoch 3"
    )
    monkeypatch.undo()
    trained = epochs_trained(monkeypatch)
    assert run(capsys, "train", *QUICK, "--out", str(tmp_path), "--resume")[0] == 0
    assert trained == []  # nothing to train again: the outputs are written from the checkpoint
    assert json.loads((tmp_path / "metrics.json").read_text())["task"] == "cubic"


def test_resume_onto_a_full_disk_stops_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = compare.run_epoch

    def interrupted_in_epoch_2(*args: Any, **kwargs: Any) -> Any:
        if kwargs["epoch"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "run_epoch", interrupted_in_epoch_2)
    assert run(capsys, "train", *QUICK, "--out", str(tmp_path))[0] == 130
    assert saved_epoch(tmp_path) == 1
    before = (tmp_path / "checkpoint.pt").read_bytes()
    monkeypatch.undo()
    trained = epochs_trained(monkeypatch)
    fsync_fails_after(monkeypatch, 0)
    status, _, err = run(capsys, "train", *QUICK, "--out", str(tmp_path), "--resume")
    assert status == 74
    assert one_error_line(err).startswith(
        f"handgrad train: error: cannot write {tmp_path}/checkpoint.pt: No space left on device"
    )
    assert trained == []  # the resumed checkpoint is written again first: the check
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_out_below_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("mine")
    status, _, err = run(capsys, "train", *QUICK, "--out", str(tmp_path / "file" / "run"))
    assert status == 74
    assert one_error_line(err) == (
        f"handgrad train: error: cannot write {tmp_path}/file/run: Not a directory"
    )
    assert (tmp_path / "file").read_text() == "mine"


def test_checkpoint_pt_being_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "checkpoint.pt").mkdir()
    trained = epochs_trained(monkeypatch)
    status, _, err = run(capsys, "train", *QUICK, "--out", str(tmp_path))
    assert status == 74
    assert one_error_line(err) == (
        f"handgrad train: error: cannot write {tmp_path}/checkpoint.pt: Is a directory"
    )
    assert trained == []
    assert (tmp_path / "checkpoint.pt").is_dir()


def test_a_plot_path_being_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "loss_curves.png").mkdir()
    status, _, err = run(capsys, "train", *QUICK, "--out", str(tmp_path))
    assert status == 74
    assert f"cannot write {tmp_path}/loss_curves.png: Is a directory" in one_error_line(err)
    assert saved_epoch(tmp_path) == 3  # the trained runs are safe


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp_path.chmod(0o555)
    try:
        status, _, err = run(capsys, "train", *QUICK, "--out", str(tmp_path))
    finally:
        tmp_path.chmod(0o755)
    assert status == 74
    assert one_error_line(err) == (
        f"handgrad train: error: cannot write {tmp_path}: Permission denied"
    )


TMPFS_SCRIPT = """
set -e
mount -t tmpfs -o size=200k tmpfs "$1"
mkdir "$1/ro" && mount -t tmpfs -o size=200k,ro tmpfs "$1/ro"
cd "$1"
status() { "$@" 2>err.txt >/dev/null && echo 0 || echo $?; tail -1 err.txt; }
status python -m handgrad train --task digits --optimizers adam --epochs 2 --out "$1/full"
ls full
status python -m handgrad train --optimizers adam --epochs 1 --out "$1/ro/run"
status python -m handgrad trajectories --steps 3 --out "$1/ro/t.png"
"""


def test_a_real_full_disk_and_a_read_only_file_system(tmp_path: Path) -> None:
    """A 200 kB tmpfs and a read-only one, mounted in a user and mount namespace
    (``unshare -rm``): digits cannot fit its Adam checkpoint; nothing can be written."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", str(tmp_path)],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("user namespaces cannot mount a tmpfs here")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", TMPFS_SCRIPT, "sh", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "74",
        f"handgrad train: error: cannot write {tmp_path}/full/checkpoint.pt: No space left on "
        "device; checkpoint.pt holds epoch 0: make room, then add --resume",
        "checkpoint.pt",
        "74",
        f"handgrad train: error: cannot write {tmp_path}/ro/run: Read-only file system",
        "74",
        f"handgrad trajectories: error: cannot write {tmp_path}/ro/t.png: Read-only file system",
    ]


# --- checkpoints: an interval, the end, signals, every field checked ------------------------


def written_epochs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    epochs: list[int] = []
    real = ckpt.save_checkpoint

    def save(path: Any, payload: dict[str, Any]) -> None:
        epochs.append(payload["epoch"])
        real(path, payload)

    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    return epochs


@pytest.mark.parametrize(("every", "expected"), [("3600", [0, 1, 6]), ("0", list(range(7)))])
def test_checkpoints_on_an_interval_the_first_and_the_last_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    every: str, expected: list[int],
) -> None:
    written = written_epochs(monkeypatch)
    status, _, _ = run(capsys, "train", "--optimizers", "adam", "--epochs", "6",
                       "--batch-size", "64", "--checkpoint-every", every, "--out", str(tmp_path))
    assert status == 0
    assert written == expected


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_last_finished_epoch_and_resume_is_bit_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest, signum: int, status: int,
) -> None:
    args = ["train", "--optimizers", "sgd,adam", "--epochs", "5", "--batch-size", "16",
            "--seed", "2", "--checkpoint-every", "3600"]
    # Python's own Ctrl-C handler, as in a terminal: a shell starts background jobs with
    # SIGINT ignored (`pytest &`), and then no KeyboardInterrupt would come.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    real = compare.run_epoch

    def signalled_in_epoch_4(*a: Any, **kw: Any) -> Any:
        if kw["epoch"] == 4 and kw["label"] == "adam":
            os.kill(os.getpid(), signum)  # delivered here, in the main thread
        return real(*a, **kw)

    monkeypatch.setattr(compare, "run_epoch", signalled_in_epoch_4)
    cut = tmp_path / "cut"
    code, _, err = run(capsys, *args, "--out", str(cut))
    assert code == status
    name = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert err.splitlines()[-2:] == [
        f"the last finished epoch is in {cut}/checkpoint.pt; add --resume to continue",
        f"handgrad train: {name}",
    ]
    assert saved_epoch(cut) == 3  # written on the signal: the interval wrote only 0 and 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    monkeypatch.setattr(compare, "run_epoch", real)
    assert run(capsys, *args, "--out", str(cut), "--resume")[0] == 0
    assert run(capsys, *args, "--out", str(tmp_path / "whole"))[0] == 0
    resumed, whole = (ckpt.load_checkpoint(d / "checkpoint.pt") for d in (cut, tmp_path / "whole"))
    for a, b in zip(resumed["runs"], whole["runs"], strict=True):
        assert a["history"] == b["history"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_sigterm_from_outside_then_resume_matches_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 60 epochs (~2 s of training on 2 cores): the signal, 0.3 s after the first checkpoint,
    # must land before the run ends (12 took ~0.4 s since the trainer's fast epoch).
    args = ["train", "--optimizers", "sgd,adam", "--epochs", "60", "--batch-size", "8",
            "--seed", "3", "--checkpoint-every", "3600"]
    cut = tmp_path / "cut"
    process = subprocess.Popen([sys.executable, "-m", "handgrad", *args, "--out", str(cut)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (cut / "checkpoint.pt").is_file() and saved_epoch(cut) >= 1, process)
        time.sleep(0.3)  # a few epochs more, kept in memory only
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, err
    assert err.splitlines()[-1] == "handgrad train: terminated"
    assert 1 <= saved_epoch(cut) < 60
    assert run(capsys, *args, "--out", str(cut), "--resume")[0] == 0
    assert run(capsys, *args, "--out", str(tmp_path / "whole"))[0] == 0
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (cut, tmp_path / "whole")]
    assert [r["history"] for r in metrics[0]["runs"]] == [r["history"] for r in metrics[1]["runs"]]


def test_a_checkpoint_claiming_a_later_epoch_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--optimizers", "adam", "--epochs", "6", "--batch-size", "64",
            "--out", str(tmp_path)]
    assert run(capsys, *args)[0] == 0
    payload = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")
    ckpt.save_checkpoint(tmp_path / "checkpoint.pt", {**payload, "epoch": 10**6})
    status, _, err = run(capsys, *args, "--resume")
    assert status == 2
    assert one_error_line(err) == (
        f"handgrad train: error: checkpoint {tmp_path}/checkpoint.pt is damaged: it claims "
        "epoch 1000000 of a 6-epoch run"
    )


# --- inputs that slipped through -------------------------------------------------------------


def test_a_csv_field_over_the_csv_modules_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"{i / 10},{(i / 10) ** 2 + 0.01}" for i in range(-20, 21)]
    rows[5] = f"{'1' * 140_000},3"  # line 7
    data = tmp_path / "data.csv"
    data.write_text("x,y\n" + "\n".join(rows) + "\n")
    status, _, err = run(capsys, "train", "--task", f"csv:{data}", "--target", "y",
                         "--optimizers", "adam", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert status == 0
    assert err.splitlines()[0] == (
        f"handgrad train: warning: {data} line 7: cannot be read: field larger than field limit "
        "(131072); row skipped"
    )
    assert (tmp_path / "r" / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2.5\n2,3.5\n1e39,4.5\n",
         "line 4, column 'x': the value is beyond float32's range"),
        ("x,y\n1,a\n2,b\n", "the test split is empty: each of its 2 classes has a single row"),
    ],
)
def test_csv_values_that_cannot_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    data = tmp_path / "data.csv"
    data.write_text(text)
    status, _, err = run(capsys, "train", "--task", f"csv:{data}", "--target", "y",
                         "--optimizers", "adam", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert status == 2
    assert message in one_error_line(err)


# --- the README's table ----------------------------------------------------------------------


def readme_fault_rows() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    start = text.index("| fault | what handgrad does | exit | test |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_readme_fault_table_names_these_tests() -> None:
    rows = readme_fault_rows()
    assert len(rows) >= 10
    here = Path(__file__).resolve().parents[1]
    for fault, _, status, test in rows:
        # "—": a library-level row with no command to exit.
        assert status == "—" or all(int(s) in EXIT_STATUS for s in status.split(" / ")), fault
        references = re.findall(r"`([\w/]+\.py)::(\w+)`", test)
        assert references, f"{fault}: no test named"
        for path, name in references:
            assert (here.parent / path).is_file(), f"{fault}: no file {path}"
            assert f"def {name}(" in (here.parent / path).read_text(), f"{fault}: no {name}"


def test_the_readme_lists_every_exit_status() -> None:
    text = README.read_text(encoding="utf-8")
    for status in EXIT_STATUS:
        assert f"| {status} |" in text, status
