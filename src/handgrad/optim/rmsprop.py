"""RMSprop (Hinton, 2012), centered variant (Graves, 2013) and momentum, by hand."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._common import (
    as_float,
    check_at_least,
    check_lr,
    decayed_gradient,
    decayed_gradients,
    squeeze_scalar,
)


class RMSprop(Optimizer):
    r"""RMSprop, interchangeable with ``torch.optim.RMSprop`` (arguments, state, errors).

    For each parameter θ with gradient g (γ = lr, α = alpha, λ = weight_decay,
    μ = momentum)::

        g  ← −g                          if maximize
        g  ← g + λθ
        v  ← α v + (1 − α) g²            (square_avg)
        ḡ  ← α ḡ + (1 − α) g             (grad_avg, centered only)
        d  ← √(v − ḡ²) + ε  if centered,  else  √v + ε
        b  ← μ b + g / d,   θ ← θ − γ b   if μ > 0     (momentum_buffer, starts at 0)
        θ  ← θ − γ g / d                  otherwise

    Complex parameters are updated as (Re, Im) pairs; ``lr`` may be a 1-element tensor;
    ``foreach=None`` runs the multi-tensor body.
    """

    state_keys = ("step", "square_avg", "momentum_buffer", "grad_avg")
    elementwise = True
    flag_defaults: ClassVar[dict[str, Any]] = {
        "momentum": 0, "centered": False, "foreach": None, "maximize": False,
        "differentiable": False, "capturable": False,
    }  # fmt: skip
    sparse_error = "RMSprop does not support sparse gradients"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        check_at_least("epsilon", eps)
        check_at_least("momentum", momentum)
        check_at_least("weight_decay", weight_decay)
        check_at_least("alpha", alpha)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def kept_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        optional = (("momentum_buffer", group["momentum"] > 0), ("grad_avg", group["centered"]))
        return ("step", "square_avg", *(key for key, kept in optional if kept))

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The update rule one tensor at a time: the readable reference body (torch's order).

        The temporaries (−g, g + λθ, the denominator) live in reused buffers (:attr:`scratch`).
        """
        lr, alpha, eps, decay, momentum, centered, maximize = _hyperparameters(group)
        square_avgs, grad_avgs, momentum_buffers = _state_lists(state)
        scratch = self.scratch
        for i, param in enumerate(params):
            grad = decayed_gradient(param, grads[i], lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize, scratch=scratch)  # fmt: skip
            square_avg = square_avgs[i]

            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            if centered:
                grad_avg = grad_avgs[i]
                grad_avg.lerp_(grad, 1 - alpha)
                avg = torch.addcmul(
                    square_avg, grad_avg, grad_avg, value=-1, out=scratch.like(square_avg)
                ).sqrt_()
            else:
                avg = torch.sqrt(square_avg, out=scratch.like(square_avg))
            avg = avg.add_(eps)
            if momentum > 0:
                buffer = momentum_buffers[i]
                buffer.mul_(momentum).addcdiv_(grad, avg)
                param.add_(buffer, alpha=-as_float(lr))
            else:
                param.addcdiv_(grad, avg, value=-as_float(lr))

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The same rule on whole lists of tensors (``torch._foreach_*``), one device and dtype."""
        lr, alpha, eps, decay, momentum, centered, maximize = _hyperparameters(group)
        square_avgs, grad_avgs, momentum_buffers = _state_lists(state)
        grads = decayed_gradients(params, grads, lr=lr, weight_decay=decay, decoupled=False,
                                  maximize=maximize)  # fmt: skip

        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if centered:
            torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, eps)
        if momentum > 0:
            torch._foreach_mul_(momentum_buffers, momentum)
            torch._foreach_addcdiv_(momentum_buffers, grads, avg)
            torch._foreach_add_(params, momentum_buffers, alpha=-as_float(lr))
        else:
            torch._foreach_addcdiv_(params, grads, avg, value=-as_float(lr))

    # Fast paths, both the single-tensor body (the same bits as update; tests/optim), with
    # bench_optim's figures, paired against the plain body (one thread, issue 12): tensors of
    # at least LARGE_TENSOR_ELEMENTS elements ("4 params of 1M": 0.41 of its time; 0.48 of
    # torch foreach, the plain body 0.97) and flat groups ("1-100-1 in one buffer": 0.62 of
    # its time; 0.42 of torch foreach, the plain body 0.66).
    update_large = update_single
    update_flat = update_single


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """γ (a 1-element tensor as 0-d), α, ε, λ, μ, centered and maximize, read from the group."""
    return (squeeze_scalar(group["lr"]), group["alpha"], group["eps"], group["weight_decay"],
            group["momentum"], group["centered"], group["maximize"])  # fmt: skip


def _state_lists(state: Lists) -> tuple[list[Tensor], ...]:
    return state["square_avg"], state.get("grad_avg", []), state.get("momentum_buffer", [])
