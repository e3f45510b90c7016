"""check_module: is a module's hand-written backward right? Ask autograd and finite differences.

The module — a handgrad layer, a network, or a student's own ``Module`` subclass with its own
``forward``/``backward`` — is copied to float64 three times:

1. **autograd**: its parameters and input become leaves with ``requires_grad=True`` and
   autograd differentiates *its own forward*: L = Σ g ⊙ forward(x), g a fixed random
   upstream gradient;
2. **hand-written**: the forward runs with autograd off, then ``backward(g)`` returns dL/dx
   and fills each ``param.grad``;
3. **finite differences**: for a sample of entries v of each tensor,
   dL/dv ≈ (L(v + h) − L(v − h)) / 2h (central, error O(h²)).

Every forward is run from the same RNG state, so layers that draw random numbers (Dropout)
see the same mask each time. Errors are reported per tensor as max absolute error and
normwise relative error, max|hand − ref| / max|ref|.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# Autograd and the hand-written backward do the same float64 arithmetic in possibly
# different orders: they agree to a few ulps. Finite differences carry O(h²) truncation and
# O(eps/h) rounding error: ~1e-10 relative at h = 1e-6.
AUTOGRAD_RTOL = 1e-10
AUTOGRAD_ATOL = 1e-12
FD_RTOL = 1e-6
FD_ATOL = 1e-8


@dataclass(frozen=True)
class TensorCheck:
    """How one gradient (of the input or of a parameter) compares with the references."""

    name: str
    shape: tuple[int, ...]
    autograd_abs: float
    autograd_rel: float
    fd_abs: float
    fd_rel: float
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class ModuleCheckResult:
    """Per-tensor results of :func:`check_module`; ``passed`` only if every tensor passed."""

    module: str
    tensors: list[TensorCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(tensor.passed for tensor in self.tensors)

    def tensor(self, name: str) -> TensorCheck:
        """The check of the tensor called ``name`` ("input", "weight", "0.bias", ...)."""
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(f"no gradient named {name!r}; have {[t.name for t in self.tensors]}")

    def report(self) -> str:
        """A readable summary: one line per tensor, then where the failures differ."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [f"check_module({self.module}): {verdict}"]
        width = max((len(t.name) for t in self.tensors), default=5)
        for t in self.tensors:
            lines.append(
                f"  {t.name:<{width}}  {'ok  ' if t.passed else 'FAIL'}  "
                f"vs autograd: abs {t.autograd_abs:.2e} rel {t.autograd_rel:.2e}   "
                f"vs finite differences: abs {t.fd_abs:.2e} rel {t.fd_rel:.2e}"
            )
        lines.extend(f"  {t.name}: {t.detail}" for t in self.tensors if t.detail)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def check_module(
    module: torch.nn.Module,
    example_input: Tensor | tuple[Tensor, ...],
    *,
    target: Tensor | None = None,
    forward_kwargs: dict[str, Any] | None = None,
    rtol: float = AUTOGRAD_RTOL,
    atol: float = AUTOGRAD_ATOL,
    fd_rtol: float = FD_RTOL,
    fd_atol: float = FD_ATOL,
    fd_step: float = 1e-6,
    fd_samples: int = 16,
    seed: int = 0,
) -> ModuleCheckResult:
    """Compare ``module.backward`` with autograd on ``module.forward`` and finite differences.

    ``module(x)`` (or ``module(x, target)`` for a loss, whose ``backward`` then receives the
    upstream gradient as a float when the loss is a scalar) must be built from torch
    operations so that autograd can differentiate it. A module of several tensor inputs
    gets them as a tuple, ``module(*example_input)``, and its ``backward`` must return a tuple
    of one gradient per input in argument order (each named after forward's argument; an
    integer input is not differentiated). ``forward_kwargs`` (masks, flags) are passed to
    every forward and not differentiated.

    A tensor passes when max|hand − ref| ≤ atol + rtol · max|ref| against autograd, and
    likewise with ``fd_atol``/``fd_rtol`` against finite differences on up to ``fd_samples``
    entries of each tensor (0 skips finite differences). A parameter also fails when
    ``backward`` assigns ``.grad`` instead of adding to it, or replaces it with another
    tensor: a second backward starts from gradients already there, as after
    ``zero_grad(set_to_none=False)``, and must add into those same tensors (optimizers keep
    them). The module and the inputs are not modified.
    """
    several = isinstance(example_input, tuple)
    given: tuple[object, ...] = example_input if several else (example_input,)  # type: ignore[assignment]
    for value in given:
        if not isinstance(value, Tensor):
            raise TypeError(
                "check_module: example_input must be a Tensor (or a tuple of Tensors), "
                f"got {type(value)}"
            )
    if not callable(getattr(module, "backward", None)):
        raise TypeError(
            f"check_module: {type(module).__name__} has no backward() to check "
            "(subclass handgrad.nn.Module and write forward and backward)"
        )
    if fd_samples < 0 or fd_step <= 0:
        raise ValueError(
            f"check_module: need fd_samples >= 0 and fd_step > 0, got {fd_samples} and {fd_step}"
        )
    reference = copy.deepcopy(module).to(torch.float64)
    xs = [_to_float64(value) for value in given]  # type: ignore[arg-type]
    names = _input_names(module, len(xs)) if several else ["input"]
    wanted = [x.is_floating_point() for x in xs]
    y = None if target is None else _to_float64(target)
    kwargs = {
        key: _to_float64(value) if isinstance(value, Tensor) else value
        for key, value in (forward_kwargs or {}).items()
    }
    rng_states = _RngReplay(reference, seed)

    def run(net: torch.nn.Module, inputs: list[Tensor]) -> Tensor:
        with rng_states.replayed(net):
            out = net(*inputs, **kwargs) if y is None else net(*inputs, y, **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(f"check_module: forward must return a Tensor, got {type(out)}")
        return out

    # 1. autograd on the module's own forward
    graph = copy.deepcopy(reference)
    leaves = dict(graph.named_parameters())
    for param in leaves.values():
        param.requires_grad_(True)
    x_leaves = [x.clone().requires_grad_(w) for x, w in zip(xs, wanted, strict=True)]
    with torch.inference_mode(False), torch.enable_grad():
        out = run(graph, x_leaves)
        if not out.requires_grad:
            raise ValueError(
                f"check_module: autograd cannot differentiate {type(module).__name__}.forward "
                "(its output does not depend on the input or parameters through torch ops)"
            )
        generator = torch.Generator(device=out.device).manual_seed(seed)
        upstream = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
        input_names = [name for name, w in zip(names, wanted, strict=True) if w]
        inputs = [leaf for leaf, w in zip(x_leaves, wanted, strict=True) if w]
        inputs += list(leaves.values())
        found = torch.autograd.grad(out, inputs, upstream, allow_unused=True)
    expected = {
        name: torch.zeros_like(tensor) if grad is None else grad.detach()
        for name, tensor, grad in zip(input_names + list(leaves), inputs, found, strict=True)
    }

    # 2. the hand-written backward
    upstream_arg: Tensor | float = float(upstream) if y is not None and out.dim() == 0 else upstream
    hand = copy.deepcopy(reference)
    for param in hand.parameters():
        param.grad = None
    with torch.no_grad():
        run(hand, [x.clone() for x in xs])
        returned = hand.backward(upstream_arg)  # type: ignore[operator]
    got: dict[str, Tensor | str] = {}
    if several:
        if not isinstance(returned, tuple | list) or len(returned) != len(xs):
            problem = (
                f"backward() returned {_describe(returned)}, expected a tuple of {len(xs)} "
                "gradients (one per input, in argument order)"
            )
            got.update((name, problem) for name in input_names)
        else:
            for name, grad, x, w in zip(names, returned, xs, wanted, strict=True):
                if w:
                    got[name] = _as_gradient(grad, x, f"backward() returned for {name}")
    elif wanted[0]:
        got["input"] = _as_gradient(returned, xs[0], "backward() returned")
    for name, param in hand.named_parameters():
        got[name] = _as_gradient(param.grad, param, f"{name}.grad is")

    # 2b. the hand-written backward again, onto gradients already there: must add into them
    accumulated = _accumulation_problems(
        reference, got, lambda net: run(net, [x.clone() for x in xs]), upstream_arg, seed
    )

    # 3. finite differences, on a copy whose parameters are nudged in place
    nudged = copy.deepcopy(reference)
    tensors = {name: x.clone() for name, x, w in zip(names, xs, wanted, strict=True) if w}
    tensors.update(dict(nudged.named_parameters()))
    probe = torch.Generator().manual_seed(seed)

    def objective() -> float:
        current = [tensors.get(name, x) for name, x in zip(names, xs, strict=True)]
        with torch.no_grad():
            return float((run(nudged, current) * upstream).sum())

    checks = []
    for name in expected:
        check = _compare(
            name,
            expected[name],
            got[name],
            _finite_differences(tensors[name], objective, fd_step, fd_samples, probe),
            (rtol, atol, fd_rtol, fd_atol),
        )
        if name in accumulated and check.passed:
            check = dataclasses.replace(check, passed=False, detail=accumulated[name])
        checks.append(check)
    return ModuleCheckResult(module=type(module).__name__, tensors=checks)


def _input_names(module: torch.nn.Module, count: int) -> list[str]:
    """forward's first ``count`` argument names (input0, input1, ... where it takes *args)."""
    names: list[str] = []
    for name, parameter in inspect.signature(module.forward).parameters.items():
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            break
        names.append(name)
    if len(names) < count:
        return [f"input{index}" for index in range(count)]
    return names[:count]


def _describe(value: object) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def _accumulation_problems(
    reference: torch.nn.Module,
    first: dict[str, Tensor | str],
    forward: Callable[[torch.nn.Module], object],
    upstream: Tensor | float,
    seed: int,
) -> dict[str, str]:
    """Per parameter, why a backward onto existing gradients did not add into them (if so).

    Each parameter starts with a random ``.grad``, R; afterwards ``.grad`` must be that same
    tensor holding R + (the gradient of the first backward).
    """
    net = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(seed + 1)
    before: dict[str, tuple[Tensor, Tensor]] = {}
    for name, param in net.named_parameters():
        start = torch.randn(param.shape, generator=generator, dtype=param.dtype)
        param.grad = start.to(param.device)
        before[name] = (param.grad, param.grad.clone())
    with torch.no_grad():
        forward(net)
        net.backward(upstream)  # type: ignore[operator]
    problems: dict[str, str] = {}
    for name, param in net.named_parameters():
        gradient = first.get(name)
        if not isinstance(gradient, Tensor):
            continue  # reported already
        kept, values = before[name]
        if param.grad is None:
            problems[name] = f"{name}.grad became None when backward ran onto a gradient"
            continue
        total = values + gradient.to(values.device)
        if total.numel() == 0:
            continue
        tolerance = 1e-12 * max(float(total.abs().max()), 1.0)
        if float((param.grad - total).abs().max()) > tolerance:
            assigned = float((param.grad - gradient).abs().max()) <= tolerance
            problems[name] = (
                f"{name}.grad was assigned, not added to: backward must add dL/d{name} to the "
                "gradient already there (handgrad.nn.accumulate_grad)"
                if assigned
                else f"{name}.grad after a second backward is not the old gradient plus "
                "the new one"
            )
        elif param.grad is not kept:
            problems[name] = (
                f"{name}.grad was replaced by another tensor: add into the one there "
                "(handgrad.nn.accumulate_grad), optimizers may hold it"
            )
    return problems


# --------------------------------------------------------------------------- helpers


def _to_float64(tensor: Tensor) -> Tensor:
    tensor = tensor.detach()
    return tensor.to(torch.float64) if tensor.is_floating_point() else tensor.clone()


def _as_gradient(grad: object, like: Tensor, what: str) -> Tensor | str:
    """The gradient, or a sentence saying why it cannot be compared."""
    if grad is None:
        return f"{what} None"
    if not isinstance(grad, Tensor):
        return f"{what} a {type(grad).__name__}, not a Tensor"
    if grad.shape != like.shape:
        return f"{what} shape {tuple(grad.shape)}, expected {tuple(like.shape)}"
    return grad.detach().to(torch.float64)


class _RngReplay:
    """Puts torch's RNG, and each submodule's own ``generator``, in the same state before
    every forward (states are set directly: re-seeding costs far more than a forward)."""

    def __init__(self, module: torch.nn.Module, seed: int) -> None:
        self.cpu_state = torch.Generator().manual_seed(seed).get_state()
        self.cuda_state: Tensor | None = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            with torch.random.fork_rng(devices=[torch.cuda.current_device()]):
                torch.cuda.manual_seed(seed)
                self.cuda_state = torch.cuda.get_rng_state()
        self.states = [gen.get_state() for gen in self._generators(module)]

    @staticmethod
    def _generators(module: torch.nn.Module) -> list[torch.Generator]:
        return [
            gen
            for sub in module.modules()
            if isinstance(gen := getattr(sub, "generator", None), torch.Generator)
        ]

    @contextmanager
    def replayed(self, module: torch.nn.Module) -> Iterator[None]:
        """Within: the RNG at the seeded state, ``module``'s generators at their start."""
        cpu_before = torch.get_rng_state()
        cuda_before = None if self.cuda_state is None else torch.cuda.get_rng_state()
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state)
        for gen, state in zip(self._generators(module), self.states, strict=True):
            gen.set_state(state)
        try:
            yield
        finally:
            torch.set_rng_state(cpu_before)
            if cuda_before is not None:
                torch.cuda.set_rng_state(cuda_before)


