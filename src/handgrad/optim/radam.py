"""RAdam (Liu et al., 2020): Adam whose adaptive step waits until its variance is tractable."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._common import (
    as_float,
    check_betas,
    check_lr,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
    params_with_grads,
    real_view,
    real_views,
    resolve_foreach,
    restore_tensor_steps,
    step_values,
)


class RAdam(torch.optim.Optimizer):
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
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_betas(betas)
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("capturable", False)
        restore_tensor_steps(self)

    def _group_tensors(self, group: dict[str, Any]) -> dict[str, list[Tensor]]:
        """Parameters with gradients and their state, created lazily on the first step."""
        params, grads = params_with_grads(group, "RAdam does not support sparse gradients")
        lists: dict[str, list[Tensor]] = {
            "params": params, "grads": grads, "exp_avg": [], "exp_avg_sq": [], "step": [],
        }  # fmt: skip
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = new_step(p, on_param_device=group["capturable"])
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key in ("exp_avg", "exp_avg_sq", "step"):
                lists[key].append(state[key])
        return lists

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One RAdam step for every parameter that has a gradient; returns ``closure()``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lists = self._group_tensors(group)
            if not lists["params"]:
                continue
            use_foreach = resolve_foreach(group["foreach"]) and not group["differentiable"]
            update = _multi_tensor_radam if use_foreach else _single_tensor_radam
            beta1, beta2 = group["betas"]
            update(
                lists["params"],
                lists["grads"],
                lists["exp_avg"],
                lists["exp_avg_sq"],
                lists["step"],
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                maximize=group["maximize"],
            )
        return loss


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
) -> None:
    """The update rule one tensor at a time: the readable reference body."""
    for i, param in enumerate(params):
        grad = real_view(-grads[i] if maximize else grads[i])
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
                grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

        bias_corrected_exp_avg = exp_avg / (1 - beta1**step)
        rect = _rectification(beta2, step)
        if rect is None:
            param.add_(bias_corrected_exp_avg * as_float(lr), alpha=-1.0)
        else:
            adaptive_lr = (1 - beta2**step) ** 0.5 / exp_avg_sq.sqrt().add_(eps)
            param.add_(bias_corrected_exp_avg * as_float(lr) * adaptive_lr * rect, alpha=-1.0)


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
