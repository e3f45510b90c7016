"""Adadelta: step sizes from the ratio of running RMS of updates to running RMS of gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from handgrad.optim._bookkeeping import check_capturable, restore_group_flags
from handgrad.optim._common import (
    check_lr,
    fast_path,
    group_by_device_and_dtype,
    new_step,
    real_views,
    squeeze_scalar,
)


class Adadelta(Optimizer):
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
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        restore_group_flags(
            self,
            {"foreach": None, "maximize": False, "differentiable": False, "capturable": False},
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adadelta step on every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, square_avgs, acc_deltas, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adadelta does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = new_step(p, on_param_device=group["capturable"])
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                square_avgs.append(state["square_avg"])
                acc_deltas.append(state["acc_delta"])
                steps.append(state["step"])
            if not params:
                continue
            check_capturable(group["capturable"], params)
            update = (
                adadelta_multi_tensor
                if fast_path(group)
                else adadelta_single_tensor
            )
            update(
                params,
                grads,
                square_avgs,
                acc_deltas,
                steps,
                lr=squeeze_scalar(group["lr"]),
                rho=group["rho"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
        return loss


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
        torch._foreach_add_(t_, 1)
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
