"""ADOPT (Taniguchi et al., 2024, *ADOPT: Modified Adam Can Converge with Any β₂ with the
Optimal Rate*, arXiv:2411.02853), interchangeable with pytorch-optimizer's ``ADOPT``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import Lists
from ._beyond import GroupStepped, check_finite_number, check_lr_and_betas, one_tensor_at_a_time


def default_clip(step: float) -> float:
    """The reference's default clipping bound, t^(1/4) (a named function: it pickles)."""
    return math.pow(step, 0.25)


def check_options(cls_name: str, kwargs: dict[str, Any], known: tuple[str, ...]) -> None:
    """TypeError for a keyword option the class does not know (the reference keeps any
    keyword in its groups and ignores the unknown ones; a typo should not pass silently)."""
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(f"{cls_name} got unexpected keyword argument(s) {', '.join(unknown)}; "
                        f"options beyond the signature: {', '.join(known)}")  # fmt: skip


def decay_weights(params: list[Tensor], grads: list[Tensor], *, lr: Any, weight_decay: float,
                  decouple: bool, fixed: bool) -> list[Tensor]:  # fmt: skip
    """pytorch-optimizer's weight decay: θ ← θ(1 − λγ) (decoupled; λ alone with ``fixed``)
    or g ← g + λθ (coupled). Returns the gradients to use (new tensors when changed)."""
    if weight_decay == 0.0:
        return grads
    if decouple:
        torch._foreach_mul_(params, 1.0 - weight_decay * (1.0 if fixed else lr) * 1.0)
        return grads
    return list(torch._foreach_add(grads, params, alpha=weight_decay))


