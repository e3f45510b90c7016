"""Lion (Chen et al., 2023, *Symbolic Discovery of Optimization Algorithms*,
arXiv:2302.06675), interchangeable with the ``lion-pytorch`` package's ``Lion``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._beyond import one_tensor_at_a_time, require


class Lion(Optimizer):
    r"""Lion: the sign of an interpolated momentum, the same step for every coordinate.

    Interchangeable with ``lion_pytorch.Lion`` (arguments, defaults, state, errors). For each
    parameter θ with gradient g (γ = lr, λ = weight_decay, m = ``exp_avg``, zeros at first)::

        θ ← θ (1 − γλ)                      decoupled weight decay
        c ← β₁ m + (1 − β₁) g               the direction: computed as (β₁ m) + (1 − β₁) g
        θ ← θ − γ sign(c)
        m ← β₂ m + (1 − β₂) g               the memory, computed the same way

    With ``decoupled_weight_decay=True`` λ is divided by the learning rate given to the
    constructor (the reference's ``_init_lr``), so the decay per step is λ·γ/γ₀: a
    schedule that lowers γ lowers the decay with it.

    Equality with the reference: the same operations in the same order, so the same bits
    (tests/optim/test_beyond_torch.py). ``use_triton`` is accepted for compatibility;
    handgrad runs its own multi-tensor rule (one ``torch._foreach_*`` call per operation)
    and, because the rule is element-wise, a whole flat network as one tensor.

    Complex parameters are updated as (Re, Im) pairs, torch.optim's convention and the
    paper's sign on ℝ²ⁿ: equal to lion-pytorch run on ``torch.view_as_real`` of them.
    lion-pytorch itself takes ``sgn`` of a complex direction (z/|z|, a different rule), and
    its foreach variant refuses complex tensors.

    Refusals: ``lr <= 0`` and a beta outside [0, 1] raise :class:`HyperparameterError`
    (a ValueError and an AssertionError: the reference asserts).
    """

    state_keys = ("exp_avg",)
    elementwise = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        use_triton: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        require(lr > 0.0, f"Invalid learning rate: {lr} (Lion needs lr > 0)")
        for index, beta in enumerate(betas):
            require(0.0 <= beta <= 1.0, f"Invalid beta parameter at index {index}: {beta} "
                                        "(expected 0 <= beta <= 1)")  # fmt: skip
        # As the reference keeps them: attributes, not group entries (its state_dicts have
        # exactly lr, betas and weight_decay in each group).
        self._init_lr = lr
        self.decoupled_wd = decoupled_weight_decay
        self.use_triton = use_triton
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    def __getstate__(self) -> dict[str, Any]:
        # torch pickles defaults, state and groups only; the reference loses these attributes.
        return {**super().__getstate__(), "_init_lr": self._init_lr,
                "decoupled_wd": self.decoupled_wd, "use_triton": self.use_triton}  # fmt: skip

    # A tensor of LARGE_TENSOR_ELEMENTS or more: on its own (the same bits, faster).
    update_large = one_tensor_at_a_time

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        decay = group["weight_decay"]
        if self.decoupled_wd:
            decay = decay / self._init_lr
        exp_avgs = state["exp_avg"]
        if decay != 0:  # × 1.0 would change no bit
            torch._foreach_mul_(params, 1.0 - lr * decay)
        direction = torch._foreach_mul(exp_avgs, beta1)
        torch._foreach_add_(direction, grads, alpha=1.0 - beta1)
        torch._foreach_sign_(direction)
        torch._foreach_add_(params, direction, alpha=-lr)
        del direction
        torch._foreach_mul_(exp_avgs, beta2)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta2)


__all__ = ["Lion"]
