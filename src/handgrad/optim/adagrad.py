"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from handgrad.optim._base import Lists, Optimizer
from handgrad.optim._common import (
    add_sparse,
    check_at_least,
    check_fused_flags,
    check_fused_param,
    check_lr,
    new_step,
    real_views,
    squeeze_scalar,
)


class Adagrad(Optimizer):
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

    state_keys = ("step", "sum")
    elementwise = True
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False, "fused": None,
    }  # fmt: skip
    sparse_gradients = True  # update_single updates only the rows a sparse gradient touches

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
                self.state[p].update(self.init_state(p, group))

    def share_memory(self) -> None:
        """Move every ``sum`` accumulator to shared memory (for multi-process training)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        # torch reads the accumulator start from the optimizer defaults, not the group.
        tau = self.defaults["initial_accumulator_value"]
        return {
            "step": new_step(p, fused=group["fused"]),
            "sum": torch.full_like(
                p, complex(tau, tau) if p.is_complex() else tau,
                memory_format=torch.preserve_format,
            ),
        }  # fmt: skip

    def check(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if group["fused"]:
            for p in params:
                check_fused_param(p)
            if any(p.is_complex() or cast(Tensor, p.grad).is_sparse for p in params):
                raise RuntimeError("`fused` does not support sparse grad or complex param")

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        adagrad_multi_tensor(params, grads, state["sum"], state["step"], **_settings(group))

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        adagrad_single_tensor(params, grads, state["sum"], state["step"], **_settings(group))


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    return {
        "lr": squeeze_scalar(group["lr"]), "lr_decay": group["lr_decay"],
        "weight_decay": group["weight_decay"], "eps": group["eps"], "maximize": group["maximize"],
    }  # fmt: skip


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
    """Adagrad one tensor at a time (dense and sparse gradients), torch's order."""
    for param, grad, state_sum, step_t in zip(params, grads, sums, steps, strict=True):
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
    indices, values = grad.indices(), grad.values()

    add_sparse(state_sum, indices, values.pow(2))
    std_values = state_sum.sparse_mask(grad).values().sqrt_().add_(eps)
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
    """Adagrad on lists of dense tensors of one device and dtype (``torch._foreach_*``)."""
    if maximize:
        grads = list(torch._foreach_neg(grads))
    if weight_decay != 0:
        # g is our own copy when maximize negated it; otherwise p.grad must stay untouched.
        if maximize:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        else:
            grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
    minus_clr = [-lr / (1 + (step.item() - 1) * lr_decay) for step in steps]
    torch._foreach_addcmul_(sums, grads, grads, value=1)
    std = torch._foreach_sqrt(sums)
    torch._foreach_add_(std, eps)
    if weight_decay != 0 or maximize:
        torch._foreach_mul_(grads, minus_clr)  # type: ignore[arg-type]
        numerator = grads
    else:
        numerator = list(torch._foreach_mul(grads, minus_clr))  # type: ignore[arg-type]
    torch._foreach_addcdiv_(params, numerator, std)
