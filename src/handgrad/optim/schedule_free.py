"""Schedule-free SGD and AdamW (Defazio et al., 2024, *The Road Less Scheduled*,
arXiv:2405.15682), interchangeable with the ``schedulefree`` package's classes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import Lists
from ._beyond import GroupStepped, check_finite_number
from ._common import add_number_, number_operand


class _ScheduleFree(GroupStepped):
    """What both schedule-free optimizers share: the averaging weights kept in each group,
    the train/eval switch of the parameters, and the refusal to step outside train mode.

    Three sequences live in two tensors: z (the SGD/Adam iterate, ``state["z"]``), x (the
    weighted average of the z's: what to evaluate) and y = (1 − β)z + βx (where gradients are
    taken). In train mode a parameter holds y, in eval mode x; ``train()``/``eval()`` move
    it from one to the other with one interpolation each (x is never stored).
    """

    elementwise = True

    def _beta(self, group: dict[str, Any]) -> float:
        """The interpolation constant β of y = (1 − β)z + βx."""
        raise NotImplementedError

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """z starts at the parameter itself; every other key at zeros."""
        state = {"z": torch.clone(p, memory_format=torch.preserve_format)}
        for key in self.state_keys[1:]:
            state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters to x, the average: call before evaluating and before saving weights."""
        self._switch(to_train=False)

    @torch.no_grad()
    def train(self) -> None:
        """Parameters to y, where the next gradient is taken: call before training steps
        (a new optimizer starts in eval mode, as the reference's does)."""
        self._switch(to_train=True)

    def _switch(self, to_train: bool) -> None:
        for group in self.param_groups:
            if bool(group["train_mode"]) == to_train:
                continue
            beta = self._beta(group)
            # y = x + (1 − β)(z − x) and x = y + (1 − 1/β)(z − y): lerp towards z.
            weight = 1 - beta if to_train else 1 - 1 / beta
            params, zs = [], []
            for p in group["params"]:
                state = self.state.get(p)
                if state and "z" in state:
                    params.append(p)
                    zs.append(state["z"].to(p.device))
            for p, z in zip(params, zs, strict=True):
                p.lerp_(end=z, weight=weight)
            group["train_mode"] = to_train

    def check_step(self) -> None:
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError(
                f"{type(self).__name__}: step() called in eval mode; call optimizer.train() "
                "before training steps and optimizer.eval() before evaluating or saving "
                "(the parameters then hold the averaged weights)"
            )

    def begin_group(self, group: dict[str, Any]) -> None:
        """The step's learning rate (linear warmup) and averaging weight, as the reference
        keeps them in the group: ``k`` steps taken, ``lr_max``, ``weight_sum``."""
        k = group["k"]
        sched = (k + 1) / group["warmup_steps"] if k < group["warmup_steps"] else 1.0
        lr = group["lr"] * sched
        group["scheduled_lr"] = lr
        lr_max = group["lr_max"] = max(lr, group["lr_max"])
        weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
        weight_sum = group["weight_sum"] = group["weight_sum"] + weight
        try:
            ckp1 = weight / weight_sum
        except ZeroDivisionError:
            ckp1 = 0
        self.__dict__.setdefault("_now", {})[id(group)] = (k, lr, ckp1)
        group["k"] = k + 1

    def _averaging_step(self, group: dict[str, Any], params: list[Tensor],
                        direction: list[Tensor] | tuple[Tensor, ...],
                        zs: list[Tensor]) -> None:  # fmt: skip
        """y ← (1 − c)y + c z + γ(β(1 − c) − 1)·d;  z ← z − γ d  (c = weight / weight_sum,
        d the step's direction with weight decay at y)."""
        _, lr, ckp1 = self.__dict__["_now"][id(group)]
        beta = self._beta(group)
        torch._foreach_lerp_(params, zs, ckp1)
        torch._foreach_add_(params, direction, alpha=lr * (beta * (1 - ckp1) - 1))
        torch._foreach_sub_(zs, direction, alpha=lr)

    def _averaging_step_one(self, group: dict[str, Any], p: Tensor, direction: Tensor,
                            z: Tensor) -> None:  # fmt: skip
        """:meth:`_averaging_step` on one tensor (the same operations, the same bits)."""
        _, lr, ckp1 = self.__dict__["_now"][id(group)]
        beta = self._beta(group)
        p.lerp_(z, ckp1)
        p.add_(direction, alpha=lr * (beta * (1 - ckp1) - 1))
        z.sub_(direction, alpha=lr)


