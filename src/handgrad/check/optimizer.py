"""Check an optimizer class — yours — step by step against a reference, on every layout.

``check_optimizer(MyAdam, reference=torch.optim.Adam, lr=0.01)`` builds the same parameters
twice, feeds both optimizers the gradient of the same non-convex objective (written by hand,
no autograd) at their own parameters, changes the learning rate half-way as a scheduler
would, and reports the first step where a parameter or a state tensor parts from the
reference, with a hint read from how it parts (a constant factor, a second moment that is
not g², NaN where the reference divides by ε, a learning rate folded into a buffer, ...).

It does so on every layout handgrad trains with (:data:`LAYOUTS`): separate tensors from 0-d
to 3-d, float32, one :func:`handgrad.nn.flatten_parameters` layout (the flat fast path), a
tensor of 65,536 elements (the size at which handgrad's optimizers change body), float16,
bfloat16 and complex parameters. The reference always runs on separate tensors. A layout the
reference itself refuses (torch's Adafactor refuses complex parameters) is skipped, with a
note.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

_SHAPES: tuple[tuple[int, ...], ...] = ((5,), (4, 3), (2, 3, 2), ())
_LARGE_SHAPES: tuple[tuple[int, ...], ...] = ((256, 257), (7,))  # 65,792 elements and more

LAYOUTS: tuple[str, ...] = ("separate", "float32", "flat", "large", "float16", "bfloat16",
                            "complex")  # fmt: skip
"""The layouts :func:`check_optimizer` runs, in order: ``separate`` is the ``dtype`` asked
for (float64 by default) on tensors of shapes (5,), (4, 3), (2, 3, 2) and (); the others
change one thing each."""

# Default (rtol, atol) per dtype: a correct optimizer in that dtype differs from torch's by
# rounding only, which grows with the dtype's epsilon.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-10),
    torch.float32: (1e-4, 1e-6),
    torch.float16: (2e-2, 2e-3),
    torch.bfloat16: (1e-1, 1e-2),
}


@dataclass(frozen=True)
class OptimizerCheckResult:
    """What :func:`check_optimizer` found; ``bool(result)`` is ``result.passed``.

    ``step`` is the first step (1-based) where the two parted, ``where`` names the parameter
    or state tensor and ``layout`` the layout (see :data:`LAYOUTS`); all None when they
    agreed on every layout run (``layouts``).
    """

    optimizer: str
    reference: str
    hyperparameters: dict[str, Any]
    steps_run: int
    passed: bool
    step: int | None = None
    where: str | None = None
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    detail: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    layout: str | None = None
    layouts: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items()) or "defaults"
        head = f"{self.optimizer} vs {self.reference} ({settings}): "
        if self.passed:
            lines = [head + f"agree for all {self.steps_run} steps on {len(self.layouts)} "
                     f"layouts ({', '.join(self.layouts)}; largest relative difference "
                     f"{self.max_rel_error:.1e})."]  # fmt: skip
        elif self.step is None:  # nothing compared
            lines = [head + self.detail + "."]
        else:
            lines = [
                head + f"part at step {self.step}, in {self.where} ({self.layout} layout).",
                f"  {self.detail}",
            ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


class _Objective:
    """f(θ) = Σ b·sin(a·θ) + 0.05·θ², separable and non-convex; ∇f = a·b·cos(a·θ) + 0.1·θ.

    Some coordinates have b = 0 and start at θ = 0: their gradient is exactly zero, which
    is where an update without ε divides 0 by 0. Complex θ: the same on (Re, Im) pairs.
    """

    def __init__(
        self, shapes: Sequence[tuple[int, ...]], dtype: torch.dtype, seed: int,
        device: torch.device,
    ) -> None:  # fmt: skip
        # Drawn on the CPU in float64, then rounded: the same problem on every device.
        generator = torch.Generator().manual_seed(seed)
        real = dtype.to_real() if dtype.is_complex else dtype
        self.dtype = dtype
        self.starts: list[Tensor] = []
        self.coefficients: list[tuple[Tensor, Tensor]] = []
        for shape in shapes:
            real_shape = (*shape, 2) if dtype.is_complex else shape
            a = torch.rand(real_shape, generator=generator, dtype=torch.float64) * 2 + 0.5
            b = torch.randn(real_shape, generator=generator, dtype=torch.float64)
            start = torch.rand(real_shape, generator=generator, dtype=torch.float64) * 4 - 2
            if a.numel() > 1:
                b.view(-1)[0] = 0.0
                start.view(-1)[0] = 0.0
            self.coefficients.append((a.to(device, real), b.to(device, real)))
            start = start.to(device, real)
            self.starts.append(torch.view_as_complex(start) if dtype.is_complex else start)

    def gradients(self, params: Sequence[Tensor]) -> list[Tensor]:
        grads = []
        for p, (a, b) in zip(params, self.coefficients, strict=True):
            x = torch.view_as_real(p.detach()) if p.is_complex() else p.detach()
            g = a * b * torch.cos(a * x) + 0.1 * x
            grads.append(torch.view_as_complex(g.contiguous()) if p.is_complex() else g)
        return grads


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}"


def _as_real64(t: Tensor, device: torch.device) -> Tensor:
    t = t.detach().to(device)
    return (torch.view_as_real(t) if t.is_complex() else t).to(torch.float64)


def _compare(
    mine: Tensor, reference: Tensor, rtol: float, atol: float
) -> tuple[bool, float, float, str, Tensor | None]:
    """(agree, max abs error, max rel error, a sentence about the worst entry, a mask of
    entries non-finite in yours only (None if none)).

    In float16 and bfloat16 an entry where terms cancel carries the rounding of the terms,
    not of its own value: there rtol is relative to the tensor's largest entry."""
    if mine.shape != reference.shape:
        return (False, math.inf, math.inf,
                f"shapes differ: yours {tuple(mine.shape)}, reference {tuple(reference.shape)}",
                None)  # fmt: skip
    # Compared where the reference lives: a 0-d step kept on the CPU by one side and on the
    # device by the other is the same number. Entries non-finite on both sides alike agree.
    ref64 = _as_real64(reference, reference.device)
    mine64 = _as_real64(mine, reference.device)
    same_special = (~torch.isfinite(ref64)) & ((mine64 == ref64) | (mine64.isnan() & ref64.isnan()))
    broken = ~torch.isfinite(mine64) & torch.isfinite(ref64)
    if bool(broken.any()):
        bad = int(broken.sum())
        return (False, math.inf, math.inf,
                f"{bad} of yours are NaN/inf where the reference is finite", broken)  # fmt: skip
    diff = (mine64 - ref64).abs().masked_fill(same_special, 0.0)
    scale = ref64.abs().masked_fill(same_special, 0.0)
    if reference.dtype in (torch.float16, torch.bfloat16) and scale.numel():
        scale = scale.max().expand_as(scale)
    if diff.numel() == 0:
        return True, 0.0, 0.0, "", None
    worst = int(torch.argmax((diff - atol - rtol * scale).nan_to_num(math.inf)))
    max_abs = float(diff.max())
    max_rel = float((diff / scale.clamp_min(1e-300)).max())
    ok = bool((diff <= atol + rtol * scale).all())
    index = (
        tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
        if diff.dim() > 0
        else ()
    )
    sentence = (
        f"largest difference {float(diff.view(-1)[worst]):.3e} at index {index}: "
        f"yours {float(mine64.reshape(-1)[worst]):.10g}, "
        f"reference {float(ref64.reshape(-1)[worst]):.10g}"
    )
    return ok, max_abs, max_rel, sentence, None


