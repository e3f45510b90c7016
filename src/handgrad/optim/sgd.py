"""Stochastic gradient descent with momentum, dampening and Nesterov momentum, by hand."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._common import (
    Scratch,
    as_float,
    check_fused_flags,
    check_fused_param,
    out_like,
    squeeze_scalar,
)


class SGD(Optimizer):
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

    state_keys = ("momentum_buffer",)
    elementwise = True
    complex_as_real = False  # linear in g: complex arithmetic, as torch's SGD
    flag_defaults: ClassVar[dict[str, Any]] = {
        "nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
        "fused": False,
    }  # fmt: skip
    sparse_gradients = True

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
        # torch's SGD compares with ``<`` (a NaN passes), unlike its other optimizers.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
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

    def kept_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self.state_keys if group["momentum"] != 0 else ()

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        # The momentum buffer starts as the first gradient: the rule makes it (from None).
        return {}

    def check(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if group["fused"]:
            for p in params:
                check_fused_param(p)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        sgd_multi_tensor(params, grads, state.get("momentum_buffer", []), **_settings(group))

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        sgd_single_tensor(params, grads, state.get("momentum_buffer", []), **_settings(group),
                          scratch=self.scratch)  # fmt: skip

    # A fast path, the single-tensor body (the same bits as update; tests/optim): flat groups
    # (bench_optim "1-100-1 in one buffer", momentum 0.9, paired against the plain body, one
    # thread: 0.66 of its time; 0.40 of torch foreach, the plain body 0.59). Tensors of
    # 65,536 elements or more take the plain body: one at a time was 0.95-1.05 of it
    # ("4 params of 1M", four runs), short of the 10% a fast path must earn.
    update_flat = update_single


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    return {
        "lr": squeeze_scalar(group["lr"]), "momentum": group["momentum"],
        "dampening": group["dampening"], "weight_decay": group["weight_decay"],
        "nesterov": group["nesterov"], "maximize": group["maximize"],
    }  # fmt: skip


def sgd_single_tensor(
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
    """The update rule one tensor at a time: the readable reference body (torch's order).

    A None buffer is made from the gradient (the first step) and left in ``buffers``. With
    ``scratch`` the temporaries (−g, g + λθ, g + μb) live in a reused buffer; sparse
    gradients never use it.
    """
    for i, param in enumerate(params):
        grad = grads[i]
        temporaries = None if grad.is_sparse else scratch
        grad = torch.neg(grad, out=out_like(temporaries, grad)) if maximize else grad
        if weight_decay != 0:
            grad = torch.add(
                grad, param, alpha=as_float(weight_decay), out=out_like(temporaries, grad)
            )
        if momentum != 0:
            buffer = buffers[i]
            if buffer is None:
                buffer = grad.detach().clone()
                buffers[i] = buffer
            else:
                buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
            if nesterov:
                grad = torch.add(grad, buffer, alpha=momentum, out=out_like(temporaries, grad))
            else:
                grad = buffer
        param.add_(grad, alpha=-as_float(lr))


def sgd_multi_tensor(
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
    """The same rule on whole lists of tensors (``torch._foreach_*``), one device and dtype.

    None buffers are made from the gradients (their first step) and left in ``buffers``.
    """
    if maximize:
        grads = list(torch._foreach_neg(grads))
        if weight_decay != 0:
            torch._foreach_add_(grads, params, alpha=as_float(weight_decay))
    elif weight_decay != 0:
        grads = list(torch._foreach_add(grads, params, alpha=as_float(weight_decay)))
    if momentum != 0:
        if all(b is not None for b in buffers):
            existing = [b for b in buffers if b is not None]
            torch._foreach_mul_(existing, momentum)
            torch._foreach_add_(existing, grads, alpha=1 - dampening)
        else:
            existing = []
            for i, grad in enumerate(grads):
                buffer = buffers[i]
                if buffer is None:
                    buffer = buffers[i] = grad.detach().clone()
                else:
                    buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
                existing.append(buffer)
        if nesterov:
            # g may still be the caller's .grad: add into a copy, never into p.grad.
            if not maximize and weight_decay == 0:
                grads = list(torch._foreach_add(grads, existing, alpha=momentum))
            else:
                torch._foreach_add_(grads, existing, alpha=momentum)
        else:
            grads = existing
    torch._foreach_add_(params, grads, alpha=-as_float(lr))
