"""The trainer's fast epoch (handgrad.train.fast_epoch) against the ordinary step by step loop:
the same bits everywhere, the same refusals, and the ordinary loop where it does not apply."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import handgrad.nn as hnn
import handgrad.optim as hoptim
from handgrad.optim._base import flat_updates
from handgrad.train import trainer
from handgrad.train.fast_epoch import FastEpoch

# Every elementwise optimizer handgrad ships (a flat group runs as one tensor), with options
# that leave the defaults where each rule branches (momentum, amsgrad, a short RAdam
# warm-up, ASGD averaging from the first steps).
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "Adam": (hoptim.Adam, {"lr": 1e-2}),
    "Adam-amsgrad": (hoptim.Adam, {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
    "AdamW": (hoptim.AdamW, {"lr": 1e-2}),
    "SGD-momentum": (hoptim.SGD, {"lr": 1e-2, "momentum": 0.9, "nesterov": True}),
    "SGD": (hoptim.SGD, {"lr": 1e-2}),
    "RMSprop": (hoptim.RMSprop, {"lr": 1e-3, "momentum": 0.5, "centered": True}),
    "Adamax": (hoptim.Adamax, {"lr": 1e-2}),
    "RAdam": (hoptim.RAdam, {"lr": 1e-2}),
    "Adagrad": (hoptim.Adagrad, {"lr": 1e-2}),
    "Adadelta": (hoptim.Adadelta, {}),
    "Rprop": (hoptim.Rprop, {"lr": 1e-3}),
    "ASGD": (hoptim.ASGD, {"lr": 1e-2, "t0": 3}),
    "Lion": (hoptim.Lion, {"lr": 1e-3}),
    "SGDScheduleFree": (hoptim.SGDScheduleFree, {"lr": 1e-2, "warmup_steps": 3}),
    "AdamWScheduleFree": (hoptim.AdamWScheduleFree, {"lr": 1e-2, "warmup_steps": 3}),
    "Adan": (hoptim.Adan, {"lr": 1e-2}),
    "ADOPT": (hoptim.ADOPT, {"lr": 1e-2}),
}

NOT_FLAT = {"ASGD"}  # eta and mu: a 0-d state per parameter

N = 40


def _network(dtype: torch.dtype, outputs: int) -> hnn.Sequential:
    torch.manual_seed(0)
    net = hnn.Sequential(
        hnn.Linear(3, 8), hnn.Tanh(), hnn.Linear(8, 8), hnn.Sigmoid(), hnn.Linear(8, 8),
        hnn.ReLU(), hnn.Linear(8, outputs),
    ).to(dtype)  # fmt: skip
    hnn.flatten_parameters(net)
    return net


def _data(dtype: torch.dtype, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, generator=generator, dtype=dtype)
    if task == "regression":
        return x, torch.randn(N, 1, generator=generator, dtype=dtype)
    return x, torch.randint(0, 4, (N,), generator=generator)


def _batches(size: int, epoch: int) -> list[torch.Tensor]:
    return list(torch.randperm(N, generator=torch.Generator().manual_seed(epoch)).split(size))


class Run:
    """One training run: its epoch losses, then everything a step leaves behind."""

    def __init__(
        self, fast: bool, monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, task: str,
        make_optimizer: Callable[[Any], torch.optim.Optimizer], batch: int, epochs: int = 3,
        loss_fn: Any = None,
    ) -> None:  # fmt: skip
        self.net = _network(dtype, 1 if task == "regression" else 4)
        if loss_fn is None:
            loss_fn = hnn.MSELoss() if task == "regression" else hnn.CrossEntropyLoss()
        self.loss_fn = loss_fn
        self.optimizer = make_optimizer(self.net.parameters())
        self.fast_epochs = 0
        x, y = _data(dtype, task)
        real_steps = FastEpoch._steps

        def counted(*args: Any) -> Any:
            self.fast_epochs += 1
            return real_steps(*args)

        with monkeypatch.context() as patch:
            if fast:
                patch.setattr(FastEpoch, "_steps", counted)
            else:
                patch.setattr(FastEpoch, "of", classmethod(lambda cls, *args: None))
            self.losses = [
                trainer.train_epoch(self.net, self.loss_fn, self.optimizer, x, y,
                                    _batches(batch, epoch), epoch=epoch)
                for epoch in range(1, epochs + 1)
            ]  # fmt: skip
            # An ordinary step afterwards: any state the fast epochs made must take it.
            trainer.train_step(self.net, self.loss_fn, self.optimizer, x[:5], y[:5])

    def same_as(self, other: Run) -> None:
        assert self.losses == other.losses
        for mine, theirs in zip(self.net.parameters(), other.net.parameters(), strict=True):
            assert torch.equal(mine, theirs)
            assert mine.grad is not None
            assert theirs.grad is not None
            assert torch.equal(mine.grad, theirs.grad)
            assert not mine.grad.is_inference()
        mine_state = self.optimizer.state_dict()["state"]
        their_state = other.optimizer.state_dict()["state"]
        assert mine_state.keys() == their_state.keys()
        for index, entries in mine_state.items():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, their_state[index][key]), (index, key)
                else:
                    assert value == their_state[index][key], (index, key)
        assert flat_updates(self.optimizer) == flat_updates(other.optimizer)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_flat_optimizer_same_bits_as_the_step_by_step_loop(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls, options = OPTIMIZERS[name]

    def make(params: Any) -> torch.optim.Optimizer:
        return cls(params, **options)

    fast = Run(True, monkeypatch, torch.float64, "regression", make, batch=1)
    plain = Run(False, monkeypatch, torch.float64, "regression", make, batch=1)
    fast.same_as(plain)
    if name in NOT_FLAT:  # per-parameter 0-d state: never a flat group, never a fast epoch
        assert flat_updates(plain.optimizer) == fast.fast_epochs == 0
    else:
        assert fast.fast_epochs >= 2  # the first epoch may lay the state out flat first
    assert all(math.isfinite(loss) for loss in fast.losses)


@pytest.mark.parametrize("name", ["Adam", "Adagrad", "Rprop", "ADOPT", "Lion"])
def test_a_large_flat_layout_same_bits(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A layout of 65,536 elements or more takes the large-tensor body, whose temporaries
    live in the optimizer's kept scratch buffers: made in the fast epoch's inference mode,
    they would break the ordinary step that follows (Run makes one)."""
    cls, options = OPTIMIZERS[name]

    def wide(dtype: torch.dtype, outputs: int) -> hnn.Sequential:
        torch.manual_seed(0)
        net = hnn.Sequential(hnn.Linear(3, 256), hnn.Tanh(), hnn.Linear(256, 256), hnn.Tanh(),
                             hnn.Linear(256, outputs)).to(dtype)  # fmt: skip
        hnn.flatten_parameters(net)
        return net

    monkeypatch.setattr(__name__ + "._network", wide)
    assert sum(p.numel() for p in wide(torch.float32, 1).parameters()) >= 65_536
    runs = [
        Run(fast, monkeypatch, torch.float32, "regression", lambda p: cls(p, **options), 10, 2)
        for fast in (True, False)
    ]
    runs[0].same_as(runs[1])
    assert runs[0].fast_epochs >= 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("batch", [1, 3, 7])  # 7: a last batch of 5
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_losses_dtypes_and_batch_sizes_same_bits(
    dtype: torch.dtype, task: str, batch: int, reduction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def make(params: Any) -> torch.optim.Optimizer:
        return hoptim.Adam(params, lr=1e-2)

    def loss() -> Any:
        if task == "regression":
            return hnn.MSELoss(reduction=reduction)
        return hnn.CrossEntropyLoss(reduction=reduction)

    fast = Run(True, monkeypatch, dtype, task, make, batch, loss_fn=loss())
    plain = Run(False, monkeypatch, dtype, task, make, batch, loss_fn=loss())
    fast.same_as(plain)
    assert fast.fast_epochs == 3


def test_a_users_optimizer_runs_it_under_no_grad_with_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class MyAdam(hoptim.Adam):  # a subclass defined outside handgrad.optim
        pass

    fast = Run(True, monkeypatch, torch.float32, "classification", lambda p: MyAdam(p), batch=2)
    plain = Run(False, monkeypatch, torch.float32, "classification", lambda p: MyAdam(p), batch=2)
    fast.same_as(plain)
    assert fast.fast_epochs == 3


def test_what_a_step_leaves_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a fast epoch each layer, the network and the loss have released their ctx (a
    second backward is refused as after an ordinary step) and a forward starts afresh."""
    run = Run(True, monkeypatch, torch.float64, "regression", lambda p: hoptim.Adam(p), batch=4)
    assert run.fast_epochs == 3
    for module in (*run.net, run.net, run.loss_fn):
        with pytest.raises(ValueError, match="twice"):
            module.backward(torch.ones(1, 1, dtype=torch.float64))
    x, y = _data(torch.float64, "regression")
    run.loss_fn(run.net(x[:2]), y[:2])
    run.net.backward(run.loss_fn.backward())


@pytest.mark.parametrize("step", [1, 2, 9])
def test_divergence_stops_at_the_same_step_with_the_same_state(
    step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-finite loss stops the epoch before that step's update, naming the step, as
    the ordinary loop does; parameters and gradients are the ordinary loop's at that point."""
    x, y = _data(torch.float64, "regression")
    y[_batches(1, 1)[step - 1]] = math.inf
    results = []
    for fast in (True, False):
        net = _network(torch.float64, 1)
        optimizer = hoptim.Adam(net.parameters(), lr=1e-2)
        with monkeypatch.context() as patch:
            if not fast:
                patch.setattr(FastEpoch, "of", classmethod(lambda cls, *args: None))
            with pytest.raises(trainer.TrainingDiverged) as error:
                trainer.train_epoch(net, hnn.MSELoss(), optimizer, x, y, _batches(1, 1), epoch=1)
        results.append((str(error.value), error.value.step, net))
    (fast_message, fast_step, fast_net), (plain_message, plain_step, plain_net) = results
    assert fast_step == plain_step == step
    assert fast_message == plain_message
    assert "diverged at epoch 1, step" in fast_message
    for mine, theirs in zip(fast_net.parameters(), plain_net.parameters(), strict=True):
        assert torch.equal(mine, theirs)
        assert mine.grad is not None
        assert theirs.grad is not None
        assert torch.equal(torch.isnan(mine.grad), torch.isnan(theirs.grad))
        assert torch.equal(mine.grad.nan_to_num(), theirs.grad.nan_to_num())


def _steps_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = FastEpoch._steps

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(FastEpoch, "_steps", counted)
    return calls


def test_a_hook_keeps_every_step_ordinary(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _steps_run(monkeypatch)
    net = _network(torch.float64, 1)
    seen: list[int] = []
    net[1].register_forward_hook(lambda *args: seen.append(1))
    x, y = _data(torch.float64, "regression")
    optimizer = hoptim.Adam(net.parameters())
    trainer.train_epoch(net, hnn.MSELoss(), optimizer, x, y, _batches(4, 1), epoch=1)
    assert not calls
    assert len(seen) == N // 4


@pytest.mark.parametrize(
    "setup",
    [
        "not flat", "two groups", "weighted loss", "step hook", "torch network", "probabilities",
        "no reduction",
    ],
)
def test_where_it_does_not_apply_the_epoch_is_ordinary(
    setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _steps_run(monkeypatch)
    torch.manual_seed(0)
    batch = 4
    net: Any = hnn.Sequential(hnn.Linear(3, 8), hnn.Tanh(), hnn.Linear(8, 4)).double()
    loss_fn: Any = hnn.CrossEntropyLoss()
    x, y = _data(torch.float64, "classification")
    if setup != "not flat":
        hnn.flatten_parameters(net)
    if setup == "two groups":
        params = list(net.parameters())
        optimizer = hoptim.Adam([{"params": params[:2]}, {"params": params[2:]}])
    else:
        optimizer = hoptim.Adam(net.parameters())
    if setup == "weighted loss":
        loss_fn = hnn.CrossEntropyLoss(weight=torch.rand(4, dtype=torch.float64))
    if setup == "step hook":
        optimizer.register_step_post_hook(lambda *args: None)
    if setup == "torch network":
        net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
        net = net.double()
        loss_fn = torch.nn.CrossEntropyLoss()
        optimizer = hoptim.Adam(net.parameters())
    if setup == "no reduction":  # (batches of one: a loss of one element per step)
        loss_fn = hnn.CrossEntropyLoss(reduction="none")
        batch = 1
    if setup == "probabilities":
        y = torch.softmax(torch.randn(N, 4, dtype=torch.float64), dim=1)
    before = [p.detach().clone() for p in net.parameters()]
    loss = trainer.train_epoch(net, loss_fn, optimizer, x, y, _batches(batch, 1), epoch=1)
    assert not calls
    assert math.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


def test_a_target_out_of_range_in_a_later_batch_is_refused_as_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Class-index targets are checked once for all of y: one out of range, past the first
    (checked) batch, keeps the epoch ordinary, and its step refuses it with the loss's own
    ValueError."""
    calls = _steps_run(monkeypatch)
    net = _network(torch.float64, 4)
    x, y = _data(torch.float64, "classification")
    batches = _batches(4, 1)
    y[batches[3][0]] = 7  # 4 classes
    optimizer = hoptim.Adam(net.parameters())
    with pytest.raises(ValueError, match="target 7 is out of range for 4 classes"):
        trainer.train_epoch(net, hnn.CrossEntropyLoss(), optimizer, x, y, batches, epoch=1)
    assert not calls