def _learning_rate_at(step: int, steps: int) -> float:
    """Multiplier of the initial lr at ``step``: 1, then 0.3 from the middle (a StepLR)."""
    return 1.0 if step <= steps // 2 else 0.3


# -- hints: what the way two runs part says about the mistake -------------------------------


def _constant_ratio(mine: Tensor, reference: Tensor) -> float | None:
    """c if mine ≈ c · reference entry by entry (where the reference is not ~0), else None."""
    mine64, ref64 = _as_real64(mine, reference.device), _as_real64(reference, reference.device)
    # The larger entries only: a small one carries the rounding of the values around it.
    mask = ref64.abs() > 1e-2 * max(float(ref64.abs().max()), 1e-300)
    if int(mask.sum()) < 2:
        return None
    ratios = mine64[mask] / ref64[mask]
    c = float(ratios.median())
    if not math.isfinite(c) or c == 0.0:
        return None
    spread = float((ratios - c).abs().max()) / abs(c)
    return c if spread < 1e-3 else None


def _bias_correction_names(c: float, step: int, betas: Any) -> str | None:
    """Which bias correction factor (at ``step``) the constant ratio ``c`` is, if any."""
    try:
        beta1, beta2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        return None
    b1, b2 = 1 - beta1**step, 1 - beta2**step
    candidates = {
        "1 − β₁ᵗ": b1, "1/(1 − β₁ᵗ)": 1 / b1, "√(1 − β₂ᵗ)": b2**0.5, "1/√(1 − β₂ᵗ)": b2**-0.5,
        "√(1 − β₂ᵗ)/(1 − β₁ᵗ)": b2**0.5 / b1, "(1 − β₁ᵗ)/√(1 − β₂ᵗ)": b1 / b2**0.5,
        "1 − β₂ᵗ": b2, "1/(1 − β₂ᵗ)": 1 / b2,
    }  # fmt: skip
    for name, value in candidates.items():
        if abs(c - value) <= 1e-3 * abs(value):
            return name
    return None


