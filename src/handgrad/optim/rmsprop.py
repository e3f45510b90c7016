"""RMSprop (Hinton, 2012), centered variant (Graves, 2013) and momentum, by hand."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import ElementwiseOptimizer
from ._common import (
    Scratch,
    as_float,
    check_at_least,
    check_lr,
    group_by_device_and_dtype,
    increment_steps,
    out_like,
    real_view,
    real_views,
)


class RMSprop(ElementwiseOptimizer):
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

    body_lists = ("params", "grads", "square_avg", "grad_avg", "momentum_buffer", "step")
    hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    flag_defaults: ClassVar[dict[str, Any]] = {
        "momentum": 0, "centered": False, "foreach": None, "maximize": False,
        "differentiable": False, "capturable": False,
    }  # fmt: skip
    sparse_error = "RMSprop does not support sparse gradients"
    flat_updates = True

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

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        optional = (("grad_avg", group["centered"]), ("momentum_buffer", group["momentum"] > 0))
        return ("square_avg", *(key for key, kept in optional if kept), "step")

    def _single_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        _single_tensor_rmsprop(*lists, **settings)

    def _multi_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        _multi_tensor_rmsprop(*lists, **settings)


def _single_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    scratch: Scratch | None = None,
) -> None:
    """The update rule one tensor at a time: the readable reference body.

    With ``scratch`` the temporaries (−g, g + λθ, the denominator) live in reused buffers.
    """
    for i, param in enumerate(params):
        grad = torch.neg(grads[i], out=out_like(scratch, grads[i], 1)) if maximize else grads[i]
        steps[i] += 1
        if weight_decay != 0:
            grad = torch.add(grad, param, alpha=weight_decay, out=out_like(scratch, grad, 1))
        param, grad, square_avg = real_view(param), real_view(grad), real_view(square_avgs[i])

        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = real_view(grad_avgs[i])
            grad_avg.lerp_(grad, 1 - alpha)
            avg = torch.addcmul(
                square_avg, grad_avg, grad_avg, value=-1, out=out_like(scratch, square_avg)
            ).sqrt_()
        else:
            avg = torch.sqrt(square_avg, out=out_like(scratch, square_avg))
        avg = avg.add_(eps)
        if momentum > 0:
            buffer = real_view(momentum_buffers[i])
            buffer.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buffer, alpha=-as_float(lr))
        else:
            param.addcdiv_(grad, avg, value=-as_float(lr))


def _multi_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    """The same rule on whole lists of tensors (``torch._foreach_*``)."""
    grouped = group_by_device_and_dtype(
        [params, grads, square_avgs, grad_avgs, momentum_buffers, steps]
    )
    for g_params, g_grads, g_square_avgs, g_grad_avgs, g_buffers, g_steps in grouped:
        increment_steps(g_steps, foreach=True)
        g_params, g_grads, g_square_avgs = (
            real_views(g_params), real_views(g_grads), real_views(g_square_avgs)
        )  # fmt: skip
        if maximize:
            g_grads = list(torch._foreach_neg(g_grads))
            if weight_decay != 0:
                torch._foreach_add_(g_grads, g_params, alpha=weight_decay)
        elif weight_decay != 0:
            g_grads = list(torch._foreach_add(g_grads, g_params, alpha=weight_decay))

        torch._foreach_mul_(g_square_avgs, alpha)
        torch._foreach_addcmul_(g_square_avgs, g_grads, g_grads, value=1 - alpha)
        if centered:
            g_grad_avgs = real_views(g_grad_avgs)
            torch._foreach_lerp_(g_grad_avgs, g_grads, 1 - alpha)
            avg = torch._foreach_addcmul(g_square_avgs, g_grad_avgs, g_grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(g_square_avgs)
        torch._foreach_add_(avg, eps)
        if momentum > 0:
            g_buffers = real_views(g_buffers)
            torch._foreach_mul_(g_buffers, momentum)
            torch._foreach_addcdiv_(g_buffers, g_grads, avg)
            torch._foreach_add_(g_params, g_buffers, alpha=-as_float(lr))
        else:
            torch._foreach_addcdiv_(g_params, g_grads, avg, value=-as_float(lr))
