"""Adamax (Kingma & Ba, 2015, section 7): Adam with an infinity-norm second moment."""

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
    same_or_list,
    step_value,
    step_values,
)


class Adamax(ElementwiseOptimizer):
    r"""Adamax, interchangeable with ``torch.optim.Adamax`` (arguments, state, errors).

    For each parameter θ with gradient g at step t (γ = lr, λ = weight_decay)::

        g  ← −g                          if maximize
        g  ← g + λθ
        m  ← β₁ m + (1 − β₁) g           (exp_avg)
        u  ← max(β₂ u, |g| + ε)          (exp_inf: ε sits inside the max)
        θ  ← θ − γ/(1 − β₁ᵗ) · m / u

    Complex parameters are updated as (Re, Im) pairs; ``lr`` may be a 1-element tensor;
    ``foreach=None`` runs the multi-tensor body.
    """

    body_lists = ("params", "grads", "exp_avg", "exp_inf", "step")
    hyperparameters = ("betas", "lr", "eps", "weight_decay", "maximize")
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }
    sparse_error = "Adamax does not support sparse gradients"
    flat_updates = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
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
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def _single_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        _single_tensor_adamax(*lists, **settings)

    def _multi_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        _multi_tensor_adamax(*lists, **settings)


def _single_tensor_adamax(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    lr: float | Tensor,
    eps: float,
    weight_decay: float,
    maximize: bool,
    scratch: Scratch | None = None,
) -> None:
    """The update rule one tensor at a time: the readable reference body.

    With ``scratch`` the temporaries (−g, g + λθ, |g| + ε) live in reused buffers.
    """
    for i, param in enumerate(params):
        grad = torch.neg(grads[i], out=out_like(scratch, grads[i], 1)) if maximize else grads[i]
        step_t = steps[i]
        step_t += 1
        if weight_decay != 0:
            grad = torch.add(grad, param, alpha=weight_decay, out=out_like(scratch, grad, 1))
        param, grad = real_view(param), real_view(grad)
        exp_avg, exp_inf = real_view(exp_avgs[i]), real_view(exp_infs[i])

        exp_avg.lerp_(grad, 1 - beta1)
        bound = torch.abs(grad, out=out_like(scratch, grad)).add_(eps)
        torch.maximum(exp_inf.mul_(beta2), bound, out=exp_inf)
        step_size = lr / (1 - beta1 ** step_value(step_t))
        param.addcdiv_(exp_avg, exp_inf, value=-as_float(step_size))


def _multi_tensor_adamax(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    lr: float | Tensor,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same rule on whole lists of tensors (``torch._foreach_*``), per device and dtype."""
    for g_params, g_grads, g_exp_avgs, g_exp_infs, g_steps in group_by_device_and_dtype(
        [params, grads, exp_avgs, exp_infs, steps]
    ):
        increment_steps(g_steps, foreach=True)
        g_params, g_exp_avgs, g_exp_infs = (
            real_views(g_params), real_views(g_exp_avgs), real_views(g_exp_infs)
        )  # fmt: skip
        g_grads = real_views(g_grads)
        if maximize:
            g_grads = list(torch._foreach_neg(g_grads))
            if weight_decay != 0:
                torch._foreach_add_(g_grads, g_params, alpha=weight_decay)
        elif weight_decay != 0:
            g_grads = list(torch._foreach_add(g_grads, g_params, alpha=weight_decay))

        torch._foreach_lerp_(g_exp_avgs, g_grads, 1 - beta1)
        torch._foreach_mul_(g_exp_infs, beta2)
        # |g| + ε: into the temporaries we own, a fresh list when g is still p.grad.
        if maximize or weight_decay != 0:
            torch._foreach_abs_(g_grads)
            bound = g_grads
        else:
            bound = list(torch._foreach_abs(g_grads))
        torch._foreach_add_(bound, eps)
        torch._foreach_maximum_(g_exp_infs, bound)
        del bound, g_grads

        step_sizes = [-as_float(lr / (1 - beta1**step)) for step in step_values(g_steps)]
        torch._foreach_addcdiv_(g_params, g_exp_avgs, g_exp_infs, same_or_list(step_sizes))
