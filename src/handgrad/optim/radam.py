"""RAdam (Liu et al., 2020): Adam whose adaptive step waits until its variance is tractable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import ElementwiseOptimizer
from ._common import (
    Scratch,
    as_float,
    check_at_least,
    check_betas,
    check_lr,
    group_by_device_and_dtype,
    increment_steps,
    out_like,
    real_view,
    real_views,
    step_values,
)


class RAdam(ElementwiseOptimizer):
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

    body_lists = ("params", "grads", "exp_avg", "exp_avg_sq", "step")
    hyperparameters = ("betas", "lr", "eps", "weight_decay", "decoupled_weight_decay", "maximize")
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
        check_lr(lr)
        check_at_least("epsilon", eps)
        check_betas(betas)
        check_at_least("weight_decay", weight_decay)
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

    def _single_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        _single_tensor_radam(*lists, **settings)

    def _multi_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        _multi_tensor_radam(*lists, **settings)


def _rectification(beta2: float, step: float) -> float | None:
    """r for ρₜ > 5, else None (the variance of the adaptive step is not yet tractable)."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2**step / (1 - beta2**step)
    if not rho_t > 5.0:
        return None
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


def _single_tensor_radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    lr: float | Tensor,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    scratch: Scratch | None = None,
) -> None:
    """The update rule one tensor at a time: the readable reference body.

    With ``scratch`` the temporaries (−g, g + λθ, m̂ and the adaptive factor) live in
    reused buffers.
    """
    for i, param in enumerate(params):
        grad = grads[i]
        grad = real_view(torch.neg(grad, out=out_like(scratch, grad, 1)) if maximize else grad)
        param, exp_avg, exp_avg_sq = (
            real_view(param),
            real_view(exp_avgs[i]),
            real_view(exp_avg_sqs[i]),
        )
        step_t = steps[i]
        step_t += 1
        step = float(step_t.item())
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(as_float(1 - lr * weight_decay))
            else:
                grad = torch.add(grad, param, alpha=weight_decay, out=out_like(scratch, grad, 2))
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

        # γ m̂ (· adaptive factor · r), in torch's order of rounding
        update = torch.div(exp_avg, 1 - beta1**step, out=out_like(scratch, exp_avg)).mul_(
            as_float(lr)
        )
        rect = _rectification(beta2, step)
        if rect is not None:
            adaptive_lr = torch.sqrt(exp_avg_sq, out=out_like(scratch, exp_avg_sq, 3)).add_(eps)
            numerator = torch.tensor((1 - beta2**step) ** 0.5, dtype=exp_avg_sq.dtype)
            torch.div(numerator.to(exp_avg_sq.device), adaptive_lr, out=adaptive_lr)
            update.mul_(adaptive_lr).mul_(rect)
        param.sub_(update)


def _multi_tensor_radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    lr: float | Tensor,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The same rule on whole lists of tensors (``torch._foreach_*``), per device and dtype.

    Parameters are split by whether their step is rectified, so each part is one
    ``addcdiv`` (rectified) or one ``add`` (warming up) with a scalar per tensor.
    """
    for g_params, g_grads, g_exp_avgs, g_exp_avg_sqs, g_steps in group_by_device_and_dtype(
        [params, grads, exp_avgs, exp_avg_sqs, steps]
    ):
        increment_steps(g_steps, foreach=True)
        g_params, g_exp_avgs, g_exp_avg_sqs = (
            real_views(g_params), real_views(g_exp_avgs), real_views(g_exp_avg_sqs)
        )  # fmt: skip
        g_grads = real_views(g_grads)
        if maximize:
            g_grads = list(torch._foreach_neg(g_grads))
        if weight_decay != 0:
            if decoupled_weight_decay:
                torch._foreach_mul_(g_params, as_float(1 - lr * weight_decay))
            elif maximize:
                torch._foreach_add_(g_grads, g_params, alpha=weight_decay)
            else:
                g_grads = list(torch._foreach_add(g_grads, g_params, alpha=weight_decay))
        torch._foreach_lerp_(g_exp_avgs, g_grads, 1 - beta1)
        torch._foreach_mul_(g_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(g_exp_avg_sqs, g_grads, g_grads, 1 - beta2)
        del g_grads

        rectified: list[int] = []
        rectified_sizes: list[float] = []
        warming: list[int] = []
        warming_sizes: list[float] = []
        for index, step in enumerate(step_values(g_steps)):
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
            scaled = torch._foreach_mul([g_exp_avgs[i] for i in warming], warming_sizes)
            torch._foreach_add_([g_params[i] for i in warming], scaled)
        if rectified:
            denom = torch._foreach_sqrt([g_exp_avg_sqs[i] for i in rectified])
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(
                [g_params[i] for i in rectified],
                [g_exp_avgs[i] for i in rectified],
                denom,
                rectified_sizes,
            )
