"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from handgrad.optim._base import ElementwiseOptimizer
from handgrad.optim._common import (
    add_sparse,
    check_at_least,
    check_fused_flags,
    check_fused_param,
    check_lr,
    fast_path,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
    real_views,
)


class Adagrad(ElementwiseOptimizer):
    r"""Adagrad (Duchi, Hazan & Singer, 2011), as torch.optim.Adagrad.

    With learning rate γ, lr decay η, weight decay λ and accumulator s₀ = τ, step t does::

        g  ← ∇f(θ)            (−∇f(θ) if maximize)
        g  ← g + λ θ
        γ̃  = γ / (1 + (t − 1) η)
        s  ← s + g²
        θ  ← θ − γ̃ g / (√s + ε)

    Complex parameters are treated as pairs of real coordinates. Sparse gradients update only
    the rows they touch (no weight decay then, as in torch). State: ``step`` (0-d tensor) and
    ``sum``, both created when the optimizer is built. ``fused=True`` is accepted with torch's
    checks and runs the multi-tensor body; ``differentiable=True`` is accepted and runs the
    single-tensor body (handgrad never records an update for autograd).
    """

    body_lists = ("params", "grads", "sum", "step")
    hyperparameters = ("lr", "lr_decay", "weight_decay", "eps", "maximize")
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False, "fused": None,
    }  # fmt: skip
    splits_large_tensors = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_at_least("lr_decay", lr_decay)
        check_at_least("weight_decay", weight_decay)
        check_at_least("initial_accumulator_value", initial_accumulator_value)
        check_at_least("epsilon", eps)
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        check_fused_flags(fused, foreach, differentiable)
        # torch creates Adagrad's state eagerly, so a state_dict exists before the first step.
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group, self.state[p])

    def share_memory(self) -> None:
        """Move every ``sum`` accumulator to shared memory (for multi-process training)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["step"] = new_step(p, fused=group["fused"])
        # torch reads the accumulator start from the optimizer defaults, not the group.
        tau = self.defaults["initial_accumulator_value"]
        state["sum"] = torch.full_like(
            p, complex(tau, tau) if p.is_complex() else tau, memory_format=torch.preserve_format
        )

    def _check_params(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if group["fused"]:
            for p in params:
                check_fused_param(p)
            if any(p.is_complex() or cast(Tensor, p.grad).is_sparse for p in params):
                raise RuntimeError("`fused` does not support sparse grad or complex param")

    def _fast(self, group: dict[str, Any], lists: dict[str, list[Tensor]]) -> bool:
        # Sparse gradients take the single-tensor body, which updates only the touched rows.
        multi = bool(group["fused"]) or fast_path(group)
        return multi and not any(g.is_sparse for g in lists["grads"])

    def _single_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        adagrad_single_tensor(*lists, **settings)

    def _multi_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        adagrad_multi_tensor(*lists, **settings)


def adagrad_single_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """Adagrad one tensor at a time (dense and sparse gradients)."""
    for param, grad, state_sum, step_t in zip(params, grads, sums, steps, strict=True):
        step_t += 1
        step = step_t.item()
        if maximize:
            grad = -grad
        if weight_decay != 0:
            if grad.is_sparse:
                raise RuntimeError("weight_decay option is not compatible with sparse gradients")
            grad = grad.add(param, alpha=weight_decay)
        clr = lr / (1 + (step - 1) * lr_decay)
        if grad.is_sparse:
            _sparse_update(param, grad, state_sum, clr, eps)
            continue
        grad, state_sum, param = real_views([grad, state_sum, param])
        state_sum.addcmul_(grad, grad, value=1)
        std = state_sum.sqrt().add_(eps)
        param.addcdiv_(grad, std, value=-clr)  # type: ignore[arg-type]


def _sparse_update(
    param: Tensor, grad: Tensor, state_sum: Tensor, clr: float | Tensor, eps: float
) -> None:
    # The update is not linear in g, so repeated indices must be summed first.
    grad = grad.coalesce()
    indices, values = grad._indices(), grad._values()

    add_sparse(state_sum, indices, values.pow(2))
    std_values = state_sum.sparse_mask(grad)._values().sqrt_().add_(eps)
    add_sparse(param, indices, values / std_values, alpha=-clr)


def adagrad_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """Adagrad on lists of dense tensors with ``torch._foreach_*`` (one kernel per operation)."""
    for p_, g_, s_, t_ in group_by_device_and_dtype([params, grads, sums, steps]):
        p, g, s = real_views(p_), real_views(g_), real_views(s_)
        increment_steps(t_, foreach=True)
        if maximize:
            g = list(torch._foreach_neg(g))
        if weight_decay != 0:
            # g is our own copy when maximize negated it; otherwise p.grad must stay untouched.
            if maximize:
                torch._foreach_add_(g, p, alpha=weight_decay)
            else:
                g = list(torch._foreach_add(g, p, alpha=weight_decay))
        minus_clr = [-lr / (1 + (step.item() - 1) * lr_decay) for step in t_]
        torch._foreach_addcmul_(s, g, g, value=1)
        std = torch._foreach_sqrt(s)
        torch._foreach_add_(std, eps)
        if weight_decay != 0 or maximize:
            torch._foreach_mul_(g, minus_clr)  # type: ignore[arg-type]
            numerator = g
        else:
            numerator = list(torch._foreach_mul(g, minus_clr))  # type: ignore[arg-type]
        torch._foreach_addcdiv_(p, numerator, std)
