"""ASGD: stochastic gradient descent with a decaying step and Polyak–Ruppert averaging."""

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
    scalar_dtype,
    squeeze_scalar,
)


class ASGD(Optimizer):
    r"""Averaged SGD (Polyak & Juditsky, 1992), as torch.optim.ASGD.

    With learning rate γ, decay λ (``lambd``), power α, averaging start t₀ and weight decay
    w, starting from η = γ, μ = 1 and ā = 0, step t does::

        g  ← ∇f(θ) + w θ      (−∇f(θ) + w θ if maximize)
        θ  ← θ (1 − λ η) − η g
        ā  ← ā + μ (θ − ā)           (the running average of the iterates)
        η  ← γ / (1 + λ γ t)^α
        μ  ← 1 / max(1, t − t₀)

    State: ``step``, ``eta`` (η) and ``mu`` (μ) as 0-d tensors, and ``ax`` (ā). The averaged
    parameters ā are what ASGD offers as its answer; θ itself keeps moving.
    """

    state_keys = ("step", "eta", "mu", "ax")
    elementwise = True
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False, "capturable": False,
    }  # fmt: skip
    sparse_error = "ASGD does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        check_lr(lr)
        check_at_least("weight_decay", weight_decay)
        defaults = {
            "lr": lr,
            "lambd": lambd,
            "alpha": alpha,
            "t0": t0,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Old pickles stored eta and mu as numbers; torch keeps them on the parameter's device.
        for group in self.param_groups:
            for p in group["params"]:
                p_state = self.state.get(p, {})
                for key in ("eta", "mu"):
                    if key in p_state and not torch.is_tensor(p_state[key]):
                        p_state[key] = torch.tensor(
                            p_state[key], dtype=scalar_dtype(), device=p.device
                        )

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        lr0 = squeeze_scalar(group["lr"])
        return {
            "step": torch.zeros((), device=p.device, dtype=scalar_dtype()),
            "eta": torch.as_tensor(lr0, device=p.device, dtype=scalar_dtype()).clone(),
            "mu": torch.ones((), device=p.device, dtype=scalar_dtype()),
            "ax": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """ASGD one tensor at a time (torch's order); ``step`` already counts this step."""
        lr, lambd, alpha, t0, decay, maximize = _hyperparameters(group)
        for param, grad, ax, mu, eta, step_t in zip(
            params, grads, *_state_lists(state), strict=True
        ):
            grad = decayed_gradient(param, grad, lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize, scratch=None)  # fmt: skip
            eta_value = eta.item()
            param.mul_(1 - lambd * eta_value)
            param.add_(grad, alpha=-eta_value)
            if mu.item() != 1:
                ax.add_(param.sub(ax).mul_(mu))
            else:
                ax.copy_(param)
            step = step_t.item()
            eta.copy_(torch.as_tensor(lr / ((1 + lambd * lr * step) ** alpha)))
            mu.copy_(torch.as_tensor(1 / max(1, step - t0)))

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """ASGD on lists of tensors of one device and dtype (``torch._foreach_*``).

        Here the decay and the gradient step are one multiply-add, θ ← θ − η (g + λ θ), as in
        torch's multi-tensor body (the same value up to rounding).
        """
        lr, lambd, _, _, decay, maximize = _hyperparameters(group)
        axs, mus, etas, _ = _state_lists(state)
        direction = decayed_gradients(params, grads, lr=lr, weight_decay=decay, decoupled=False,
                                      maximize=maximize)  # fmt: skip
        if direction is not grads:  # our own temporaries
            torch._foreach_add_(direction, params, alpha=lambd)
        else:
            direction = list(torch._foreach_add(grads, params, alpha=lambd))
        torch._foreach_addcmul_(params, direction, etas, value=-1)
        torch._foreach_addcmul_(axs, torch._foreach_sub(params, axs), mus)
        _next_eta_and_mu(group, state, params[0].device)

    def update_large(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """:meth:`update` one large tensor at a time, its temporaries (g + λθ, θ − ā) in
        reused buffers: the multi-tensor body's operations in its order, so the same bits
        (tests/optim). A fresh 4 MB temporary costs more in first-touch page faults than the
        arithmetic done in it. 4 params of 1M, paired, one thread: 0.51 of the multi-tensor
        body's time and 0.73 of torch foreach's (0.71 / 0.71 with weight decay; bench_optim's
        row was 1.00 of torch foreach before)."""
        lr, lambd, _, _, decay, maximize = _hyperparameters(group)
        axs, mus, etas, _ = _state_lists(state)
        for param, grad, ax, mu, eta in zip(params, grads, axs, mus, etas, strict=True):
            direction = decayed_gradient(param, grad, lr=lr, weight_decay=decay,
                                         decoupled=False, maximize=maximize,
                                         scratch=self.scratch)  # fmt: skip
            if direction is not grad:  # our own temporary
                direction.add_(param, alpha=lambd)
            else:
                direction = torch.add(grad, param, alpha=lambd,
                                      out=self.scratch.like(grad, slot=3))  # fmt: skip
            param.addcmul_(direction, eta, value=-1)
            ax.addcmul_(torch.sub(param, ax, out=self.scratch.like(param)), mu)
        _next_eta_and_mu(group, state, params[0].device)


def _next_eta_and_mu(group: dict[str, Any], state: Lists, device: torch.device) -> None:
    """η and μ for the next step from the step counts (both multi-tensor bodies end so).

    η is computed from the step read as a Python float (double precision), as torch's
    single-tensor body does; torch's multi-tensor body does this arithmetic in the float32
    step dtype, ~1e-8 relative away. We keep one answer for all our bodies: the accurate one.
    """
    lr, lambd, alpha, t0, _, _ = _hyperparameters(group)
    _, mus, etas, steps = _state_lists(state)
    counts = [step.item() for step in steps]
    new_etas = [
        torch.as_tensor(lr / ((1 + lambd * lr * count) ** alpha), device=device)
        for count in counts
    ]
    new_mus = [torch.as_tensor(1 / max(1, count - t0), device=device) for count in counts]
    torch._foreach_copy_(etas, new_etas)
    torch._foreach_copy_(mus, new_mus)


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """γ (a 1-element tensor as 0-d), λ (lambd), α, t₀, the weight decay and maximize."""
    return (squeeze_scalar(group["lr"]), group["lambd"], group["alpha"], group["t0"],
            group["weight_decay"], group["maximize"])  # fmt: skip


def _state_lists(state: Lists) -> tuple[list[Tensor], ...]:
    return state["ax"], state["mu"], state["eta"], state["step"]
