"""Checkpoints: written whole or not at all, safe loads, one clear error for every bad file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from handgrad.train import checkpoint as ckpt


def test_round_trip_keeps_tensors_and_plain_values(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ck.pt"
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    payload = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "history": [{"epoch": 1, "loss": 0.5}], "rng": ckpt.rng_states(),
    }
    ckpt.save_checkpoint(path, payload)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["format"] == ckpt.FORMAT
    assert loaded["history"] == [{"epoch": 1, "loss": 0.5}]
    assert torch.equal(loaded["model"]["weight"], model.weight)
    step = loaded["optimizer"]["state"][0]["step"]
    assert step.dtype == torch.float32
    assert float(step) == 1.0
    assert torch.equal(loaded["rng"]["cpu"], torch.get_rng_state())
    assert os.listdir(path.parent) == ["ck.pt"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    ckpt.save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self) -> str:
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle this"):
        ckpt.save_checkpoint(path, {"epoch": 2, "bad": Unpicklable()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.pt"]


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoint to resume from at .*none\.pt"):
        ckpt.load_checkpoint(tmp_path / "none.pt")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda good: b"", id="empty"),
        pytest.param(lambda good: b"not a checkpoint at all", id="garbage"),
        pytest.param(lambda good: good[: len(good) // 2], id="truncated"),
    ],
)
def test_corrupt_checkpoint_is_one_clear_line_and_untouched(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ck.pt"
    ckpt.save_checkpoint(path, {"epoch": 1, "w": torch.arange(1000.0)})
    path.write_bytes(damage(path.read_bytes()))
    before = path.read_bytes()
    with pytest.raises(ckpt.CheckpointError) as caught:
        ckpt.load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path} is unreadable (corrupt, truncated, ")
    assert "\n" not in message
    assert path.read_bytes() == before


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ckpt.CheckpointError, match="is not a handgrad training checkpoint"):
        ckpt.load_checkpoint(path)
    torch.save({"format": ckpt.FORMAT, "version": 99}, path)
    with pytest.raises(ckpt.CheckpointError, match="format version 99; this handgrad reads "):
        ckpt.load_checkpoint(path)


class Payload:
    """An arbitrary object: the safe loader must not unpickle it."""


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "x": Payload()}, path)
    with pytest.raises(ckpt.CheckpointError, match="unreadable"):
        ckpt.load_checkpoint(path)


def test_a_checkpoint_saved_from_the_device_is_read_onto_the_cpu_and_resumes_there(
    tmp_path: Path, device: torch.device
) -> None:
    """Tensors saved on CUDA come back on the CPU (a machine without a GPU can read them);
    load_state_dict puts them back on the device: weights copied, Adam's moments moved to
    their parameter's device, ``step`` kept on the CPU as torch keeps it."""
    path = tmp_path / "ck.pt"
    model = torch.nn.Linear(3, 2).to(device)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3, device=device)).sum().backward()
    optimizer.step()
    ckpt.save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    loaded = ckpt.load_checkpoint(path)
    assert loaded["model"]["weight"].device.type == "cpu"
    assert loaded["optimizer"]["state"][0]["exp_avg"].device.type == "cpu"

    twin = torch.nn.Linear(3, 2).to(device)
    twin_optimizer = torch.optim.Adam(twin.parameters())
    twin.load_state_dict(loaded["model"])
    twin_optimizer.load_state_dict(loaded["optimizer"])
    assert twin.weight.device == model.weight.device
    assert torch.equal(twin.weight, model.weight)
    state = twin_optimizer.state[twin.weight]
    assert state["exp_avg"].device == model.weight.device
    assert torch.equal(state["exp_avg"], optimizer.state[model.weight]["exp_avg"])
    assert state["step"].device.type == "cpu"


def test_rng_states_of_a_run_hold_its_own_device(device: torch.device) -> None:
    """A run saves the CPU's stream and its device's; restoring replays both."""
    states = ckpt.rng_states(device)
    assert set(states) == ({"cpu", "cuda_device"} if device.type == "cuda" else {"cpu"})
    expected = torch.rand(4), torch.rand(4, device=device)
    ckpt.restore_rng_states(states, device)
    assert torch.equal(torch.rand(4), expected[0])
    assert torch.equal(torch.rand(4, device=device), expected[1])


