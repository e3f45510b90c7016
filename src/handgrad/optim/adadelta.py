"""Adadelta: step sizes from the ratio of running RMS of updates to running RMS of gradients."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from handgrad.optim._base import ElementwiseOptimizer
from handgrad.optim._bookkeeping import check_capturable
from handgrad.optim._common import (
    check_at_least,
    check_lr,
    group_by_device_and_dtype,
    increment_steps,
    real_views,
)


class Adadelta(ElementwiseOptimizer):
    r"""Adadelta (Zeiler, 2012), as torch.optim.Adadelta.

    With learning rate γ, decay ρ and weight decay λ, starting from v = u = 0, each step does::

        g  ← ∇f(θ)            (−∇f(θ) if maximize)
        g  ← g + λ θ
        v  ← ρ v + (1 − ρ) g²
        Δ  = √(u + ε) / √(v + ε) · g
        u  ← ρ u + (1 − ρ) Δ²
        θ  ← θ − γ Δ

    State: ``step``, ``square_avg`` (v), ``acc_delta`` (u). Complex parameters are treated as
    pairs of real coordinates.
    """

    body_lists = ("params", "grads", "square_avg", "acc_delta", "step")
    hyperparameters = ("lr", "rho", "eps", "weight_decay", "maximize")
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False, "capturable": False,
    }  # fmt: skip
    sparse_error = "Adadelta does not support sparse gradients"
    splits_large_tensors = False
    flat_updates = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_at_least("epsilon", eps)
        check_at_least("weight_decay", weight_decay)
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _check_params(self, group: dict[str, Any], params: list[Tensor]) -> None:
        check_capturable(group["capturable"], params)

    def _single_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        adadelta_single_tensor(*lists, **settings)

    def _multi_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        adadelta_multi_tensor(*lists, **settings)


def adadelta_single_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Adadelta one tensor at a time."""
    for param, grad, square_avg, acc_delta, step in zip(
        params, grads, square_avgs, acc_deltas, steps, strict=True
    ):
        step += 1
        if maximize:
            grad = -grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        param_r, grad, square_avg, acc_delta = real_views([param, grad, square_avg, acc_delta])
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        param_r.add_(delta, alpha=-lr)  # type: ignore[arg-type]


def adadelta_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Adadelta on lists of tensors with ``torch._foreach_*``."""
    for p_, g_, v_, u_, t_ in group_by_device_and_dtype(
        [params, grads, square_avgs, acc_deltas, steps]
    ):
        p, g, v, u = real_views(p_), real_views(g_), real_views(v_), real_views(u_)
        increment_steps(t_, foreach=True)
        if maximize:
            g = list(torch._foreach_neg(g))
        if weight_decay != 0:
            # g is our own copy when maximize negated it; otherwise p.grad must stay untouched.
            if maximize:
                torch._foreach_add_(g, p, alpha=weight_decay)
            else:
                g = list(torch._foreach_add(g, p, alpha=weight_decay))
        torch._foreach_mul_(v, rho)
        torch._foreach_addcmul_(v, g, g, value=1 - rho)
        std = torch._foreach_add(v, eps)
        torch._foreach_sqrt_(std)
        deltas = torch._foreach_add(u, eps)
        torch._foreach_sqrt_(deltas)
        torch._foreach_div_(deltas, std)
        torch._foreach_mul_(deltas, g)
        torch._foreach_mul_(u, rho)
        torch._foreach_addcmul_(u, deltas, deltas, value=1 - rho)
        torch._foreach_add_(p, deltas, alpha=-lr)  # type: ignore[arg-type]
