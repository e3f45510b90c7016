"""LAMB (You et al., 2020, *Large Batch Optimization for Deep Learning: Training BERT in
76 minutes*, arXiv:1904.00962), interchangeable with pytorch-optimizer's ``Lamb``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import Lists
from ._beyond import GroupStepped, check_finite_number, check_lr_and_betas, one_tensor_at_a_time
from .adopt import check_options

# The reference's bound on a parameter's norm in the trust ratio (its class attribute).
CLAMP = 10.0


def rectified_step_size(lr: float, beta2: float, step: int, threshold: int,
                        degenerated_to_sgd: bool) -> tuple[float, float]:  # fmt: skip
    """RAdam's (Liu et al., 2020) step size and the length ρₜ of the approximated simple
    moving average: ρ∞ = 2/(1 − β₂) − 1, ρₜ = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ); once ρₜ reaches the
    threshold the step is γ·rₜ with rₜ = √((1 − β₂ᵗ)(ρₜ − 4)(ρₜ − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρₜ))
    (in the reference's order of operations), before that γ (``degenerated_to_sgd``) or −γ
    (no step)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    beta2_t = beta2**step
    rho = rho_inf - 2 * step * beta2_t / (1.0 - beta2_t)
    if rho >= threshold:
        r = math.sqrt(
            (1.0 - beta2_t) * (rho - 4) / (rho_inf - 4) * (rho - 2) / rho * rho_inf / (rho_inf - 2)
        )
    else:
        r = 1.0 if degenerated_to_sgd else -1.0
    return lr * r, rho


class Lamb(GroupStepped):
    r"""LAMB: Adam's direction, rescaled per tensor by a trust ratio ‖θ‖/‖update‖.

    Interchangeable with ``pytorch_optimizer.Lamb`` (arguments, defaults, state, the group's
    ``step``). For each parameter tensor θ with gradient g at the group's step t (γ = lr,
    λ = weight_decay, β₃ = 1 − β₁ with ``grad_averaging`` else 1; m = ``exp_avg``, v =
    ``exp_avg_sq``, zeros at first)::

        g ← g · min(1, max_grad_norm / (‖G‖ + ε))  if pre_norm (‖G‖: all gradients, float32)
        g ← −g                                      if maximize
        m ← β₁ m + β₃ g;   v ← β₂ v + (1 − β₂) g²
        θ ← θ(1 − λγ)  (λ alone with fixed_decay)   if weight_decouple
        u = m / (√v + ε)  (+ λθ if not weight_decouple)
        τ = min(‖θ‖, 10) / (‖u‖ + ε), or 1 if either norm is 0 (or with ``adam=True``)
        θ ← θ − γ/(1 − β₁ᵗ) · τ u

    The norms are kept in the state (``weight_norm``, ``adam_norm``, ``trust_ratio``), as the
    reference keeps them. With ``rectify=True`` the step size is RAdam's
    (:func:`rectified_step_size`) and, as the reference computes it, the trust ratio's
    denominator is ‖θ − γₜ u‖ (the updated parameter), not ‖u‖; before ρₜ reaches
    ``n_sma_threshold`` the step is m alone (``degenerated_to_sgd``) or nothing. Options
    beyond the signature, as the reference takes them: ``adam_debias=True`` (no 1 − β₁ᵗ),
    ``adanorm=True`` (with ``adanorm_r``: m averages g·max(1, e/‖g‖), e an average of ‖g‖).

    Equality with the reference, the same bits: its default (multi-tensor) body on real
    parameters, and its per-parameter body with ``foreach=False``, ``rectify``, ``adanorm``
    or complex parameters (updated as (Re, Im) pairs); the two bodies order their
    operations differently, and so do ours (``update`` and ``update_single``). The
    reference negates and rescales ``p.grad`` in place; handgrad leaves it as it was.

    Refusals: a negative lr (the reference's NegativeLRError, not a ValueError),
    weight_decay, max_grad_norm or eps, or a beta outside [0, 1), raise ValueError; an
    unknown keyword option TypeError.
    """

    state_keys = ("exp_avg", "exp_avg_sq")
    complex_as_real = False  # the rule writes each parameter's norms into its state itself

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = False,
        degenerated_to_sgd: bool = False,
        n_sma_threshold: int = 5,
        grad_averaging: bool = True,
        max_grad_norm: float = 1.0,
        adam: bool = False,
        pre_norm: bool = False,
        eps: float = 1e-6,
        foreach: bool | None = None,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        check_lr_and_betas(lr, betas)
        check_finite_number("weight_decay", weight_decay)
        check_finite_number("max_grad_norm", max_grad_norm)
        check_finite_number("eps", eps)
        check_options("Lamb", kwargs, ("adam_debias", "adanorm", "adanorm_r"))
        self.degenerated_to_sgd = degenerated_to_sgd
        self.n_sma_threshold = n_sma_threshold
        self.pre_norm = pre_norm
        self.foreach = foreach
        self.maximize = maximize
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay,
                    "rectify": rectify, "grad_averaging": grad_averaging,
                    "max_grad_norm": max_grad_norm, "adam": adam, "eps": eps,
                    "foreach": foreach, **kwargs}  # fmt: skip
        super().__init__(params, defaults)

    def __getstate__(self) -> dict[str, Any]:
        extra = ("degenerated_to_sgd", "n_sma_threshold", "pre_norm", "foreach", "maximize")
        return {**super().__getstate__(), **{name: getattr(self, name) for name in extra}}

    def kept_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        return (*self.state_keys, "exp_grad_adanorm") if group.get("adanorm") else self.state_keys

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {key: torch.zeros_like(p) for key in self.state_keys}
        if group.get("adanorm"):
            real = p.dtype.to_real() if p.is_complex() else p.dtype  # the average of a norm
            state["exp_grad_adanorm"] = torch.zeros((1,), dtype=real, device=p.device)
        return state

    # -- per-step scalars ------------------------------------------------------------------

    def begin_step(self) -> None:
        """The gradient scale of ``pre_norm``: min(1, max_grad_norm / (‖G‖ + ε)), ‖G‖ the
        norm of all gradients of all groups, summed in float32 (the reference's
        ``defaults``, not per group)."""
        self.__dict__["_grad_scale"] = self._global_scale() if self.pre_norm else 1.0

    def _global_scale(self) -> Tensor | float:
        max_norm, eps = self.defaults["max_grad_norm"], self.defaults["eps"]
        if max_norm == 0.0:
            return 1.0
        grads = [p.grad for group in self.param_groups for p in group["params"]
                 if p.grad is not None]  # fmt: skip
        device = next((p.device for g in self.param_groups for p in g["params"]),
                      torch.device("cpu"))  # fmt: skip
        if not grads:
            total = torch.zeros(1, dtype=torch.float32, device=device)
        else:
            same = all(g.device == grads[0].device and g.dtype == grads[0].dtype
                       and not g.is_sparse for g in grads)  # fmt: skip
            if same and grads[0].dtype not in (torch.float16, torch.bfloat16):
                norms = list(torch._foreach_norm(grads))
            else:
                norms = [(g.float() if g.dtype in (torch.float16, torch.bfloat16) else g).norm()
                         for g in grads]  # fmt: skip
            total = torch.stack([n.to(device) for n in norms]).float().square_().sum().reshape(1)
        total.sqrt_().add_(eps)
        return torch.clamp(max_norm / total, max=1.0).squeeze(0)

    def begin_group(self, group: dict[str, Any]) -> None:
        group["step"] = group.get("step", 0) + 1
        step = group["step"]
        beta1, beta2 = group["betas"]
        step_size, rho = group["lr"], 0.0
        if group["rectify"]:
            step_size, rho = rectified_step_size(
                group["lr"], beta2, step, self.n_sma_threshold, self.degenerated_to_sgd
            )
        if not group.get("adam_debias", False):
            step_size = step_size / (1.0 - math.pow(beta1, step))
        self.__dict__.setdefault("_now", {})[id(group)] = (step_size, rho)

    # -- the rule -------------------------------------------------------------------------------

    # A tensor of LARGE_TENSOR_ELEMENTS or more: on its own (the same bits, faster).
    update_large = one_tensor_at_a_time

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The reference's multi-tensor body on real parameters without ``rectify`` or
        ``adanorm``; its per-parameter body (:meth:`update_single`) otherwise."""
        if group["rectify"] or group.get("adanorm") or params[0].is_complex():
            self.update_single(group, params, grads, state)
            return
        step_size, _ = self.__dict__["_now"][id(group)]
        beta1, beta2 = group["betas"]
        eps, decay = group["eps"], group["weight_decay"]
        beta3 = 1.0 - beta1 if group["grad_averaging"] else 1.0
        exp_avgs, exp_avg_sqs = state["exp_avg"], state["exp_avg_sq"]
        if self.maximize:
            grads = list(torch._foreach_neg(grads))
        scale = self.__dict__["_grad_scale"]
        if self.pre_norm:
            grads = list(torch._foreach_mul(grads, scale.reshape(()) if isinstance(
                scale, Tensor) else scale))  # fmt: skip
        if group["weight_decouple"] and decay != 0.0:
            factor = 1.0 - decay if group["fixed_decay"] else 1.0 - decay * group["lr"]
            torch._foreach_mul_(params, factor)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=beta3)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        updates = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(updates, eps)
        torch._foreach_reciprocal_(updates)
        torch._foreach_mul_(updates, exp_avgs)  # u = m · 1/(√v + ε)
        if not group["weight_decouple"] and decay > 0.0:
            torch._foreach_add_(updates, params, alpha=decay)
        weight_norms = torch.stack(torch._foreach_norm(params)).clamp_(max=CLAMP)
        update_norms = torch.stack(torch._foreach_norm(updates))
        ratios = torch.where((weight_norms != 0) & (update_norms != 0),
                             weight_norms / (update_norms + eps), 1.0).unbind()  # fmt: skip
        for p, w, u, r in zip(params, weight_norms, update_norms, ratios, strict=True):
            table = self.state[p]
            table["weight_norm"], table["adam_norm"], table["trust_ratio"] = w, u, r
        if not group["adam"]:
            torch._foreach_mul_(updates, ratios)
        torch._foreach_add_(params, updates, alpha=-step_size)

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The rule one tensor at a time, in the reference's per-parameter order."""
        step_size, rho = self.__dict__["_now"][id(group)]
        beta1, beta2 = group["betas"]
        eps, decay, lr = group["eps"], group["weight_decay"], group["lr"]
        beta3 = 1.0 - beta1 if group["grad_averaging"] else 1.0
        scale = self.__dict__["_grad_scale"]
        adanorms = state.get("exp_grad_adanorm") or [None] * len(params)
        for i, original in enumerate(params):
            grad = grads[i]
            if self.pre_norm:
                grad = grad * scale
            if self.maximize:
                grad = -grad
            p, exp_avg, exp_avg_sq = original, state["exp_avg"][i], state["exp_avg_sq"][i]
            if p.is_complex():
                p, grad = torch.view_as_real(p), torch.view_as_real(grad)
                exp_avg, exp_avg_sq = torch.view_as_real(exp_avg), torch.view_as_real(exp_avg_sq)
            averaged = _adanorm(grad, adanorms[i], group) if group.get("adanorm") else grad
            exp_avg.mul_(beta1).add_(averaged, alpha=beta3)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            if decay != 0.0 and group["weight_decouple"]:
                p.mul_(1.0 - decay * (1.0 if group["fixed_decay"] else lr) * 1.0)
            if group["rectify"] and step_size <= 0:
                continue
            denom = None
            if group["rectify"]:
                update = p.clone()
                if rho >= self.n_sma_threshold:
                    denom = exp_avg_sq.sqrt().add_(eps)
                    update.addcdiv_(exp_avg, denom, value=-step_size)
                else:
                    update.add_(exp_avg, alpha=-step_size)
            else:
                update = exp_avg_sq.sqrt().add_(eps)
                torch.div(exp_avg, update, out=update)
                if not group["weight_decouple"] and decay > 0.0:
                    update.add_(p, alpha=decay)
            weight_norm = torch.linalg.norm(p).clamp_(min=0, max=CLAMP)
            update_norm = torch.linalg.norm(update)
            ratio: Tensor | float = (1.0 if weight_norm == 0 or update_norm == 0
                                     else weight_norm / (update_norm + eps))  # fmt: skip
            table = self.state[original]
            table["weight_norm"], table["adam_norm"], table["trust_ratio"] = (
                weight_norm, update_norm, ratio)
            if group["adam"]:
                ratio = 1.0
            if group["rectify"] and denom is not None:
                p.addcdiv_(exp_avg, denom, value=-step_size * ratio)
            elif group["rectify"]:
                p.add_(exp_avg, alpha=-step_size * ratio)
            else:
                p.add_(update, alpha=-step_size * ratio)


def _adanorm(grad: Tensor, exp_grad_norm: Tensor, group: dict[str, Any]) -> Tensor:
    """AdaNorm's gradient: g·e/‖g‖ when the average norm e exceeds ‖g‖, else g
    (e ← r e + (1 − r)‖g‖, r = ``adanorm_r``, 0.95 by default)."""
    r = group.get("adanorm_r")
    r = 0.95 if r is None else r
    norm = torch.linalg.norm(grad)
    exp_grad_norm.mul_(r).add_(norm, alpha=1.0 - r)
    if norm > 0 and exp_grad_norm > norm:
        return grad.mul(exp_grad_norm.reshape(())).div_(norm)
    return grad


__all__ = ["Lamb", "rectified_step_size"]
