"""solve_quadratic: the roots of a x² + b x + c = 0, for one equation or a batch of millions.

Every method works on the same prepared problem (:mod:`handgrad.roots.problem`): the equations
are classified from the exact sign of the discriminant and scaled by powers of two; the method
finds the roots of the scaled equation; this module puts them back in x, orders them and
measures their residual.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from handgrad.roots.closed import closed_form
from handgrad.roots.finish import finish_roots
from handgrad.roots.fixed_step import (
    FixedStepRun,
    StartOutcome,
    StartReport,
    default_learning_rate_of,
    default_starts,
    fixed_step,
    stability_limit_of,
)
from handgrad.roots.lanes import descend_lanes
from handgrad.roots.newton import newton
from handgrad.roots.problem import MethodResult, RootKind, ScaledQuadratic, prepare
from handgrad.roots.scaling import ldexp

METHODS = ("gauss-newton", "gd", "newton", "closed")
# Iteration counts are int64 tensors.
MAX_ITER_LIMIT = 2**63 - 1

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

    - ``roots``: complex (*S, 2). Real roots ascending (x1 <= x2); a complex pair with the
      negative imaginary part first; a linear equation's root then NaN; NaN where there is
      none. For a fixed-step descent ("gd" with ``lr``), x1 and x2 keep that meaning: each
      start that converged fills the column of the root it reached, and a root that no start
      reached is NaN (both starts may reach the same root).
    - ``kind``: int64 (*S,) of :class:`RootKind` values.
    - ``iterations``: int64 (*S,), steps taken (the larger count of the two starts).
    - ``converged``: bool (*S,): "gauss-newton" and "closed": the roots are found; "newton":
      every root is within 2^-50 of a true root (checked afterwards, see
      :mod:`handgrad.roots.newton`); "gd": every start converged (``per_start`` says how each
      one ended).
    - ``residual``: float (*S, 2), the relative backward error of each root,
      |f(x)| / (|a| |x|² + |b| |x| + |c|) (NaN where no root).
    - ``path``: with ``return_path=True``, complex (steps + 1, *S, 2): the iterates from both
      starts, NaN once a start has stopped; None otherwise.
    - ``per_start``: for a fixed-step descent, a :class:`StartReport`: each start's outcome
      (converged, diverged at step k, at the vertex, cycling, ...), step, last iterate; None
      for the other methods.
    """

    roots: Tensor
    kind: Tensor
    iterations: Tensor
    converged: Tensor
    residual: Tensor
    method: str
    coefficients: tuple[Tensor, Tensor, Tensor] = field(repr=False)
    path: Tensor | None = field(default=None, repr=False)
    per_start: StartReport | None = field(default=None, repr=False)

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
        if self.per_start is not None:
            lines.extend(f"    {line}" for line in self.per_start.describe())
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