def _finite_differences(
    tensor: Tensor,
    objective: Callable[[], float],
    step: float,
    samples: int,
    probe: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """(flat indices, central differences) for up to ``samples`` entries of ``tensor``."""
    count = tensor.numel()
    if samples >= count:
        picks = torch.arange(count)
    else:
        picks = torch.randperm(count, generator=probe)[:samples]
    flat = tensor.detach().view(-1)
    estimates = torch.empty(len(picks), dtype=torch.float64)
    with torch.no_grad():
        for slot, index in enumerate(picks.tolist()):
            original = float(flat[index])
            h = step * max(1.0, abs(original))
            flat[index] = original + h
            above = objective()
            flat[index] = original - h
            below = objective()
            flat[index] = original
            estimates[slot] = (above - below) / (2 * h)
    return picks, estimates


def _compare(
    name: str,
    expected: Tensor,
    got: Tensor | str,
    finite: tuple[Tensor, Tensor],
    tolerances: tuple[float, float, float, float],
) -> TensorCheck:
    rtol, atol, fd_rtol, fd_atol = tolerances
    shape = tuple(expected.shape)
    if isinstance(got, str):
        inf = float("inf")
        return TensorCheck(name, shape, inf, inf, inf, inf, passed=False, detail=got)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    diff = (got - expected).abs()
    autograd_abs = float(diff.max()) if diff.numel() else 0.0
    picks, estimates = finite
    fd_diff = (got.reshape(-1)[picks.to(got.device)].cpu() - estimates).abs()
    fd_abs = float(fd_diff.max()) if fd_diff.numel() else 0.0
    fd_scale = float(estimates.abs().max()) if estimates.numel() else 0.0
    ok_autograd = autograd_abs <= atol + rtol * scale
    ok_fd = fd_abs <= fd_atol + fd_rtol * max(fd_scale, scale)
    detail = ""
    if not ok_autograd:
        worst = int(diff.reshape(-1).argmax())
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), expected.shape))
        detail = (
            f"differs from autograd most at index {where}: hand-written "
            f"{float(got.reshape(-1)[worst]):.10g}, "
            f"autograd {float(expected.reshape(-1)[worst]):.10g}"
        )
    elif not ok_fd:
        worst = int(fd_diff.argmax())
        flat_index = int(picks[worst])
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), expected.shape))
        detail = (
            f"differs from finite differences most at index {where}: hand-written "
            f"{float(got.reshape(-1)[flat_index]):.10g}, finite difference "
            f"{float(estimates[worst]):.10g}"
        )
    return TensorCheck(
        name=name,
        shape=shape,
        autograd_abs=autograd_abs,
        autograd_rel=autograd_abs / scale if scale > 0 else autograd_abs,
        fd_abs=fd_abs,
        fd_rel=fd_abs / fd_scale if fd_scale > 0 else fd_abs,
        passed=ok_autograd and ok_fd,
        detail=detail,
    )
