"""solve_quadratic: the roots of a x² + b x + c = 0, for one equation or a batch of millions.

Every method works on the same prepared problem (:mod:`handgrad.roots.problem`): the equations
are classified from the exact sign of the discriminant and scaled by powers of two; the method
finds the roots of the scaled equation; this module puts them back in x, orders them and
measures their residual.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from handgrad.roots.closed import closed_form
from handgrad.roots.descent import default_starts, fixed_step
from handgrad.roots.finish import finish_roots
from handgrad.roots.lanes import descend_lanes
from handgrad.roots.newton import newton
from handgrad.roots.problem import MethodResult, RootKind, ScaledQuadratic, prepare
from handgrad.roots.scaling import ldexp

METHODS = ("gd", "newton", "closed")

_KIND_WORDS = {
    RootKind.TWO_REAL: "two real roots",
    RootKind.DOUBLE: "a double root",
    RootKind.COMPLEX_PAIR: "a complex-conjugate pair",
    RootKind.LINEAR: "linear: one root",
    RootKind.NO_SOLUTION: "no solution",
    RootKind.ANY_X: "every x is a solution",
    RootKind.INVALID: "invalid coefficients",
}


@dataclass(frozen=True)
class QuadraticRoots:
    """The roots of a x² + b x + c = 0 for a batch of shape S (S = () for one equation).

    - ``roots``: complex (*S, 2). Real roots ascending; a complex pair with the negative
      imaginary part first; a linear equation's root then NaN; NaN where there is none (and
      where a fixed-step descent did not converge).
    - ``kind``: int64 (*S,) of :class:`RootKind` values.
    - ``iterations``: int64 (*S,), steps taken (the larger count of the two starts).
    - ``converged``: bool (*S,), the method met its stopping criterion (for a complex pair,
      that includes having found it).
    - ``residual``: float (*S, 2), the relative backward error of each root,
      |f(x)| / (|a| |x|² + |b| |x| + |c|) (NaN where no root).
    - ``path``: with ``return_path=True``, complex (steps + 1, *S, 2): the iterates from both
      starts, NaN once a start has stopped; None otherwise.
    """

    roots: Tensor
    kind: Tensor
    iterations: Tensor
    converged: Tensor
    residual: Tensor
    method: str
    coefficients: tuple[Tensor, Tensor, Tensor] = field(repr=False)
    path: Tensor | None = field(default=None, repr=False)

    @property
    def is_scalar(self) -> bool:
        """True for the result of one equation."""
        return self.kind.dim() == 0

    def real_roots(self) -> list[float]:
        """The real roots of a single equation, ascending (empty for a complex pair)."""
        self._require_scalar("real_roots")
        if RootKind(int(self.kind)) == RootKind.COMPLEX_PAIR:
            return []
        return [float(z.real) for z in self.roots if not math.isnan(float(z.real))]

    def _require_scalar(self, what: str) -> None:
        if not self.is_scalar:
            raise ValueError(
                f"{what} needs the result of one equation; this batch has shape "
                f"{tuple(self.kind.shape)}"
            )

    def __repr__(self) -> str:
        if not self.is_scalar:
            counts = torch.bincount(self.kind.reshape(-1).cpu(), minlength=len(RootKind))
            kinds = ", ".join(
                f"{RootKind(i).name}: {int(n)}" for i, n in enumerate(counts) if int(n) > 0
            )
            done = int(self.converged.sum())
            return (
                f"QuadraticRoots(shape={tuple(self.kind.shape)}, method={self.method!r}, "
                f"kinds={{{kinds}}}, converged={done}/{self.converged.numel()})"
            )
        roots = ", ".join(format_root(z) for z in self.roots.tolist())
        residual = ", ".join(f"{r:.1e}" for r in self.residual.tolist())
        return (
            f"QuadraticRoots({equation_text(*self.coefficients)}, "
            f"kind={RootKind(int(self.kind)).name}, roots=({roots}), method={self.method!r}, "
            f"iterations={int(self.iterations)}, converged={bool(self.converged)}, "
            f"residual=({residual}))"
        )

    def __str__(self) -> str:
        if not self.is_scalar:
            return repr(self)
        kind = RootKind(int(self.kind))
        lines = [f"{equation_text(*self.coefficients)}: {_KIND_WORDS[kind]}"]
        for i, (z, r) in enumerate(zip(self.roots.tolist(), self.residual.tolist(), strict=True)):
            if not math.isnan(z.real):
                lines.append(f"  x{i + 1} = {format_root(z)}   (residual {r:.1e})")
        state = "converged" if bool(self.converged) else "did NOT converge"
        lines.append(f"  {self.method}: {int(self.iterations)} iterations, {state}")
        return "\n".join(lines)


def format_root(z: complex) -> str:
    """A root as text: a plain decimal (repr of the float) for a real root, re+imj otherwise."""
    if math.isnan(z.real) or math.isnan(z.imag):
        return "nan"
    if z.imag == 0:
        return repr(z.real)
    sign = "-" if math.copysign(1.0, z.imag) < 0 else "+"
    return f"{z.real!r}{sign}{abs(z.imag)!r}j"


def equation_text(a: Tensor, b: Tensor, c: Tensor) -> str:
    """'1·x² - 6·x + 4 = 0' for scalar coefficient tensors."""
    terms = [(float(a), "·x²"), (float(b), "·x"), (float(c), "")]
    text = f"{terms[0][0]:g}{terms[0][1]}"
    for value, suffix in terms[1:]:
        sign = "-" if math.copysign(1.0, value) < 0 else "+"
        text += f" {sign} {abs(value):g}{suffix}"
    return text + " = 0"


def _as_tensor(name: str, value: Any) -> tuple[Tensor, bool]:
    """The coefficient as a real tensor, and whether its dtype should count (not Python input)."""
    if isinstance(value, Tensor):
        tensor, typed = value.detach(), True
    elif isinstance(value, np.ndarray | np.generic):
        tensor, typed = torch.from_numpy(np.asarray(value)), True
    else:
        try:
            tensor = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"{name} must be a number, a sequence of numbers, a numpy array or a tensor; "
                f"got {value!r}"
            ) from error
        typed = False
    if tensor.is_complex():
        raise TypeError(f"{name} must be real; got dtype {tensor.dtype}")
    if not tensor.is_floating_point():
        tensor, typed = tensor.to(torch.float64), False
    return tensor, typed


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


OptimizerFactory = Callable[..., torch.optim.Optimizer]


def solve_quadratic(
    a: Any,
    b: Any,
    c: Any,
    method: str = "gd",
    *,
    lr: float | None = None,
    optimizer: OptimizerFactory | None = None,
    x0: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    return_path: bool = False,
) -> QuadraticRoots:
    """Roots of a x² + b x + c = 0 by gradient descent on L(x) = f(x)² (or another method).

    ``a, b, c``: Python numbers, sequences, numpy arrays or tensors, broadcast together; any
    float dtype and device (computed in float64; the roots are complex128 for float64 and
    Python input, complex64 otherwise). Methods:

    - ``"gd"`` (default): x_{k+1} = x_k - η_k L'(x_k), L'(x) = 2 f(x) f'(x), with the
      normalised step η_k = 1/(2 f'(x_k)²), from a root bound on each side of the vertex,
      v ∓ sqrt(v² + |c/a|) (v = -b/2a; widened by 2^-20), outside both roots: a few steps
      each (3.7 on average for standard-normal coefficients); complex pairs by the same
      descent on the vertical line through the vertex, from sqrt|c/a| above the pair. See
      :mod:`handgrad.roots.lanes`. For millions of equations,
      :func:`handgrad.roots.compiled.solve_gd_compiled` gives the same result bitwise through
      torch.compile.
    - ``"gd"`` with ``lr``: the classroom fixed step x_{k+1} = x_k - lr·L'(x_k) exactly, from
      ``x0`` (a pair of starts, broadcast to (*S, 2)) or the default starts; converges only for
      lr < 1/D near a root. With ``optimizer`` (a torch.optim / handgrad.optim class, or any
      callable ``params -> Optimizer``; given ``lr=lr`` when lr is set): the optimizer takes the
      steps from the same gradient. Both stop when the backward error is below ``tol``
      (default 1e-12) and report non-convergence honestly (converged False, roots NaN).
    - ``"newton"``: textbook Newton on f (plain floating point), same starts.
    - ``"closed"``: the numerically stable closed form with an error-free discriminant.

    ``tol``: for "gd"/"newton" the relative step size at which a start stops (default 2^-53);
    ``max_iter``: default 100 ("gd"/"newton"), 10 000 (fixed step). Bad coefficients make a
    row INVALID in a batch; for a single equation they raise ValueError.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    _check_positive("lr", lr)
    _check_positive("tol", tol)
    if max_iter is not None and (not isinstance(max_iter, int) or max_iter < 1):
        raise ValueError(f"max_iter must be an integer >= 1; got {max_iter!r}")
    fixed = lr is not None or optimizer is not None
    if fixed and method != "gd":
        raise ValueError(f"lr and optimizer apply to method='gd'; got method={method!r}")
    if x0 is not None and not fixed:
        raise ValueError("x0 sets the starts of the fixed-step descent; give lr= or optimizer=")

    converted = [_as_tensor(name, v) for name, v in zip("abc", (a, b, c), strict=True)]
    devices = {t.device for t, typed in converted if typed}
    if len(devices) > 1:
        raise ValueError(f"a, b and c must be on one device; got {sorted(map(str, devices))}")
    device = devices.pop() if devices else torch.device("cpu")
    dtypes = [t.dtype for t, typed in converted if typed]
    dtype = torch.float64
    if dtypes:
        dtype = dtypes[0]
        for other in dtypes[1:]:
            dtype = torch.promote_types(dtype, other)
    out_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    ta, tb, tc = torch.broadcast_tensors(
        *(t.to(device=device, dtype=torch.float64) for t, _ in converted)
    )
    shape = ta.shape
    if len(shape) == 0:
        for name, t in zip("abc", (ta, tb, tc), strict=True):
            if not math.isfinite(float(t)):
                raise ValueError(f"{name} must be a finite number; got {float(t)}")
    flat_a, flat_b, flat_c = (t.reshape(-1) for t in (ta, tb, tc))
    if method == "gd" and not fixed and not return_path and flat_a.numel() > 2 * EAGER_BLOCK:
        return _solve_in_blocks((ta, tb, tc), (flat_a, flat_b, flat_c), tol, max_iter, out_dtype)
    problem = prepare(flat_a, flat_b, flat_c)

    result: MethodResult
    if fixed:
        if x0 is None:
            starts = default_starts(problem)
        else:
            given = torch.as_tensor(x0, dtype=torch.float64, device=device)
            if given.dim() == 0 or given.shape[-1] != 2:
                raise ValueError(f"x0 must be a pair of starts (shape (..., 2)); got {x0!r}")
            pairs = given.broadcast_to((*shape, 2)).reshape(-1, 2)
            linear = (problem.kind == RootKind.LINEAR)[:, None]
            first_only = torch.stack([pairs[:, 0], torch.full_like(pairs[:, 0], math.nan)], 1)
            pairs = torch.where(linear, first_only, pairs)
            solvable = problem.kind <= RootKind.LINEAR
            pairs = torch.where(solvable[:, None], pairs, math.nan)
            starts = torch.complex(pairs, torch.zeros_like(pairs))
        invalid = problem.kind == RootKind.INVALID
        clean_a, clean_b, clean_c = (torch.where(invalid, 0.0, t) for t in (flat_a, flat_b, flat_c))
        result = fixed_step(
            clean_a,
            clean_b,
            clean_c,
            starts,
            lr=lr,
            optimizer=optimizer,
            tol=tol,
            max_iter=max_iter,
            record_path=return_path,
        )
        trivially = (problem.kind == RootKind.NO_SOLUTION) | (problem.kind == RootKind.ANY_X)
        result = MethodResult(
            result.roots,
            result.iterations,
            result.converged | trivially,
            scaled=False,
            path=result.path,
        )
    elif method == "gd":
        result = descend_lanes(problem, tol=tol, max_iter=max_iter, record_path=return_path)
    elif method == "newton":
        result = newton(problem, tol=tol, max_iter=max_iter, record_path=return_path)
    else:
        result = closed_form(problem)
    return _finish(result, problem, (ta, tb, tc), method, out_dtype)


# Eager torch makes one pass over memory per operation and the descent has hundreds: in blocks
# this size the temporaries stay in the CPU's cache. Every equation is solved on its own, so
# the result is bitwise the same as in one piece.
EAGER_BLOCK = 1 << 15


def _solve_in_blocks(
    coefficients: tuple[Tensor, Tensor, Tensor],
    flat: tuple[Tensor, Tensor, Tensor],
    tol: float | None,
    max_iter: int | None,
    out_dtype: torch.dtype,
) -> QuadraticRoots:
    """The default "gd" for a big batch, EAGER_BLOCK equations at a time."""
    shape = coefficients[0].shape
    n = flat[0].numel()
    a, b, c = flat
    pieces = [
        solve_quadratic(
            a[start : start + EAGER_BLOCK],
            b[start : start + EAGER_BLOCK],
            c[start : start + EAGER_BLOCK],
            tol=tol,
            max_iter=max_iter,
        )
        for start in range(0, n, EAGER_BLOCK)
    ]
    real_dtype = torch.float64 if out_dtype == torch.complex128 else torch.float32

    def joined(name: str, *tail: int) -> Tensor:
        return torch.cat([getattr(piece, name) for piece in pieces]).reshape(*shape, *tail)

    return QuadraticRoots(
        roots=joined("roots", 2).to(out_dtype),
        kind=joined("kind"),
        iterations=joined("iterations"),
        converged=joined("converged"),
        residual=joined("residual", 2).to(real_dtype),
        method="gd",
        coefficients=coefficients,
    )


def _to_x(values: Tensor, problem: ScaledQuadratic, scaled: bool) -> Tensor:
    """Complex (n, 2) values from the scaled variable y to x = 2^k y (no-op if already x)."""
    if not scaled:
        return values
    k = problem.k[:, None].expand_as(values.real)
    return torch.complex(ldexp(values.real, k), ldexp(values.imag, k))


def _finish(
    result: MethodResult,
    problem: ScaledQuadratic,
    coefficients: tuple[Tensor, Tensor, Tensor],
    method: str,
    out_dtype: torch.dtype,
) -> QuadraticRoots:
    shape = coefficients[0].shape
    a, b, c = (t.reshape(-1) for t in coefficients)
    raw_re, raw_im, values = result.roots.real, result.roots.imag, result.values
    re, im, residual_pair = finish_roots(
        problem,
        (raw_re[:, 0], raw_re[:, 1]),
        (raw_im[:, 0], raw_im[:, 1]),
        result.scaled,
        a,
        b,
        c,
        None if values is None else (values[:, 0], values[:, 1]),
    )
    roots = torch.complex(torch.stack(re, dim=1), torch.stack(im, dim=1))
    residual = torch.stack(residual_pair, dim=1)
    path = None
    if result.path is not None:
        steps = [_to_x(p, problem, result.scaled) for p in result.path]
        path = torch.stack(steps).reshape(len(steps), *shape, 2).to(out_dtype)
    real_dtype = torch.float64 if out_dtype == torch.complex128 else torch.float32
    return QuadraticRoots(
        roots=roots.reshape(*shape, 2).to(out_dtype).contiguous(),
        kind=problem.kind.reshape(shape),
        iterations=result.iterations.reshape(shape),
        converged=result.converged.reshape(shape),
        residual=residual.reshape(*shape, 2).to(real_dtype).contiguous(),
        method=method,
        coefficients=coefficients,
        path=path,
    )
