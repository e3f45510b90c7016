"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from .adam import Adam


class AdamW(Adam):
    r"""AdamW, interchangeable with ``torch.optim.AdamW``: :class:`Adam` whose weight decay
    shrinks the parameters instead of entering the moments (λ = weight_decay, γ = lr)::

        θ  ← θ (1 − γλ)
        m  ← β₁ m + (1 − β₁) g,    v ← β₂ v + (1 − β₂) g²
        θ  ← θ − γ/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

    Same state keys as Adam (``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``);
    the default weight decay is 1e-2.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
