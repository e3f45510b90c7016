"""compare_optimizers: same start, same batches, checkpoints every epoch, exact resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

import handgrad.optim
from handgrad.train import checkpoint as ckpt
from handgrad.train.compare import TrainConfig, compare_optimizers, resolve_optimizer
from handgrad.train.sampler import EpochSampler
from handgrad.train.tasks import Backend, Task, cubic_task

SMALL = TrainConfig(epochs=3, batch_size=16, seed=4, backend="torch")


def small_task(dropout: float = 0.0) -> Task:
    return cubic_task(seed=4, num_train=96, num_test=21, dropout=dropout)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                          strict=True)
    )


def test_every_run_starts_from_the_same_weights_and_batches(device: torch.device) -> None:
    task = small_task()
    result = compare_optimizers(task, "sgd,adam", dataclasses.replace(SMALL, device=str(device)))
    x, y = task.x_train.to(device), task.y_train.to(device)
    # Rebuild each run by hand: the task's initial network, the sampler's batches.
    for run, cls in zip(result.runs, (torch.optim.SGD, torch.optim.Adam), strict=True):
        assert next(run.model.parameters()).device.type == device.type
        model = task.reference_model(seed=4).to(device)
        optimizer = cls(model.parameters(), lr=run.lr)
        sampler = EpochSampler(96, 16, seed=4)
        for epoch in (1, 2, 3):
            for batch in sampler.batches(epoch):
                optimizer.zero_grad()
                index = batch.to(device)
                torch.nn.functional.mse_loss(model(x[index]), y[index]).backward()
                optimizer.step()
        assert states_equal(model, run.model)
    # The cubic task's tuned rates at its reference batch of 64, scaled to batches of 16:
    # linearly for SGD, by the square root for Adam.
    assert [run.lr for run in result.runs] == [0.05 * 16 / 64, 0.005 * (16 / 64) ** 0.5]
    assert [record.epoch for record in result.runs[0].history] == [1, 2, 3]


def test_result_figures_and_metrics_document(device: torch.device) -> None:
    config = dataclasses.replace(SMALL, device=str(device))
    result = compare_optimizers(small_task(), ["adam"], config)
    run = result.runs[0]
    metrics = result.metrics()
    assert metrics["task"] == "cubic"
    (document,) = metrics["runs"]
    assert list(document) == ["optimizer", "status", "outcome", "lr", "train_loss", "test_loss",
                              "seconds", "history"]
    assert document["status"] == "trained"
    assert document["test_loss"] == run.history[-1].test_loss
    assert document["seconds"] == run.seconds > 0
    assert len(document["history"]) == 3
    prediction = result.predictions()["adam"]
    assert prediction.device.type == "cpu"  # predictions come back to the CPU for plots
    expected = run.model(result.task.x_test.to(device)).detach().cpu()
    assert torch.equal(prediction, expected)


def test_training_uses_one_thread_and_restores_the_callers_count() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    compare_optimizers(small_task(), "adam", dataclasses.replace(SMALL, epochs=1),
                       on_epoch=lambda name, record: seen.append(torch.get_num_threads()))
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_the_callers_global_rng_is_left_alone(device: torch.device) -> None:
    """Neither the CPU's generator nor (training on CUDA) the device's is moved."""
    torch.manual_seed(123)
    expected = torch.rand(3), torch.rand(3, device=device)
    torch.manual_seed(123)
    config = dataclasses.replace(SMALL, device=str(device))
    compare_optimizers(small_task(dropout=0.2), "adam", config)
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.rand(3, device=device), expected[1])


def test_lr_given_applies_to_every_optimizer_and_unknown_names_fail_first() -> None:
    result = compare_optimizers(small_task(), "sgd,rmsprop", dataclasses.replace(SMALL, lr=0.002,
                                                                                epochs=1))
    assert [run.lr for run in result.runs] == [0.002, 0.002]
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; expected one of: .*adam"):
        compare_optimizers(small_task(), "adam,adamm", SMALL)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TrainConfig(epochs=0), "epochs must be a positive integer, got 0"),
        (TrainConfig(batch_size=-2), "batch_size must be a positive integer, got -2"),
        (TrainConfig(lr=0.0), "lr must be a positive finite number, got 0.0"),
        (TrainConfig(lr=float("nan")), "lr must be a positive finite number, got nan"),
        (TrainConfig(seed=-1), "seed must be a non-negative integer, got -1"),
        (TrainConfig(threads=0), "threads must be a positive integer or None, got 0"),
        (TrainConfig(device="gpu"), "device must be 'cpu' or 'cuda\\[:N\\]', got 'gpu'"),
    ],
)
def test_bad_settings_are_named(config: TrainConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_optimizers(small_task(), "adam", dataclasses.replace(config, backend="torch"))


def test_textbook_names_train_as_their_configuration() -> None:
    for backend in ("handgrad", "torch"):
        config = dataclasses.replace(SMALL, epochs=1, backend=backend)
        result = compare_optimizers(small_task(), "momentum,nesterov", config)
        assert [run.optimizer for run in result.runs] == ["momentum", "nesterov"]
    for name, cls in (("sgd", handgrad.optim.SGD), ("momentum", handgrad.optim.SGD)):
        found, options = resolve_optimizer(name, "handgrad")
        assert found is cls
        assert options == ({} if name == "sgd" else {"momentum": 0.9})
    assert resolve_optimizer("nesterov", "torch") == (
        torch.optim.SGD, {"momentum": 0.9, "nesterov": True}
    )


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    ("dropout", "backend", "every"),
    [(0.0, "torch", 0.0), (0.25, "torch", 60.0), (0.25, "handgrad", 0.0),
     (0.25, "handgrad", 60.0)],
)
def test_resume_after_an_interruption_ends_bit_for_bit_where_a_whole_run_ends(
    tmp_path: Path, dropout: float, backend: Backend, every: float, device: torch.device
) -> None:
    """On CUDA too: the checkpoint is saved from the device, read onto the CPU and resumed
    onto the device again (dropout masks from the device's restored generator).
    ``every=0`` writes after every epoch; ``every=60`` writes epoch 2 only when the
    interruption comes, from the copy kept in memory."""
    task = small_task(dropout)
    config = dataclasses.replace(SMALL, epochs=4, backend=backend, device=str(device))
    whole = compare_optimizers(task, "sgd,adam", config, checkpoint=tmp_path / "whole.pt")

    path = tmp_path / "cut.pt"

    def stop_in_epoch_3(optimizer: str, record: object) -> None:
        if optimizer == "sgd" and getattr(record, "epoch", 0) == 3:
            raise Interrupt  # sgd finished epoch 3, adam has not: mid-epoch for the checkpoint

    with pytest.raises(Interrupt):
        compare_optimizers(task, "sgd,adam", config, checkpoint=path, on_epoch=stop_in_epoch_3,
                           checkpoint_every=every)
    assert ckpt.load_checkpoint(path)["epoch"] == 2
    seen: list[tuple[str, int]] = []
    resumed = compare_optimizers(
        task, "sgd,adam", config, checkpoint=path, resume=True,
        on_epoch=lambda name, record: seen.append((name, record.epoch)),
    )
    assert seen == [("sgd", 3), ("adam", 3), ("sgd", 4), ("adam", 4)]
    for a, b in zip(whole.runs, resumed.runs, strict=True):
        assert states_equal(a.model, b.model)
        assert [r.as_dict() for r in a.history] == [r.as_dict() for r in b.history]
    saved_whole = ckpt.load_checkpoint(tmp_path / "whole.pt")
    saved_resumed = ckpt.load_checkpoint(path)
    for a, b in zip(saved_whole["runs"], saved_resumed["runs"], strict=True):
        for key, value in a["optimizer_state"]["state"].items():
            for name, tensor in value.items():
                assert torch.equal(tensor, b["optimizer_state"]["state"][key][name])
    assert torch.equal(saved_whole["rng"]["cpu"], saved_resumed["rng"]["cpu"])
    assert saved_resumed["settings"]["device"] == device.type
    if device.type == "cuda":
        assert torch.equal(saved_whole["rng"]["cuda_device"], saved_resumed["rng"]["cuda_device"])
    for run in resumed.runs:
        assert next(run.model.parameters()).device.type == device.type
        for state in run.model.state_dict().values():
            assert state.device.type == device.type


def test_resume_of_a_finished_run_trains_nothing_more(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    first = compare_optimizers(small_task(), "adam", SMALL, checkpoint=path)
    calls: list[str] = []
    again = compare_optimizers(small_task(), "adam", SMALL, checkpoint=path, resume=True,
                               on_epoch=lambda name, record: calls.append(name))
    assert calls == []
    assert states_equal(first.runs[0].model, again.runs[0].model)
    assert again.runs[0].history == first.runs[0].history


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 5}, r"epochs=3 there, 5 here"),
        ({"lr": 0.5}, r"lr=\[0.0025\] there, \[0.5\] here"),
        ({"batch_size": 8}, r"batch_size=16 there, 8 here"),
    ],
)
def test_resume_with_other_settings_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "ck.pt"
    compare_optimizers(small_task(), "adam", dataclasses.replace(SMALL, epochs=3), checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(ckpt.CheckpointError, match=message):
        compare_optimizers(small_task(), "adam", dataclasses.replace(SMALL, **change),
                           checkpoint=path, resume=True)
    with pytest.raises(ckpt.CheckpointError, match=r"optimizers=\['adam'\] there, \['sgd'\] here"):
        compare_optimizers(small_task(), "sgd", SMALL, checkpoint=path, resume=True)
    other_data = cubic_task(seed=5, num_train=96, num_test=21)
    with pytest.raises(ckpt.CheckpointError, match=r"the task's data differ"):
        compare_optimizers(other_data, "adam", SMALL, checkpoint=path, resume=True)
    assert path.read_bytes() == before


def test_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from at"):
        compare_optimizers(small_task(), "adam", SMALL, checkpoint=tmp_path / "x.pt", resume=True)
    with pytest.raises(ValueError, match="resume=True needs the checkpoint path"):
        compare_optimizers(small_task(), "adam", SMALL, resume=True)


def _tamper(payload: dict[str, Any], where: str, value: Any) -> None:
    """Set the field at ``where`` (keys and list indices joined by slashes)."""
    *parents, last = where.split("/")
    node: Any = payload
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


DELETE = object()


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("epoch", 10**6, r"it claims epoch 1000000 of a 3-epoch run"),
        ("epoch", -1, r"it claims epoch -1 of a 3-epoch run"),
        ("epoch", 2.5, r"its epoch is 2.5, not a whole number"),
        ("epoch", True, r"its epoch is True, not a whole number"),
        ("settings", "x", r"it has no settings"),
        ("runs", [], r"it holds 0 runs, not 2"),
        ("rng", DELETE, r"it has no random-number generator state"),
        ("runs/1/optimizer", "sgd", r"its runs are not sgd, adam in that order"),
        ("runs/0/seconds", float("nan"), r"sgd: training time nan is not a number of seconds"),
        ("runs/0/seconds", -1.0, r"sgd: training time -1.0"),
        ("runs/1/history", [], r"adam: 0 epochs of history for epoch 3"),
        ("runs/1/history/1/epoch", 5, r"adam, epoch 2 of the history: out of order"),
        ("runs/0/history/0/test_loss", float("inf"), r"sgd, epoch 1 of the history: test_loss"),
        ("runs/0/history/2/test_accuracy", 0.5,
         r"sgd, epoch 3 of the history: a test accuracy in a regression run"),
        ("runs/0/model/0.weight", torch.zeros(3), r"sgd: 0.weight is \(3,\) torch.float32"),
        ("runs/0/model/0.bias", DELETE, r"sgd: the model's tensors are not this network's"),
        ("runs/0/optimizer_state", {}, r"sgd: the optimizer state is not a torch.optim"),
    ],
)
def test_every_checkpoint_field_is_checked(
    tmp_path: Path, where: str, value: Any, message: str
) -> None:
    path = tmp_path / "ck.pt"
    config = dataclasses.replace(SMALL, epochs=3)
    compare_optimizers(small_task(), "sgd,adam", config, checkpoint=path)
    payload = ckpt.load_checkpoint(path)
    _tamper(payload, where, value)
    ckpt.save_checkpoint(path, payload)
    before = path.read_bytes()
    with pytest.raises(ckpt.CheckpointError, match=rf"checkpoint {path} is damaged: {message}"):
        compare_optimizers(small_task(), "sgd,adam", config, checkpoint=path, resume=True)
    assert path.read_bytes() == before
