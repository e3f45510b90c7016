"""The loop: hand-written and autograd paths take the same steps; divergence is named."""

from __future__ import annotations

import copy

import pytest
import torch

from handgrad import nn as hnn
from handgrad.train.sampler import EpochSampler
from handgrad.train.tasks import cubic_task, digits_task
from handgrad.train.trainer import (
    EpochRecord,
    TrainingDiverged,
    evaluate,
    needs_closure,
    run_epoch,
    train_epoch,
    train_step,
    uses_autograd,
)


def float64_cubic(
    dropout: float = 0.0, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The cubic task's torch network and training data in float64, on ``device``."""
    task = cubic_task(seed=0, num_train=64, dropout=dropout)
    model = task.reference_model(seed=0).to(device, torch.float64)
    return model, task.x_train.to(device, torch.float64), task.y_train.to(device, torch.float64)


def manual_autograd_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    batches: list[torch.Tensor],
) -> list[float]:
    """The textbook loop, written out, as the reference."""
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("batch_size", [1, 16, 64])
def test_autograd_path_is_the_textbook_loop(batch_size: int, device: torch.device) -> None:
    model, x, y = float64_cubic(device=device)
    reference = copy.deepcopy(model)
    batches = EpochSampler(len(x), batch_size, seed=0).batches(1)
    mean_loss = train_epoch(
        model, torch.nn.MSELoss(), torch.optim.Adam(model.parameters(), lr=0.01), x, y, batches,
        epoch=1,
    )
    losses = manual_autograd_epoch(
        reference, torch.optim.Adam(reference.parameters(), lr=0.01), x, y, batches
    )
    sizes = [len(batch) for batch in batches]
    assert mean_loss == pytest.approx(
        sum(loss * n for loss, n in zip(losses, sizes, strict=True)) / len(x), rel=1e-15
    )
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_hand_written_path_matches_autograd_in_float64(
    dropout: float, device: torch.device
) -> None:
    """A handgrad network trained by the loop's hand-written path takes the steps autograd
    takes on its torch twin (same batches; dropout draws the same masks from the same RNG)."""
    if dropout and device.type == "cuda":
        pytest.skip(
            "torch's CUDA dropout draws its mask in a fused kernel, not with bernoulli_: the "
            "masks differ by design (dropout is compared on the CPU, as handgrad.check does)"
        )
    reference, x, y = float64_cubic(dropout, device)
    model = hnn.from_torch(reference)
    assert not uses_autograd(model)
    assert uses_autograd(reference)
    batches = EpochSampler(len(x), 8, seed=0).batches(1)
    torch.manual_seed(1)  # seeds the CUDA generators too
    hand_loss = train_epoch(
        model, hnn.MSELoss(), torch.optim.Adam(model.parameters(), lr=0.01), x, y, batches,
        epoch=1,
    )
    torch.manual_seed(1)
    auto_loss = train_epoch(
        reference, torch.nn.MSELoss(), torch.optim.Adam(reference.parameters(), lr=0.01),
        x, y, batches, epoch=1,
    )
    assert hand_loss == pytest.approx(auto_loss, rel=1e-12)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert p.device == q.device
        torch.testing.assert_close(p, q.detach(), rtol=1e-12, atol=1e-12)
    assert not any(p.requires_grad for p in model.parameters())


def test_lbfgs_steps_through_the_closure() -> None:
    model, x, y = float64_cubic()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    before = evaluate(model, torch.nn.MSELoss(), x, y, "regression")[0]
    first = train_step(model, torch.nn.MSELoss(), optimizer, x, y)
    after = evaluate(model, torch.nn.MSELoss(), x, y, "regression")[0]
    assert first == pytest.approx(before, rel=1e-12)
    assert after < 0.5 * before


class HalvingSearch(torch.optim.Optimizer):
    """A user's closure-driven optimizer under a name the trainer has never heard of: it
    tries a gradient step and halves it until the loss falls."""

    def __init__(self, params: object, lr: float = 1.0) -> None:
        super().__init__(params, {"lr": lr})  # type: ignore[arg-type]

    def step(self, closure):  # type: ignore[no-untyped-def, override]
        start = closure()
        params = [p for group in self.param_groups for p in group["params"]]
        saved = [p.detach().clone() for p in params]
        grads = [p.grad.detach().clone() for p in params]
        step = self.param_groups[0]["lr"]
        for _ in range(30):
            with torch.no_grad():
                for p, p0, g in zip(params, saved, grads, strict=True):
                    p.copy_(p0 - step * g)
            if closure() < start:
                break
            step /= 2
        return start


class LBFGS(torch.optim.SGD):
    """Named like L-BFGS, stepped like SGD: the name must not matter."""


def test_closure_driven_optimizers_are_recognised_by_their_step_not_their_name() -> None:
    model, x, y = float64_cubic()
    assert needs_closure(torch.optim.LBFGS(model.parameters()))
    assert not needs_closure(LBFGS(model.parameters(), lr=0.1))
    search = HalvingSearch(model.parameters())
    assert needs_closure(search)
    before = evaluate(model, torch.nn.MSELoss(), x, y, "regression")[0]
    assert train_step(model, torch.nn.MSELoss(), search, x, y) == pytest.approx(before)
    assert evaluate(model, torch.nn.MSELoss(), x, y, "regression")[0] < before


def test_huge_learning_rate_stops_naming_epoch_and_step() -> None:
    model, x, y = float64_cubic()
    batches = EpochSampler(len(x), 8, seed=0).batches(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e6)
    with pytest.raises(TrainingDiverged) as caught:
        train_epoch(
            model, torch.nn.MSELoss(), optimizer, x, y, batches, epoch=3, label="sgd"
        )
    message = str(caught.value)
    assert message.startswith("sgd diverged at epoch 3, step ")
    step = int(message.split("step ")[1].split(":")[0])
    assert 2 <= step <= len(batches)  # step 1's loss is finite: it is the first to blow up
    assert "the training loss is " in message
    assert "try a smaller learning rate" in message


def test_divergence_in_the_last_step_is_caught_by_the_test_loss() -> None:
    model, x, y = float64_cubic()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e200)
    # One batch: its loss is finite, the step sends the weights to inf.
    with pytest.raises(TrainingDiverged, match=r"adam diverged at epoch 2, after its last step"):
        run_epoch(
            model, torch.nn.MSELoss(), optimizer, (x, y, x, y), [torch.arange(len(x))],
            epoch=2, kind="regression", label="adam",
        )


def test_evaluate_classification_accuracy_and_mode(device: torch.device) -> None:
    task = digits_task(seed=0)
    model = task.reference_model(seed=0).to(device)
    x, y = task.x_test.to(device), task.y_test.to(device)
    model.train()
    loss, accuracy = evaluate(model, torch.nn.CrossEntropyLoss(), x, y, "classification")
    with torch.no_grad():
        logits = model(x)
    expected = (logits.argmax(1) == y).sum().item() / len(y)
    assert accuracy == pytest.approx(expected, abs=0)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert model.training  # restored


def test_epoch_record_round_trips_through_a_dict() -> None:
    regression = EpochRecord(2, 0.5, 0.25)
    classification = EpochRecord(3, 0.5, 0.25, 0.875)
    assert regression.as_dict() == {"epoch": 2, "train_loss": 0.5, "test_loss": 0.25}
    assert classification.as_dict()["test_accuracy"] == 0.875
    for record in (regression, classification):
        assert EpochRecord.from_dict(record.as_dict()) == record
