"""Checkpoints: written whole or not at all, safe loads, one clear error for every bad file."""

from __future__ import annotations

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