def test_a_cpu_run_leaves_cuda_generators_alone() -> None:
    """Restoring for a CPU run sets the CPU's state only, even from a checkpoint that holds
    every CUDA device's (saved where CUDA was in use): nothing to mismatch on this machine."""
    states = {"cpu": torch.get_rng_state(), "cuda": ["not a state"]}
    expected = torch.rand(2)
    ckpt.restore_rng_states(states, "cpu")
    assert torch.equal(torch.rand(2), expected)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_checkpointer_writes_on_the_interval_the_first_and_the_last_epoch(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    path = tmp_path / "ck.pt"
    checkpointer = ckpt.Checkpointer(path, every=10.0, clock=clock)
    checkpointer.write({"epoch": 0})
    written = []
    for epoch, seconds in enumerate([1, 1, 1, 8, 1, 1, 1], start=1):
        clock.now += seconds
        if checkpointer.epoch_done(lambda frozen, e=epoch: {"epoch": e}, last=epoch == 7):
            written.append(epoch)
    # 1: the first epoch (the state has its full size); 4: 10 s after 1; 7: the last
    assert written == [1, 4, 7]
    assert ckpt.load_checkpoint(path)["epoch"] == 7
    assert not checkpointer.flush()  # nothing pending after the last epoch


def test_checkpointer_every_0_writes_every_epoch(tmp_path: Path) -> None:
    checkpointer = ckpt.Checkpointer(tmp_path / "ck.pt", every=0, clock=FakeClock())
    assert all(
        checkpointer.epoch_done(lambda frozen, e=e: {"epoch": e}, last=False) for e in range(1, 5)
    )


def test_checkpointer_keeps_a_frozen_copy_and_writes_it_on_flush(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    checkpointer = ckpt.Checkpointer(path, every=100.0, clock=FakeClock())
    weight = torch.zeros(3)
    asked: list[bool] = []

    def snapshot(epoch: int) -> ckpt.Snapshot:
        def payload(frozen: bool) -> dict[str, object]:
            asked.append(frozen)
            model = {"weight": weight}
            return {"epoch": epoch, "model": ckpt.detached_copy(model) if frozen else model}
        return payload

    assert checkpointer.epoch_done(snapshot(1), last=False)  # the first epoch: written
    assert not checkpointer.epoch_done(snapshot(2), last=False)  # kept, frozen
    assert asked == [False, True]
    weight.add_(5.0)  # epoch 3 trains on: the live tensors change
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert checkpointer.flush()  # interrupted: the copy of epoch 2 is written
    saved = ckpt.load_checkpoint(path)
    assert saved["epoch"] == 2
    assert torch.equal(saved["model"]["weight"], torch.zeros(3))
    assert not checkpointer.flush()


def test_detached_copy_shares_nothing_mutable() -> None:
    state = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": {"c": torch.ones(1)}, "d": 1.5}
    copy = ckpt.detached_copy(state)
    state["a"][0].add_(1)
    state["a"].append("x")
    state["b"]["c"].add_(1)
    assert torch.equal(copy["a"][0], torch.ones(2))
    assert len(copy["a"]) == 2
    assert torch.equal(copy["b"]["c"], torch.ones(1))
    assert copy["d"] == 1.5


def test_checkpointer_flush_failing_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ck.pt"
    checkpointer = ckpt.Checkpointer(path, every=100.0, clock=FakeClock())
    checkpointer.epoch_done(lambda frozen: {"epoch": 1}, last=False)
    checkpointer.epoch_done(lambda frozen: {"epoch": 2}, last=False)
    before = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert not checkpointer.flush()  # swallowed: the caller is handling another error
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.pt"]


@pytest.mark.parametrize("every", [-1.0, float("inf"), float("nan"), True, "60"])
def test_checkpointer_interval_is_checked(tmp_path: Path, every: object) -> None:
    with pytest.raises(ValueError, match="checkpoint_every must be a non-negative number"):
        ckpt.Checkpointer(tmp_path / "ck.pt", every)  # type: ignore[arg-type]
