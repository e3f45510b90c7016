"""handgrad.roots vs numpy closed forms on a million float64 quadratic equations.

Usage: ``python -m benchmarks.bench_roots [--quick] [--n N] [--repeats R] [--no-compile]``.

The references run in the same process on the same coefficients:

- numpy *accurate*: the closed form with the same guarantees as ours: power-of-two scaling of
  the coefficients and of x (frexp/ldexp), the discriminant from Dekker's error-free products
  with its exact sign (Shewchuk's expansion), then q = -(B + sign(B) sqrt(D))/2, q/A, C/q;
- numpy *plain*: the textbook stable formula, fast but wrong near double roots and at extreme
  exponents.

Every equation must converge (checked), and the gauss-newton roots (the default method, once
called "gd") are compared with the accurate closed form (largest relative difference, in eps);
the compiled path with the eager one (bitwise).
Prints a markdown table; the solvers run in interleaved rounds (one call of each per round, so
that the load of a shared machine falls on all alike) and the times are the medians.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from handgrad.roots import solve_quadratic
from handgrad.roots.compiled import FUSED_STEPS, solve_gauss_newton_compiled

EPS = 2.0**-52
_SPLITTER = 134217729.0


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bv = s - a
    av = s - bv
    return s, (a - av) + (b - bv)


def _two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = a * b
    ta, tb = _SPLITTER * a, _SPLITTER * b
    ah = ta - (ta - a)
    bh = tb - (tb - b)
    al, bl = a - ah, b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def numpy_accurate(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Roots (re, im), each (n, 2), of a x² + b x + c = 0 (a != 0), scaled and error-free."""
    _, ea = np.frexp(a)
    _, eb = np.frexp(b)
    _, ec = np.frexp(c)
    low = np.int32(-(1 << 20))
    eb = np.where(b == 0, low, eb)
    ec_nz = np.where(c == 0, low, ec)
    k = np.where(c != 0, (ec - ea) // 2, np.where(b != 0, eb - ea, 0))
    s = np.maximum(np.maximum(ea + 2 * k, eb + k), ec_nz)
    big_a, big_b, big_c = np.ldexp(a, 2 * k - s), np.ldexp(b, k - s), np.ldexp(c, -s)
    p1, e1 = _two_prod(big_b, big_b)
    p2, e2 = _two_prod(4.0 * big_a, big_c)
    q, h0 = _two_sum(-e2, e1)
    q, h1 = _two_sum(q, p1)
    top, g0 = _two_sum(-p2, h0)
    top, g1 = _two_sum(top, h1)
    top, g2 = _two_sum(top, q)
    d = top + (g2 + (g1 + g0))
    root_d = np.sqrt(np.abs(d))
    qq = -0.5 * (big_b + np.copysign(root_d, big_b))
    vertex = -big_b / (2.0 * big_a)
    real = d >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        y1 = np.where(real, qq / big_a, vertex)
        y2 = np.where(real, np.where(qq == 0, 0.0, big_c / qq), vertex)
    half = np.where(real, 0.0, root_d / (2.0 * np.abs(big_a)))
    re = np.stack([np.minimum(y1, y2), np.maximum(y1, y2)], axis=1)
    im = np.stack([-half, half], axis=1)
    kk = k[:, None]
    return np.ldexp(re, kk), np.ldexp(im, kk)


def numpy_plain(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The textbook stable formula, no scaling, rounded discriminant."""
    d = b * b - 4.0 * a * c
    root_d = np.sqrt(np.abs(d))
    q = -0.5 * (b + np.copysign(root_d, b))
    real = d >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        x1 = np.where(real, q / a, -b / (2 * a))
        x2 = np.where(real, c / q, -b / (2 * a))
    half = np.where(real, 0.0, root_d / (2 * np.abs(a)))
    return np.stack([x1, x2], axis=1), np.stack([-half, half], axis=1)


def _interleaved_times(
    functions: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each function, one call of each per round (so that the load of a
    shared machine falls on all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return times


def coefficients(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standard-normal a, b, c (about a third complex pairs), a != 0."""
    generator = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(n, dtype=torch.float64, generator=generator) for _ in range(3))
    return torch.where(a == 0, 1.0, a), b, c


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_roots", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1e5 equations, 1 repeat")
    parser.add_argument("--n", type=int, default=None, help="equations (default 1e6)")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n = args.n or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 5)
    a, b, c = coefficients(n)
    an, bn, cn = a.numpy(), b.numpy(), c.numpy()

    reference_re, reference_im = numpy_accurate(an, bn, cn)

    def check(result_roots: torch.Tensor, converged: torch.Tensor) -> str:
        if not bool(converged.all()):
            return f"{int((~converged).sum())} NOT converged"
        got_re, got_im = result_roots.real.numpy(), result_roots.imag.numpy()
        scale_re = np.where(reference_re == 0, 1.0, np.abs(reference_re))
        scale_im = np.where(reference_im == 0, 1.0, np.abs(reference_im))
        worst = max(
            float(np.max(np.abs(got_re - reference_re) / scale_re)),
            float(np.max(np.abs(got_im - reference_im) / scale_im)),
        )
        return f"all converged; max rel. diff. vs accurate numpy {worst / EPS:.1f} eps"

    functions: dict[str, Callable[[], object]] = {
        "numpy accurate closed form": lambda: numpy_accurate(an, bn, cn),
        "numpy plain stable formula": lambda: numpy_plain(an, bn, cn),
    }
    notes = {
        "numpy accurate closed form": "scaling + error-free discriminant",
        "numpy plain stable formula": "fast, inaccurate near double roots / extremes",
    }
    eager = solve_quadratic(a, b, c)
    compile_seconds = None
    if not args.no_compile:
        started = time.perf_counter()
        result = solve_gauss_newton_compiled(a, b, c)
        compile_seconds = time.perf_counter() - started
        same = all(
            torch.equal(*(torch.view_as_real(t) if t.is_complex() else t for t in pair))
            for pair in (
                (result.roots, eager.roots),
                (result.iterations, eager.iterations),
                (result.converged, eager.converged),
                (result.residual, eager.residual),
            )
        )
        stragglers = int((result.iterations > FUSED_STEPS).sum())
        name = "handgrad gauss-newton (compiled)"
        functions[name] = functools.partial(solve_gauss_newton_compiled, a, b, c)
        notes[name] = check(result.roots, result.converged)
        notes[name] += "; bitwise equal to eager" if same else "; DIFFERS from eager"
        notes[name] += (
            f"; {stragglers} equations past the {FUSED_STEPS} fused steps (re-solved eagerly)"
        )
    for method in ("gauss-newton", "closed"):
        result = eager if method == "gauss-newton" else solve_quadratic(a, b, c, method)
        name = f"handgrad {method} (eager)"
        functions[name] = functools.partial(solve_quadratic, a, b, c, method)
        notes[name] = check(result.roots, result.converged)
        if method == "gauss-newton":
            notes[name] += f"; iterations mean {float(result.iterations.double().mean()):.2f}, "
            notes[name] += f"max {int(result.iterations.max())}"
    times = _interleaved_times(functions, repeats)
    median = {name: statistics.median(t) for name, t in times.items()}
    accurate_time = median["numpy accurate closed form"]
    plain_time = median["numpy plain stable formula"]

    print(
        f"{n:,} float64 equations (a, b, c standard normal), median of {repeats} rounds; "
        f"torch intra-op threads {torch.get_num_threads()} (numpy's ufuncs: 1 thread); "
        f"compiled path: one fused loop over all equations, {FUSED_STEPS} steps\n"
    )
    print("| solver | seconds | / numpy accurate | / numpy plain | notes |")
    print("|---|---|---|---|---|")
    for name, seconds in median.items():
        print(
            f"| {name} | {seconds:.4f} | {seconds / accurate_time:.2f} | "
            f"{seconds / plain_time:.2f} | {notes[name]} |"
        )
    if compile_seconds is not None:
        compiled_name = "handgrad gauss-newton (compiled)"
        fastest = min(times[compiled_name]) / min(times["numpy accurate closed form"])
        ratio = median[compiled_name] / accurate_time
        verdict = "met" if ratio <= 1.0 else "NOT met"
        print(
            f"\nGoal (gauss-newton <= 1.0x numpy accurate): {verdict} by the compiled path, "
            f"{ratio:.2f}x (medians), {fastest:.2f}x (fastest calls)."
        )
        print(f"First compiled call (compilation included): {compile_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
