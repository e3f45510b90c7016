"""Prodigy (Mishchenko & Defazio, 2024, *Prodigy: An Expeditiously Adaptive Parameter-Free
Learner*, arXiv:2306.06101), interchangeable with the ``prodigyopt`` package's ``Prodigy``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import LARGE_TENSOR_ELEMENTS, Optimizer
from ._common import add_number_, group_by_device_and_dtype, number_operand


class Prodigy(Optimizer):
    r"""Prodigy: Adam whose step size d is estimated on the fly from how far the parameters
    have moved, so that lr = 1 works (lr only scales the estimate).

    Interchangeable with ``prodigyopt.Prodigy`` (arguments, defaults, state, the entries it
    keeps in every group: ``d``, ``d_max``, ``d_numerator``, ``k``, ...). One estimate d is
    shared by all groups; the betas, ``decouple`` and the bias correction are the first
    group's. Per step k (from 0; γ = the largest group lr, λ = weight_decay; for each
    parameter θ with gradient g, x₀ its first value, s, m, v zeros at first; ⟨·,·⟩ sums over
    every parameter with a gradient, in group order)::

        g ← g + λθ                                          unless decouple
        η = d γ √(1 − β₂ᵏ⁺¹)/(1 − β₁ᵏ⁺¹)                     (d γ without use_bias_correction)
        r ← β₃ r + (d/d₀) η ⟨g, x₀ − θ⟩                        (d_numerator; β₃ = √β₂ by default)
        m ← β₁ m + d(1 − β₁) g;   v ← β₂ v + d²(1 − β₂) g²
        s ← β₃ s + (d/d₀) η g      ((d/d₀) d g with safeguard_warmup)
        d̂ = d_coef · r / Σ|s|;  d ← max(d, d̂) while d = d₀;  d_max ← max(d_max, d̂)
        d ← min(d_max, d · growth_rate)
        θ ← θ − ηλθ                                          if decouple
        θ ← θ − η m / (√v + d ε)          (with β₁ = 0: θ ← θ − η d g / (√v + d ε))

    (η and d in the parameter update are the ones before this step's estimate; the moments
    use the old d too.) With ``slice_p`` > 1, x₀ and s keep every slice_p-th element of each
    flattened parameter and the inner products use those only. A group whose lr is 0 takes
    no part in the estimate; any other lr must equal the largest (RuntimeError, as the
    reference). A step where every gradient is zero (Σ|s| = 0) updates the moments only.

    A reference bug, fixed here: prodigyopt updates the parameters of a group whose lr is 0
    with the other groups' step size η, so such a group is not frozen: it decays with
    ``weight_decay`` (decoupled), and with β₁ = 0 it moves by η d g/(d ε) and diverges
    (its v is never updated). handgrad leaves the parameters of an lr = 0 group alone; the
    other groups are unaffected (the same bits as the reference's).

    Equality with the reference: the same operations in the same order, the same bits. The
    estimate divides by Σ|s| and multiplies by x₀ − θ, which is tiny early on, so a
    reimplementation that rounds differently parts from the reference at the first steps by
    far more than its rounding: only the same bits keep the two together.

    Speed: the element-wise updates run on whole lists (``torch._foreach_*``); the inner
    products and Σ|s| are computed per tensor exactly as the reference computes them, and
    read back in one transfer per group instead of two per parameter. A tensor of at least
    ``LARGE_TENSOR_ELEMENTS`` elements is updated on its own, its temporaries (x₀ − θ, |s|,
    √v + d ε) in one reused buffer: the same operations, the same bits (bench_new_optim,
    "4 params of 1M": 1.3-1.6x the reference's time with fresh temporaries, one thread).

    Complex parameters are updated as (Re, Im) pairs (equal to the reference on
    ``torch.view_as_real`` of them; the reference itself fails on complex tensors: its
    estimate becomes complex). ``fsdp_in_use`` sums the estimate's two terms over the
    default process group (as float64 on the parameters' device; the reference uses a
    float32 CUDA tensor). Refusals are the reference's (ValueError); it also prints a line
    for decoupled weight decay, which handgrad does not.
    """

    state_keys = ("step", "s", "p0", "exp_avg", "exp_avg_sq")
    scalar_state = ()  # ``step`` is a Python int, as the reference keeps it

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = float("inf"),
        fsdp_in_use: bool = False,
        slice_p: int = 1,
    ) -> None:
        if not d0 > 0.0:
            raise ValueError(f"Invalid d0 value: {d0}")
        if not lr > 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps > 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for index in (0, 1):
            if not 0.0 <= betas[index] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {betas[index]}")
        defaults = {"lr": lr, "betas": betas, "beta3": beta3, "eps": eps,
                    "weight_decay": weight_decay, "d": d0, "d0": d0, "d_max": d0,
                    "d_numerator": 0.0, "d_coef": d_coef, "k": 0, "growth_rate": growth_rate,
                    "use_bias_correction": use_bias_correction, "decouple": decouple,
                    "safeguard_warmup": safeguard_warmup, "fsdp_in_use": fsdp_in_use,
                    "slice_p": slice_p}  # fmt: skip
        self.d0 = d0
        super().__init__(params, defaults)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "d0": self.d0}

    @property
    def supports_memory_efficient_fp16(self) -> bool:
        return False

    @property
    def supports_flat_params(self) -> bool:
        return True

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._prodigy_step()
        return loss

    # (typed for torch.optim.Optimizer methods; a subclass method is one)
    _hooked_step = torch.optim.Optimizer.profile_hook_step(_step)  # type: ignore[arg-type]

    def _init(self, p: Tensor, slice_p: int, beta1: float) -> dict[str, Any]:
        real = _real(p)
        state: dict[str, Any] = {"step": 0, "s": torch.zeros_like(real.flatten()[::slice_p])}
        if p.any():
            state["p0"] = real.flatten()[::slice_p].clone()
        else:  # an all-zero parameter: x₀ = 0 as one number (the reference saves the memory)
            state["p0"] = torch.tensor(0, device=p.device, dtype=real.dtype)
        if beta1 > 0:
            state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        return state

    def _prodigy_step(self) -> None:
        groups = self.param_groups
        first = groups[0]
        beta1, beta2 = first["betas"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        k, d, d_max, d_coef = first["k"], first["d"], first["d_max"], first["d_coef"]
        lr = max(group["lr"] for group in groups)
        bias_correction = (
            ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
            if first["use_bias_correction"] else 1
        )  # fmt: skip
        dlr = d * lr * bias_correction
        decouple, fsdp_in_use = first["decouple"], first["fsdp_in_use"]
        d_numerator = first["d_numerator"] * beta3
        delta_numerator, d_denom = 0.0, 0.0

        # Pass 1: moments, s, and the two sums of the estimate (in the reference's order).
        gathered = []
        for group in groups:
            decay, group_lr, d0 = group["weight_decay"], group["lr"], group["d0"]
            if group_lr not in [lr, 0.0]:
                raise RuntimeError("Setting different lr values in different parameter "
                                   "groups is only supported for values of 0")  # fmt: skip
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if hasattr(p, "_fsdp_flattened"):
                    fsdp_in_use = True
                grad = _real(p.grad)  # (Re, Im) pairs from here on
                if decay != 0 and not decouple:
                    grad = torch.add(grad, _real(p), alpha=decay)
                state = self.state[p]
                if "step" not in state:
                    state.update(self._init(p, group["slice_p"], beta1))
                params.append(p)
                grads.append(grad)
                states.append(state)
            gathered.append((params, grads, states))
            if group_lr > 0.0 and params:
                dots, sums = self._first_pass(group, params, grads, states, d, dlr, beta1,
                                              beta2, beta3)  # fmt: skip
                scale = (d / d0) * dlr
                for dot, total in zip(dots, sums, strict=True):
                    delta_numerator += scale * dot
                    d_denom += total

        d_hat = d
        if d_denom == 0 and not fsdp_in_use:
            return
        global_numerator, global_denom = d_numerator, d_denom
        if lr > 0.0:
            if fsdp_in_use:
                delta_numerator, d_denom = _all_reduce_sum(delta_numerator, d_denom, groups)
            global_numerator = d_numerator + delta_numerator
            global_denom = d_denom
            d_hat = d_coef * global_numerator / global_denom
            if d == groups[-1]["d0"]:  # the reference reads the last group's d0 here
                d = max(d, d_hat)
            d_max = max(d_max, d_hat)
            d = min(d_max, d * first["growth_rate"])

        # Pass 2: the parameters, with the step size of before the estimate (dlr).
        for group, (params, grads, states) in zip(groups, gathered, strict=True):
            group["d_numerator"] = global_numerator
            group["d_denom"] = global_denom
            group["d"] = d
            group["d_max"] = d_max
            group["d_hat"] = d_hat
            for state in states:
                state["step"] += 1
            if params and group["lr"] > 0.0:  # the reference also moves lr = 0 groups (bug)
                self._second_pass(group, params, grads, states, d, dlr, beta1, decouple)
            group["k"] = group["k"] + 1

    def _first_pass(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                    states: list[dict[str, Any]], d: float, dlr: float, beta1: float,
                    beta2: float, beta3: float) -> tuple[list[float], list[float]]:  # fmt: skip
        """Moments and s on lists; ⟨g, x₀ − θ⟩ and Σ|s| per parameter, in parameter order."""
        slice_p, d0 = group["slice_p"], group["d0"]
        s_weight = (d / d0) * d if group["safeguard_warmup"] else (d / d0) * dlr
        dots: list[float] = [0.0] * len(params)
        sums: list[float] = [0.0] * len(params)
        indices = list(range(len(params)))
        for b_params, b_grads, b_indices in group_by_device_and_dtype([params, grads, indices]):
            for part in _by_size(b_params):
                real_params = _reals([b_params[j] for j in part])
                real_grads = _reals([b_grads[j] for j in part])
                part_states = [states[b_indices[j]] for j in part]
                sliced = [g.flatten()[::slice_p] for g in real_grads]
                large = real_params[0].numel() >= LARGE_TENSOR_ELEMENTS
                if large:  # x₀ − θ in the reused buffer, one tensor at a time
                    products = torch.stack([
                        torch.dot(g, torch.sub(st["p0"], p.flatten()[::slice_p],
                                               out=self.scratch.like(g)))
                        for g, st, p in zip(sliced, part_states, real_params, strict=True)
                    ])  # fmt: skip
                else:
                    moved = [st["p0"] - p.flatten()[::slice_p]
                             for st, p in zip(part_states, real_params, strict=True)]  # fmt: skip
                    products = torch.stack(
                        [torch.dot(g, x) for g, x in zip(sliced, moved, strict=True)]
                    )
                if beta1 > 0:
                    exp_avgs = _reals([st["exp_avg"] for st in part_states])
                    torch._foreach_mul_(exp_avgs, number_operand(beta1, exp_avgs[0]))
                    torch._foreach_add_(exp_avgs, real_grads, alpha=d * (1 - beta1))
                exp_avg_sqs = _reals([st["exp_avg_sq"] for st in part_states])
                torch._foreach_mul_(exp_avg_sqs, number_operand(beta2, exp_avg_sqs[0]))
                torch._foreach_addcmul_(exp_avg_sqs, real_grads, real_grads,
                                        value=d * d * (1 - beta2))  # fmt: skip
                ss = [st["s"] for st in part_states]
                torch._foreach_mul_(ss, number_operand(beta3, ss[0]))
                torch._foreach_add_(ss, sliced, alpha=s_weight)
                if large:
                    totals = torch.stack([torch.abs(x, out=self.scratch.like(x)).sum()
                                          for x in ss])  # fmt: skip
                else:
                    totals = torch.stack([a.sum() for a in torch._foreach_abs(ss)])
                chosen = [b_indices[j] for j in part]
                for i, dot, total in zip(chosen, products.tolist(), totals.tolist(),
                                         strict=True):  # fmt: skip
                    dots[i], sums[i] = dot, total
        return dots, sums

    def _second_pass(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                     states: list[dict[str, Any]], d: float, dlr: float, beta1: float,
                     decouple: bool) -> None:  # fmt: skip
        """θ ← θ − ηλθ (decoupled); θ ← θ − η m / (√v + d ε)."""
        indices = list(range(len(params)))
        for b_params, b_grads, b_indices in group_by_device_and_dtype([params, grads, indices]):
            real_params, real_grads = _reals(b_params), _reals(b_grads)
            b_states = [states[i] for i in b_indices]
            for part in _by_size(real_params):
                part_params = [real_params[j] for j in part]
                part_grads = [real_grads[j] for j in part]
                exp_avg_sqs = _reals([b_states[j]["exp_avg_sq"] for j in part])
                if part_params[0].numel() >= LARGE_TENSOR_ELEMENTS:  # one tensor: √v reused
                    denom = [torch.sqrt(exp_avg_sqs[0], out=self.scratch.like(exp_avg_sqs[0]))]
                else:
                    denom = list(torch._foreach_sqrt(exp_avg_sqs))
                self._move(group, part_params, part_grads, denom,
                           [b_states[j] for j in part], d, dlr, beta1, decouple)  # fmt: skip

    def _move(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
              denom: list[Tensor], states: list[dict[str, Any]], d: float, dlr: float,
              beta1: float, decouple: bool) -> None:  # fmt: skip
        """θ ← θ − ηλθ (decoupled); θ ← θ − η m / (√v + d ε), with ``denom`` = √v."""
        decay = group["weight_decay"]
        add_number_(denom, d * group["eps"])
        if decay != 0 and decouple:
            torch._foreach_add_(params, params, alpha=-decay * dlr)
        if beta1 > 0:
            exp_avgs = _reals([st["exp_avg"] for st in states])
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-dlr)
        else:
            torch._foreach_addcdiv_(params, grads, denom, value=-dlr * d)


def _by_size(tensors: list[Tensor]) -> list[list[int]]:
    """Indices of the tensors below LARGE_TENSOR_ELEMENTS (one list, updated together), then
    one list per larger tensor (each updated on its own)."""
    small = [j for j, t in enumerate(tensors) if t.numel() < LARGE_TENSOR_ELEMENTS]
    large = [[j] for j, t in enumerate(tensors) if t.numel() >= LARGE_TENSOR_ELEMENTS]
    return ([small] if small else []) + large


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _reals(tensors: list[Tensor]) -> list[Tensor]:
    return [_real(t) for t in tensors]


def _all_reduce_sum(numerator: float, denom: float,
                    groups: list[dict[str, Any]]) -> tuple[float, float]:  # fmt: skip
    """The two sums over every rank of the default process group."""
    import torch.distributed as dist

    device = next((p.device for g in groups for p in g["params"]), torch.device("cpu"))
    both = torch.tensor([numerator, denom], dtype=torch.float64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    reduced = both.tolist()
    return float(reduced[0]), float(reduced[1])


__all__ = ["Prodigy"]
