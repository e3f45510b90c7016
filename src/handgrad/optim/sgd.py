"""Stochastic gradient descent with momentum, dampening and Nesterov momentum, by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._common import (
    Scratch,
    as_float,
    check_fused_flags,
    check_fused_param,
    check_lr,
    fast_path,
    group_by_device_and_dtype,
    out_like,
    params_with_grads,
    route,
    scratch_of,
)


class SGD(torch.optim.Optimizer):
    r"""SGD, interchangeable with ``torch.optim.SGD`` (arguments, state, errors).

    For each parameter θ with gradient g (γ = lr, λ = weight_decay, μ = momentum,
    τ = dampening)::

        g  ← −g                    if maximize
        g  ← g + λθ
        b  ← g                     on the first step, else  b ← μ b + (1 − τ) g
        g  ← g + μ b               if nesterov, else  g ← b          (only when μ ≠ 0)
        θ  ← θ − γ g

    The learning rate stays outside the momentum buffer ``momentum_buffer`` (so an LR
    schedule changes the step, not the history). Sparse gradients take the single-tensor
    path. ``foreach=None`` runs the multi-tensor body; ``fused=True`` is accepted and runs
    the same body; ``differentiable`` is accepted for compatibility.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)
        if fused:
            check_fused_flags(fused, foreach, differentiable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SGD step for every parameter that has a gradient; returns ``closure()``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = params_with_grads(group, sparse_error=None)
            if not params:
                continue
            if group["fused"]:
                for p in params:
                    check_fused_param(p)
            momentum = group["momentum"]
            # None marks "no buffer yet": the first step copies the gradient into it.
            buffers: list[Tensor | None] = (
                [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
            )
            # Sparse gradients take the reference body, which handles them tensor by tensor.
            fast = fast_path(group) and not any(g.is_sparse for g in grads)
            multi, single = route({"params": params, "grads": grads, "buffers": buffers}, fast)
            settings = {
                "lr": group["lr"],
                "momentum": momentum,
                "dampening": group["dampening"],
                "weight_decay": group["weight_decay"],
                "nesterov": group["nesterov"],
                "maximize": group["maximize"],
            }
            if multi["params"]:
                _multi_tensor_sgd(multi["params"], multi["grads"], multi["buffers"], **settings)
            if single["params"]:
                scratch = scratch_of(self) if fast else None
                _single_tensor_sgd(
                    single["params"], single["grads"], single["buffers"], scratch=scratch,
                    **settings,
                )  # fmt: skip
            if momentum != 0:
                for part in (multi, single):
                    for p, buffer in zip(part["params"], part["buffers"], strict=True):
                        self.state[p]["momentum_buffer"] = buffer
        return loss


def _single_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float | Tensor,
    nesterov: bool,
    maximize: bool,
    scratch: Scratch | None = None,
) -> None:
    """The update rule one tensor at a time: the readable reference body.

    With ``scratch`` the temporaries (−g, g + λθ, g + μb) live in a reused buffer.
    """
    for i, param in enumerate(params):
        grad = torch.neg(grads[i], out=out_like(scratch, grads[i])) if maximize else grads[i]
        if weight_decay != 0:
            grad = torch.add(grad, param, alpha=as_float(weight_decay), out=out_like(scratch, grad))
        if momentum != 0:
            buffer = buffers[i]
            if buffer is None:
                buffer = grad.detach().clone()
                buffers[i] = buffer
            else:
                buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
            if nesterov:
                grad = torch.add(grad, buffer, alpha=momentum, out=out_like(scratch, grad))
            else:
                grad = buffer
        param.add_(grad, alpha=-as_float(lr))


def _multi_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float | Tensor,
    nesterov: bool,
    maximize: bool,
) -> None:
    """The same rule on whole lists of tensors (``torch._foreach_*``)."""
    indices = list(range(len(params)))
    index_lists: list[list[Any]] = [params, grads, indices]
    for g_params, g_grads, g_indices in group_by_device_and_dtype(index_lists):
        if maximize:
            g_grads = list(torch._foreach_neg(g_grads))
            if weight_decay != 0:
                torch._foreach_add_(g_grads, g_params, alpha=as_float(weight_decay))
        elif weight_decay != 0:
            g_grads = list(torch._foreach_add(g_grads, g_params, alpha=as_float(weight_decay)))
        if momentum != 0:
            g_buffers = [buffers[i] for i in g_indices]
            if all(b is not None for b in g_buffers):
                existing = [b for b in g_buffers if b is not None]
                torch._foreach_mul_(existing, momentum)
                torch._foreach_add_(existing, g_grads, alpha=1 - dampening)
            else:
                existing = []
                for j, i in enumerate(g_indices):
                    buffer = buffers[i]
                    if buffer is None:
                        buffer = buffers[i] = g_grads[j].detach().clone()
                    else:
                        buffer.mul_(momentum).add_(g_grads[j], alpha=1 - dampening)
                    existing.append(buffer)
            if nesterov:
                # g may still be the caller's .grad: add into a copy, never into p.grad.
                if not maximize and weight_decay == 0:
                    g_grads = list(torch._foreach_add(g_grads, existing, alpha=momentum))
                else:
                    torch._foreach_add_(g_grads, existing, alpha=momentum)
            else:
                g_grads = existing
        torch._foreach_add_(g_params, g_grads, alpha=-as_float(lr))