def _state_hint(key: str, mine: Tensor, reference: Tensor, grad: Tensor | None,
                lr: float | None) -> str:  # fmt: skip
    """A hint from how a state tensor parts from the reference's."""
    c = _constant_ratio(mine, reference)
    if c is not None:
        if abs(c + 1) < 1e-3:
            return f"state[{key!r}] is the reference's negated: a sign flipped (−g for g?)"
        if lr and abs(c - lr) <= 1e-3 * lr:
            return (f"state[{key!r}] is the reference's times the learning rate: the "
                    "learning rate is folded into a state buffer (apply it when the "
                    "parameter moves)")  # fmt: skip
        return (f"state[{key!r}] is {c:.6g}× the reference's in every entry: a missing or "
                "extra constant factor, e.g. (1 − β) in a moving average, or a bias correction "
                "kept in the state")  # fmt: skip
    if grad is not None and grad.shape == mine.shape:
        g = _as_real64(grad, reference.device)
        ratio = _constant_ratio(_as_real64(mine, reference.device) * g, reference)
        if ratio is not None and abs(ratio - 1) < 1e-3:
            return (f"state[{key!r}] grows with g where the reference's grows with g²: is the "
                    "second moment built from g·g (squared)?")  # fmt: skip
        mine64 = _as_real64(mine, reference.device)
        if bool((mine64 < 0).any()) and not bool((_as_real64(reference, reference.device) < 0)
                                                 .any()):  # fmt: skip
            return (f"state[{key!r}] has negative entries where the reference's has none: is "
                    "it built from g² (not g)?")  # fmt: skip
    return f"state[{key!r}] parts first: the parameters follow from it, so look there"


