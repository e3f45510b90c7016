"""check_optimizer catches the classic homework mistakes, and passes correct optimizers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import handgrad.optim as hg
from handgrad.check import check_optimizer
from handgrad.check.optimizer import OptimizerCheckResult


class _HomeworkAdam(torch.optim.Optimizer):
    """A textbook Adam with switches for the classic mistakes."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, square: bool = True, bias_correction: bool = True,
                 use_eps: bool = True) -> None:  # fmt: skip
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.square, self.bias_correction, self.use_eps = square, bias_correction, use_eps

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                g = p.grad
                state["exp_avg"] = beta1 * state["exp_avg"] + (1 - beta1) * g
                state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1 - beta2) * (
                    g * g if self.square else g
                )
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if self.bias_correction:
                    m, v = m / (1 - beta1**t), v / (1 - beta2**t)
                p -= group["lr"] * m / (v.sqrt() + (group["eps"] if self.use_eps else 0.0))


class _CS231nMomentum(torch.optim.Optimizer):
    """SGD momentum as in CS231n's optim.py: v = μv − γg; θ += v (the lr lives in v)."""

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.9) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                velocity = self.state[p].setdefault("velocity", torch.zeros_like(p))
                velocity.mul_(group["momentum"]).sub_(group["lr"] * p.grad)
                p += velocity


def _homework(**mistakes: bool) -> Callable[..., torch.optim.Optimizer]:
    def build(params: Any, **hyperparameters: Any) -> torch.optim.Optimizer:
        return _HomeworkAdam(params, **hyperparameters, **mistakes)

    build.__name__ = "HomeworkAdam"
    return build


def test_a_correct_textbook_adam_passes(device: torch.device) -> None:
    result = check_optimizer(_homework(), reference=torch.optim.Adam, lr=0.05, device=device)
    assert isinstance(result, OptimizerCheckResult)
    assert result.passed, str(result)
    assert result.step is None
    assert result.steps_run == 40
    assert "agree for all 40 steps" in str(result)


@pytest.mark.parametrize(
    ("ours", "hyperparameters"),
    [
        (hg.Adam, {"lr": 0.05, "amsgrad": True}),
        (hg.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        (hg.RMSprop, {"lr": 0.01, "centered": True}),
        (hg.NAdam, {"lr": 0.02}),
        (hg.RAdam, {"lr": 0.02}),
        (hg.Adamax, {"lr": 0.02}),
        (hg.AdamW, {"lr": 0.02}),
    ],
)
def test_handgrad_optimizers_pass_with_the_default_reference(
    ours: Any, hyperparameters: dict[str, Any], device: torch.device
) -> None:
    result = check_optimizer(ours, device=device, **hyperparameters)
    assert result.passed, str(result)
    assert result.reference == f"torch.optim.{ours.__name__}"
    assert result.notes == ()


def test_catches_second_moment_without_squaring(device: torch.device) -> None:
    result = check_optimizer(
        _homework(square=False), reference=torch.optim.Adam, lr=0.05, device=device
    )
    assert not result.passed
    assert result.step == 1
    assert result.where is not None
    assert "state['exp_avg_sq']" in result.where
    assert "step 1" in str(result)


def test_catches_missing_bias_correction() -> None:
    result = check_optimizer(_homework(bias_correction=False), reference=torch.optim.Adam,
                             lr=0.05)  # fmt: skip
    assert not result.passed
    assert result.step == 1
    assert result.where == "parameter 0 (shape (5,))"
    assert result.max_rel_error > 0.1


def test_catches_missing_eps_as_division_by_zero(device: torch.device) -> None:
    result = check_optimizer(
        _homework(use_eps=False), reference=torch.optim.Adam, lr=0.05, device=device
    )
    assert not result.passed
    assert result.step == 1
    assert "NaN/inf" in result.detail
    assert "ε" in result.detail


def test_catches_learning_rate_inside_the_momentum_buffer(device: torch.device) -> None:
    result = check_optimizer(_CS231nMomentum, reference=torch.optim.SGD, lr=0.05,
                             momentum=0.9, steps=20, device=device)  # fmt: skip
    assert not result.passed
    # identical while the lr is constant; the drop at step 11 reveals it
    assert result.step == 11
    assert result.where == "parameter 0 (shape (5,))"
    assert any("learning rate changed" in note for note in result.notes)
    assert any("state keys differ" in note for note in result.notes)
    assert "part at step 11" in str(result)


def test_without_a_schedule_the_lr_mistake_hides() -> None:
    result = check_optimizer(_CS231nMomentum, reference=torch.optim.SGD, lr=0.05,
                             momentum=0.9, steps=20, change_lr=False)  # fmt: skip
    assert result.passed


def test_reports_an_exception_in_step() -> None:
    class Broken(torch.optim.Optimizer):
        def __init__(self, params: Any, lr: float = 0.1) -> None:
            super().__init__(params, {"lr": lr})

        def step(self, closure: Any = None) -> None:  # type: ignore[override]
            raise ZeroDivisionError("oops")

    result = check_optimizer(Broken, reference=torch.optim.SGD, lr=0.1)
    assert not result.passed
    assert result.step == 1
    assert "ZeroDivisionError: oops" in result.detail


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="steps"):
        check_optimizer(hg.Adam, steps=0)

    class NoSuchThing(torch.optim.Optimizer):
        pass

    with pytest.raises(TypeError, match="NoSuchThing"):
        check_optimizer(NoSuchThing)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda\\[:N\\]', got 'gpu'"):
        check_optimizer(hg.Adam, device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_cuda_asked_for_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="device 'cuda' asked for, but CUDA is not available"):
        check_optimizer(hg.Adam, device="cuda")
