"""Adadelta: step sizes from the ratio of running RMS of updates to running RMS of gradients."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from handgrad.optim._base import Lists, Optimizer
from handgrad.optim._common import (
    check_at_least,
    check_lr,
    decayed_gradient,
    decayed_gradients,
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

    state_keys = ("step", "square_avg", "acc_delta")
    elementwise = True
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False, "capturable": False,
    }  # fmt: skip
    sparse_error = "Adadelta does not support sparse gradients"

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

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """Adadelta one tensor at a time (torch's order)."""
        lr, rho, eps, decay, maximize = _hyperparameters(group)
        for param, grad, square_avg, acc_delta in zip(
            params, grads, state["square_avg"], state["acc_delta"], strict=True
        ):
            grad = decayed_gradient(param, grad, lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize, scratch=None)  # fmt: skip
            square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
            std = square_avg.add(eps).sqrt_()
            delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
            acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
            param.add_(delta, alpha=-lr)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """Adadelta on lists of tensors of one device and dtype (``torch._foreach_*``)."""
        lr, rho, eps, decay, maximize = _hyperparameters(group)
        square_avgs, acc_deltas = state["square_avg"], state["acc_delta"]
        grads = decayed_gradients(params, grads, lr=lr, weight_decay=decay, decoupled=False,
                                  maximize=maximize)  # fmt: skip
        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
        std = torch._foreach_add(square_avgs, eps)
        torch._foreach_sqrt_(std)
        deltas = torch._foreach_add(acc_deltas, eps)
        torch._foreach_sqrt_(deltas)
        torch._foreach_div_(deltas, std)
        torch._foreach_mul_(deltas, grads)
        torch._foreach_mul_(acc_deltas, rho)
        torch._foreach_addcmul_(acc_deltas, deltas, deltas, value=1 - rho)
        torch._foreach_add_(params, deltas, alpha=-lr)

    # Fast paths, both the single-tensor body (the same bits as update; tests/optim), with
    # bench_optim's figures, paired against the plain body (one thread, issue 12): flat groups
    # ("1-100-1 in one buffer": 0.53 of its time; 0.38 of torch foreach, the plain body 0.71)
    # and tensors of at least LARGE_TENSOR_ELEMENTS elements ("4 params of 1M": 0.80 of its
    # time; 0.73 of torch foreach, the plain body 0.97).
    update_large = update_single
    update_flat = update_single


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """γ (a 1-element tensor as 0-d), ρ, ε, λ and maximize, read from the group."""
    return (squeeze_scalar(group["lr"]), group["rho"], group["eps"], group["weight_decay"],
            group["maximize"])  # fmt: skip
