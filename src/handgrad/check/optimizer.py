"""Check an optimizer class — yours — step by step against a torch.optim reference.

``check_optimizer(MyAdam, reference=torch.optim.Adam, lr=0.01)`` builds the same parameters
twice, feeds both optimizers the gradient of the same non-convex objective (written by hand,
no autograd) at their own parameters, changes the learning rate half-way as a scheduler
would, and reports the first step where a parameter or a state tensor parts from the
reference — with a hint for the classic mistakes (a missing eps, a learning rate kept inside
a momentum buffer, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

_SHAPES: tuple[tuple[int, ...], ...] = ((5,), (4, 3), (2, 3, 2))


@dataclass(frozen=True)
class OptimizerCheckResult:
    """What :func:`check_optimizer` found; ``bool(result)`` is ``result.passed``.

    ``step`` is the first step (1-based) where the two parted and ``where`` names the
    parameter or state tensor, both None when they agreed for all ``steps_run`` steps.
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

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items()) or "defaults"
        head = f"{self.optimizer} vs {self.reference} ({settings}): "
        if self.passed:
            lines = [head + f"agree for all {self.steps_run} steps "
                     f"(largest relative difference {self.max_rel_error:.1e})."]  # fmt: skip
        else:
            lines = [head + f"part at step {self.step}, in {self.where}.", f"  {self.detail}"]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


class _Objective:
    """f(θ) = Σ b·sin(a·θ) + 0.05·θ², separable and non-convex; ∇f = a·b·cos(a·θ) + 0.1·θ.

    Some coordinates have b = 0 and start at θ = 0: their gradient is exactly zero, which
    is where an update without ε divides 0 by 0.
    """

    def __init__(
        self,
        shapes: Sequence[tuple[int, ...]],
        dtype: torch.dtype,
        seed: int,
        device: torch.device,
    ) -> None:
        # Drawn on the CPU, then moved: the same problem on every device.
        generator = torch.Generator().manual_seed(seed)
        self.starts: list[Tensor] = []
        self.coefficients: list[tuple[Tensor, Tensor]] = []
        for shape in shapes:
            a = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 + 0.5
            b = torch.randn(shape, generator=generator, dtype=torch.float64)
            start = torch.rand(shape, generator=generator, dtype=torch.float64) * 4 - 2
            b.view(-1)[0] = 0.0
            start.view(-1)[0] = 0.0
            self.coefficients.append((a.to(device, dtype), b.to(device, dtype)))
            self.starts.append(start.to(device, dtype))

    def gradients(self, params: Sequence[Tensor]) -> list[Tensor]:
        return [
            a * b * torch.cos(a * p.detach()) + 0.1 * p.detach()
            for p, (a, b) in zip(params, self.coefficients, strict=True)
        ]


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}"


def _compare(
    mine: Tensor, reference: Tensor, rtol: float, atol: float
) -> tuple[bool, float, float, str]:
    """(agree, max abs error, max rel error, a sentence about the worst entry)."""
    if mine.shape != reference.shape:
        return (
            False,
            math.inf,
            math.inf,
            (f"shapes differ: yours {tuple(mine.shape)}, reference {tuple(reference.shape)}"),
        )
    # Compared where the reference lives: a 0-d step kept on the CPU by one side and on the
    # device by the other is the same number.
    ref64 = reference.detach().to(torch.float64)
    mine64 = mine.detach().to(ref64.device, torch.float64)
    if not bool(torch.isfinite(mine64).all()) and bool(torch.isfinite(ref64).all()):
        bad = int((~torch.isfinite(mine64)).sum())
        return (
            False,
            math.inf,
            math.inf,
            (
                f"{bad} of yours are NaN/inf where the reference is finite — a division by zero? "
                "(is ε added to the denominator?)"
            ),
        )
    diff = (mine64 - ref64).abs()
    scale = ref64.abs()
    if diff.numel() == 0:
        return True, 0.0, 0.0, ""
    worst = int(torch.argmax(diff - atol - rtol * scale))
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
    return ok, max_abs, max_rel, sentence


def _learning_rate_at(step: int, steps: int) -> float:
    """Multiplier of the initial lr at ``step``: 1, then 0.3 from the middle (a StepLR)."""
    return 1.0 if step <= steps // 2 else 0.3