def _parameter_hint(step: int, mine_update: Tensor, ref_update: Tensor, before: Tensor,
                    betas: Any, lr_changed: bool) -> str | None:  # fmt: skip
    """A hint from how a parameter's update parts from the reference's (None: no pattern, or
    the learning rate just changed, which a note says)."""
    if lr_changed:
        return None
    c = _constant_ratio(mine_update, ref_update)
    if c is None:
        device = ref_update.device
        gap = _as_real64(mine_update, device) - _as_real64(ref_update, device)
        k = _constant_ratio(gap, _as_real64(before, device))
        if k is not None:
            return (f"your update differs from the reference's by {k:.6g}·θ in every entry: a "
                    "weight decay term missing, doubled or applied differently (γλθ)?")  # fmt: skip
        return None
    if abs(c + 1) < 1e-3:
        return "your update is the reference's negated: a step up the gradient (maximize?)"
    name = _bias_correction_names(c, step, betas) if betas is not None else None
    if name is not None:
        return (f"your update is {c:.6g}× the reference's at step {step}, which is {name}: a "
                "missing (or extra) bias correction")  # fmt: skip
    return (f"your update is {c:.6g}× the reference's in every entry at step {step}: a "
            "missing or extra constant factor (a bias correction, (1 − β), the learning "
            "rate?)")  # fmt: skip


def _nonfinite_hint(broken: Tensor, state: dict[str, Any], grad: Tensor) -> str:
    """Why entries went NaN/inf where the reference stays finite."""
    device = broken.device
    g = _as_real64(grad, device)
    for key, value in state.items():
        if isinstance(value, Tensor) and value.shape == grad.shape:
            v = _as_real64(value, device)
            if bool((v[broken] < 0).any()):
                return (f"√ of a negative state[{key!r}] there: is the second moment built "
                        "from g² (not g)?")  # fmt: skip
    if g.shape == broken.shape and bool((g[broken] == 0).all()):
        return "there the gradient is exactly 0: 0/0 — is ε added to the denominator?"
    return "a division by zero or √ of a negative number there: is ε added to the denominator?"


# -- the check ---------------------------------------------------------------------------------


def _params_for(layout: str, objective: _Objective, reference: bool) -> list[Tensor]:
    """Fresh parameters at the objective's start; yours laid out flat on the flat layout, with
    their gradients stored the way handgrad's backward stores them."""
    params = [t.clone() for t in objective.starts]
    if layout == "flat" and not reference:
        from handgrad.nn.flat import flatten_parameters

        flatten_parameters(params)
    return params


def _set_gradients(params: list[Tensor], objective: _Objective, flat: bool) -> None:
    from handgrad.nn.gradients import accumulate_grad

    for p, g in zip(params, objective.gradients(params), strict=True):
        if flat:
            p.grad = None
            accumulate_grad(p, g)  # as a layer's backward does; the flat step gathers it
        else:
            p.grad = g


def _layout_setup(layout: str, dtype: torch.dtype) -> tuple[torch.dtype, Sequence[tuple[int, ...]]]:
    if layout == "separate":
        return dtype, _SHAPES
    if layout == "float32":
        return torch.float32, _SHAPES
    if layout == "flat":
        return dtype, _SHAPES
    if layout == "large":
        return torch.float32, _LARGE_SHAPES
    if layout in ("float16", "bfloat16"):
        return getattr(torch, layout), _SHAPES
    return torch.complex128, _SHAPES  # complex


def _check_drivable(optimizer: object, cls: Any) -> None:
    """TypeError unless ``optimizer`` is something check_optimizer can drive."""
    if not (hasattr(optimizer, "param_groups") and hasattr(optimizer, "state")
            and callable(getattr(optimizer, "step", None))):  # fmt: skip
        name = getattr(cls, "__name__", repr(cls))
        raise TypeError(
            f"check_optimizer needs a torch.optim.Optimizer class (param_groups, state, step()); "
            f"{name}(params, ...) built a {type(optimizer).__name__} without "
            + ", ".join(
                attr for attr in ("param_groups", "state", "step()")
                if not (callable(getattr(optimizer, "step", None)) if attr == "step()"
                        else hasattr(optimizer, attr))
            )
        )  # fmt: skip


