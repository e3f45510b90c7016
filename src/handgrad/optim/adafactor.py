"""Adafactor: Adam-like steps with a factored (row × column) second moment for matrices."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from handgrad.optim._base import Lists, Optimizer
from handgrad.optim._common import new_step, squeeze_scalar


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
    Unlike the other optimizers torch's Adafactor runs its single-tensor body unless asked for
    ``foreach=True``; our default (foreach=None) is the multi-tensor body.
    """

    # Each parameter keeps step and either (row_var, col_var) or variance.
    state_keys = ("step", "row_var", "col_var", "variance")
    flag_defaults: ClassVar[dict[str, Any]] = {"foreach": None}
    sparse_error = "Adafactor does not support sparse gradients"

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

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        grad = cast(Tensor, p.grad)  # state is made for parameters with a gradient
        if grad.dim() > 1:
            return {
                "step": new_step(p),
                "row_var": grad.new_zeros((*grad.shape[:-1], 1)),
                "col_var": grad.new_zeros((*grad.shape[:-2], 1, grad.shape[-1])),
            }
        return {
            "step": new_step(p),
            "variance": torch.zeros_like(grad, memory_format=torch.preserve_format),
        }

    def check(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if any(p.is_complex() for p in params):
            raise RuntimeError("Adafactor does not support complex parameters")

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """Adafactor one tensor at a time (torch's order); ``step`` already counts this step.

        A matrix (or stack of matrices) has ``row_var`` and ``col_var``, anything else
        ``variance`` (None in the other lists)."""
        lr, beta2_decay, eps1, eps2, d, decay, maximize = _hyperparameters(group)
        steps, row_vars, col_vars, variances = _state_lists(state)
        for i, (param, grad, step_t) in enumerate(zip(params, grads, steps, strict=True)):
            if maximize:
                grad = -grad
            t = step_t.item()
            weight = t**beta2_decay
            alpha = max(eps2, _rms(param)) * min(lr, 1 / (t**0.5))
            if decay != 0:
                param.mul_(1 - lr * decay)
            if grad.dim() > 1:
                row_var, col_var = cast(Tensor, row_vars[i]), cast(Tensor, col_vars[i])
                row_mean = torch.norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1))
                row_var.lerp_(row_mean, weight)
                col_mean = torch.norm(grad, dim=-2, keepdim=True).square_().div_(grad.size(-2))
                col_var.lerp_(col_mean, weight)
                var_estimate = row_var @ col_var
                var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
            else:
                variance = cast(Tensor, variances[i])
                variance.lerp_(grad * grad, weight)
                var_estimate = variance.clone()
            update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad)
            clip = max(1.0, _rms(update) / d)
            param.add_(update, alpha=-alpha / clip)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """Adafactor on lists of tensors of one device and dtype (``torch._foreach_*``): the
        factored ones apart from the others."""
        lr, beta2_decay, eps1, eps2, d, decay, maximize = _hyperparameters(group)
        steps, row_vars, col_vars, variances = _state_lists(state)
        factored = [i for i, g in enumerate(grads) if g.dim() > 1]
        unfactored = [i for i, g in enumerate(grads) if g.dim() <= 1]
        for indices, moments in ((factored, (row_vars, col_vars)), (unfactored, (variances,))):
            if not indices:
                continue
            p = [params[i] for i in indices]
            g = [grads[i] for i in indices]
            kept = [[cast(Tensor, moment[i]) for i in indices] for moment in moments]
            if maximize:
                g = list(torch._foreach_neg(g))
            counts = [steps[i].item() for i in indices]
            weights = [count**beta2_decay for count in counts]
            alphas = [
                max(eps2, _rms(param)) * min(lr, 1 / (count**0.5))
                for param, count in zip(p, counts, strict=True)
            ]
            if decay != 0:
                torch._foreach_mul_(p, 1 - lr * decay)
            if len(kept) == 2:
                var_estimates = _factored_estimates(g, kept[0], kept[1], weights, eps1)
            else:
                torch._foreach_lerp_(kept[0], torch._foreach_mul(g, g), weights)
                var_estimates = [v.clone() for v in kept[0]]
            torch._foreach_clamp_min_(var_estimates, eps1 * eps1)
            torch._foreach_rsqrt_(var_estimates)
            torch._foreach_mul_(var_estimates, g)
            scales = [
                -a / max(1.0, _rms(u) / d) for a, u in zip(alphas, var_estimates, strict=True)
            ]
            torch._foreach_mul_(var_estimates, scales)
            torch._foreach_add_(p, var_estimates)


def _hyperparameters(group: dict[str, Any]) -> tuple[Any, ...]:
    """γ (a 1-element tensor as 0-d), the β₂ decay, ε₁, ε₂, d, λ and maximize."""
    eps1, eps2 = group["eps"]
    if eps1 is None:
        # torch resolves ε₁ once per group, from the first parameter's dtype.
        first = next(p for p in group["params"] if p.grad is not None)
        eps1 = torch.finfo(first.dtype).eps
    return (squeeze_scalar(group["lr"]), group["beta2_decay"], eps1, eps2, group["d"],
            group["weight_decay"], group["maximize"])  # fmt: skip


def _state_lists(state: Lists) -> tuple[list[Any], ...]:
    return state["step"], state["row_var"], state["col_var"], state["variance"]


def _rms(t: Tensor) -> float:
    """Root mean square ‖t‖₂/√n as a Python float."""
    return float(t.norm(2).item()) / (t.numel() ** 0.5)


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
