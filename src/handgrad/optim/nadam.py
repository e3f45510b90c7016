"""NAdam (Dozat, 2016): Adam with Nesterov momentum and a momentum-decay schedule."""

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
    scalar_dtype,
    squeeze_scalar,
    step_values,
)


class NAdam(Optimizer):
    r"""NAdam, interchangeable with ``torch.optim.NAdam`` (arguments, state, errors).

    For each parameter θ with gradient g at step t (γ = lr, λ = weight_decay,
    ψ = momentum_decay)::

        g   ← −g                                  if maximize
        g   ← g + λθ                              (or θ ← θ(1 − γλ) if decoupled_weight_decay)
        μₜ  = β₁ (1 − ½·0.96^(tψ)),   μₜ₊₁ = β₁ (1 − ½·0.96^((t+1)ψ))
        Π   ← Π · μₜ                              (mu_product)
        m   ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
        d   = √(v / (1 − β₂ᵗ)) + ε                (sqrt after the bias correction)
        θ   ← θ − γ (1 − μₜ)/(1 − Π) · g/d − γ μₜ₊₁/(1 − Π μₜ₊₁) · m/d

    ``mu_product`` is a 0-d tensor in the scalar dtype (float32 by default), rounded there
    as torch rounds it. Complex parameters are updated as (Re, Im) pairs; ``lr`` may be a
    1-element tensor; ``foreach=None`` runs the multi-tensor body.
    """

    state_keys = ("step", "mu_product", "exp_avg", "exp_avg_sq")
    elementwise = True
    flag_defaults: ClassVar[dict[str, Any]] = {
        "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
        "decoupled_weight_decay": False,
    }  # fmt: skip
    sparse_error = "NAdam does not support sparse gradients"
    scalar_state = ("step", "mu_product")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        check_at_least("epsilon", eps)
        check_betas(betas)
        check_at_least("weight_decay", weight_decay)
        check_at_least("momentum_decay", momentum_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        device = p.device if group["capturable"] else torch.device("cpu")
        return {
            "step": torch.zeros((), dtype=scalar_dtype(), device=device),
            "mu_product": torch.ones((), dtype=scalar_dtype(), device=device),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        nadam_multi_tensor(params, grads, *_state_lists(state), **_settings(group))

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        nadam_single_tensor(params, grads, *_state_lists(state), **_settings(group),
                            scratch=self.scratch)  # fmt: skip

    # A fast path, the single-tensor body (the same bits as update; tests/optim): tensors of
    # at least LARGE_TENSOR_ELEMENTS elements (bench_optim "4 params of 1M", ratio to torch
    # foreach: 0.81, the plain body 0.98; issue 12).
    update_large = update_single


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return {
        "beta1": beta1, "beta2": beta2, "lr": squeeze_scalar(group["lr"]), "eps": group["eps"],
        "weight_decay": group["weight_decay"], "momentum_decay": group["momentum_decay"],
        "decoupled_weight_decay": group["decoupled_weight_decay"], "maximize": group["maximize"],
    }  # fmt: skip


def _state_lists(state: Lists) -> tuple[list[Tensor], ...]:
    return state["exp_avg"], state["exp_avg_sq"], state["mu_product"], state["step"]


def _momentum_coefficient(beta1: float, step: float, momentum_decay: float) -> float:
    """μₜ = β₁ (1 − ½·0.96^(tψ)): the warming-up momentum of NAdam."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam_single_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    lr: float | Tensor,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    scratch: Scratch | None = None,
) -> None:
    """The update rule one tensor at a time: the readable reference body (torch's order).

    With ``scratch`` the temporaries (−g, g + λθ, the denominator) live in reused buffers.
    """
    for i, param in enumerate(params):
        grad = grads[i]
        grad = torch.neg(grad, out=out_like(scratch, grad, 1)) if maximize else grad
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        step = float(steps[i].item())
        bias_correction2 = 1 - beta2**step
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(as_float(1 - lr * weight_decay))
            else:
                grad = torch.add(grad, param, alpha=weight_decay, out=out_like(scratch, grad, 2))
        mu = _momentum_coefficient(beta1, step, momentum_decay)
        mu_next = _momentum_coefficient(beta1, step + 1, momentum_decay)
        mu_products[i] *= mu  # rounded in the scalar dtype, like torch
        mu_product = float(mu_products[i].item())

        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = torch.div(exp_avg_sq, bias_correction2, out=out_like(scratch, exp_avg_sq))
        denom.sqrt_().add_(eps)
        param.addcdiv_(grad, denom, value=as_float(-lr * (1.0 - mu) / (1.0 - mu_product)))
        param.addcdiv_(exp_avg, denom, value=as_float(-lr * mu_next / (1.0 - mu_product * mu_next)))


def nadam_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    lr: float | Tensor,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The same rule on whole lists of tensors (``torch._foreach_*``), one device and dtype."""
    if maximize:
        grads = list(torch._foreach_neg(grads))
    if weight_decay != 0:
        if decoupled_weight_decay:
            torch._foreach_mul_(params, as_float(1 - lr * weight_decay))
        elif maximize:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        else:
            grads = list(torch._foreach_add(grads, params, alpha=weight_decay))

    values = step_values(steps)
    mus = [_momentum_coefficient(beta1, step, momentum_decay) for step in values]
    mu_nexts = [_momentum_coefficient(beta1, step + 1, momentum_decay) for step in values]
    torch._foreach_mul_(mu_products, mus)
    products = step_values(mu_products)

    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denom = list(torch._foreach_div(exp_avg_sqs, same_or_list([1 - beta2**s for s in values])))
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)

    grad_sizes = [
        as_float(-lr * (1.0 - mu) / (1.0 - p)) for mu, p in zip(mus, products, strict=True)
    ]
    avg_sizes = [
        as_float(-lr * mu_next / (1.0 - p * mu_next))
        for mu_next, p in zip(mu_nexts, products, strict=True)
    ]
    torch._foreach_addcdiv_(params, grads, denom, same_or_list(grad_sizes))
    torch._foreach_addcdiv_(params, exp_avgs, denom, same_or_list(avg_sizes))
