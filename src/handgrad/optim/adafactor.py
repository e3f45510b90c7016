"""Adafactor: Adam-like steps with a factored (row × column) second moment for matrices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from handgrad.optim._bookkeeping import restore_group_flags
from handgrad.optim._common import (
    fast_path,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
    squeeze_scalar,
)


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern, 2018) as torch.optim.Adafactor (no first moment).

    With learning rate γ, decay exponent c = ``beta2_decay`` (≤ 0), eps = (ε₁, ε₂) (ε₁ None:
    the dtype's machine epsilon), clipping threshold d and weight decay λ, step t does::

        g   ← ∇f(θ)               (−∇f(θ) if maximize)
        w   = t^c                 (the weight of the new gradient: 1 − β̂₂ₜ)
        ρ   = min(γ, 1/√t)
        α   = max(ε₂, RMS(θ)) · ρ   (relative step size, RMS before the decay below)
        θ   ← θ (1 − γλ)
        matrices (over the last two dims, n × m):
            R ← R + w (mean_j g² − R)        row means, shape (…, n, 1): ``row_var``
            C ← C + w (mean_i g² − C)        column means, shape (…, 1, m): ``col_var``
            V̂ = R C / max(mean_i R, ε₁)      the rank-1 estimate of E[g²]
        vectors and scalars:
            V ← V + w (g² − V);  V̂ = V       ``variance``
        U   = g / √max(V̂, ε₁²)
        θ   ← θ − α U / max(1, RMS(U)/d)

    Complex parameters and sparse gradients are refused at step with RuntimeError, as torch.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not beta2_decay <= 0.0:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not eps[0] >= 0.0:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not eps[1] >= 0.0:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not d >= 1.0:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = {
            "lr": lr,
            "beta2_decay": beta2_decay,
            "eps": eps,
            "d": d,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        restore_group_flags(self, {"foreach": None})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adafactor step on every parameter that has a gradient; returns the closure's loss.

        Unlike the other optimizers torch's Adafactor runs its single-tensor body unless asked
        for ``foreach=True``; our default (foreach=None) is the multi-tensor body.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, steps = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.is_complex():
                    raise RuntimeError("Adafactor does not support complex parameters")
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = new_step(p)
                    if p.grad.dim() > 1:
                        state["row_var"] = p.grad.new_zeros((*p.grad.shape[:-1], 1))
                        state["col_var"] = p.grad.new_zeros(
                            (*p.grad.shape[:-2], 1, p.grad.shape[-1])
                        )
                    else:
                        state["variance"] = torch.zeros_like(
                            p.grad, memory_format=torch.preserve_format
                        )
                params.append(p)
                grads.append(p.grad)
                steps.append(state["step"])
            if not params:
                continue
            eps1, eps2 = group["eps"]
            if eps1 is None:
                # torch resolves ε₁ once, from the first parameter's dtype.
                eps1 = torch.finfo(params[0].dtype).eps
            multi = fast_path(group)
            update = adafactor_multi_tensor if multi else adafactor_single_tensor
            update(
                params,
                grads,
                [self.state[p] for p in params],
                steps,
                lr=squeeze_scalar(group["lr"]),
                beta2_decay=group["beta2_decay"],
                eps1=eps1,
                eps2=eps2,
                d=group["d"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
        return loss


def _rms(t: Tensor) -> float:
    """Root mean square ‖t‖₂/√n as a Python float."""
    return float(t.norm(2).item()) / (t.numel() ** 0.5)


def adafactor_single_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Any]],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta2_decay: float,
    eps1: float,
    eps2: float,
    d: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Adafactor one tensor at a time."""
    for param, grad, state, step_t in zip(params, grads, states, steps, strict=True):
        if maximize:
            grad = -grad
        step_t += 1
        t = step_t.item()
        weight = t**beta2_decay
        alpha = max(eps2, _rms(param)) * min(lr, 1 / (t**0.5))
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        if grad.dim() > 1:
            row_var, col_var = state["row_var"], state["col_var"]
            row_mean = torch.norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1))
            row_var.lerp_(row_mean, weight)
            col_mean = torch.norm(grad, dim=-2, keepdim=True).square_().div_(grad.size(-2))
            col_var.lerp_(col_mean, weight)
            var_estimate = row_var @ col_var
            var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
        else:
            variance = state["variance"]
            variance.lerp_(grad * grad, weight)
            var_estimate = variance.clone()
        update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad)
        clip = max(1.0, _rms(update) / d)
        param.add_(update, alpha=-alpha / clip)


def adafactor_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Any]],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta2_decay: float,
    eps1: float,
    eps2: float,
    d: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Adafactor on lists of tensors with ``torch._foreach_*``: factored ones apart."""
    factored = [i for i, g in enumerate(grads) if g.dim() > 1]
    unfactored = [i for i, g in enumerate(grads) if g.dim() <= 1]
    for indices, keys in ((factored, ("row_var", "col_var")), (unfactored, ("variance",))):
        lists = [
            [params[i] for i in indices],
            [grads[i] for i in indices],
            [steps[i] for i in indices],
            *[[states[i][key] for i in indices] for key in keys],
        ]
        if not indices:
            continue
        for p, g, t_, *moments in group_by_device_and_dtype(lists):
            if maximize:
                g = list(torch._foreach_neg(g))
            increment_steps(t_, foreach=True)
            counts = [s.item() for s in t_]
            weights = [count**beta2_decay for count in counts]
            alphas = [
                max(eps2, _rms(param)) * min(lr, 1 / (count**0.5))
                for param, count in zip(p, counts, strict=True)
            ]
            if weight_decay != 0:
                torch._foreach_mul_(p, 1 - lr * weight_decay)
            if len(moments) == 2:
                var_estimates = _factored_estimates(g, moments[0], moments[1], weights, eps1)
            else:
                torch._foreach_lerp_(moments[0], torch._foreach_mul(g, g), weights)
                var_estimates = [v.clone() for v in moments[0]]
            torch._foreach_clamp_min_(var_estimates, eps1 * eps1)
            torch._foreach_rsqrt_(var_estimates)
            torch._foreach_mul_(var_estimates, g)
            scales = [
                -a / max(1.0, _rms(u) / d) for a, u in zip(alphas, var_estimates, strict=True)
            ]
            torch._foreach_mul_(var_estimates, scales)
            torch._foreach_add_(p, var_estimates)


def _factored_estimates(
    grads: list[Tensor],
    row_vars: list[Tensor],
    col_vars: list[Tensor],
    weights: list[float],
    eps1: float,
) -> list[Tensor]:
    """Update R and C in place and return V̂ = R C / max(mean_i R, ε₁) for each matrix."""
    row_means = [torch.norm(g, dim=-1, keepdim=True) for g in grads]
    torch._foreach_mul_(row_means, row_means)
    torch._foreach_div_(row_means, [g.size(-1) for g in grads])
    torch._foreach_lerp_(row_vars, row_means, weights)
    col_means = [torch.norm(g, dim=-2, keepdim=True) for g in grads]
    torch._foreach_mul_(col_means, col_means)
    torch._foreach_div_(col_means, [g.size(-2) for g in grads])
    torch._foreach_lerp_(col_vars, col_means, weights)
    estimates = [r @ c for r, c in zip(row_vars, col_vars, strict=True)]
    row_var_means = [r.mean(dim=-2, keepdim=True) for r in row_vars]
    torch._foreach_clamp_min_(row_var_means, eps1)
    torch._foreach_div_(estimates, row_var_means)
    return estimates
