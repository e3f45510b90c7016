"""Rprop: resilient backpropagation — step sizes that grow and shrink with gradient signs."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from handgrad.optim._base import ElementwiseOptimizer
from handgrad.optim._bookkeeping import check_capturable
from handgrad.optim._common import (
    check_lr,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
    real_views,
    squeeze_scalar,
)


class Rprop(ElementwiseOptimizer):
    r"""Rprop (Riedmiller & Braun, 1993), as torch.optim.Rprop.

    Each coordinate keeps its own step size Δ (starting at the learning rate) and the previous
    gradient g' it acted on. With etas (η−, η+) and step_sizes (Δmin, Δmax), each step does::

        g  ← ∇f(θ)            (−∇f(θ) if maximize)
        Δ  ← clamp(Δ · η+, Δmin, Δmax)   where g g' > 0
        Δ  ← clamp(Δ · η−, Δmin, Δmax)   where g g' < 0, and there g ← 0
        Δ  ← clamp(Δ, Δmin, Δmax)        where g g' = 0
        θ  ← θ − sign(g) Δ
        g' ← g

    State: ``step``, ``prev`` (g') and ``step_size`` (Δ). Complex parameters are treated as
    pairs of real coordinates.
    """

    body_lists = ("params", "grads", "prev", "step_size", "step")
    flag_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False, "capturable": False,
    }  # fmt: skip
    sparse_error = "Rprop does not support sparse gradients"
    splits_large_tensors = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = {
            "lr": lr,
            "etas": etas,
            "step_sizes": step_sizes,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["step"] = new_step(p, on_param_device=group["capturable"])
        state["prev"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        lr = squeeze_scalar(group["lr"])
        start = complex(lr, lr) if p.is_complex() else lr
        state["step_size"] = torch.full_like(cast(Tensor, p.grad), start)

    def _check_params(self, group: dict[str, Any], params: list[Tensor]) -> None:
        check_capturable(group["capturable"], params)

    def _settings(self, group: dict[str, Any]) -> dict[str, Any]:
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]
        return {
            "etaminus": etaminus, "etaplus": etaplus, "step_size_min": step_size_min,
            "step_size_max": step_size_max, "maximize": group["maximize"],
        }  # fmt: skip

    def _single_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        rprop_single_tensor(*lists, **settings)

    def _multi_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        rprop_multi_tensor(*lists, **settings)


def _factors(sign: Tensor, etaminus: float, etaplus: float) -> Tensor:
    """sign(g g') turned in place into the step-size factor: η+ if > 0, η− if < 0, 1 if 0."""
    grew, shrank, kept = sign.gt(0), sign.lt(0), sign.eq(0)
    return sign.masked_fill_(grew, etaplus).masked_fill_(shrank, etaminus).masked_fill_(kept, 1)


def rprop_single_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    steps: list[Tensor],
    *,
    etaminus: float,
    etaplus: float,
    step_size_min: float,
    step_size_max: float,
    maximize: bool,
) -> None:
    """Rprop one tensor at a time."""
    for param, grad, prev, step_size, step in zip(
        params, grads, prevs, step_sizes, steps, strict=True
    ):
        step += 1
        if maximize:
            grad = -grad
        param, grad, prev, step_size = real_views([param, grad, prev, step_size])
        factor = _factors(grad.mul(prev).sign(), etaminus, etaplus)
        step_size.mul_(factor).clamp_(step_size_min, step_size_max)
        # After a sign change the coordinate rests one step (and forgets the gradient).
        grad = grad.masked_fill(factor.eq(etaminus), 0)
        param.addcmul_(grad.sign(), step_size, value=-1)
        prev.copy_(grad)


def rprop_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    steps: list[Tensor],
    *,
    etaminus: float,
    etaplus: float,
    step_size_min: float,
    step_size_max: float,
    maximize: bool,
) -> None:
    """Rprop on lists of tensors with ``torch._foreach_*``."""
    for p_, g_, prev_, size_, t_ in group_by_device_and_dtype(
        [params, grads, prevs, step_sizes, steps]
    ):
        p, g, prev, size = real_views(p_), real_views(g_), real_views(prev_), real_views(size_)
        increment_steps(t_, foreach=True)
        signs = torch._foreach_mul(g, prev)
        if maximize:
            torch._foreach_neg_(signs)
        # prev now becomes this step's (signed) gradient; it is zeroed below after sign flips.
        torch._foreach_copy_(prev, g)
        if maximize:
            torch._foreach_neg_(prev)
        torch._foreach_sign_(signs)
        factors = [_factors(sign, etaminus, etaplus) for sign in signs]
        torch._foreach_mul_(size, factors)
        torch._foreach_clamp_min_(size, step_size_min)
        torch._foreach_clamp_max_(size, step_size_max)
        for grad, factor in zip(prev, factors, strict=True):
            grad.masked_fill_(factor.eq(etaminus), 0)
        torch._foreach_addcmul_(p, torch._foreach_sign(prev), size, value=-1)
