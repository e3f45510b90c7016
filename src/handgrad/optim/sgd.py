"""Stochastic gradient descent with momentum, dampening and Nesterov momentum, by hand."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._common import (
    as_float,
    check_fused_flags,
    check_fused_param,
    decayed_gradient,
    decayed_gradients,
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

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The update rule one tensor at a time: the readable reference body (torch's order).

        A None buffer is made from the gradient (the first step) and left in the state list.
        The temporaries (−g, g + λθ, g + μb) live in reused buffers (:attr:`scratch`); sparse
        gradients never use them.
        """
        lr, momentum, dampening, decay, nesterov, maximize = _hyperparameters(group)
        buffers = state.get("momentum_buffer", [])
        for i, param in enumerate(params):
            grad = grads[i]
            temporaries = None if grad.is_sparse else self.scratch
            grad = decayed_gradient(param, grad, lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize, scratch=temporaries)  # fmt: skip
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
            param.add_(grad, alpha=-lr)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The same rule on whole lists of tensors (``torch._foreach_*``), one device and dtype.

        None buffers are made from the gradients (their first step) and left in the state list.
        """
        lr, momentum, dampening, decay, nesterov, maximize = _hyperparameters(group)
        buffers = state.get("momentum_buffer", [])
        decayed = decayed_gradients(params, grads, lr=lr, weight_decay=decay, decoupled=False,
                                    maximize=maximize)  # fmt: skip
        if momentum != 0:
            if all(b is not None for b in buffers):
                existing = [b for b in buffers if b is not None]
                torch._foreach_mul_(existing, momentum)
                torch._foreach_add_(existing, decayed, alpha=1 - dampening)
            else:
                existing = []
                for i, grad in enumerate(decayed):
                    buffer = buffers[i]
                    if buffer is None:
                        buffer = buffers[i] = grad.detach().clone()
                    else:
                        buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
                    existing.append(buffer)
            if nesterov:
                # g may still be the caller's .grad: add into a copy, never into p.grad.
                if decayed is grads:
                    decayed = list(torch._foreach_add(grads, existing, alpha=momentum))
                else:
                    torch._foreach_add_(decayed, existing, alpha=momentum)
            else:
                decayed = existing
        torch._foreach_add_(params, decayed, alpha=-lr)

    # A fast path, the single-tensor body (the same bits as update; tests/optim): flat groups
    # (bench_optim "1-100-1 in one buffer", momentum 0.9, paired against the plain body, one
    # thread: 0.66 of its time; 0.40 of torch foreach, the plain body 0.59). Tensors of
    # 65,536 elements or more take the plain body: one at a time was 0.95-1.05 of it
    # ("4 params of 1M", four runs), short of the 10% a fast path must earn.
    update_flat = update_single


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """γ and λ as Python floats (either may be a tensor), μ, τ, nesterov and maximize."""
    return (as_float(squeeze_scalar(group["lr"])), group["momentum"], group["dampening"],
            as_float(group["weight_decay"]), group["nesterov"], group["maximize"])  # fmt: skip
