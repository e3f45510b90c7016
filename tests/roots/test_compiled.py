"""The one test of the compiled path: error-free arithmetic survives torch.compile bit for bit.

Inductor could break two_sum/two_prod by reassociating or contracting a*b+c into an fma; it
compiles with -ffp-contract=off and without unsafe math, and this checks the outcome. The whole
compiled solver (handgrad.roots.compiled) is compared with the eager one, bitwise, by
benchmarks/bench_roots.py, where its compile time is paid once.
"""

from __future__ import annotations

import shutil
from fractions import Fraction

import pytest
import torch

from handgrad.roots.exact import compensated_horner, discriminant, two_prod, two_sum
from handgrad.roots.scaling import exponent, ldexp


def error_free_kernels(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    s, e = two_sum(a, b)
    p, q = two_prod(a, b)
    hi, lo, sign = discriminant(a, b, c)
    return (
        s,
        e,
        p,
        q,
        hi,
        lo,
        sign,
        compensated_horner(a, b, c, b),
        exponent(a),
        ldexp(a, -exponent(a)),
    )


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compiled_error_free_arithmetic_is_bitwise_eager() -> None:
    generator = torch.Generator().manual_seed(3)
    n = 4096
    mantissas = torch.rand(3, n, dtype=torch.float64, generator=generator) + 0.5
    exponents = torch.randint(-60, 60, (3, n), generator=generator)
    signs = torch.where(torch.rand(3, n, generator=generator) < 0.5, -1.0, 1.0)
    a, b, c = signs * torch.ldexp(mantissas, exponents.double())
    # Near-double-root rows, where the error terms decide the sign of the discriminant.
    c[:8] = b[:8] * b[:8] / (4 * a[:8])
    compiled = torch.compile(error_free_kernels, dynamic=False, fullgraph=True)
    for eager_value, compiled_value in zip(
        error_free_kernels(a, b, c), compiled(a, b, c), strict=True
    ):
        assert torch.equal(eager_value, compiled_value)
    s, e, p, q = (t[:16].tolist() for t in compiled(a, b, c)[:4])
    for i in range(16):
        x, y = Fraction(float(a[i])), Fraction(float(b[i]))
        assert Fraction(s[i]) + Fraction(e[i]) == x + y
        assert Fraction(p[i]) + Fraction(q[i]) == x * y