def _is_number(value: Any) -> bool:
    """A real number, but not a bool (True is an int to Python, not a learning rate)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def check_positive(name: str, value: Any) -> None:
    if value is None:
        return
    if not _is_number(value):
        raise TypeError(f"{name} must be a number; got {value!r} ({type(value).__name__})")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


def check_max_iter(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"max_iter must be an integer; got {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(
            f"max_iter must be an integer; got {value!r} ({type(value).__name__})"
        ) from None
    if not 1 <= count <= MAX_ITER_LIMIT:
        raise ValueError(
            f"max_iter must be an integer from 1 to 2**63 - 1 (iteration counts are int64); "
            f"got {count}"
        )
    return count


def _learning_rate(lr: Any, shape: torch.Size, device: torch.device, optimizer: Any) -> Any:
    """lr as given (a number), or a tensor checked and broadcast to the batch (flat (n, 1))."""
    if not isinstance(lr, Tensor):
        check_positive("lr", lr)
        return lr
    if optimizer is not None:
        raise TypeError("lr must be a number when an optimizer takes the steps; got a tensor")
    if lr.is_complex() or lr.dtype == torch.bool:
        raise TypeError(f"lr must be real; got dtype {lr.dtype}")
    rates = lr.detach().to(device=device, dtype=torch.float64)
    if not bool(((rates > 0) & (rates < math.inf)).all()):
        raise ValueError(f"lr must be finite and > 0 everywhere; got {lr}")
    try:
        rates = rates.broadcast_to(shape)
    except RuntimeError:
        raise ValueError(
            f"lr must broadcast to the coefficients' shape {tuple(shape)}; got shape "
            f"{tuple(lr.shape)}"
        ) from None
    return rates.reshape(-1, 1)


def _starts_from_x0(x0: Any, shape: torch.Size, device: torch.device) -> Tensor:
    """The pairs of starts x0 as complex (n, 2), checked: numbers, finite, shape (..., 2)."""
    try:
        given = torch.as_tensor(x0, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"x0 must be a pair of starts, real or complex numbers (shape (..., 2)); got {x0!r}"
        ) from None
    if given.dtype == torch.bool:
        raise TypeError(f"x0 must hold numbers; got booleans: {x0!r}")
    if not isinstance(x0, Tensor | np.ndarray):  # Python floats: float64, not torch's default
        wide = torch.complex128 if given.is_complex() else torch.float64
        given = torch.as_tensor(x0, dtype=wide, device=device)
    given = given.to(torch.complex128)
    if given.dim() == 0 or given.shape[-1] != 2:
        raise ValueError(f"x0 must be a pair of starts (shape (..., 2)); got {x0!r}")
    if not bool(torch.isfinite(given).all()):
        raise ValueError(f"x0 must be finite numbers; got {x0!r}")
    try:
        return given.broadcast_to((*shape, 2)).reshape(-1, 2)
    except RuntimeError:
        raise ValueError(
            f"x0 must broadcast to the coefficients' shape {tuple(shape)} + (2,); got shape "
            f"{tuple(given.shape)}"
        ) from None


OptimizerFactory = Callable[..., torch.optim.Optimizer]


def solve_quadratic(
    a: Any,
    b: Any,
    c: Any,
    method: str | None = None,
    *,
    lr: float | Tensor | None = None,
    optimizer: OptimizerFactory | None = None,
    x0: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    return_path: bool = False,
) -> QuadraticRoots:
    """Roots of a x² + b x + c = 0 by descent on L(x) = f(x)² (or another method).

    ``a, b, c``: Python numbers, sequences, numpy arrays or tensors, broadcast together; any
    float dtype and device (computed in float64; the roots are complex128 for float64 and
    Python input, complex64 otherwise). ``method``: by default "gauss-newton", or "gd" when
    ``lr`` or ``optimizer`` is given. Methods:

    - ``"gauss-newton"`` (default): x_{k+1} = x_k - η_k L'(x_k), L'(x) = 2 f(x) f'(x), with the
      step η_k = 1/(2 f'(x_k)²) — Gauss–Newton on the least-squares loss f², which makes each
      step Newton's step f/f' — and f by compensated Horner, so every root is exact to the last
      bits. From a root bound on each side of the vertex, v ∓ sqrt(v² + |c/a|) (v = -b/2a;
      widened by 2^-20), outside both roots: a few steps each (3.7 on average for
      standard-normal coefficients); complex pairs by the same descent on the vertical line
      through the vertex. See :mod:`handgrad.roots.lanes`. For millions of equations,
      :func:`handgrad.roots.compiled.solve_gauss_newton_compiled` gives the same result
      bitwise through torch.compile.
    - ``"gd"`` with ``lr``: gradient descent with a fixed learning rate, the classroom update
      x_{k+1} = x_k - lr·L'(x_k) exactly, from ``x0`` (a pair of starts, real or complex,
      broadcast to (*S, 2)) or the default starts v ± 1.25 δ (δ the roots' distance from the
      vertex; see :mod:`handgrad.roots.fixed_step`). Near a root it converges for
      lr < 1/f'(x*)² = 1/|b² - 4ac| (:func:`handgrad.roots.stability_limit`). ``lr``: a
      number, or a tensor broadcast to the batch (one rate per equation; see
      :func:`handgrad.roots.default_learning_rate`). With ``optimizer`` (a torch.optim /
      handgrad.optim class, or any callable ``params -> Optimizer``; given ``lr=lr`` when lr
      is set) the optimizer takes the steps from the same gradient. A start stops when its
      backward error is below ``tol`` (default 1e-12); ``per_start`` reports how each start
      ended (converged, diverged at step k, at the vertex, cycling, stuck, slow, erratic).
    - ``"gd"`` without ``lr`` and ``optimizer``: the first name of "gauss-newton" (whose step
      is η_k = 1/(2 f'(x_k)²)), kept as an alias; the result says ``method="gauss-newton"``.
    - ``"newton"``: textbook Newton on f in plain floating point, same starts; converged only
      where the roots are within 2^-50 of the true ones (not near a double root).
    - ``"closed"``: the numerically stable closed form with an error-free discriminant.

    ``tol``: for "gauss-newton"/"newton" the relative step size at which a start stops
    (default 2^-53); ``max_iter``: an integer from 1 to 2**63 - 1, default 100 ("gauss-newton",
    "newton"), 10 000 ("gd"). Bad coefficients make a row INVALID in a batch; for a single
    equation they raise ValueError. Bad options raise TypeError (wrong type) or ValueError.
    """
    fixed = lr is not None or optimizer is not None
    if method is None:
        method = "gd" if fixed else "gauss-newton"
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    check_positive("tol", tol)
    max_iter = check_max_iter(max_iter)
    if not isinstance(lr, Tensor):
        check_positive("lr", lr)
    if fixed and method != "gd":
        raise ValueError(f"lr and optimizer apply to method='gd'; got method={method!r}")
    if x0 is not None and not fixed:
        raise ValueError("x0 sets the starts of the fixed-step descent; give lr= or optimizer=")
    if method == "gd" and not fixed:
        method = "gauss-newton"  # the alias (see above)

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
    if method == "gauss-newton" and not return_path and flat_a.numel() > 2 * EAGER_BLOCK:
        return _solve_in_blocks((ta, tb, tc), (flat_a, flat_b, flat_c), tol, max_iter, out_dtype)
    if fixed:
        rate = _learning_rate(lr, shape, device, optimizer)
        starts = None if x0 is None else _starts_from_x0(x0, shape, device)
        return _solve_fixed_step(
            (ta, tb, tc), rate, optimizer, starts, tol, max_iter, return_path, out_dtype
        )
    problem = prepare(flat_a, flat_b, flat_c)
    result: MethodResult
    if method == "gauss-newton":
        result = descend_lanes(problem, tol=tol, max_iter=max_iter, record_path=return_path)
    elif method == "newton":
        result = newton(problem, tol=tol, max_iter=max_iter, record_path=return_path)
    else:
        result = closed_form(problem)
    return _finish(result, problem, (ta, tb, tc), method, out_dtype)


def _solve_fixed_step(
    coefficients: tuple[Tensor, Tensor, Tensor],
    lr: float | Tensor | None,
    optimizer: OptimizerFactory | None,
    given_starts: Tensor | None,
    tol: float | None,
    max_iter: int | None,
    return_path: bool,
    out_dtype: torch.dtype,
) -> QuadraticRoots:
    """The "gd" method: the fixed-step descent from each start, its roots put in the columns
    of the roots they reached (x1, x2), and each start's report."""
    shape = coefficients[0].shape
    flat_a, flat_b, flat_c = (t.reshape(-1) for t in coefficients)
    problem = prepare(flat_a, flat_b, flat_c)
    kind = problem.kind
    if given_starts is None:
        starts = default_starts(problem)
    else:
        linear = (kind == RootKind.LINEAR)[:, None]
        nan = complex(math.nan, math.nan)
        first_only = torch.stack([given_starts[:, 0], torch.full_like(given_starts[:, 0], nan)], 1)
        starts = torch.where(linear, first_only, given_starts)
        solvable = kind <= RootKind.LINEAR
        starts = torch.where(solvable[:, None], starts, nan)
    invalid = kind == RootKind.INVALID
    clean_a, clean_b, clean_c = (torch.where(invalid, 0.0, t) for t in (flat_a, flat_b, flat_c))
    run = fixed_step(
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
    exact = _finish(closed_form(problem), problem, coefficients, "closed", torch.complex128)
    roots, which = _by_root(run, exact.roots.reshape(-1, 2))
    planned = run.outcome != int(StartOutcome.NOT_RUN)
    done = (run.outcome == int(StartOutcome.CONVERGED)) | ~planned
    converged = done.all(dim=1) & planned.any(dim=1)
    converged |= (kind == RootKind.NO_SOLUTION) | (kind == RootKind.ANY_X)
    result = MethodResult(roots, run.steps.amax(dim=1), converged, scaled=False, path=run.path)
    finished = _finish(result, problem, coefficients, "gd", out_dtype)
    n = flat_a.numel()
    if isinstance(lr, Tensor):
        rates = lr.reshape(n)
    else:
        rates = torch.full((n,), math.nan if lr is None else float(lr), dtype=torch.float64)
    report = StartReport(
        start=starts.reshape(*shape, 2),
        outcome=run.outcome.reshape(*shape, 2),
        steps=run.steps.reshape(*shape, 2),
        final=run.final.reshape(*shape, 2),
        period=run.period.reshape(*shape, 2),
        root=which.reshape(*shape, 2),
        lr=rates.to(starts.device).reshape(shape),
        max_iter=10_000 if max_iter is None else max_iter,
    )
    return dataclasses.replace(finished, per_start=report)


def _by_root(run: FixedStepRun, exact: Tensor) -> tuple[Tensor, Tensor]:
    """Complex (n, 2) roots in the columns of the true roots ``exact`` (n, 2) they are nearest
    to (a tie, as at a double root, keeps a start's own column; of two starts that reached
    the same root, the nearer one), and int64 (n, 2): which root each converged start found
    (-1 for the others)."""
    reached = run.outcome == int(StartOutcome.CONVERGED)
    inf = torch.full_like(exact.real, math.inf)

    def distance(column: int) -> Tensor:
        """|final - exact root ``column``| for both starts (inf where that root is NaN)."""
        gap = (run.final - exact[:, column : column + 1]).abs()
        return torch.where(torch.isnan(gap), inf, gap)

    to_first, to_second = distance(0), distance(1)
    own = torch.stack([to_first[:, 0] <= to_second[:, 0], to_second[:, 1] <= to_first[:, 1]], 1)
    columns = torch.tensor([0, 1], device=exact.device).expand_as(own)
    which = torch.where(own, columns, 1 - columns)
    which = torch.where(reached, which, -1)
    nan = complex(math.nan, math.nan)
    found = []
    for column, gap in ((0, to_first), (1, to_second)):
        here = which == column
        second = here[:, 1] & (~here[:, 0] | (gap[:, 1] < gap[:, 0]))
        found.append(
            torch.where(second, run.final[:, 1], torch.where(here[:, 0], run.final[:, 0], nan))
        )
    return torch.stack(found, dim=1), which


def _coefficient_batch(a: Any, b: Any, c: Any) -> tuple[Tensor, Tensor, Tensor]:
    """a, b, c as float64 tensors of one shape (on their device), as solve_quadratic takes them."""
    converted = [_as_tensor(name, v)[0] for name, v in zip("abc", (a, b, c), strict=True)]
    devices = {t.device for t in converted}
    device = converted[0].device if len(devices) == 1 else torch.device("cpu")
    ta, tb, tc = torch.broadcast_tensors(
        *(t.to(device=device, dtype=torch.float64) for t in converted)
    )
    return ta, tb, tc


def stability_limit(a: Any, b: Any, c: Any) -> Tensor:
    """1 / f'(x*)² = 1 / |b² - 4ac| for each equation (float64, the batch's shape).

    A fixed step on f², x <- x - lr · 2 f(x) f'(x), converges near a root x* exactly when
    0 < lr < 1/f'(x*)², fastest at half of it: near x* the error is multiplied by
    1 - 2 lr f'(x*)² per step, and f'(x*)² = b² - 4ac at both roots (|D| for a complex pair;
    b² for a linear equation). inf for a double root (every lr is stable there, none fast);
    NaN for an equation without roots. See :mod:`handgrad.roots.fixed_step`.
    """
    ta, tb, tc = _coefficient_batch(a, b, c)
    flat = [t.reshape(-1) for t in (ta, tb, tc)]
    return stability_limit_of(prepare(*flat), *flat).reshape(ta.shape)


def default_learning_rate(a: Any, b: Any, c: Any) -> Tensor:
    """The learning rate the command line uses for "gd" without --lr: a quarter of the
    stability limit, 1/(4|D|) (1/(4(b² + 4|ac|)) for a double root); float64, batch shape."""
    ta, tb, tc = _coefficient_batch(a, b, c)
    flat = [t.reshape(-1) for t in (ta, tb, tc)]
    return default_learning_rate_of(prepare(*flat), *flat).reshape(ta.shape)


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
        method="gauss-newton",
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
