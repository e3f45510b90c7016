"""handgrad (hand-written backward + handgrad.optim) trains exactly as torch (autograd +
torch.optim) on the same comparison: float64, same weights, same batches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from handgrad import nn as hnn
from handgrad.train.compare import TrainConfig, compare_optimizers
from handgrad.train.tasks import Task, cubic_task, digits_task
from handgrad.train.trainer import fit


def as_float64(task: Task) -> Task:
    return dataclasses.replace(
        task,
        x_train=task.x_train.double(),
        x_test=task.x_test.double(),
        y_train=task.y_train.double() if task.kind == "regression" else task.y_train,
        y_test=task.y_test.double() if task.kind == "regression" else task.y_test,
    )


@pytest.mark.parametrize(
    ("task", "batch_size"),
    [
        pytest.param(as_float64(cubic_task(seed=2, num_train=128, dropout=0.1)), 16, id="cubic"),
        pytest.param(as_float64(cubic_task(seed=2, num_train=24)), 1, id="cubic-per-sample"),
        pytest.param(as_float64(digits_task(seed=2)), 256, id="digits"),
    ],
)
def test_handgrad_matches_torch_in_float64(
    task: Task, batch_size: int, device: torch.device
) -> None:
    if device.type == "cuda" and any(
        isinstance(m, torch.nn.Dropout) and m.p > 0 for m in task.reference_model(0).modules()
    ):
        pytest.skip(
            "torch's CUDA dropout draws its mask in a fused kernel, not with bernoulli_: the "
            "masks differ by design (dropout is compared on the CPU, as handgrad.check does)"
        )
    config = TrainConfig(epochs=3, batch_size=batch_size, seed=2, device=str(device))
    names = "sgd,rmsprop,adam"
    hand = compare_optimizers(task, names, config)
    reference = compare_optimizers(task, names, dataclasses.replace(config, backend="torch"))
    for a, b in zip(hand.runs, reference.runs, strict=True):
        assert not any(p.requires_grad for p in a.model.parameters())
        assert all(p.dtype == torch.float64 for p in a.model.parameters())
        assert all(p.device.type == device.type for p in a.model.parameters())
        assert type(a.model).__module__.startswith("handgrad.nn")
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-10, atol=1e-12)
        for ra, rb in zip(a.history, b.history, strict=True):
            assert ra.train_loss == pytest.approx(rb.train_loss, rel=1e-10)
            assert ra.test_loss == pytest.approx(rb.test_loss, rel=1e-10)
            assert ra.test_accuracy == rb.test_accuracy


def test_closure_optimizers_and_the_rest_of_the_family_match_torch(device: torch.device) -> None:
    task = as_float64(cubic_task(seed=1, num_train=64))
    names = "lbfgs,adagrad,adamw,nadam,radam,adamax,adadelta,rprop,asgd"
    config = TrainConfig(epochs=1, batch_size=32, seed=1, device=str(device))
    hand = compare_optimizers(task, names, config)
    reference = compare_optimizers(task, names, dataclasses.replace(config, backend="torch"))
    for a, b in zip(hand.runs, reference.runs, strict=True):
        assert a.final.train_loss == pytest.approx(b.final.train_loss, rel=1e-10), a.optimizer
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-9, atol=1e-12, msg=a.optimizer)


def test_fit_trains_a_users_handgrad_network(device: torch.device) -> None:
    task = cubic_task(seed=0, num_train=200)
    model = hnn.Sequential(hnn.Linear(1, 32), hnn.Tanh(), hnn.Linear(32, 1)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    seen: list[int] = []
    history = fit(model, hnn.MSELoss(), optimizer, task, epochs=30, batch_size=20,
                  on_epoch=lambda record: seen.append(record.epoch))
    assert seen == list(range(1, 31))
    assert history[-1].test_loss < 0.2 * history[0].test_loss