def check_optimizer(
    optimizer_cls: Callable[..., Any],
    reference: Callable[..., torch.optim.Optimizer] | None = None,
    *,
    steps: int = 40,
    dtype: torch.dtype = torch.float64,
    change_lr: bool = True,
    rtol: float = 1e-7,
    atol: float = 1e-10,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **hyperparameters: Any,
) -> OptimizerCheckResult:
    """Run ``optimizer_cls`` beside ``reference`` and report the first step where they part.

    Both are built as ``cls(params, **hyperparameters)`` on three parameters (shapes (5,),
    (4, 3), (2, 3, 2)) of ``dtype``. Each step both receive the gradient
    ∇f = a·b·cos(a·θ) + 0.1·θ of a non-convex objective at their own parameters; some
    coordinates start with gradient exactly 0. With ``change_lr`` every group's lr drops to
    0.3× from step ``steps // 2 + 1`` on, as a StepLR scheduler would (this exposes a
    learning rate folded into a state buffer). After every step each state tensor the two
    share by name, then each parameter, is compared: |yours − reference| ≤
    atol + rtol·|reference|. ``reference`` defaults to the torch.optim class of the same name.
    ``device`` is where the parameters and gradients live (e.g. ``"cuda"``: your optimizer
    beside torch's CUDA implementation); ``ValueError`` if CUDA is asked for but absent.
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive number of steps, got {steps}")
    if reference is None:
        name = getattr(optimizer_cls, "__name__", "")
        found = getattr(torch.optim, name, None)
        if found is None:
            raise TypeError(
                f"no torch.optim class named {name!r}; pass reference=torch.optim.<Class>"
            )
        reference = found
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(target)!r} asked for, but CUDA is not available here")
    objective = _Objective(_SHAPES, dtype, seed, target)
    mine_params = [t.clone() for t in objective.starts]
    ref_params = [t.clone() for t in objective.starts]
    mine = optimizer_cls(mine_params, **hyperparameters)
    theirs = reference(ref_params, **hyperparameters)
    base_lrs = [group["lr"] for group in theirs.param_groups]
    names = (
        getattr(optimizer_cls, "__name__", repr(optimizer_cls)),
        f"{reference.__module__.split('.')[0]}.optim.{reference.__name__}"
        if reference.__module__.startswith("torch.optim")
        else getattr(reference, "__name__", repr(reference)),
    )
    notes: list[str] = []
    largest_rel = 0.0

    def failed(step: int, where: str, abs_e: float, rel_e: float, detail: str) -> Any:
        if change_lr and step == steps // 2 + 1:
            notes.append(
                "the two agreed until the learning rate changed at this step: is the learning "
                "rate kept inside a state buffer (e.g. v ← μv − γg) instead of applied when "
                "the parameter moves?"
            )
        return OptimizerCheckResult(names[0], names[1], dict(hyperparameters), step - 1, False,
                                    step, where, abs_e, rel_e, detail, tuple(notes))  # fmt: skip

    for step in range(1, steps + 1):
        if change_lr:
            factor = _learning_rate_at(step, steps)
            for opt in (mine, theirs):
                for group, base in zip(opt.param_groups, base_lrs, strict=False):
                    if isinstance(group["lr"], Tensor):
                        group["lr"].fill_(float(base) * factor)
                    else:
                        group["lr"] = base * factor
        for params in (mine_params, ref_params):
            for p, g in zip(params, objective.gradients(params), strict=True):
                p.grad = g
        try:
            mine.step()
        except Exception as error:  # the learner's code: report whatever it raises
            return failed(step, "step()", math.inf, math.inf,
                          f"your step() raised {type(error).__name__}: {error}")  # fmt: skip
        theirs.step()
        # State first: a wrong moment is the cause, the parameter that moves wrongly the
        # symptom.
        for index, (p, q) in enumerate(zip(mine_params, ref_params, strict=True)):
            mine_state, ref_state = mine.state.get(p, {}), theirs.state.get(q, {})
            if step == 1 and index == 0 and set(mine_state) != set(ref_state):
                missing = sorted(set(ref_state) - set(mine_state))
                extra = sorted(set(mine_state) - set(ref_state))
                notes.append(
                    f"state keys differ from the reference (missing {missing}, extra {extra}):"
                    " only shared keys are compared, and state_dicts will not transfer"
                )
            for key in sorted(set(mine_state) & set(ref_state)):
                value, expected = mine_state[key], ref_state[key]
                if not (isinstance(value, Tensor) and isinstance(expected, Tensor)):
                    continue
                ok, abs_e, rel_e, detail = _compare(value, expected, rtol, atol)
                if not ok:
                    where = f"state[{key!r}] of parameter {index} ({_describe(q)})"
                    return failed(step, where, abs_e, rel_e, detail)
        for index, (p, q) in enumerate(zip(mine_params, ref_params, strict=True)):
            ok, abs_e, rel_e, detail = _compare(p, q, rtol, atol)
            if not ok:
                return failed(step, f"parameter {index} ({_describe(q)})", abs_e, rel_e, detail)
            largest_rel = max(largest_rel, rel_e)
    return OptimizerCheckResult(names[0], names[1], dict(hyperparameters), steps, True,
                                max_rel_error=largest_rel, notes=tuple(notes))  # fmt: skip
