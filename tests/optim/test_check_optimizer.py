"""check_optimizer catches the classic homework mistakes, on every layout, and passes correct
optimizers (float32 ones too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import handgrad.optim as hg
from handgrad.check import check_optimizer
from handgrad.check.optimizer import LAYOUTS, OptimizerCheckResult
from tests.optim.rows import ROWS


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
                # complex numbers as (Re, Im) pairs, torch's convention
                real = torch.view_as_real if p.is_complex() else (lambda t: t)
                g, x = real(p.grad), real(p)
                m, v = real(state["exp_avg"]), real(state["exp_avg_sq"])
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * (g * g if self.square else g))
                if self.bias_correction:
                    m, v = m / (1 - beta1**t), v / (1 - beta2**t)
                x -= group["lr"] * m / (v.sqrt() + (group["eps"] if self.use_eps else 0.0))


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


def test_a_correct_textbook_adam_passes_on_every_layout(device: torch.device) -> None:
    result = check_optimizer(_homework(), reference=torch.optim.Adam, lr=0.05, device=device)
    assert isinstance(result, OptimizerCheckResult)
    assert result.passed, str(result)
    assert result.step is None
    assert result.layouts == LAYOUTS
    assert result.steps_run == 40 + 12 * (len(LAYOUTS) - 1)
    assert "agree for all" in str(result)


def test_a_correct_float32_optimizer_passes() -> None:
    # float32 rounding differs from torch's by ~1e-9 at step 2: within float32's tolerances.
    result = check_optimizer(_homework(), reference=torch.optim.Adam, lr=0.05,
                             dtype=torch.float32, layouts=("separate",))  # fmt: skip
    assert result.passed, str(result)
    strict = check_optimizer(_homework(), reference=torch.optim.Adam, lr=0.05,
                             dtype=torch.float32, layouts=("separate",), rtol=1e-12,
                             atol=0.0)  # fmt: skip
    assert not strict.passed  # the tolerance is what lets it pass


@pytest.mark.parametrize("row", [pytest.param(row, id=row.name) for row in ROWS])
def test_handgrad_optimizers_pass_on_every_layout(row) -> None:  # type: ignore[no-untyped-def]
    hyperparameters = dict(row.handover)
    result = check_optimizer(row.ours, reference=row.theirs, steps=12, **hyperparameters)
    assert result.passed, str(result)
    assert result.reference == f"torch.optim.{row.name}"
    skipped = {"Adafactor": {"complex"}}.get(row.name, set())
    assert set(result.layouts) == set(LAYOUTS) - skipped, str(result)


@pytest.mark.parametrize(
    ("ours", "hyperparameters"),
    [
        (hg.Adam, {"lr": 0.05, "amsgrad": True}),
        (hg.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        (hg.RMSprop, {"lr": 0.01, "centered": True}),
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
    assert result.layout == "separate"
    assert result.where is not None
    assert "state['exp_avg_sq']" in result.where
    assert "step 1" in str(result)
    assert "g·g (squared)" in result.detail  # the hint names the pattern, not ε


def test_catches_missing_bias_correction() -> None:
    result = check_optimizer(_homework(bias_correction=False), reference=torch.optim.Adam,
                             lr=0.05)  # fmt: skip
    assert not result.passed
    assert result.step == 1
    assert result.where == "parameter 0 (shape (5,))"
    assert result.max_rel_error > 0.1
    # At step 1 the update is (1 − β₁)/√(1 − β₂) = 0.1/√0.001 times torch's, in every entry.
    assert "bias correction" in result.detail
    assert "3.16228× the reference's at step 1, which is (1 − β₁ᵗ)/√(1 − β₂ᵗ)" in result.detail


def test_catches_missing_eps_as_division_by_zero(device: torch.device) -> None:
    result = check_optimizer(
        _homework(use_eps=False), reference=torch.optim.Adam, lr=0.05, device=device
    )
    assert not result.passed
    assert result.step == 1
    assert "NaN/inf" in result.detail
    assert "ε" in result.detail
    assert "gradient is exactly 0" in result.detail


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


class _NormScaled(hg.Optimizer):
    """SGD on g/‖g‖ per tensor: not element-wise, but (wrongly) declared so."""

    elementwise = True

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    def update(self, group: Any, params: Any, grads: Any, state: Any) -> None:
        for p, g in zip(params, grads, strict=True):
            p.add_(g / g.norm().clamp_min(1e-12), alpha=-group["lr"])


class _NormScaledReference(torch.optim.Optimizer):
    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                g = torch.view_as_real(p.grad) if p.is_complex() else p.grad
                x = torch.view_as_real(p) if p.is_complex() else p
                x.add_(g / g.norm().clamp_min(1e-12), alpha=-group["lr"])


def test_catches_a_rule_wrongly_declared_elementwise_on_the_flat_layout() -> None:
    result = check_optimizer(_NormScaled, reference=_NormScaledReference, lr=0.1)
    assert not result.passed
    assert result.layout == "flat"
    assert result.step == 1
    assert any("flat layout" in note for note in result.notes)
    # Declared honestly, the same rule passes everywhere.
    honest = type("HonestNormScaled", (_NormScaled,), {"elementwise": False})
    assert check_optimizer(honest, reference=_NormScaledReference, lr=0.1).passed


class _WrongLargeBody(hg.SGD):
    def update_large(self, group: Any, params: Any, grads: Any, state: Any) -> None:
        self.update({**group, "lr": group["lr"] * 1.5}, params, grads, state)


def test_catches_a_wrong_body_for_large_tensors() -> None:
    result = check_optimizer(_WrongLargeBody, reference=torch.optim.SGD, lr=0.1)
    assert not result.passed
    assert result.layout == "large"
    assert "1.5× the reference's" in result.detail


def test_a_layout_the_reference_refuses_is_skipped_with_a_note() -> None:
    result = check_optimizer(hg.Adafactor, lr=0.01, steps=5)
    assert result.passed, str(result)
    assert "complex" not in result.layouts
    assert any("complex layout skipped" in note for note in result.notes)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="steps"):
        check_optimizer(hg.Adam, steps=0)

    class NoSuchThing(torch.optim.Optimizer):
        pass

    with pytest.raises(TypeError, match="NoSuchThing"):
        check_optimizer(NoSuchThing)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda\\[:N\\]', got 'gpu'"):
        check_optimizer(hg.Adam, device="gpu")
    with pytest.raises(ValueError, match="layouts must be some of"):
        check_optimizer(hg.Adam, layouts=("sideways",))


def test_a_class_it_cannot_drive_is_a_clear_type_error() -> None:
    class Plain:
        """Not an optimizer: no param_groups, no state."""

        def __init__(self, params: Any, lr: float = 0.1) -> None:
            self.params = list(params)

        def step(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"needs a torch\.optim\.Optimizer class .*Plain.*"
                                        r"without param_groups, state"):  # fmt: skip
        check_optimizer(Plain, reference=torch.optim.SGD, lr=0.1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_cuda_asked_for_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="device 'cuda' asked for, but CUDA is not available"):
        check_optimizer(hg.Adam, device="cuda")
