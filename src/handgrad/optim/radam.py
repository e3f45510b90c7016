"""RAdam (Liu et al., 2020): Adam whose adaptive step waits until its variance is tractable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._common import (
    as_float,
    check_adam_arguments,
    decayed_gradient,
    decayed_gradients,
    squeeze_scalar,
    step_value,
    step_values,
)


class RAdam(Optimizer):
    r"""RAdam, interchangeable with ``torch.optim.RAdam`` (arguments, state, errors).

    For each parameter θ with gradient g at step t (γ = lr, λ = weight_decay)::

        g   ← −g                                  if maximize
        g   ← g + λθ                              (or θ ← θ(1 − γλ) if decoupled_weight_decay)
        m   ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
        ρ∞  = 2/(1 − β₂) − 1,      ρₜ = ρ∞ − 2t β₂ᵗ/(1 − β₂ᵗ)
        m̂   = m / (1 − β₁ᵗ)
        if ρₜ > 5:  r = √((ρₜ−4)(ρₜ−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρₜ))
                    θ ← θ − γ m̂ · √(1 − β₂ᵗ)/(√v + ε) · r     (ε added to the uncorrected √v)
        else:       θ ← θ − γ m̂                               (plain momentum while warming up)

    Complex parameters are updated as (Re, Im) pairs; ``lr`` may be a 1-element tensor;
    ``foreach=None`` runs the multi-tensor body.
    """

    state_keys = ("step", "exp_avg", "exp_avg_sq")
    elementwise = True
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False,
        "decoupled_weight_decay": False, "capturable": False,
    }  # fmt: skip
    sparse_error = "RAdam does not support sparse gradients"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_adam_arguments(lr, eps, betas, weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The update rule one tensor at a time, with the multi-tensor body's arithmetic (one
        combined scalar per tensor, where torch's single-tensor body multiplies by r and the
        adaptive factor in turn: ~1e-16 relative apart).

        The temporaries (−g, g + λθ, γ m̂ and the denominator) live in reused buffers
        (:attr:`scratch`).
        """
        beta1, beta2, lr, eps, decay, decoupled, maximize = _hyperparameters(group)
        scratch = self.scratch
        for param, grad, exp_avg, exp_avg_sq, step_tensor in zip(
            params, grads, state["exp_avg"], state["exp_avg_sq"], state["step"], strict=True
        ):
            step = step_value(step_tensor)
            grad = decayed_gradient(param, grad, lr=lr, weight_decay=decay, decoupled=decoupled,
                                    maximize=maximize, scratch=scratch)  # fmt: skip
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

            # The multi-tensor body's arithmetic, one tensor at a time (the same bits): one
            # scalar per tensor, −γ/(1 − β₁ᵗ) while warming up, times r·√(1 − β₂ᵗ) once rectified.
            step_size = as_float(lr) / (1 - beta1**step)
            rect = _rectification(beta2, step)
            if rect is None:
                param.add_(torch.mul(exp_avg, -step_size, out=scratch.like(exp_avg)))
            else:
                denom = torch.sqrt(exp_avg_sq, out=scratch.like(exp_avg_sq, 3)).add_(eps)
                param.addcdiv_(exp_avg, denom, value=-step_size * rect * (1 - beta2**step) ** 0.5)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The same rule on whole lists of tensors (``torch._foreach_*``), one device and dtype.

        Parameters are split by whether their step is rectified, so each part is one
        ``addcdiv`` (rectified) or one ``add`` (warming up) with a scalar per tensor.
        """
        beta1, beta2, lr, eps, decay, decoupled, maximize = _hyperparameters(group)
        exp_avgs, exp_avg_sqs = state["exp_avg"], state["exp_avg_sq"]
        grads = decayed_gradients(params, grads, lr=lr, weight_decay=decay, decoupled=decoupled,
                                  maximize=maximize)  # fmt: skip
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        del grads

        rectified: list[int] = []
        rectified_sizes: list[float] = []
        warming: list[int] = []
        warming_sizes: list[float] = []
        for index, step in enumerate(step_values(state["step"])):
            step_size = as_float(lr) / (1 - beta1**step)
            rect = _rectification(beta2, step)
            if rect is None:
                warming.append(index)
                warming_sizes.append(-step_size)
            else:
                rectified.append(index)
                rectified_sizes.append(-step_size * rect * (1 - beta2**step) ** 0.5)
        if warming:
            # θ − γ m̂: one scalar per tensor, so scale a copy of m and add it.
            scaled = torch._foreach_mul([exp_avgs[i] for i in warming], warming_sizes)
            torch._foreach_add_([params[i] for i in warming], scaled)
        if rectified:
            denom = torch._foreach_sqrt([exp_avg_sqs[i] for i in rectified])
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(
                [params[i] for i in rectified],
                [exp_avgs[i] for i in rectified],
                denom,
                rectified_sizes,
            )

    # A fast path, the single-tensor body (the same bits as update; tests/optim): tensors of
    # at least LARGE_TENSOR_ELEMENTS elements (bench_optim "4 params of 1M", paired against
    # the plain body, one thread: 0.80 of its time; 0.63 of torch foreach, the plain body
    # 0.78; issue 12).
    update_large = update_single


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """β₁, β₂, γ (a 1-element tensor as 0-d), ε, λ, decoupled_weight_decay and maximize."""
    beta1, beta2 = group["betas"]
    return (beta1, beta2, squeeze_scalar(group["lr"]), group["eps"], group["weight_decay"],
            group["decoupled_weight_decay"], group["maximize"])  # fmt: skip


def _rectification(beta2: float, step: float) -> float | None:
    """r for ρₜ > 5, else None (the variance of the adaptive step is not yet tractable)."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2**step / (1 - beta2**step)
    if not rho_t > 5.0:
        return None
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
