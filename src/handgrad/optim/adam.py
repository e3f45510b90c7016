"""Adam (Kingma & Ba, 2015), with AMSGrad and decoupled weight decay, written by hand."""

from __future__ import annotations

from collections.abc import Iterable
from operator import is_
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Lists, Optimizer
from ._common import (
    Scratch,
    add_number_,
    as_float,
    check_at_least,
    check_betas,
    check_fused_flags,
    check_fused_param,
    check_lr,
    number_operand,
    one_minus,
    out_like,
    same_or_list,
    squeeze_scalar,
    step_value,
    step_values,
)


class Adam(Optimizer):
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

    state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    elementwise = True
    flag_defaults: ClassVar[dict[str, Any]] = {
        "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
        "differentiable": False, "decoupled_weight_decay": False, "fused": None,
    }  # fmt: skip
    sparse_error = "Adam does not support sparse gradients, please consider SparseAdam instead"

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

    def kept_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        if group["amsgrad"]:
            return self.state_keys
        return ("step", "exp_avg", "exp_avg_sq")

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        if group["fused"]:
            check_fused_param(p)
        return super().init_state(p, group)

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        adam_multi_tensor(params, grads, *_state_lists(state), **_settings(group))

    def update_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        adam_single_tensor(params, grads, *_state_lists(state), **_settings(group),
                           scratch=self.scratch)  # fmt: skip

    # A fast path, the single-tensor body (the same bits as update; tests/optim): tensors of
    # at least LARGE_TENSOR_ELEMENTS elements (bench_optim "4 params of 1M", ratio to torch
    # foreach: 0.46, the plain body 1.01 (AdamW 0.86 and 1.00); issue 12).
    update_large = update_single

    def update_flat(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """A flat group's update: :class:`FlatAdam` where it applies, else :meth:`update`."""
        plan = FlatAdam.for_group(self, group, params[0], state)
        if plan is None:
            self.update(group, params, grads, state)
        else:
            plan(params[0], grads[0], state)


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    """The bodies' keywords, read from the group (a 1-element tensor lr or beta as 0-d)."""
    beta1, beta2 = group["betas"]
    return {
        "beta1": beta1, "beta2": beta2, "lr": squeeze_scalar(group["lr"]),
        "weight_decay": group["weight_decay"], "eps": group["eps"], "amsgrad": group["amsgrad"],
        "maximize": group["maximize"], "decoupled_weight_decay": group["decoupled_weight_decay"],
    }  # fmt: skip


def _state_lists(state: Lists) -> tuple[list[Tensor], ...]:
    return state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq", []), state["step"]


def adam_single_tensor(
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
    """The update rule one tensor at a time: the readable reference body (torch's order).

    Real tensors (complex ones as real views); ``steps`` already count this step. With
    ``scratch`` the temporaries (−g, g + λθ, the denominator) live in reused buffers.
    """
    for i, param in enumerate(params):
        grad = torch.neg(grads[i], out=out_like(scratch, grads[i], 1)) if maximize else grads[i]
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(as_float(1 - lr * weight_decay))
            else:
                grad = torch.add(grad, param, alpha=weight_decay, out=out_like(scratch, grad, 1))
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]

        exp_avg.lerp_(grad, one_minus(beta1, param.dtype))
        exp_avg_sq.mul_(as_float(beta2)).addcmul_(grad, grad, value=as_float(1 - beta2))

        step = step_value(steps[i])
        # Python scalars, or float32 0-d tensors for tensor betas/lr, exactly as torch.
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5

        second_moment = exp_avg_sq
        if amsgrad:
            max_exp_avg_sq = max_exp_avg_sqs[i]
            torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            second_moment = max_exp_avg_sq
        denom = torch.sqrt(second_moment, out=out_like(scratch, second_moment))
        denom.div_(as_float(bias_correction2_sqrt)).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-as_float(step_size))