def check_optimizer(
    optimizer_cls: Callable[..., Any],
    reference: Callable[..., torch.optim.Optimizer] | None = None,
    *,
    steps: int = 40,
    dtype: torch.dtype = torch.float64,
    layouts: Sequence[str] = LAYOUTS,
    change_lr: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **hyperparameters: Any,
) -> OptimizerCheckResult:
    """Run ``optimizer_cls`` beside ``reference`` on each layout; report where they part.

    Both are built as ``cls(params, **hyperparameters)``. Each step both receive the
    gradient ∇f = a·b·cos(a·θ) + 0.1·θ of a non-convex objective at their own parameters;
    some coordinates start with gradient exactly 0. With ``change_lr`` every group's lr
    drops to 0.3× from step ``steps // 2 + 1`` on, as a StepLR scheduler would (this exposes
    a learning rate folded into a state buffer). After every step each state tensor the two
    share by name, then each parameter, is compared: |yours − reference| ≤
    atol + rtol·|reference| (NaN where both are NaN agrees).

    ``layouts`` (default: all of :data:`LAYOUTS`): ``separate`` runs ``steps`` steps in
    ``dtype``; the others run min(steps, 12) steps each. ``rtol``/``atol`` default to the
    layout's dtype's (:data:`TOLERANCES`): a correct float32 optimizer differs from torch's
    by rounding. ``reference`` defaults to the torch.optim class of the same name.
    A schedule-free optimizer (one with ``train()``) is put in train mode on both sides.
    A reference that refuses every layout run is a failure, not a pass.
    ``device`` is where the parameters and gradients live (``ValueError`` if CUDA is asked
    for but absent). TypeError for a class whose objects have no ``param_groups``, ``state``
    or ``step()`` (check_optimizer drives torch.optim.Optimizer subclasses).
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive number of steps, got {steps}")
    unknown = [layout for layout in layouts if layout not in LAYOUTS]
    if unknown or not layouts:
        raise ValueError(f"layouts must be some of {list(LAYOUTS)}, got {list(layouts)}")
    if reference is None:
        from handgrad.optim import BEYOND_TORCH

        name = getattr(optimizer_cls, "__name__", "")
        found = getattr(torch.optim, name, None) or BEYOND_TORCH.get(name)
        if found is None:
            raise TypeError(
                f"no torch.optim class (nor handgrad.optim one beyond torch) named {name!r}; "
                "pass reference=torch.optim.<Class>"
            )
        reference = found
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(target)!r} asked for, but CUDA is not available here")
    names = (
        getattr(optimizer_cls, "__name__", repr(optimizer_cls)),
        f"{reference.__module__.split('.')[0]}.optim.{reference.__name__}"
        if reference.__module__.startswith("torch.optim")
        else getattr(reference, "__name__", repr(reference)),
    )
    notes: list[str] = []
    largest_rel = 0.0
    run: list[str] = []
    total = 0
    for layout in layouts:
        layout_steps = steps if layout == "separate" else min(steps, 12)
        outcome = _run_layout(optimizer_cls, reference, layout, layout_steps, dtype, change_lr,
                              rtol, atol, seed, target, hyperparameters, notes)  # fmt: skip
        if outcome is None:
            continue  # the reference refuses this layout: noted
        if isinstance(outcome, _Failure):
            return OptimizerCheckResult(
                names[0], names[1], dict(hyperparameters), total + outcome.step - 1, False,
                outcome.step, outcome.where, outcome.abs_error, outcome.rel_error,
                outcome.detail, tuple(notes), layout, tuple(run),
            )  # fmt: skip
        run.append(layout)
        total += layout_steps
        largest_rel = max(largest_rel, outcome)
    if not run:  # nothing was compared: no pass
        return OptimizerCheckResult(names[0], names[1], dict(hyperparameters), 0, False,
                                    detail="the reference refused every layout asked for",
                                    notes=tuple(notes))  # fmt: skip
    return OptimizerCheckResult(names[0], names[1], dict(hyperparameters), total, True,
                                max_rel_error=largest_rel, notes=tuple(notes),
                                layouts=tuple(run))  # fmt: skip


def _train_mode(optimizer: Any) -> Any:
    """A schedule-free optimizer (schedulefree's, handgrad's) steps only after ``train()``."""
    if callable(getattr(optimizer, "train", None)):
        optimizer.train()
    return optimizer


@dataclass(frozen=True)
class _Failure:
    step: int
    where: str
    abs_error: float
    rel_error: float
    detail: str


def _run_layout(
    optimizer_cls: Callable[..., Any],
    reference: Callable[..., torch.optim.Optimizer],
    layout: str,
    steps: int,
    dtype: torch.dtype,
    change_lr: bool,
    rtol: float | None,
    atol: float | None,
    seed: int,
    device: torch.device,
    hyperparameters: dict[str, Any],
    notes: list[str],
) -> _Failure | float | None:
    """One layout: a failure, the largest relative difference, or None (reference refused)."""
    layout_dtype, shapes = _layout_setup(layout, dtype)
    real = layout_dtype.to_real() if layout_dtype.is_complex else layout_dtype
    default_rtol, default_atol = TOLERANCES.get(real, (1e-4, 1e-6))
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    objective = _Objective(shapes, layout_dtype, seed, device)
    ref_params = _params_for(layout, objective, reference=True)
    mine_params = _params_for(layout, objective, reference=False)
    try:  # a trial step on copies: does the reference take this layout at all?
        probe_params = [t.clone() for t in objective.starts]
        probe = _train_mode(reference(probe_params, **hyperparameters))
        _set_gradients(probe_params, objective, flat=False)
        probe.step()
        theirs = _train_mode(reference(ref_params, **hyperparameters))
    except Exception as error:  # the reference's own limits (complex, half precision, ...)
        notes.append(f"{layout} layout skipped: the reference raised "
                     f"{type(error).__name__}: {error}")  # fmt: skip
        return None
    mine = optimizer_cls(mine_params, **hyperparameters)
    _check_drivable(mine, optimizer_cls)
    _train_mode(mine)
    failure = _steps(mine, theirs, mine_params, ref_params, objective, layout, steps, change_lr,
                     rtol, atol, notes)  # fmt: skip
    if isinstance(failure, _Failure):
        if change_lr and failure.step == steps // 2 + 1:
            notes.append(
                "the two agreed until the learning rate changed at this step: is the learning "
                "rate kept inside a state buffer (e.g. v ← μv − γg) instead of applied when "
                "the parameter moves?"
            )
        if layout in _LAYOUT_NOTES:
            notes.append(_LAYOUT_NOTES[layout])
    return failure


_LAYOUT_NOTES = {
    "float32": "float32 parameters: the differences are beyond float32 rounding (tolerances "
               "rtol=1e-4, atol=1e-6 by default).",
    "flat": "flat layout (handgrad.nn.flatten_parameters): each parameter is a view into one "
            "buffer and each .grad a view into another; update them in place (no p.data = ..., "
            "no new .grad tensors), one element's update reading only that element.",
    "large": "a tensor of 65,536 elements or more (where handgrad's optimizers update a tensor "
             "on its own, with reused temporaries).",
    "float16": "float16 parameters: compute as the reference does in that dtype (tolerances "
               "rtol=2e-2 of each tensor's largest entry, atol=2e-3 by default).",
    "bfloat16": "bfloat16 parameters: compute as the reference does in that dtype (tolerances "
                "rtol=0.1 of each tensor's largest entry, atol=1e-2 by default).",
    "complex": "complex parameters: torch.optim updates them as (Re, Im) pairs of real numbers "
               "(torch.view_as_real), so g² is the square of each part, not the complex g·g.",
}


def _steps(
    mine: Any,
    theirs: torch.optim.Optimizer,
    mine_params: list[Tensor],
    ref_params: list[Tensor],
    objective: _Objective,
    layout: str,
    steps: int,
    change_lr: bool,
    rtol: float,
    atol: float,
    notes: list[str],
) -> _Failure | float:
    """The steps of one layout: the first failure, else the largest relative difference."""
    flat = layout == "flat"
    base_lrs = [group["lr"] for group in theirs.param_groups]
    largest_rel = 0.0
    betas = theirs.param_groups[0].get("betas")
    lr0 = base_lrs[0] if base_lrs and not isinstance(base_lrs[0], Tensor) else None
    keys_noted = False
    for step in range(1, steps + 1):
        lr_changed = change_lr and step == steps // 2 + 1
        if change_lr:
            factor = _learning_rate_at(step, steps)
            for opt in (mine, theirs):
                for group, base in zip(opt.param_groups, base_lrs, strict=False):
                    if isinstance(group["lr"], Tensor):
                        group["lr"].fill_(float(base) * factor)
                    else:
                        group["lr"] = base * factor
        _set_gradients(ref_params, objective, flat=False)
        _set_gradients(mine_params, objective, flat=flat)
        before = [p.detach().clone() for p in mine_params]
        ref_before = [p.detach().clone() for p in ref_params]
        grads = [p.grad.detach().clone() if p.grad is not None else None for p in ref_params]
        try:
            mine.step()
        except Exception as error:  # the learner's code: report whatever it raises
            return _Failure(step, "step()", math.inf, math.inf,
                            f"your step() raised {type(error).__name__}: {error}")  # fmt: skip
        theirs.step()
        # State first: a wrong moment is the cause, the parameter that moves wrongly the
        # symptom.
        for index, (p, q) in enumerate(zip(mine_params, ref_params, strict=True)):
            mine_state, ref_state = mine.state.get(p, {}), theirs.state.get(q, {})
            if step == 1 and not keys_noted and set(mine_state) != set(ref_state):
                keys_noted = True
                missing = sorted(set(ref_state) - set(mine_state))
                extra = sorted(set(mine_state) - set(ref_state))
                note = (f"state keys differ from the reference (missing {missing}, extra "
                        f"{extra}): only shared keys are compared, and state_dicts will not "
                        "transfer")  # fmt: skip
                if note not in notes:
                    notes.append(note)
            for key in sorted(set(mine_state) & set(ref_state)):
                value, expected = mine_state[key], ref_state[key]
                if not (isinstance(value, Tensor) and isinstance(expected, Tensor)):
                    continue
                ok, abs_e, rel_e, detail, _ = _compare(value, expected, rtol, atol)
                if not ok:
                    where = f"state[{key!r}] of parameter {index} ({_describe(q)})"
                    if lr_changed:  # said in a note
                        return _Failure(step, where, abs_e, rel_e, detail)
                    state_hint = (
                        f"state[{key!r}] should be shaped like the reference's (torch keeps "
                        "a complex parameter's state complex)"
                        if value.shape != expected.shape
                        else _state_hint(key, value, expected, grads[index], lr0)
                    )
                    return _Failure(step, where, abs_e, rel_e, f"{detail}. Hint: {state_hint}")
        for index, (p, q) in enumerate(zip(mine_params, ref_params, strict=True)):
            ok, abs_e, rel_e, detail, broken = _compare(p, q, rtol, atol)
            if not ok:
                grad = grads[index]
                if broken is not None and grad is not None:
                    hint: str | None = _nonfinite_hint(broken, mine.state.get(p, {}), grad)
                else:
                    hint = _parameter_hint(step, p.detach() - before[index],
                                           q.detach() - ref_before[index], ref_before[index],
                                           betas, lr_changed)  # fmt: skip
                text = detail if hint is None else f"{detail}. Hint: {hint}"
                return _Failure(step, f"parameter {index} ({_describe(q)})", abs_e, rel_e, text)
            largest_rel = max(largest_rel, rel_e)
    return largest_rel
