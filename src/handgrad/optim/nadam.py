"""NAdam (Dozat, 2016): Adam with Nesterov momentum and a momentum-decay schedule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._common import (
    as_float,
    check_adam_arguments,
    check_at_least,
    decayed_gradient,
    decayed_gradients,
    same_or_list,
    scalar_dtype,
    squeeze_scalar,
    step_value,
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
        check_adam_arguments(lr, eps, betas, weight_decay)
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

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The update rule one tensor at a time: the readable reference body (torch's order).

        The temporaries (−g, g + λθ, the denominator) live in reused buffers (:attr:`scratch`).
        """
        beta1, beta2, lr, eps, decay, momentum_decay, decoupled, maximize = _hyperparameters(group)
        scratch = self.scratch
        for param, grad, exp_avg, exp_avg_sq, mu_product_tensor, step_tensor in zip(
            params, grads, *_state_lists(state), strict=True
        ):
            step = step_value(step_tensor)
            bias_correction2 = 1 - beta2**step
            grad = decayed_gradient(param, grad, lr=lr, weight_decay=decay, decoupled=decoupled,
                                    maximize=maximize, scratch=scratch)  # fmt: skip
            mu = _momentum_coefficient(beta1, step, momentum_decay)
            mu_next = _momentum_coefficient(beta1, step + 1, momentum_decay)
            mu_product_tensor *= mu  # rounded in the scalar dtype, like torch
            mu_product = step_value(mu_product_tensor)

            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = torch.div(exp_avg_sq, bias_correction2, out=scratch.like(exp_avg_sq))
            denom.sqrt_().add_(eps)
            param.addcdiv_(grad, denom, value=as_float(-lr * (1.0 - mu) / (1.0 - mu_product)))
            param.addcdiv_(
                exp_avg, denom, value=as_float(-lr * mu_next / (1.0 - mu_product * mu_next))
            )

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The same rule on whole lists of tensors (``torch._foreach_*``), one device and dtype."""
        beta1, beta2, lr, eps, decay, momentum_decay, decoupled, maximize = _hyperparameters(group)
        exp_avgs, exp_avg_sqs, mu_products, steps = _state_lists(state)
        grads = decayed_gradients(params, grads, lr=lr, weight_decay=decay, decoupled=decoupled,
                                  maximize=maximize)  # fmt: skip

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

    # A fast path, the single-tensor body (the same bits as update; tests/optim): tensors of
    # at least LARGE_TENSOR_ELEMENTS elements (bench_optim "4 params of 1M", paired against
    # the plain body, one thread: 0.61 of its time; 0.55 of torch foreach, the plain body
    # 0.89; issue 12).
    update_large = update_single


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """β₁, β₂, γ (a 1-element tensor as 0-d), ε, λ, ψ, decoupled_weight_decay and maximize."""
    beta1, beta2 = group["betas"]
    lr = squeeze_scalar(group["lr"])
    return (beta1, beta2, lr, group["eps"], group["weight_decay"], group["momentum_decay"],
            group["decoupled_weight_decay"], group["maximize"])  # fmt: skip


def _state_lists(state: Lists) -> tuple[list[Tensor], ...]:
    return state["exp_avg"], state["exp_avg_sq"], state["mu_product"], state["step"]


def _momentum_coefficient(beta1: float, step: float, momentum_decay: float) -> float:
    """μₜ = β₁ (1 − ½·0.96^(tψ)): the warming-up momentum of NAdam."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
