"""Adam (Kingma & Ba, 2015), with AMSGrad and decoupled weight decay, written by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._common import (
    Scratch,
    as_float,
    check_betas,
    check_fused_flags,
    check_fused_param,
    check_lr,
    fast_path,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
    one_minus,
    out_like,
    params_with_grads,
    real_view,
    real_views,
    restore_tensor_steps,
    route,
    same_or_list,
    scratch_of,
    squeeze_scalar,
    step_values,
)

_LISTS = ("params", "grads", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")


class Adam(torch.optim.Optimizer):
    r"""Adam, interchangeable with ``torch.optim.Adam`` (arguments, state, errors).

    For each parameter θ with gradient g, at step t (λ = weight_decay, γ = lr)::

        g  ← −g                       if maximize
        g  ← g + λθ                   (L2; or θ ← θ(1 − γλ) if decoupled_weight_decay)
        m  ← β₁ m + (1 − β₁) g        (exp_avg, as a lerp)
        v  ← β₂ v + (1 − β₂) g²       (exp_avg_sq)
        v̂  ← max(v̂, v)                (max_exp_avg_sq, amsgrad only; used in place of v)
        θ  ← θ − γ/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

    The step follows torch's order of operations, so results agree to the last bits.
    Complex parameters are updated as (Re, Im) pairs. ``lr`` and ``betas`` may be 1-element
    tensors. ``foreach=None`` runs the multi-tensor body (torch runs the single-tensor one on
    CPU). ``fused=True`` is accepted and runs the same multi-tensor body; ``capturable`` and
    ``differentiable`` are accepted for compatibility (the update itself is the same, and
    handgrad never records it for autograd).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and foreach and not capturable:
            raise ValueError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
        check_lr(lr)
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_betas(betas)
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not (
            (isinstance(betas[0], float) and isinstance(betas[1], float))
            or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))
        ):
            raise ValueError("betas must be either both floats or both Tensors")
        for index, beta in enumerate(betas):
            if isinstance(beta, Tensor):
                if not capturable and foreach:
                    raise ValueError(
                        f"betas[{index}] as a Tensor is not supported for capturable=False "
                        "and foreach=True"
                    )
                if beta.numel() != 1:
                    raise ValueError(f"Tensor betas[{index}] must be 1-element")
        defaults = {
            "lr": lr,
            "betas": tuple(squeeze_scalar(beta) for beta in betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)
        check_fused_flags(fused, foreach, differentiable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("fused", None)
        restore_tensor_steps(self)

    def _group_tensors(self, group: dict[str, Any]) -> dict[str, list[Tensor]]:
        """Parameters with gradients and their state, created lazily on the first step."""
        params, grads = params_with_grads(
            group, "Adam does not support sparse gradients, please consider SparseAdam instead"
        )
        lists: dict[str, list[Tensor]] = {
            "params": params, "grads": grads, "exp_avg": [], "exp_avg_sq": [],
            "max_exp_avg_sq": [], "step": [],
        }  # fmt: skip
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                if group["fused"]:
                    check_fused_param(p)
                state["step"] = new_step(
                    p, on_param_device=group["capturable"], fused=group["fused"]
                )
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
            for key in ("exp_avg", "exp_avg_sq", "step"):
                lists[key].append(state[key])
            if group["amsgrad"]:
                lists["max_exp_avg_sq"].append(state["max_exp_avg_sq"])
        return lists

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam step for every parameter that has a gradient; returns ``closure()``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lists = self._group_tensors(group)
            if not lists["params"]:
                continue
            beta1, beta2 = group["betas"]
            settings = {
                "beta1": beta1,
                "beta2": beta2,
                "lr": group["lr"],
                "weight_decay": group["weight_decay"],
                "eps": group["eps"],
                "amsgrad": group["amsgrad"],
                "maximize": group["maximize"],
                "decoupled_weight_decay": group["decoupled_weight_decay"],
            }
            fast = fast_path(group)
            multi, single = route(lists, fast)
            if multi["params"]:
                _multi_tensor_adam(*(multi[key] for key in _LISTS), **settings)
            if single["params"]:
                scratch = scratch_of(self) if fast else None
                _single_tensor_adam(*(single[key] for key in _LISTS), scratch=scratch, **settings)
        return loss


def _single_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    beta1: float | Tensor,
    beta2: float | Tensor,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    scratch: Scratch | None = None,
) -> None:
    """The update rule one tensor at a time: the readable reference body.

    With ``scratch`` the temporaries (−g, g + λθ, the denominator) live in reused buffers.
    """
    for i, param in enumerate(params):
        grad = torch.neg(grads[i], out=out_like(scratch, grads[i], 1)) if maximize else grads[i]
        step_t = steps[i]
        step_t += 1
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(as_float(1 - lr * weight_decay))
            else:
                grad = torch.add(grad, param, alpha=weight_decay, out=out_like(scratch, grad, 1))
        param, grad = real_view(param), real_view(grad)
        exp_avg, exp_avg_sq = real_view(exp_avgs[i]), real_view(exp_avg_sqs[i])

        exp_avg.lerp_(grad, one_minus(beta1, param.dtype))
        exp_avg_sq.mul_(as_float(beta2)).addcmul_(grad, grad, value=as_float(1 - beta2))

        step = float(step_t.item())
        # Python scalars, or float32 0-d tensors for tensor betas/lr, exactly as torch.
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5

        second_moment = exp_avg_sq
        if amsgrad:
            max_exp_avg_sq = real_view(max_exp_avg_sqs[i])
            torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            second_moment = max_exp_avg_sq
        denom = torch.sqrt(second_moment, out=out_like(scratch, second_moment))
        denom.div_(as_float(bias_correction2_sqrt)).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-as_float(step_size))