class FlatAdam:
    """A fast path: Adam's update of a flat group, its scalar operands prepared once.

    The same operations, in the same order and with the same scalars, as
    :func:`adam_single_tensor` (and :func:`adam_multi_tensor`, the plain body of a flat
    group) on the group's one tensor, so the same bits (tests/optim: bitwise against the
    plain body and torch.optim). What it saves is per-step Python: settings unpacked once,
    and ``1 − β₁``, ``β₂``, ``ε`` and the step's √(1 − β₂ᵗ) kept as 0-d tensors on the CPU
    (a Python number becomes a new tensor per kernel call; the kept one, in the
    parameters' dtype, gives the same bits), instead of a multi-tensor call per operation on
    lists of one. Measured for issue 12 (bench_optim "1-100-1 in one buffer", paired rounds):
    0.18 of torch foreach's step time, the plain body 0.38 (AdamW: 0.22 and 0.39). For real
    parameters without ``maximize`` or L2 weight decay (decoupled decay is included) and
    float hyperparameters; :meth:`for_group` returns None for the others, which run the
    plain body.
    """

    __slots__ = (
        "amsgrad", "beta1", "beta2", "beta2_operand", "correction2_operand", "decay", "denom",
        "entries", "eps_operand", "lr", "one_minus_beta2", "param", "weight1",
    )  # fmt: skip

    def __init__(self, entries: tuple[Any, ...], settings: dict[str, Any], param: Tensor) -> None:
        self.entries = entries
        self.param = param
        beta1, beta2, lr = settings["beta1"], settings["beta2"], settings["lr"]
        self.beta1, self.beta2, self.lr = beta1, beta2, lr
        self.amsgrad = settings["amsgrad"]
        on_cpu = param.is_cpu
        dtype = param.dtype
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
        weight_decay = settings["weight_decay"]
        self.decay = as_float(1 - lr * weight_decay) if weight_decay != 0 else None
        with torch.inference_mode(False):  # kept across steps, some outside inference mode
            self.denom = torch.empty_like(param)

    @classmethod
    def for_group(
        cls, optimizer: torch.optim.Optimizer, group: dict[str, Any], param: Tensor, state: Lists
    ) -> FlatAdam | None:
        """The plan for this flat group, or None where it does not apply.

        Kept while the group's entries are the very objects it was made from (a scheduler
        assigning ``lr`` puts a new object there, even when equal) and the tensor is the same.
        """
        plans: dict[int, FlatAdam] = optimizer.__dict__.setdefault("_handgrad_flat_adam", {})
        plan = plans.get(id(group))
        if (
            plan is not None
            and plan.param is param
            and len(group) == len(plan.entries)
            and all(map(is_, group.values(), plan.entries))
        ):
            return plan
        plans.pop(id(group), None)
        settings = _settings(group)
        if (
            settings["maximize"]
            or (settings["weight_decay"] != 0 and not settings["decoupled_weight_decay"])
            or param.is_complex()
            or any(isinstance(settings[name], Tensor) for name in ("lr", "beta1", "beta2"))
            or param.dtype not in (torch.float32, torch.float64)
        ):
            return None
        plan = plans[id(group)] = cls(tuple(group.values()), settings, param)
        return plan

    def __call__(self, param: Tensor, grad: Tensor, state: Lists) -> None:
        """One Adam step of the whole group (the rule in :class:`Adam`)."""
        exp_avg, exp_avg_sq = state["exp_avg"][0], state["exp_avg_sq"][0]
        step = state["step"][0].item()
        if self.decay is not None:
            param.mul_(self.decay)
        exp_avg.lerp_(grad, self.weight1)
        exp_avg_sq.mul_(self.beta2_operand).addcmul_(grad, grad, value=self.one_minus_beta2)

        bias_correction1 = 1 - self.beta1**step
        bias_correction2 = 1 - self.beta2**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5

        second_moment = exp_avg_sq
        if self.amsgrad:
            second_moment = state["max_exp_avg_sq"][0]
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


def adam_multi_tensor(
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
    """The same rule on whole lists of tensors (``torch._foreach_*``): one device and dtype,
    real tensors (complex ones as real views), ``steps`` already counting this step."""
    if weight_decay != 0 and decoupled_weight_decay:
        torch._foreach_mul_(params, number_operand(as_float(1 - lr * weight_decay), params[0]))
    if maximize:
        grads = list(torch._foreach_neg(grads))
        if weight_decay != 0 and not decoupled_weight_decay:
            torch._foreach_add_(grads, params, alpha=weight_decay)
    elif weight_decay != 0 and not decoupled_weight_decay:
        grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
    torch._foreach_lerp_(exp_avgs, grads, one_minus(beta1, params[0].dtype))
    torch._foreach_mul_(exp_avg_sqs, number_operand(as_float(beta2), params[0]))
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=as_float(1 - beta2))
    del grads

    values = step_values(steps)
    corrections: dict[float, tuple[float, float]] = {}
    for step in set(values):
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_size = lr / (1 - beta1**step)
        corrections[step] = (as_float(bias_correction2_sqrt), -as_float(step_size))

    if amsgrad:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        denom = torch._foreach_sqrt(max_exp_avg_sqs)
    else:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    divisors = same_or_list([corrections[s][0] for s in values])
    torch._foreach_div_(
        denom, divisors if isinstance(divisors, list) else number_operand(divisors, params[0])
    )
    add_number_(denom, eps)
    torch._foreach_addcdiv_(
        params, exp_avgs, denom, same_or_list([corrections[s][1] for s in values])
    )
