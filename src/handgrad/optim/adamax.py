"""Adamax (Kingma & Ba, 2015, section 7): Adam with an infinity-norm second moment."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._common import (
    as_float,
    check_adam_arguments,
    decayed_gradient,
    decayed_gradients,
    same_or_list,
    squeeze_scalar,
    step_value,
    step_values,
)


class Adamax(Optimizer):
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

    state_keys = ("step", "exp_avg", "exp_inf")
    elementwise = True
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }
    sparse_error = "Adamax does not support sparse gradients"

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
        check_adam_arguments(lr, eps, betas, weight_decay)
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

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The update rule one tensor at a time: the readable reference body (torch's order).

        The temporaries (−g, g + λθ, |g| + ε) live in reused buffers (:attr:`scratch`).
        """
        beta1, beta2, lr, eps, decay, maximize = _hyperparameters(group)
        scratch = self.scratch
        for param, grad, exp_avg, exp_inf, step in zip(
            params, grads, state["exp_avg"], state["exp_inf"], state["step"], strict=True
        ):
            grad = decayed_gradient(param, grad, lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize, scratch=scratch)  # fmt: skip
            exp_avg.lerp_(grad, 1 - beta1)
            bound = torch.abs(grad, out=scratch.like(grad)).add_(eps)
            torch.maximum(exp_inf.mul_(beta2), bound, out=exp_inf)
            step_size = lr / (1 - beta1 ** step_value(step))
            param.addcdiv_(exp_avg, exp_inf, value=-as_float(step_size))

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The same rule on whole lists of tensors (``torch._foreach_*``), one device and dtype."""
        beta1, beta2, lr, eps, decay, maximize = _hyperparameters(group)
        exp_avgs, exp_infs = state["exp_avg"], state["exp_inf"]
        decayed = decayed_gradients(params, grads, lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize)  # fmt: skip
        torch._foreach_lerp_(exp_avgs, decayed, 1 - beta1)
        torch._foreach_mul_(exp_infs, beta2)
        # |g| + ε: into the temporaries we own, a fresh list when g is still p.grad.
        if decayed is not grads:
            torch._foreach_abs_(decayed)
            bound = decayed
        else:
            bound = list(torch._foreach_abs(grads))
        torch._foreach_add_(bound, eps)
        torch._foreach_maximum_(exp_infs, bound)
        del bound, decayed

        step_sizes = [-as_float(lr / (1 - beta1**step)) for step in step_values(state["step"])]
        torch._foreach_addcdiv_(params, exp_avgs, exp_infs, same_or_list(step_sizes))

    # Fast paths, both the single-tensor body (the same bits as update; tests/optim), with
    # bench_optim's figures, paired against the plain body (one thread, issue 12): tensors of
    # at least LARGE_TENSOR_ELEMENTS elements ("4 params of 1M": 0.57 of its time; 0.56 of
    # torch foreach, the plain body 0.99) and flat groups ("1-100-1 in one buffer": 0.25 of
    # its time; 0.22 of torch foreach, the plain body 0.80).
    update_large = update_single
    update_flat = update_single


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """β₁, β₂, γ (a 1-element tensor as 0-d), ε, λ and maximize, read from the group."""
    beta1, beta2 = group["betas"]
    return (beta1, beta2, squeeze_scalar(group["lr"]), group["eps"], group["weight_decay"],
            group["maximize"])  # fmt: skip
