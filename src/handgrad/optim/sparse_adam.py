"""SparseAdam: lazy Adam for sparse gradients — only the rows a gradient touches move."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from handgrad.optim._common import add_sparse, check_betas, squeeze_scalar


class SparseAdam(Optimizer):
    r"""Lazy Adam for sparse gradients (e.g. embeddings), as torch.optim.SparseAdam.

    With learning rate γ, betas (β₁, β₂) and eps ε, step t updates only the entries i present
    in the (coalesced) sparse gradient g (−g if maximize)::

        m_i ← m_i + (1 − β₁)(g_i − m_i)
        v_i ← v_i + (1 − β₂)(g_i² − v_i)
        θ_i ← θ_i − γ √(1 − β₂ᵗ)/(1 − β₁ᵗ) · m_i / (√v_i + ε)

    Entries absent from g keep their parameter and moments (the "lazy" part); t counts every
    step with a gradient. State: ``step`` (a Python int, as torch keeps it), ``exp_avg`` (m),
    ``exp_avg_sq`` (v). Parameters must be dense and real (ValueError at construction);
    gradients must be sparse (RuntimeError at step).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr > 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps > 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_betas(betas)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)
        sparse_at, complex_at = [], []
        for g_index, group in enumerate(self.param_groups):
            for p_index, p in enumerate(group["params"]):
                if p.is_sparse:
                    sparse_at.append([g_index, p_index])
                if p.is_complex():
                    complex_at.append([g_index, p_index])
        if sparse_at:
            raise ValueError(
                f"Sparse params at indices {sparse_at}: SparseAdam requires dense parameter tensors"
            )
        if complex_at:
            raise ValueError(
                f"Complex params at indices {complex_at}: SparseAdam does not support complex "
                "parameters"
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One lazy Adam step on every parameter that has a gradient; returns the closure's loss.

        One tensor at a time: each gradient has its own sparsity pattern (torch has no
        multi-tensor SparseAdam either).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError(
                        "SparseAdam does not support dense gradients, please consider Adam "
                        "instead"
                    )
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                sparse_adam_update(
                    p,
                    p.grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state["step"],
                    lr=squeeze_scalar(group["lr"]),
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    maximize=group.get("maximize", False),
                )
        return loss


def sparse_adam_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    maximize: bool,
) -> None:
    """One lazy Adam step for one parameter from its sparse gradient (rule in SparseAdam)."""
    if maximize:
        grad = -grad
    # The update is not linear in g: repeated indices must be summed first.
    grad = grad.coalesce()
    indices, values = grad.indices(), grad.values()
    if values.numel() == 0:
        return

    old_m = exp_avg.sparse_mask(grad).values()
    m_change = values.sub(old_m).mul_(1 - beta1)
    add_sparse(exp_avg, indices, m_change)
    old_v = exp_avg_sq.sparse_mask(grad).values()
    v_change = values.pow(2).sub_(old_v).mul_(1 - beta2)
    add_sparse(exp_avg_sq, indices, v_change)
    # The new moments on the touched entries, rebuilt from the changes (no dense gather).
    m_new = m_change.add_(old_m)
    denom = v_change.add_(old_v).sqrt_().add_(eps)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr * math.sqrt(bias_correction2) / bias_correction1
    add_sparse(param, indices, -step_size * m_new.div_(denom))
