"""solve_quadratic's contract: result fields, conventions, input handling, errors, the descent."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from handgrad.roots import RootKind, solve_quadratic
from handgrad.roots.fixed_step import loss_gradient
from tests.roots.reference import on

NAN = complex(math.nan, math.nan)
ROOTS = [0.7639320225002103, 5.23606797749979]  # x² - 6x + 4 = 0, from mpmath


def test_classroom_equation_result_fields() -> None:
    result = solve_quadratic(1.0, -6.0, 4.0)
    assert result.roots.dtype == torch.complex128
    assert result.roots.shape == (2,)
    # 3 ∓ sqrt(5), correctly rounded (Python's 3 - math.sqrt(5) is an ulp off: cancellation).
    assert result.roots.tolist() == [complex(ROOTS[0]), complex(ROOTS[1])]
    assert RootKind(int(result.kind)) == RootKind.TWO_REAL
    assert result.kind.dtype == torch.int64
    assert 1 <= int(result.iterations) <= 10
    assert bool(result.converged)
    assert result.residual.shape == (2,)
    assert float(result.residual.max()) <= 2.0**-52
    assert result.path is None
    assert result.real_roots() == ROOTS


def test_scalar_repr_and_str_are_readable() -> None:
    result = solve_quadratic(1.0, -6.0, 4.0)
    text = repr(result)
    assert text.startswith("QuadraticRoots(1·x² - 6·x + 4 = 0, kind=TWO_REAL, roots=(")
    assert "0.7639320225002103" in text
    assert "converged=True" in text
    lines = str(result).splitlines()
    assert lines[0] == "1·x² - 6·x + 4 = 0: two real roots"
    assert lines[1].startswith("  x1 = 0.7639320225002103")
    assert "converged" in lines[-1]
    assert "-1.0-2.0j" in str(solve_quadratic(1, 2, 5))


def test_batch_repr_counts_kinds() -> None:
    text = repr(solve_quadratic([1, 1, 0], [-6, 2, 1], [4, 5, 1]))
    assert text == (
        "QuadraticRoots(shape=(3,), method='gauss-newton', kinds={TWO_REAL: 1, COMPLEX_PAIR: 1, "
        "LINEAR: 1}, converged=3/3)"
    )


@pytest.mark.parametrize(
    ("coefficients", "kind", "roots"),
    [
        ((1.0, -3.0, 2.0), RootKind.TWO_REAL, [1.0, 2.0]),
        ((-1.0, 3.0, -2.0), RootKind.TWO_REAL, [1.0, 2.0]),
        ((1.0, -2.0, 1.0), RootKind.DOUBLE, [1.0, 1.0]),
        ((1.0, 2.0, 5.0), RootKind.COMPLEX_PAIR, [complex(-1, -2), complex(-1, 2)]),
        ((-1.0, -2.0, -5.0), RootKind.COMPLEX_PAIR, [complex(-1, -2), complex(-1, 2)]),
        ((0.0, 2.0, -3.0), RootKind.LINEAR, [1.5, NAN]),
        ((0.0, 0.0, 1.0), RootKind.NO_SOLUTION, [NAN, NAN]),
        ((0.0, 0.0, 0.0), RootKind.ANY_X, [NAN, NAN]),
    ],
)
@pytest.mark.parametrize("method", ["gauss-newton", "gd", "newton", "closed"])
def test_kinds_ordering_and_nan_conventions(
    coefficients: tuple[float, float, float],
    kind: RootKind,
    roots: list[complex],
    method: str,
    device: torch.device,
) -> None:
    result = solve_quadratic(*on(device, *coefficients), method)
    assert RootKind(int(result.kind)) == kind
    assert result.roots.device.type == device.type
    expected = torch.tensor(roots, dtype=torch.complex128, device=device)
    if method == "newton" and kind == RootKind.DOUBLE:
        # Plain Newton stops about 1e-8 from a double root, and says so (see test_newton.py).
        torch.testing.assert_close(result.roots, expected, rtol=1e-7, atol=0)
        assert not bool(result.converged)
        return
    torch.testing.assert_close(result.roots, expected, equal_nan=True)
    assert bool(result.converged)
    assert result.method == ("gauss-newton" if method == "gd" else method)


def test_every_quadratic_takes_at_least_one_step(device: torch.device) -> None:
    result = solve_quadratic(*on(device, [1, 1, 1, 1, 0], [-3, -2, 2, 0, 1], [2, 1, 5, 0, 1]))
    assert bool((result.iterations >= 1).all())
    assert solve_quadratic(*on(device, 0, 0, 1)).iterations.item() == 0


def test_invalid_rows_do_not_abort_the_batch(device: torch.device) -> None:
    a = torch.tensor([1.0, math.nan, 1.0, math.inf], device=device)
    b = torch.tensor([-3.0, 1.0, -math.inf, 1.0], device=device)
    c = torch.tensor([2.0, 1.0, 1.0, 1.0], device=device)
    result = solve_quadratic(a, b, c)
    assert result.kind.tolist() == [RootKind.TWO_REAL] + [RootKind.INVALID] * 3
    assert result.roots[0].real.tolist() == pytest.approx([1.0, 2.0], rel=1e-15)
    assert bool(result.roots[1:].real.isnan().all())
    assert result.converged.tolist() == [True, False, False, False]
    assert result.iterations[1:].tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((math.nan, 1.0, 1.0), "a must be a finite number; got nan"),
        ((1.0, math.inf, 1.0), "b must be a finite number; got inf"),
        ((1.0, 1.0, -math.inf), "c must be a finite number; got -inf"),
    ],
)
def test_scalar_bad_input_raises_value_error_naming_the_argument(
    args: tuple[float, float, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        solve_quadratic(*args)


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        (
            {"method": "bisect"},
            ValueError,
            "method must be one of 'gauss-newton', 'gd', 'newton', 'closed'; got 'bisect'",
        ),
        ({"lr": 0.0}, ValueError, "lr must be a finite number > 0; got 0.0"),
        ({"lr": -1.0}, ValueError, "lr must be a finite number > 0; got -1.0"),
        ({"lr": math.inf}, ValueError, "lr must be a finite number > 0; got inf"),
        ({"lr": True}, TypeError, r"lr must be a number; got True \(bool\)"),
        ({"lr": "0.1"}, TypeError, r"lr must be a number; got '0.1' \(str\)"),
        ({"tol": math.nan}, ValueError, "tol must be a finite number > 0; got nan"),
        ({"tol": -1.0}, ValueError, "tol must be a finite number > 0; got -1.0"),
        ({"max_iter": 0}, ValueError, r"max_iter must be an integer from 1 to 2\*\*63 - 1"),
        ({"max_iter": -5}, ValueError, "max_iter must be an integer from 1 .* got -5"),
        (
            {"max_iter": 10**30},
            ValueError,
            r"max_iter must be an integer from 1 to 2\*\*63 - 1 \(iteration counts are int64\); "
            "got 1000000000000000000000000000000",
        ),
        ({"max_iter": True}, TypeError, "max_iter must be an integer; got True"),
        ({"max_iter": 2.0}, TypeError, r"max_iter must be an integer; got 2.0 \(float\)"),
        ({"lr": 0.1, "method": "closed"}, ValueError, "lr and optimizer apply to method='gd'"),
        ({"x0": (0.0, 1.0)}, ValueError, "x0 sets the starts of the fixed-step descent"),
        ({"lr": 0.1, "x0": 3.0}, ValueError, r"x0 must be a pair of starts"),
        ({"lr": 0.1, "x0": (1.0, 2.0, 3.0)}, ValueError, r"x0 must be a pair of starts"),
        (
            {"lr": 0.1, "x0": ["a", "b"]},
            TypeError,
            r"x0 must be a pair of starts, real or complex numbers .* got \['a', 'b'\]",
        ),
        ({"lr": 0.1, "x0": (True, False)}, TypeError, "x0 must hold numbers; got booleans"),
        ({"lr": 0.1, "x0": (math.nan, 0.0)}, ValueError, r"x0 must be finite numbers; got \(nan"),
        ({"lr": 0.1, "x0": (0.0, -math.inf)}, ValueError, "x0 must be finite numbers"),
        ({"lr": torch.tensor([0.1, -0.1])}, ValueError, "lr must be finite and > 0 everywhere"),
    ],
)
def test_bad_options_raise_clear_errors(
    kwargs: dict[str, object], exception: type[Exception], match: str
) -> None:
    with pytest.raises(exception, match=match):
        solve_quadratic(1.0, -6.0, 4.0, **kwargs)  # type: ignore[arg-type]


def test_non_numeric_and_complex_coefficients_raise_type_error() -> None:
    with pytest.raises(TypeError, match="b must be a number, a sequence of numbers"):
        solve_quadratic(1.0, "six", 4.0)
    with pytest.raises(TypeError, match=r"a must be real; got dtype torch\.complex64"):
        solve_quadratic(torch.tensor(1j), 1.0, 1.0)


def test_inputs_broadcast_across_python_numpy_and_torch() -> None:
    a = np.array([[1.0], [2.0]])
    b = [-6.0, 0.0, 2.0]
    c = torch.tensor(4.0, dtype=torch.float64)
    result = solve_quadratic(a, b, c)
    assert result.roots.shape == (2, 3, 2)
    assert result.kind.shape == result.iterations.shape == result.converged.shape == (2, 3)
    for i, ai in enumerate([1.0, 2.0]):
        for j, bj in enumerate(b):
            single = solve_quadratic(ai, bj, 4.0)
            assert torch.equal(result.roots[i, j], single.roots)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_any_float_dtype(dtype: torch.dtype, device: torch.device) -> None:
    a, b, c = (
        torch.tensor(v, dtype=dtype, device=device) for v in ([1.0, 1.0], [-3.0, 2.0], [2.0, 5.0])
    )
    result = solve_quadratic(a, b, c)
    expected = torch.complex128 if dtype == torch.float64 else torch.complex64
    assert result.roots.dtype == expected
    assert result.roots[0].tolist() == [complex(1), complex(2)]
    assert result.roots[1].tolist() == [complex(-1, -2), complex(-1, 2)]


def test_integer_tensors_are_promoted() -> None:
    result = solve_quadratic(torch.tensor(1), torch.tensor(-3), torch.tensor(2))
    assert result.roots.real.tolist() == [1.0, 2.0]


def test_device(device: torch.device) -> None:
    a, b, c = (torch.tensor(v, device=device, dtype=torch.float64) for v in ([1.0], [-6.0], [4.0]))
    result = solve_quadratic(a, b, c)
    assert result.roots.device.type == device.type
    assert result.roots.cpu().real.tolist() == [ROOTS]


def test_path_starts_on_both_sides_of_the_vertex_and_descends_loss(device: torch.device) -> None:
    result = solve_quadratic(*on(device, 1.0, -6.0, 4.0), return_path=True)
    assert result.path is not None
    steps = int(result.iterations)
    assert result.path.shape == (steps + 1, 2)
    left, right = result.path[:, 0].real, result.path[:, 1].real
    vertex = 3.0
    finite_left, finite_right = left[~left.isnan()], right[~right.isnan()]
    assert bool((finite_left < vertex).all())
    assert bool((finite_right > vertex).all())
    # Monotone: the left start moves right, the right start moves left, and f² falls.
    assert bool((finite_left.diff() >= 0).all())
    assert bool((finite_right.diff() <= 0).all())
    for path in (finite_left, finite_right):
        loss = (path * path - 6 * path + 4) ** 2
        assert bool((loss.diff() <= 0).all())
    assert float(finite_left[-1]) == result.roots[0].real.item()
    assert float(finite_right[-1]) == result.roots[1].real.item()


def test_default_descent_starts_from_a_root_bound_not_from_the_roots(device: torch.device) -> None:
    """The starts are v ∓ R, R = sqrt(v² + |c/a|) widened (a bound), never the closed form: the
    lanes visibly descend, several steps each."""
    result = solve_quadratic(*on(device, 1.0, -6.0, 4.0), return_path=True)
    assert result.path is not None
    path = result.path.cpu().real
    radius = math.hypot(3.0, 2.0 * (1.0 + 2.0**-20))
    assert path[0].tolist() == pytest.approx([3.0 - radius, 3.0 + radius], rel=1e-15)
    for column, root in enumerate(ROOTS):
        points = path[:, column][~path[:, column].isnan()]
        assert points.numel() > 2
        assert abs(float(points[0]) - root) > 1.3
        assert abs(float(points[1]) - root) >= 0.1  # the first iterate is no root either
    pair = solve_quadratic(*on(device, 1.0, 2.0, 5.0), return_path=True)  # -1 ± 2i
    assert pair.path is not None
    upper = pair.path[:, 1].cpu()
    upper = upper[~upper.real.isnan()]
    assert upper.numel() > 2
    assert float(upper[0].imag) == pytest.approx(math.sqrt(5.0) * (1.0 + 2.0**-20), rel=1e-15)
    generator = torch.Generator().manual_seed(11)
    a, b, c = torch.randn(3, 2048, dtype=torch.float64, generator=generator).to(device)
    iterations = solve_quadratic(a, b, c).iterations.double()
    assert float(iterations.mean()) >= 2.5
    assert int(iterations.min()) >= 2


def test_path_is_nan_after_a_start_stops(device: torch.device) -> None:
    result = solve_quadratic(*on(device, [1.0, 1.0], [-6.0, -2.0], [4.0, 1.0]), return_path=True)
    assert result.path is not None
    quick = int(result.iterations[0])
    assert result.path.shape[0] == int(result.iterations.max()) + 1
    assert bool(result.path[quick + 1 :, 0].real.isnan().all())


def test_complex_path_runs_down_the_vertical_line_through_the_vertex(
    device: torch.device,
) -> None:
    result = solve_quadratic(*on(device, 1.0, 2.0, 5.0), return_path=True)
    assert result.path is not None
    upper = result.path[:, 1]
    upper = upper[~upper.real.isnan()]
    assert bool((upper.real == -1.0).all())
    assert bool((upper.imag.diff() <= 0).all())
    assert upper[-1] == complex(-1, 2)


def test_gradient_of_the_loss_matches_autograd(device: torch.device) -> None:
    """The hand-derived 2 f conj(f') against autograd on L = |f(z)|² in (Re z, Im z)."""
    generator = torch.Generator().manual_seed(1)  # drawn on the CPU: the same on every device
    a, b, c = (torch.randn(50, dtype=torch.float64, generator=generator) for _ in range(3))
    a, b, c = a.to(device), b.to(device), c.to(device)
    x, y = (
        torch.randn(50, dtype=torch.float64, generator=generator).to(device).requires_grad_()
        for _ in range(2)
    )
    z = torch.complex(x, y)
    loss = (((a * z + b) * z + c).abs() ** 2).sum()
    grad_x, grad_y = torch.autograd.grad(loss, (x, y))
    _, gradient = loss_gradient(a, b, c, torch.complex(x.detach(), y.detach()))
    torch.testing.assert_close(gradient.real, grad_x, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(gradient.imag, grad_y, rtol=1e-13, atol=1e-13)


def test_fixed_learning_rate_is_exactly_the_classroom_update(device: torch.device) -> None:
    lr, x0 = 0.01, (0.0, 6.0)
    result = solve_quadratic(*on(device, 1.0, -6.0, 4.0), lr=lr, x0=x0, return_path=True)
    assert result.path is not None
    for column, start in enumerate(x0):
        x = start
        for k in range(1, 20):
            f, slope = (x - 6) * x + 4, 2 * x - 6  # Horner, as the library evaluates f
            x = x - lr * (2 * f * slope)
            assert result.path[k, column].real.item() == x
    assert bool(result.converged)
    torch.testing.assert_close(
        result.roots.real,
        torch.tensor(ROOTS, dtype=torch.float64, device=device),
        rtol=1e-11,
        atol=0,
    )


def test_learning_rate_above_one_over_d_diverges_and_says_so() -> None:
    d = 20.0  # b² - 4ac for x² - 6x + 4
    below = solve_quadratic(1.0, -6.0, 4.0, lr=0.9 / d, x0=(0.5, 5.5))
    above = solve_quadratic(1.0, -6.0, 4.0, lr=1.1 / d, x0=(0.5, 5.5), max_iter=2000)
    assert bool(below.converged)
    assert not bool(above.converged)
    assert bool(above.roots.real.isnan().all())


def test_fixed_step_finds_a_complex_pair_in_the_complex_plane(device: torch.device) -> None:
    result = solve_quadratic(*on(device, 1.0, 2.0, 5.0), lr=0.01)
    assert bool(result.converged)
    expected = torch.tensor([-1 - 2j, -1 + 2j], dtype=torch.complex128, device=device)
    torch.testing.assert_close(result.roots, expected, rtol=1e-11, atol=0)


def test_sgd_optimizer_reproduces_the_fixed_step_exactly(device: torch.device) -> None:
    coefficients = on(device, [1.0, 1.0], [-6.0, 2.0], [4.0, 5.0])
    fixed = solve_quadratic(*coefficients, lr=0.01, return_path=True)
    driven = solve_quadratic(*coefficients, optimizer=torch.optim.SGD, lr=0.01, return_path=True)
    assert fixed.path is not None
    assert driven.path is not None
    torch.testing.assert_close(driven.path, fixed.path, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(driven.iterations, fixed.iterations)


def test_adam_drives_the_descent_like_an_autograd_loop(device: torch.device) -> None:
    """Adam on our hand-written gradient = Adam on autograd's gradient of (x² - 6x + 4)²."""
    result = solve_quadratic(
        *on(device, 1.0, -6.0, 4.0),
        optimizer=torch.optim.Adam,
        lr=0.05,
        x0=(0.0, 6.0),
        return_path=True,
    )
    assert result.path is not None
    x = torch.tensor([0.0, 6.0], dtype=torch.float64, device=device, requires_grad=True)
    adam = torch.optim.Adam([x], lr=0.05)
    for k in range(1, 30):
        adam.zero_grad()
        (((x * x - 6 * x + 4) ** 2).sum()).backward()
        adam.step()
        torch.testing.assert_close(result.path[k].real, x.detach(), rtol=1e-12, atol=1e-12)
    assert bool(result.converged)
    assert int(result.iterations) < 10_000


def test_optimizer_factory_with_momentum(device: torch.device) -> None:
    factory = functools.partial(torch.optim.SGD, lr=0.005, momentum=0.9)
    result = solve_quadratic(*on(device, 1.0, -6.0, 4.0), optimizer=factory)
    assert bool(result.converged)
    expected = torch.tensor(ROOTS, dtype=torch.float64, device=device)
    torch.testing.assert_close(result.roots.real, expected, rtol=1e-10, atol=0)


def test_newton_is_limited_near_a_double_root_where_gd_is_not(device: torch.device) -> None:
    a, b, c = on(device, 1.0, -2.0, 1.0 - 2.0**-52)  # roots 1 ± 2^-26
    exact = [1 - 2.0**-26, 1 + 2.0**-26]
    gd = solve_quadratic(a, b, c).roots.real.tolist()
    assert gd == exact
    newton = solve_quadratic(a, b, c, "newton").roots.real.tolist()
    assert newton != exact


def test_big_batches_solved_in_blocks_are_bitwise_one_piece(
    monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    from handgrad.roots import quadratic

    generator = torch.Generator().manual_seed(11)
    a, b, c = torch.randn(3, 10, 70, dtype=torch.float64, generator=generator).to(device)
    a[0, :3], c[1, :4] = 0.0, b[1, :4] * b[1, :4] / (4 * a[1, :4])
    b[2, 0] = math.nan
    whole = solve_quadratic(a, b, c)
    monkeypatch.setattr(quadratic, "EAGER_BLOCK", 64)  # 11 blocks, the last one short
    blocks = solve_quadratic(a, b, c)
    assert blocks.roots.shape == (10, 70, 2)
    torch.testing.assert_close(blocks.coefficients[1], b, rtol=0.0, atol=0.0, equal_nan=True)
    for field in ("roots", "kind", "iterations", "converged", "residual"):
        exact = {"rtol": 0.0, "atol": 0.0, "equal_nan": True}
        torch.testing.assert_close(getattr(blocks, field), getattr(whole, field), **exact)
    # float32 input: the blocks keep the output dtypes.
    small = solve_quadratic(a.float(), b.float(), c.float())
    assert small.roots.dtype == torch.complex64
    assert small.residual.dtype == torch.float32
