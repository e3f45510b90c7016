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
    decayed_gradient,
    decayed_gradients,
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

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """Adagrad one tensor at a time (dense and sparse gradients), torch's order."""
        lr, lr_decay, decay, eps, maximize = _hyperparameters(group)
        for param, grad, state_sum, step_t in zip(
            params, grads, state["sum"], state["step"], strict=True
        ):
            if decay != 0 and grad.is_sparse:  # g + λθ would be dense
                raise RuntimeError("weight_decay option is not compatible with sparse gradients")
            grad = decayed_gradient(param, grad, lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize, scratch=None)  # fmt: skip
            clr = lr / (1 + (step_t.item() - 1) * lr_decay)
            if grad.is_sparse:
                _sparse_update(param, grad, state_sum, clr, eps)
                continue
            grad, state_sum, param = real_views([grad, state_sum, param])
            state_sum.addcmul_(grad, grad, value=1)
            std = state_sum.sqrt().add_(eps)
            param.addcdiv_(grad, std, value=-clr)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """Adagrad on lists of dense tensors of one device and dtype (``torch._foreach_*``)."""
        lr, lr_decay, decay, eps, maximize = _hyperparameters(group)
        sums = state["sum"]
        decayed = decayed_gradients(params, grads, lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize)  # fmt: skip
        minus_clr = [-lr / (1 + (step.item() - 1) * lr_decay) for step in state["step"]]
        torch._foreach_addcmul_(sums, decayed, decayed, value=1)
        std = torch._foreach_sqrt(sums)
        torch._foreach_add_(std, eps)
        if decayed is not grads:  # our own temporaries: scaled in place
            torch._foreach_mul_(decayed, minus_clr)
            numerator = decayed
        else:
            numerator = list(torch._foreach_mul(grads, minus_clr))
        torch._foreach_addcdiv_(params, numerator, std)

    def update_large(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """:meth:`update` one large tensor at a time, its temporaries (√sum + ε, the scaled
        gradient) in reused buffers: the multi-tensor body's operations in its order, so the
        same bits (tests/optim). A fresh 4 MB temporary costs more in first-touch page faults
        than the arithmetic done in it. 4 params of 1M, paired, one thread: 0.71 of the
        multi-tensor body's time and 0.55 of torch foreach's; with weight decay 0.27 and 0.26
        (bench_optim's row was 1.03 of torch foreach before)."""
        lr, lr_decay, decay, eps, maximize = _hyperparameters(group)
        for param, grad, state_sum, step_t in zip(
            params, grads, state["sum"], state["step"], strict=True
        ):
            decayed = decayed_gradient(param, grad, lr=lr, weight_decay=decay, decoupled=False,
                                       maximize=maximize, scratch=self.scratch)  # fmt: skip
            minus_clr = -lr / (1 + (step_t.item() - 1) * lr_decay)
            state_sum.addcmul_(decayed, decayed, value=1)
            std = torch.sqrt(state_sum, out=self.scratch.like(state_sum)).add_(eps)
            if decayed is grad:  # never write into the caller's .grad
                numerator = torch.mul(grad, minus_clr, out=self.scratch.like(grad, slot=3))
            else:
                numerator = decayed.mul_(minus_clr)
            param.addcdiv_(numerator, std)


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """γ (a 1-element tensor as 0-d), its decay, λ, ε and maximize, read from the group."""
    return (squeeze_scalar(group["lr"]), group["lr_decay"], group["weight_decay"], group["eps"],
            group["maximize"])  # fmt: skip


def _sparse_update(
    param: Tensor, grad: Tensor, state_sum: Tensor, clr: float | Tensor, eps: float
) -> None:
    # The update is not linear in g, so repeated indices must be summed first.
    grad = grad.coalesce()
    indices, values = grad.indices(), grad.values()

    add_sparse(state_sum, indices, values.pow(2))
    std_values = state_sum.sparse_mask(grad).values().sqrt_().add_(eps)
    add_sparse(param, indices, values / std_values, alpha=-clr)
