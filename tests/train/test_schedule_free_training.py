"""Training with a schedule-free optimizer: train mode while stepping, the averaged weights
(eval mode) when measured, saved and handed back; a resumed run ends bit for bit where a
whole one ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import handgrad.nn as hn
from handgrad.optim import AdamW, SGDScheduleFree
from handgrad.privacy import DPOptimizer
from handgrad.train import checkpoint as ckpt
from handgrad.train.compare import TrainConfig, compare_optimizers
from handgrad.train.trainer import evaluate, run_epoch, set_optimizer_mode
from tests.train.test_compare import Interrupt, small_task, states_equal

CONFIG = TrainConfig(epochs=4, batch_size=16, seed=4, lr=0.05, backend="handgrad")


def _model() -> hn.Module:
    torch.manual_seed(0)
    return hn.Sequential(hn.Linear(1, 8), hn.Tanh(), hn.Linear(8, 1)).double()


def test_an_epoch_trains_in_train_mode_and_ends_measured_in_eval_mode() -> None:
    task = small_task()
    model = _model()
    optimizer = SGDScheduleFree(model.parameters(), lr=0.05)
    data = (task.x_train.double(), task.y_train.double(), task.x_test.double(),
            task.y_test.double())  # fmt: skip
    batches = [torch.arange(i, i + 16) for i in range(0, 96, 16)]
    for epoch in (1, 2):  # the second epoch starts from eval mode: train() first
        record = run_epoch(model, hn.MSELoss(), optimizer, data, batches, epoch=epoch,
                           kind="regression")  # fmt: skip
        assert optimizer.param_groups[0]["train_mode"] is False
        loss, _ = evaluate(model, hn.MSELoss(), data[2], data[3], "regression")
        assert record.test_loss == loss  # measured on the averaged weights
    averaged = [p.detach().clone() for p in model.parameters()]
    set_optimizer_mode(optimizer, training=True)
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), averaged, strict=True))


def test_the_switch_reaches_inside_wrappers_and_leaves_others_alone() -> None:
    model = _model()
    inner = SGDScheduleFree(model.parameters(), lr=0.05)
    wrapped = DPOptimizer(inner, noise_multiplier=0.0, max_grad_norm=1.0,
                          expected_batch_size=4)  # fmt: skip
    set_optimizer_mode(wrapped, training=True)
    assert inner.param_groups[0]["train_mode"] is True
    plain = AdamW(model.parameters())
    set_optimizer_mode(plain, training=False)  # no train()/eval(): nothing happens

    class Parts:
        def __init__(self, **parts: Any) -> None:
            self.parts = parts

    other = SGDScheduleFree(model.parameters(), lr=0.05)
    set_optimizer_mode(Parts(a=other, b=plain), training=True)
    assert other.param_groups[0]["train_mode"] is True


def test_compare_trains_and_hands_back_the_averaged_weights() -> None:
    result = compare_optimizers(small_task(), "sgdschedulefree,adamwschedulefree", CONFIG)
    for run in result.runs:
        assert run.history[-1].test_loss < run.history[0].test_loss


def test_resume_ends_bit_for_bit_where_a_whole_run_ends(tmp_path: Path) -> None:
    task = small_task()
    names = "sgdschedulefree,adamwschedulefree"
    whole = compare_optimizers(task, names, CONFIG, checkpoint=tmp_path / "whole.pt")

    def stop_after_epoch_2(optimizer: str, record: object) -> None:
        if optimizer == "adamwschedulefree" and getattr(record, "epoch", 0) == 2:
            raise Interrupt

    path = tmp_path / "cut.pt"
    with pytest.raises(Interrupt):
        compare_optimizers(task, names, CONFIG, checkpoint=path, on_epoch=stop_after_epoch_2,
                           checkpoint_every=0.0)  # fmt: skip
    saved = ckpt.load_checkpoint(path)
    assert saved["epoch"] == 1  # the last epoch every run finished
    for run in saved["runs"]:  # saved with the averaged weights in the model
        assert all(group["train_mode"] is False
                   for group in run["optimizer_state"]["param_groups"])  # fmt: skip
    resumed = compare_optimizers(task, names, CONFIG, checkpoint=path, resume=True)
    for a, b in zip(whole.runs, resumed.runs, strict=True):
        assert states_equal(a.model, b.model)
        assert [r.as_dict() for r in a.history] == [r.as_dict() for r in b.history]
