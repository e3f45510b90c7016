"""Adan (Xie et al., 2022, *Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
Deep Models*, arXiv:2208.06677), interchangeable with the ``adan-pytorch`` package's ``Adan``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import Lists
from ._beyond import (
    GroupStepped,
    check_finite_number,
    check_lr_and_betas,
    one_tensor_at_a_time,
    require,
)
from ._common import step_values


class Adan(GroupStepped):
    r"""Adan: Nesterov momentum estimated from gradient differences, Adam-style scaling.

    Interchangeable with ``adan_pytorch.Adan`` (arguments, defaults, state keys). Its betas
    are the paper's: the weight of the *new* term (β₁ = 0.02 is torch's 0.98). For each
    parameter θ with gradient gₜ at step t (γ = lr, λ = weight_decay; m, v, n zeros at first,
    g₀ the previous gradient ``prev_grad``)::

        if t > 1:
            m ← (1 − β₁) m + β₁ gₜ
            v ← (1 − β₂) v + β₂ (gₜ − gₜ₋₁)
            n ← (1 − β₃) n + β₃ (gₜ + (1 − β₂)(gₜ − gₜ₋₁))²
        cₖ = 1 / (1 − (1 − βₖ)ᵗ)                                bias corrections
        θ ← (θ − γ/(√(cₙ n) + ε) · (cₘ m + (1 − β₂) c_v v)) / (1 + λγ)
        gₜ₋₁ ← gₜ

    As in the reference, the first step only records the gradient (m, v and n stay zero, so
    θ moves by the weight decay alone) and the bias corrections count that step: the
    paper's Algorithm 1 instead starts from m = g₀, n = g₀². ``restart_cond(state)``, when
    given, is asked after each parameter's update (``state`` holds its tensors and ``step``,
    the count before this step, as the reference passes them); when it says yes the moments
    restart from the gradient (m = g, v = 0, n = g²) and the update is taken again.

    Equality with the reference: the same operations in the same order, the same bits.
    Complex parameters are updated as (Re, Im) pairs (torch.optim's convention; equal to
    the reference on ``torch.view_as_real`` of them): the reference squares a complex
    gradient (z², not |z|²), which is no second moment.

    Refusals: betas not of length 3 raise :class:`HyperparameterError` (a ValueError and an
    AssertionError: the reference asserts); a negative lr, eps or weight_decay, or a beta
    outside [0, 1], which the reference takes unchecked, raise ValueError.
    """

    state_keys = ("step", "prev_grad", "m", "v", "n")
    elementwise = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.02, 0.08, 0.01),
        eps: float = 1e-8,
        weight_decay: float = 0,
        restart_cond: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        require(len(betas) == 3, f"Invalid betas: {betas!r} (Adan takes three betas)")
        check_lr_and_betas(lr, betas, high_open=False)
        check_finite_number("eps", eps)
        check_finite_number("weight_decay", weight_decay)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "restart_cond": restart_cond}  # fmt: skip
        super().__init__(params, defaults)

    def flat_allowed(self, group: dict[str, Any]) -> bool:
        """``restart_cond`` is asked per parameter, so such a group stays per-parameter."""
        return group.get("restart_cond") is None

    # A tensor of LARGE_TENSOR_ELEMENTS or more: on its own (the same bits, faster).
    update_large = one_tensor_at_a_time

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        beta1, beta2, beta3 = group["betas"]
        steps = step_values(state["step"])  # already counts this step
        prev, ms, vs, ns = state["prev_grad"], state["m"], state["v"], state["n"]
        # Parameters past their first step update the moments (the others keep zeros).
        seen = [i for i, t in enumerate(steps) if t > 1]
        if seen:
            pick = (lambda xs: [xs[i] for i in seen]) if len(seen) < len(steps) else list
            g, m, v, n = pick(grads), pick(ms), pick(vs), pick(ns)
            torch._foreach_mul_(m, 1 - beta1)
            torch._foreach_add_(m, g, alpha=beta1)
            diff = torch._foreach_sub(g, pick(prev))
            torch._foreach_mul_(v, 1 - beta2)
            torch._foreach_add_(v, diff, alpha=beta2)
            torch._foreach_mul_(diff, 1 - beta2)  # (1 − β₂)(gₜ − gₜ₋₁), then gₜ + that
            torch._foreach_add_(diff, g)
            torch._foreach_mul_(diff, diff)
            torch._foreach_mul_(n, 1 - beta3)
            torch._foreach_add_(n, diff, alpha=beta3)
            del diff
        _adan_step(group, params, ms, vs, ns, steps)
        restart = group["restart_cond"]
        if restart is not None:
            for i in range(len(params)):
                table = {"step": int(steps[i]) - 1, "prev_grad": prev[i], "m": ms[i],
                         "v": vs[i], "n": ns[i]}  # fmt: skip
                if restart(table):
                    ms[i].copy_(grads[i])
                    vs[i].zero_()
                    ns[i].copy_(grads[i] ** 2)
                    _adan_step(group, [params[i]], [ms[i]], [vs[i]], [ns[i]], [steps[i]])
        torch._foreach_copy_(prev, grads)


def _adan_step(group: dict[str, Any], params: list[Tensor], ms: list[Tensor], vs: list[Tensor],
               ns: list[Tensor], steps: list[float]) -> None:  # fmt: skip
    """θ ← (θ − γ/(√(cₙ n) + ε) · (cₘ m + (1 − β₂) c_v v)) / (1 + λγ), in the reference's
    order: γ/x is computed as (1/x)·γ, as Python's ``float / tensor`` does."""
    lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2, beta3 = group["betas"]
    by_step: dict[float, list[int]] = {}
    for i, t in enumerate(steps):
        by_step.setdefault(t, []).append(i)
    for t, chosen in by_step.items():  # one pass per distinct step count (usually one)
        if len(chosen) < len(steps):
            p, m, v, n = ([xs[i] for i in chosen] for xs in (params, ms, vs, ns))
        else:
            p, m, v, n = params, ms, vs, ns
        correct_m, correct_v, correct_n = (1 / (1 - (1 - b) ** t) for b in (beta1, beta2, beta3))
        scale = torch._foreach_mul(n, correct_n)
        torch._foreach_sqrt_(scale)
        torch._foreach_add_(scale, eps)
        torch._foreach_reciprocal_(scale)
        torch._foreach_mul_(scale, lr)  # γ / (√(cₙ n) + ε)
        direction = torch._foreach_mul(v, 1 - beta2)
        torch._foreach_mul_(direction, correct_v)
        torch._foreach_add_(direction, torch._foreach_mul(m, correct_m))
        torch._foreach_addcmul_(p, scale, direction, value=-1.0)
        torch._foreach_div_(p, 1 + decay * lr)


__all__ = ["Adan"]
