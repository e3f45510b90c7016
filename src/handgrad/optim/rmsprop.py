"""RMSprop (Hinton, 2012), centered variant (Graves, 2013) and momentum, by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._common import (
    Scratch,
    as_float,
    check_at_least,
    check_lr,
    fast_path,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
    out_like,
    params_with_grads,
    real_view,
    real_views,
    restore_tensor_steps,
    route,
    scratch_of,
)

_LISTS = ("params", "grads", "square_avg", "grad_avg", "momentum_buffer", "step")


class RMSprop(torch.optim.Optimizer):
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
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("capturable", False)
        restore_tensor_steps(self)

    def _group_tensors(self, group: dict[str, Any]) -> dict[str, list[Tensor]]:
        """Parameters with gradients and their state, created lazily on the first step."""
        params, grads = params_with_grads(group, "RMSprop does not support sparse gradients")
        lists: dict[str, list[Tensor]] = {
            "params": params, "grads": grads, "square_avg": [], "momentum_buffer": [],
            "grad_avg": [], "step": [],
        }  # fmt: skip
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = new_step(p, on_param_device=group["capturable"])
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["momentum"] > 0:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                if group["centered"]:
                    state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            lists["square_avg"].append(state["square_avg"])
            lists["step"].append(state["step"])
            if group["momentum"] > 0:
                lists["momentum_buffer"].append(state["momentum_buffer"])
            if group["centered"]:
                lists["grad_avg"].append(state["grad_avg"])
        return lists

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One RMSprop step for every parameter that has a gradient; returns ``closure()``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lists = self._group_tensors(group)
            if not lists["params"]:
                continue
            settings = {
                "lr": group["lr"],
                "alpha": group["alpha"],
                "eps": group["eps"],
                "weight_decay": group["weight_decay"],
                "momentum": group["momentum"],
                "centered": group["centered"],
                "maximize": group["maximize"],
            }
            fast = fast_path(group)
            multi, single = route(lists, fast)
            if multi["params"]:
                _multi_tensor_rmsprop(*(multi[key] for key in _LISTS), **settings)
            if single["params"]:
                scratch = scratch_of(self) if fast else None
                _single_tensor_rmsprop(
                    *(single[key] for key in _LISTS), scratch=scratch, **settings
                )
        return loss


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