def _multi_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    beta1: float | Tensor,
    beta2: float | Tensor,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """The same rule on whole lists of tensors (``torch._foreach_*``), per device and dtype."""
    grouped = group_by_device_and_dtype(
        [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps]
    )
    for g_params, g_grads, g_exp_avgs, g_exp_avg_sqs, g_max_sqs, g_steps in grouped:
        increment_steps(g_steps, foreach=True)
        if weight_decay != 0 and decoupled_weight_decay:
            torch._foreach_mul_(g_params, as_float(1 - lr * weight_decay))
        g_params, g_exp_avgs, g_exp_avg_sqs = (
            real_views(g_params), real_views(g_exp_avgs), real_views(g_exp_avg_sqs)
        )  # fmt: skip
        g_grads = real_views(g_grads)
        if maximize:
            g_grads = list(torch._foreach_neg(g_grads))
            if weight_decay != 0 and not decoupled_weight_decay:
                torch._foreach_add_(g_grads, g_params, alpha=weight_decay)
        elif weight_decay != 0 and not decoupled_weight_decay:
            g_grads = list(torch._foreach_add(g_grads, g_params, alpha=weight_decay))
        torch._foreach_lerp_(g_exp_avgs, g_grads, one_minus(beta1, g_params[0].dtype))
        torch._foreach_mul_(g_exp_avg_sqs, as_float(beta2))
        torch._foreach_addcmul_(g_exp_avg_sqs, g_grads, g_grads, value=as_float(1 - beta2))
        del g_grads

        values = step_values(g_steps)
        corrections: dict[float, tuple[float, float]] = {}
        for step in set(values):
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            step_size = lr / (1 - beta1**step)
            corrections[step] = (as_float(bias_correction2_sqrt), -as_float(step_size))

        if amsgrad:
            g_max_sqs = real_views(g_max_sqs)
            torch._foreach_maximum_(g_max_sqs, g_exp_avg_sqs)
            denom = torch._foreach_sqrt(g_max_sqs)
        else:
            denom = torch._foreach_sqrt(g_exp_avg_sqs)
        torch._foreach_div_(denom, same_or_list([corrections[s][0] for s in values]))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(
            g_params, g_exp_avgs, denom, same_or_list([corrections[s][1] for s in values])
        )
