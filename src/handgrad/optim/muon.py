"""Muon: momentum whose update is orthogonalised by a Newton–Schulz iteration (2-D only)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from handgrad.optim._common import squeeze_scalar

# The quintic's coefficients (Keller Jordan's Muon), chosen for a steep slope at zero.
DEFAULT_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
DEFAULT_NS_STEPS = 5
EPS = 1e-7


class Muon(Optimizer):
    r"""Muon (Jordan et al., 2024) as torch.optim.Muon; parameters must be matrices.

    With learning rate γ, momentum μ, weight decay λ and a parameter of shape A × B::

        M  ← M + (1 − μ) (g − M)                 ``momentum_buffer``
        U  = g + μ (M − g)   if nesterov, else M
        O  = NS(U)                              ≈ the orthogonal factor of U (see newton_schulz)
        θ  ← θ (1 − γλ)
        θ  ← θ − γ s O,   s = √max(1, A/B)       (adjust_lr_fn None or "original")
                          s = 0.2 √max(A, B)     ("match_rms_adamw")

    The Newton–Schulz iteration runs in bfloat16, as torch's does, with the same operations,
    so both produce the same bits. Complex parameters and sparse gradients are refused at step
    (RuntimeError); parameters that are not 2-D at construction (ValueError).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
        eps: float = EPS,
        ns_steps: int = DEFAULT_NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter with "
                        f"size: {p.size()}"
                    )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Muon step on every parameter that has a gradient; returns the closure's loss.

        One tensor at a time: each matrix needs its own matrix products (torch has no
        multi-tensor Muon either).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = squeeze_scalar(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.is_complex():
                    raise RuntimeError("Muon does not support complex parameters")
                if p.grad.is_sparse:
                    raise RuntimeError("Muon does not support sparse gradients")
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(
                        p.grad, memory_format=torch.preserve_format
                    )
                muon_update(
                    p,
                    p.grad,
                    state["momentum_buffer"],
                    lr=lr,
                    weight_decay=group["weight_decay"],
                    momentum=group["momentum"],
                    nesterov=group["nesterov"],
                    ns_coefficients=group["ns_coefficients"],
                    ns_steps=group["ns_steps"],
                    eps=group["eps"],
                    adjust_lr_fn=group["adjust_lr_fn"],
                )
        return loss


def muon_update(
    param: Tensor,
    grad: Tensor,
    buf: Tensor,
    *,
    lr: float | Tensor,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    ns_coefficients: tuple[float, float, float],
    ns_steps: int,
    eps: float,
    adjust_lr_fn: str | None,
) -> None:
    """One Muon step for one matrix (see :class:`Muon` for the rule)."""
    if grad.ndim != 2:
        raise ValueError("Param gradient must be a 2D matrix")
    buf.lerp_(grad, 1 - momentum)
    direction = grad.lerp(buf, momentum) if nesterov else buf
    ortho = newton_schulz(direction, ns_coefficients, ns_steps, eps)
    param.mul_(1 - lr * weight_decay)
    param.add_(ortho, alpha=-adjusted_lr(lr, adjust_lr_fn, param.shape))


def newton_schulz(
    matrix: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> Tensor:
    """An approximate orthogonal factor of ``matrix`` (its "zeroth power"), in bfloat16.

    X₀ = G/max(‖G‖_F, ε) (transposed to be wide), then ``steps`` times, with A = X Xᵀ,
    X ← a X + (b A + c A²) X. The coefficients push every singular value towards [0.7, 1.2]
    fast rather than exactly to 1, which is all Muon needs. Each product is one bfloat16
    matrix product or ``addmm`` (accumulated in float32, rounded once), as torch does it, so
    the result has torch's bits.
    """
    if steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(matrix.shape) != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = coefficients
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.bfloat16()  # no copy for a bfloat16 matrix: the division below is in place
    if tall:
        # Work with the smaller Gram matrix. torch keeps the transposed view; a contiguous
        # copy gives the same bits (tested against torch) and a ~4x faster first product,
        # but only where x is already our own copy.
        x = x.T.contiguous() if x is not matrix else x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        # x @ x.T with a contiguous right operand: the same bits (tested against torch), but
        # on CPU a bfloat16 product with a transposed view takes a path ~100x slower.
        gram = x @ x.T.contiguous()
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, polynomial, x, beta=a)
    return x.T if tall else x


def adjusted_lr(lr: Any, adjust_lr_fn: str | None, shape: torch.Size) -> Any:
    """γ·s for an A × B matrix: s = √max(1, A/B) ("original", the default) or 0.2 √max(A, B).

    "match_rms_adamw" makes the update's RMS match a typical AdamW update's.
    """
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio
