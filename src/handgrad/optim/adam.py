"""Adam (Kingma & Ba, 2015), with AMSGrad and decoupled weight decay, written by hand."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import ElementwiseOptimizer
from ._common import (
    Scratch,
    as_float,
    check_at_least,
    check_betas,
    check_fused_flags,
    check_fused_param,
    check_lr,
    group_by_device_and_dtype,
    increment_steps,
    one_minus,
    out_like,
    real_view,
    real_views,
    same_or_list,
    scratch_of,
    squeeze_scalar,
    step_value,
    step_values,
)
from ._flat import FlatGroup


class Adam(ElementwiseOptimizer):
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

    body_lists = ("params", "grads", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")
    hyperparameters = (
        "betas", "lr", "weight_decay", "eps", "amsgrad", "maximize", "decoupled_weight_decay",
    )  # fmt: skip
    flag_defaults: ClassVar[dict[str, Any]] = {
        "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
        "differentiable": False, "decoupled_weight_decay": False, "fused": None,
    }  # fmt: skip
    sparse_error = "Adam does not support sparse gradients, please consider SparseAdam instead"
    flat_updates = True

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
        check_at_least("epsilon", eps)
        check_betas(betas)
        check_at_least("weight_decay", weight_decay)
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

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        if group["amsgrad"]:
            return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")
        return ("exp_avg", "exp_avg_sq", "step")

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if group["fused"]:
            check_fused_param(p)
        super()._init_state(p, group, state)

    def _flat_update(self, flat: FlatGroup, settings: dict[str, Any]) -> None:
        """A flat group's update: :class:`FlatAdam` where it applies, else the generic body."""
        plan = flat.plan
        if plan is None:
            plan = flat.plan = FlatAdam.build(flat, settings, scratch_of(self)) or False
        if plan:
            plan()
        else:
            super()._flat_update(flat, settings)

    def _single_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        _single_tensor_adam(*lists, **settings)

    def _multi_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        _multi_tensor_adam(*lists, **settings)


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

        step = step_value(step_t)
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


# A kept operand for ``step += 1``: a Python number would be wrapped in a new tensor per call.
_ONE = torch.tensor(1.0)


class FlatAdam:
    """Adam's update of one flat group, its scalars prepared once per settings.

    The same operations, in the same order and with the same scalars, as
    :func:`_single_tensor_adam` on the group's 1-D views, so the same bits; what it saves is
    per-step Python: settings unpacked, real views taken and scalar operands wrapped once
    (``1 − β₁``, ``β₂``, ``ε`` and the step's √(1 − β₂ᵗ) as kept 0-d tensors on the CPU,
    where a Python number would become a new tensor per call and the kept one gives the same
    bits; in the parameters' dtype, where an operand of another dtype measured ~1 µs slower
    per kernel call). For real parameters without ``maximize`` or L2 weight decay (decoupled
    decay is included); :meth:`build` returns None for the others, which run the generic body.
    """

    __slots__ = (
        "beta1", "beta2", "beta2_operand", "correction2_operand", "decay", "denom",
        "eps_operand", "exp_avg",
        "exp_avg_sq", "grad", "lr", "max_exp_avg_sq", "one", "one_minus_beta2", "param",
        "steps", "weight1",
    )  # fmt: skip

    def __init__(self, flat: FlatGroup, settings: dict[str, Any], denom: Tensor) -> None:
        self.param, self.grad = flat.param, flat.grad
        self.exp_avg, self.exp_avg_sq = flat.buffers["exp_avg"], flat.buffers["exp_avg_sq"]
        self.max_exp_avg_sq = flat.buffers["max_exp_avg_sq"] if settings["amsgrad"] else None
        self.steps = flat.buffers["step"]
        self.denom = denom
        beta1, beta2, lr = settings["beta1"], settings["beta2"], settings["lr"]
        self.beta1, self.beta2, self.lr = beta1, beta2, lr
        on_cpu = self.param.is_cpu
        dtype = self.param.dtype
        weight1 = one_minus(beta1, dtype)
        # A kept 0-d weight takes lerp's tensor-weight kernel: the same formula and bits,
        # measured ~0.4 µs faster per call than the number overload.
        self.weight1: float | Tensor = _kept(weight1, dtype) if on_cpu else weight1
        self.one_minus_beta2 = as_float(1 - beta2)
        self.beta2_operand: float | Tensor = (
            _kept(as_float(beta2), dtype) if on_cpu else as_float(beta2)
        )
        eps = settings["eps"]
        self.eps_operand: float | Tensor = _kept(float(eps), dtype) if on_cpu else eps
        self.correction2_operand = _kept(1.0, dtype) if on_cpu else None
        self.one: float | Tensor = _ONE if self.steps.is_cpu else 1
        weight_decay = settings["weight_decay"]
        self.decay = as_float(1 - lr * weight_decay) if weight_decay != 0 else None

    @classmethod
    def build(cls, flat: FlatGroup, settings: dict[str, Any], scratch: Scratch) -> FlatAdam | None:
        """The plan for ``flat`` under ``settings``, or None where it does not apply."""
        if (
            settings["maximize"]
            or (settings["weight_decay"] != 0 and not settings["decoupled_weight_decay"])
            or flat.param.is_complex()
            or any(isinstance(settings[name], Tensor) for name in ("lr", "beta1", "beta2"))
            or "step" not in flat.buffers
        ):
            return None
        return cls(flat, settings, scratch.like(flat.buffers["exp_avg_sq"]))

    def __call__(self) -> None:
        """One Adam step of the whole group (the rule in :class:`Adam`)."""
        steps, param, grad, exp_avg = self.steps, self.param, self.grad, self.exp_avg
        steps.add_(self.one)
        step = steps.tolist()[0]  # equal counts: checked by the flat layout's record
        if self.decay is not None:
            param.mul_(self.decay)
        exp_avg.lerp_(grad, self.weight1)
        exp_avg_sq = self.exp_avg_sq
        exp_avg_sq.mul_(self.beta2_operand).addcmul_(grad, grad, value=self.one_minus_beta2)

        bias_correction1 = 1 - self.beta1**step
        bias_correction2 = 1 - self.beta2**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5

        second_moment = exp_avg_sq
        if self.max_exp_avg_sq is not None:
            second_moment = self.max_exp_avg_sq
            torch.maximum(second_moment, exp_avg_sq, out=second_moment)
        denom = torch.sqrt(second_moment, out=self.denom)
        divisor = self.correction2_operand
        if divisor is None:
            denom.div_(bias_correction2_sqrt)
        else:
            denom.div_(divisor.fill_(bias_correction2_sqrt))
        denom.add_(self.eps_operand)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _kept(value: float, like: torch.dtype) -> Tensor:
    """``value`` as a new 0-d CPU tensor, an operand kept across calls for tensors of ``like``.

    Its dtype is ``like`` for float32 and float64, the dtypes in which torch's kernels compute:
    a Python number is rounded to that dtype either way, so the bits are the same. (Flat groups,
    the only users, are float32 or float64; float64 for anything else.)
    """
    dtype = like if like in (torch.float32, torch.float64) else torch.float64
    with torch.inference_mode(False):
        return torch.tensor(value, dtype=dtype)


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
