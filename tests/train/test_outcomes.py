"""How runs end: a diverged run stops while the others train on, a run that does not learn
says so, and both survive a checkpoint and a resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from handgrad.train import checkpoint as ckpt
from handgrad.train.compare import TrainConfig, compare_optimizers
from handgrad.train.tasks import Task, cubic_task

CONFIG = TrainConfig(epochs=4, batch_size=16, seed=3, options={"sgd": {"lr": 1e4}})


def small_task() -> Task:
    return cubic_task(seed=3, num_train=96, num_test=21)


def test_a_diverged_run_stops_and_the_others_train_on() -> None:
    seen: list[tuple[str, int]] = []
    result = compare_optimizers(small_task(), "sgd,adam", CONFIG,
                                on_epoch=lambda name, record: seen.append((name, record.epoch)))
    sgd, adam = result.runs
    assert sgd.status is not None
    assert sgd.status.state == "diverged"
    assert sgd.status.epoch == 1
    assert sgd.status.step is not None
    assert not math.isfinite(sgd.status.loss or 0.0)
    assert sgd.history == []
    assert adam.status is not None
    assert adam.status.trained
    assert seen == [("adam", 1), ("adam", 2), ("adam", 3), ("adam", 4)]
    assert [run.optimizer for run in result.failed] == ["sgd"]
    assert list(result.predictions()) == ["adam"]  # no prediction from non-finite weights


def test_a_run_whose_loss_rises_is_not_learning() -> None:
    config = TrainConfig(epochs=2, batch_size=16, seed=3, lr=1e-3,
                         options={"sgd": {"maximize": True}})
    (run,) = compare_optimizers(small_task(), "sgd", config).runs
    assert run.status is not None
    assert run.status.state == "not learning"
    assert run.initial_loss is not None
    assert run.status.loss is not None
    assert run.status.loss >= run.initial_loss
    assert run.status.reason().startswith("not learning (training loss ")


def test_statuses_survive_a_checkpoint_and_resume_bit_for_bit(tmp_path: Path) -> None:
    whole = compare_optimizers(small_task(), "sgd,adam", CONFIG)
    path = tmp_path / "ck.pt"

    class Stop(Exception):
        pass

    def stop(name: str, record: object) -> None:
        if getattr(record, "epoch", 0) == 3:
            raise Stop

    with pytest.raises(Stop):
        compare_optimizers(small_task(), "sgd,adam", CONFIG, checkpoint=path,
                           checkpoint_every=0, on_epoch=stop)
    saved = ckpt.load_checkpoint(path)
    assert saved["epoch"] == 2
    assert saved["runs"][0]["status"]["state"] == "diverged"
    assert saved["runs"][0]["history"] == []
    resumed = compare_optimizers(small_task(), "sgd,adam", CONFIG, checkpoint=path,
                                 resume=True)
    for a, b in zip(whole.runs, resumed.runs, strict=True):
        assert a.status == b.status
        assert a.history == b.history
        assert a.initial_loss == b.initial_loss
    for p, q in zip(whole.runs[1].model.parameters(), resumed.runs[1].model.parameters(),
                    strict=True):
        assert torch.equal(p, q)


def test_a_checkpoint_whose_diverged_run_has_too_much_history_is_damaged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ck.pt"
    compare_optimizers(small_task(), "sgd,adam", CONFIG, checkpoint=path)
    payload = ckpt.load_checkpoint(path)
    payload["runs"][0]["history"] = payload["runs"][1]["history"]  # 4 epochs after diverging
    ckpt.save_checkpoint(path, {k: v for k, v in payload.items()
                                if k not in ("format", "version")})
    with pytest.raises(ckpt.CheckpointError,
                       match="sgd: 4 epochs of history, but it diverged in epoch 1"):
        compare_optimizers(small_task(), "sgd,adam", CONFIG, checkpoint=path, resume=True)
