"""Adamax (Kingma & Ba, 2015, section 7): Adam with an infinity-norm second moment."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._common import (
    Scratch,
    as_float,
    check_at_least,
    check_betas,
    check_lr,
    out_like,
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

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        adamax_multi_tensor(params, grads, state["exp_avg"], state["exp_inf"], state["step"],
                            **_settings(group))  # fmt: skip

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        adamax_single_tensor(params, grads, state["exp_avg"], state["exp_inf"], state["step"],
                             **_settings(group), scratch=self.scratch)  # fmt: skip

    # Fast paths, both the single-tensor body (the same bits as update; tests/optim), with
    # bench_optim's figures (ratios to torch foreach, issue 12): tensors of at least
    # LARGE_TENSOR_ELEMENTS elements ("4 params of 1M": 0.80, the plain body 0.92) and flat groups
    # ("1-100-1 in one buffer": 0.26 of torch foreach, the plain body 0.36).
    update_large = update_single
    update_flat = update_single


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return {
        "beta1": beta1, "beta2": beta2, "lr": squeeze_scalar(group["lr"]), "eps": group["eps"],
        "weight_decay": group["weight_decay"], "maximize": group["maximize"],
    }  # fmt: skip


def adamax_single_tensor(
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
    """The update rule one tensor at a time: the readable reference body (torch's order).

    With ``scratch`` the temporaries (−g, g + λθ, |g| + ε) live in reused buffers.
    """
    for i, param in enumerate(params):
        grad = torch.neg(grads[i], out=out_like(scratch, grads[i], 1)) if maximize else grads[i]
        if weight_decay != 0:
            grad = torch.add(grad, param, alpha=weight_decay, out=out_like(scratch, grad, 1))
        exp_avg, exp_inf = exp_avgs[i], exp_infs[i]

        exp_avg.lerp_(grad, 1 - beta1)
        bound = torch.abs(grad, out=out_like(scratch, grad)).add_(eps)
        torch.maximum(exp_inf.mul_(beta2), bound, out=exp_inf)
        step_size = lr / (1 - beta1 ** step_value(steps[i]))
        param.addcdiv_(exp_avg, exp_inf, value=-as_float(step_size))


def adamax_multi_tensor(
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
    """The same rule on whole lists of tensors (``torch._foreach_*``), one device and dtype."""
    if maximize:
        grads = list(torch._foreach_neg(grads))
        if weight_decay != 0:
            torch._foreach_add_(grads, params, alpha=weight_decay)
    elif weight_decay != 0:
        grads = list(torch._foreach_add(grads, params, alpha=weight_decay))

    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_infs, beta2)
    # |g| + ε: into the temporaries we own, a fresh list when g is still p.grad.
    if maximize or weight_decay != 0:
        torch._foreach_abs_(grads)
        bound = grads
    else:
        bound = list(torch._foreach_abs(grads))
    torch._foreach_add_(bound, eps)
    torch._foreach_maximum_(exp_infs, bound)
    del bound, grads

    step_sizes = [-as_float(lr / (1 - beta1**step)) for step in step_values(steps)]
    torch._foreach_addcdiv_(params, exp_avgs, exp_infs, same_or_list(step_sizes))