class ADOPT(GroupStepped):
    r"""ADOPT: Adam whose second moment lags one step, and whose momentum averages the
    normalised (clipped) gradient.

    Interchangeable with ``pytorch_optimizer.ADOPT`` (arguments, defaults, state, the group's
    ``step``). For each parameter θ with gradient g at the group's step t (γ = lr, λ =
    weight_decay; m = ``exp_avg``, v = ``exp_avg_sq``, zeros at first)::

        g ← −g                                     if maximize
        θ ← θ(1 − λγ)  (λ alone with fixed_decay)  if weight_decouple, else g ← g + λθ
        t = 1:  v ← v + g²  (nothing else moves)
        t > 1:  u = clip(g / max(√v, ε), ±clip_lambda(t))      (clip_lambda(t) = t^¼)
                m ← m + (1 − β₁)(u − m)
                θ ← θ − γ m
                v ← β₂ v + (1 − β₂) g²

    Options beyond the signature, as the reference takes them: ``cautious=True`` keeps only
    the coordinates of m that agree in sign with u (rescaled by n/(kept + 1)),
    ``stable_adamw=True`` divides the step by max(1, RMS(g/√max(v, 10⁻¹⁶))) (v before this
    step's update). Both look at whole tensors, so such a group stays off the flat path.

    Equality with the reference: the same operations in the same order, the same bits (its
    multi-tensor and per-parameter bodies agree bit for bit, and so does ours with both).
    Complex parameters are updated as (Re, Im) pairs, as the reference does. The reference
    negates and decays ``p.grad`` in place; handgrad leaves it as it was.

    Refusals: a negative lr (the reference's NegativeLRError, not a ValueError), weight_decay
    or eps, or a beta outside [0, 1), raise ValueError; an unknown keyword option TypeError.
    """

    state_keys = ("exp_avg", "exp_avg_sq")
    elementwise = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        clip_lambda: Callable[[float], float] | None = default_clip,
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        foreach: bool | None = None,
        eps: float = 1e-6,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        check_lr_and_betas(lr, betas)
        check_finite_number("weight_decay", weight_decay)
        check_finite_number("eps", eps)
        check_options("ADOPT", kwargs, ("cautious", "stable_adamw"))
        self.clip_lambda = clip_lambda
        self.maximize = maximize
        self.foreach = foreach
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay,
                    "foreach": foreach, "eps": eps, **kwargs}  # fmt: skip
        super().__init__(params, defaults)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "clip_lambda": self.clip_lambda,
                "maximize": self.maximize, "foreach": self.foreach}  # fmt: skip

    def flat_allowed(self, group: dict[str, Any]) -> bool:
        return not (group.get("cautious") or group.get("stable_adamw"))

    def begin_group(self, group: dict[str, Any]) -> None:
        group["step"] = group.get("step", 0) + 1

    def update_large(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """:meth:`update` one large tensor at a time, its temporaries (−g or g + λθ, and
        g / max(√v, ε) in the buffer of √v) in the optimizer's reused scratch buffers: the
        same operations, the same bits. A fresh 4 MB temporary costs more in first-touch page
        faults than the arithmetic done in it (bench_new_optim "4 params of 1M", run as
        ``python -m benchmarks --only new_optim``: 1.28x the reference with fresh
        temporaries per tensor, 0.54-0.57x with these). The whole-tensor options (cautious,
        stable_adamw) take :meth:`update` per tensor."""
        if group.get("cautious") or group.get("stable_adamw"):
            one_tensor_at_a_time(self, group, params, grads, state)
            return
        beta1, beta2 = group["betas"]
        lr, step, decay = group["lr"], group["step"], group["weight_decay"]
        coupled = decay != 0.0 and not group["weight_decouple"]
        bound = self.clip_lambda(step) if self.clip_lambda is not None and step > 1 else None
        for p, g, m, v in zip(params, grads, state["exp_avg"], state["exp_avg_sq"], strict=True):
            if self.maximize:
                g = torch.neg(g, out=self.scratch.like(g, 1))
            if coupled:
                g = torch.add(g, p, alpha=decay, out=self.scratch.like(g, 1))
            else:
                decay_weights([p], [g], lr=lr, weight_decay=decay, decouple=True,
                              fixed=group["fixed_decay"])  # fmt: skip
            if step == 1:
                v.addcmul_(g, g)
                continue
            normed = torch.sqrt(v, out=self.scratch.like(v))
            normed.clamp_min_(group["eps"])
            torch.div(g, normed, out=normed)  # g / max(√v, ε)
            if bound is not None:
                normed.clamp_min_(-bound)
                normed.clamp_max_(bound)
            m.lerp_(normed, 1.0 - beta1)
            p.add_(m, alpha=-lr)
            v.mul_(beta2)
            v.addcmul_(g, g, value=1.0 - beta2)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        beta1, beta2 = group["betas"]
        lr, step = group["lr"], group["step"]
        exp_avgs, exp_avg_sqs = state["exp_avg"], state["exp_avg_sq"]
        if self.maximize:
            grads = list(torch._foreach_neg(grads))
        grads = decay_weights(
            params, grads, lr=lr, weight_decay=group["weight_decay"],
            decouple=group["weight_decouple"], fixed=group["fixed_decay"],
        )  # fmt: skip
        if step == 1:
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads)
            return
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_clamp_min_(denom, group["eps"])
        normed = torch._foreach_div(grads, denom)  # g / max(√v, ε)
        del denom
        if self.clip_lambda is not None:
            bound = self.clip_lambda(step)
            torch._foreach_maximum_(normed, -bound)
            torch._foreach_minimum_(normed, bound)
        torch._foreach_lerp_(exp_avgs, normed, 1.0 - beta1)
        if group.get("cautious") or group.get("stable_adamw"):
            updates = [_shaped(m, u, g, v, group) for m, u, g, v in
                       zip(exp_avgs, normed, grads, exp_avg_sqs, strict=True)]  # fmt: skip
            torch._foreach_add_(params, updates, alpha=-lr)
        else:
            torch._foreach_add_(params, exp_avgs, alpha=-lr)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)


def _shaped(exp_avg: Tensor, normed: Tensor, grad: Tensor, exp_avg_sq: Tensor,
            group: dict[str, Any]) -> Tensor:  # fmt: skip
    """The step of one tensor with the whole-tensor options (cautious, stable_adamw)."""
    update = exp_avg
    if group.get("cautious"):
        update = exp_avg.clone()
        mask = (update * normed > 0).to(normed.dtype)
        mask.mul_(mask.numel() / (mask.sum() + 1))
        update.mul_(mask)
    if group.get("stable_adamw"):
        update = update / stable_rms(grad, exp_avg_sq)
    return update


def stable_rms(grad: Tensor, exp_avg_sq: Tensor, eps: float = 1e-16) -> Tensor:
    """StableAdamW's scale: max(1, √mean(g² / max(v, eps))), in float32 for half types."""
    if grad.dtype in (torch.float16, torch.bfloat16):
        grad, exp_avg_sq = grad.float(), exp_avg_sq.float()
    return grad.pow(2).div_(exp_avg_sq.clip(min=eps)).mean().sqrt_().clip_(min=1.0)


__all__ = ["ADOPT"]