class SGDScheduleFree(_ScheduleFree):
    r"""Schedule-free SGD: interchangeable with ``schedulefree.SGDScheduleFree``.

    No learning-rate schedule: the parameters evaluated are an average x of the SGD iterates
    z, and gradients are taken at an interpolation y between them. Per step k (from 0; γ =
    lr, warmed up linearly over ``warmup_steps``; β = momentum; λ = weight_decay)::

        γₖ = γ · min(1, (k + 1)/warmup_steps)
        wₖ = (k + 1)ʳ · (maxⱼ≤ₖ γⱼ)^weight_lr_power,   cₖ = wₖ / Σⱼ≤ₖ wⱼ
        d  = g + λ y                                    (weight decay at y)
        y ← (1 − cₖ) y + cₖ z + γₖ(β(1 − cₖ) − 1) d     (y = (1 − β) z + β x, x the average)
        z ← z − γₖ d

    The parameter holds y in train mode and x in eval mode: call ``train()`` before training
    steps (a new optimizer starts in eval mode, and ``step()`` refuses to run outside train
    mode with a RuntimeError; the reference raises a bare Exception) and ``eval()`` before
    evaluating or saving. ``handgrad train`` does both.

    Equality with the reference: the same operations in the same order, the same bits, also
    for complex parameters (the rule is linear). ``foreach`` is accepted; the multi-tensor
    rule always runs (the reference's two bodies give the same bits on the CPU). The rule is
    element-wise: a flat network is updated as one tensor.

    ``p.grad`` holds d after the step, as in the reference, which adds the weight decay into
    it in place; torch.optim's own optimizers leave ``.grad`` alone. (On a flat network
    whose ``.grad`` tensors are not the layout's own, the step works on a gathered copy.) A
    fresh d per parameter would cost one allocation each, and on many small tensors that
    alone made the step 1.1-1.2x the reference's (bench_new_optim "200 params of 1,000");
    written into ``p.grad``, 0.92-0.93x (2 threads, idle machine).

    Refusals (the reference's): lr < 0 or weight_decay < 0, momentum outside (0, 1), as
    ValueError.
    """

    state_keys = ("z",)
    complex_as_real = False  # a linear rule: complex arithmetic, as the reference does it

    def _beta(self, group: dict[str, Any]) -> float:
        return float(group["momentum"])

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = True,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if momentum <= 0 or momentum >= 1:
            raise ValueError(f"Momentum must be between 0 and 1 exclusive: {momentum}")
        defaults = {"lr": lr, "momentum": momentum, "r": r, "k": 0, "warmup_steps": warmup_steps,
                    "train_mode": False, "weight_sum": 0.0, "lr_max": -1.0, "scheduled_lr": 0.0,
                    "weight_lr_power": weight_lr_power, "weight_decay": weight_decay,
                    "foreach": foreach}  # fmt: skip
        super().__init__(params, defaults)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        decay = group["weight_decay"]
        if decay != 0:
            torch._foreach_add_(grads, params, alpha=decay)  # d into p.grad, as the reference
        self._averaging_step(group, params, grads, state["z"])

    def update_large(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """:meth:`update` one large tensor at a time (d written into the gradient, as
        :meth:`update` does): the same bits."""
        decay = group["weight_decay"]
        for p, g, z in zip(params, grads, state["z"], strict=True):
            if decay != 0:
                g.add_(p, alpha=decay)
            self._averaging_step_one(group, p, g, z)


class AdamWScheduleFree(_ScheduleFree):
    r"""Schedule-free AdamW: interchangeable with ``schedulefree.AdamWScheduleFree``.

    Schedule-free averaging (see :class:`SGDScheduleFree`) around an Adam step without
    first moment: β₁ is the interpolation constant, β₂ the second moment's. Per step k
    (γₖ, cₖ as for SGDScheduleFree; v = ``exp_avg_sq``, zeros at first)::

        v ← β₂ v + (1 − β₂) g²
        d = g / (√(v / (1 − β₂ᵏ⁺¹)) + ε) + λ y          (weight decay at y)
        y ← (1 − cₖ) y + cₖ z + γₖ(β₁(1 − cₖ) − 1) d
        z ← z − γₖ d

    ``train()``/``eval()`` as for SGDScheduleFree (``handgrad train`` calls them). As in the
    reference, which normalises ``p.grad`` in place, ``p.grad`` holds d after the step.

    Equality with the reference: the same operations in the same order, the same bits.
    Complex parameters are updated as (Re, Im) pairs (torch.optim's convention; equal to the
    reference on ``torch.view_as_real`` of them): the reference squares complex gradients
    (g², not |g|²). The rule is element-wise: a flat network is updated as one tensor.

    Refusals: the reference checks nothing; a negative lr, eps or weight_decay, or a beta
    outside [0, 1), raise ValueError here (a β₁ of 0 would divide by zero in ``eval()``).
    """

    state_keys = ("z", "exp_avg_sq")

    def _beta(self, group: dict[str, Any]) -> float:
        return float(group["betas"][0])

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = True,
    ) -> None:
        check_finite_number("learning rate", lr)
        check_finite_number("beta parameter at index 0", betas[0], low_open=True, high=1.0,
                            high_open=True)  # fmt: skip
        check_finite_number("beta parameter at index 1", betas[1], high=1.0, high_open=True)
        check_finite_number("eps", eps)
        check_finite_number("weight_decay", weight_decay)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "r": r, "k": 0,
                    "warmup_steps": warmup_steps, "train_mode": False, "weight_sum": 0.0,
                    "lr_max": -1.0, "scheduled_lr": 0.0, "weight_lr_power": weight_lr_power,
                    "weight_decay": weight_decay, "foreach": foreach}  # fmt: skip
        super().__init__(params, defaults)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        k, _, _ = self.__dict__["_now"][id(group)]
        beta2 = group["betas"][1]
        exp_avg_sqs = state["exp_avg_sq"]
        torch._foreach_mul_(exp_avg_sqs, number_operand(beta2, params[0]))
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denom = torch._foreach_div(exp_avg_sqs, number_operand(1 - beta2 ** (k + 1), params[0]))
        torch._foreach_sqrt_(denom)
        add_number_(denom, group["eps"])
        torch._foreach_div_(grads, denom)  # d into p.grad, as the reference
        del denom
        decay = group["weight_decay"]
        if decay != 0:
            torch._foreach_add_(grads, params, alpha=decay)
        self._averaging_step(group, params, grads, state["z"])

    def update_large(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """:meth:`update` one large tensor at a time, its temporaries in one reused buffer:
        the same bits."""
        k, _, _ = self.__dict__["_now"][id(group)]
        beta2, eps, decay = group["betas"][1], group["eps"], group["weight_decay"]
        correction = 1 - beta2 ** (k + 1)
        for p, g, v, z in zip(params, grads, state["exp_avg_sq"], state["z"], strict=True):
            v.mul_(beta2)
            v.addcmul_(g, g, value=1 - beta2)
            denom = torch.div(v, correction, out=self.scratch.like(v))
            denom.sqrt_()
            denom.add_(eps)
            g.div_(denom)
            if decay != 0:
                g.add_(p, alpha=decay)
            self._averaging_step_one(group, p, g, z)


__all__ = ["AdamWScheduleFree", "SGDScheduleFree"]
