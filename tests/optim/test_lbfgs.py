"""handgrad.optim.LBFGS (and its strong-Wolfe line search) against torch.optim.LBFGS."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor

from handgrad.optim import LBFGS
from handgrad.optim._line_search import cubic_minimizer, strong_wolfe
from tests.optim._cases import COMMON_ERROR_CASES
from tests.optim.harness import (
    Objective,
    _closure,
    assert_matches_torch,
    assert_same_error,
    make_params,
    torch_inputs_params,
)

EXTRA = [
    ("short memory", {"history_size": 2, "max_iter": 5}),
    (
        "strong_wolfe, short memory, max_eval",
        {
            "line_search_fn": "strong_wolfe",
            "history_size": 3,
            "max_iter": 7,
            "max_eval": 9,
        },
    ),
    ("strong_wolfe, tensor lr", {"line_search_fn": "strong_wolfe", "lr": torch.tensor(0.5)}),
    ("tolerance_change", {"tolerance_change": 1e-4, "lr": 0.5}),
]
STEPS = 15  # each step runs up to max_iter (20) iterations: 300 updates of x


def _assert_lbfgs_states_match(ours: LBFGS, theirs: torch.optim.LBFGS) -> None:
    """LBFGS keeps lists (old_dirs, old_stps, ro, al) and numbers beside tensors."""
    mine, reference = ours.state[ours._params[0]], theirs.state[theirs._params[0]]  # type: ignore[attr-defined]
    assert set(mine) == set(reference)

    def same(a: Any, b: Any, key: str) -> None:
        if isinstance(b, Tensor):
            assert isinstance(a, Tensor), key
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=key)
        elif isinstance(b, list):
            assert isinstance(a, list), key
            assert len(a) == len(b), key
            for x, y in zip(a, b, strict=True):
                same(x, y, key)
        elif isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12), key
        else:
            assert a == b, key

    for key, value in reference.items():
        same(mine[key], value, key)


@pytest.mark.parametrize("hyperparams", torch_inputs_params("LBFGS", EXTRA))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_matches_torch(
    hyperparams: dict[str, Any], dtype: torch.dtype, device: torch.device
) -> None:
    # One parameter group only (torch refuses two); the loss returned by step is compared too.
    assert_matches_torch(
        LBFGS,
        torch.optim.LBFGS,
        hyperparams,
        dtype=dtype,
        steps=STEPS,
        closure_based=True,
        two_groups=False,
        check_state=False,
        device=device,
    )


@pytest.mark.parametrize(
    "hyperparams", [{}, {"line_search_fn": "strong_wolfe", "history_size": 4}], ids=str
)
def test_state_matches_torch(hyperparams: dict[str, Any], device: torch.device) -> None:
    ours_params = make_params([(4, 3), (5,)], torch.float64, 3, device=device)
    theirs_params = make_params([(4, 3), (5,)], torch.float64, 3, device=device)
    objective = Objective([(4, 3), (5,)], torch.float64, 3, device=device)
    ours, theirs = (
        LBFGS(ours_params, **hyperparams),
        torch.optim.LBFGS(theirs_params, **hyperparams),
    )
    for _ in range(6):
        for opt, ps in ((ours, ours_params), (theirs, theirs_params)):
            opt.step(_closure(ps, objective))
    _assert_lbfgs_states_match(ours, theirs)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_complex_params_match_torch(line_search_fn: str | None, device: torch.device) -> None:
    assert_matches_torch(
        LBFGS,
        torch.optim.LBFGS,
        {"line_search_fn": line_search_fn},
        steps=8,
        complex_params=True,
        closure_based=True,
        two_groups=False,
        check_state=False,
        device=device,
    )


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_state_dict_handover(
    direction: str, line_search_fn: str | None, device: torch.device
) -> None:
    shapes = [(), (4, 3), (2, 3, 4)]
    objective = Objective(shapes, torch.float64, 0, device=device)
    kwargs = {"line_search_fn": line_search_fn, "history_size": 5, "max_iter": 4}
    reference_params = make_params(shapes, torch.float64, 0, device=device)
    reference = torch.optim.LBFGS(reference_params, **kwargs)
    params = make_params(shapes, torch.float64, 0, device=device)
    first, second = (
        (torch.optim.LBFGS, LBFGS) if direction == "torch_to_ours" else (LBFGS, torch.optim.LBFGS)
    )
    current = first(params, **kwargs)
    for step in range(12):
        if step == 5:
            receiver = second(params, **kwargs)
            receiver.load_state_dict(copy.deepcopy(current.state_dict()))
            current = receiver
        reference.step(_closure(reference_params, objective))
        current.step(_closure(params, objective))
        for p, q in zip(params, reference_params, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


@COMMON_ERROR_CASES
def test_common_bad_inputs(description: str, params: Any, kwargs: dict[str, Any]) -> None:
    kind, _, _ = assert_same_error(LBFGS, torch.optim.LBFGS, kwargs, params=params)
    assert kind != "ok", description


def test_bad_inputs_like_torch() -> None:
    kind, error, _ = assert_same_error(LBFGS, torch.optim.LBFGS, {"lr": -1.0})
    assert (kind, error) == ("raise", ValueError)

    def two_groups() -> list[dict[str, Any]]:
        return [{"params": [torch.zeros(2)]}, {"params": [torch.zeros(3)], "lr": 0.1}]

    kind, error, message = assert_same_error(LBFGS, torch.optim.LBFGS, {}, params=two_groups)
    assert (kind, error) == ("raise", ValueError)
    assert "parameter groups" in message


def test_unknown_line_search_fails_at_step_like_torch() -> None:
    for cls in (LBFGS, torch.optim.LBFGS):
        x = torch.tensor([1.0, 2.0])

        def closure(x: Tensor = x) -> Tensor:
            x.grad = 2 * x
            return (x * x).sum()

        opt = cls([x], line_search_fn="backtracking")
        with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
            opt.step(closure)


def test_step_needs_a_closure() -> None:
    with pytest.raises(TypeError):
        LBFGS([torch.zeros(2)]).step()  # type: ignore[call-arg]


def test_stationary_start_returns_at_once() -> None:
    x = torch.zeros(3, dtype=torch.float64)
    calls = []

    def closure() -> Tensor:
        calls.append(1)
        x.grad = torch.zeros(3, dtype=torch.float64)
        return torch.tensor(0.0, dtype=torch.float64)

    opt = LBFGS([x])
    opt.step(closure)
    assert len(calls) == 1
    assert opt.state[x]["func_evals"] == 1
    assert opt.state[x]["n_iter"] == 0


def test_cubic_minimizer_is_exact_on_a_quadratic() -> None:
    # f(x) = (x − 0.3)²: the cubic through two points with their slopes is f itself.
    f = lambda x: (x - 0.3) ** 2  # noqa: E731
    g = lambda x: 2 * (x - 0.3)  # noqa: E731
    x1, x2 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for a, b in ((x1, x2), (x2, x1)):
        best = cubic_minimizer(a, f(a), g(a), b, f(b), g(b))
        assert float(best) == pytest.approx(0.3, abs=1e-15)
    # Bounds clamp the answer.
    assert float(cubic_minimizer(x1, f(x1), g(x1), x2, f(x2), g(x2), bounds=(0.5, 2.0))) == 0.5


def test_cubic_minimizer_without_a_real_minimum_takes_the_midpoint() -> None:
    # Slopes +1 at both ends and f(1) − f(0) = 2/3: d₁ = 0, d₁² − g₁g₂ = −1 < 0, monotone.
    one = torch.tensor(1.0, dtype=torch.float64)
    assert float(cubic_minimizer(0.0, 0.0, one, 1.0, 2 / 3, one, bounds=(2.0, 4.0))) == 3.0


def test_strong_wolfe_conditions_hold_at_the_returned_step() -> None:
    # φ(t) = f(x₀ + t d) for the double well f(x) = x⁴ − 3x² + x, from x₀ = −0.2.
    x0 = torch.tensor([-0.2], dtype=torch.float64)
    d = -(4 * x0**3 - 6 * x0 + 1)

    def evaluate(t: Any) -> tuple[float, Tensor]:
        x = x0 + t * d
        return float((x**4 - 3 * x**2 + x).sum()), 4 * x**3 - 6 * x + 1

    loss, grad = evaluate(0.0)
    slope = grad.dot(d)
    f_new, g_new, t, evals = strong_wolfe(evaluate, 1.0, d, loss, grad, slope)
    assert evals >= 2  # the first trial overshoots: the zoom phase runs
    assert f_new <= loss + 1e-4 * float(t) * float(slope)
    assert abs(float(g_new.dot(d))) <= 0.9 * abs(float(slope))


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_converges_on_rosenbrock(line_search_fn: str | None, device: torch.device) -> None:
    xy = torch.tensor([-1.5, 2.0], dtype=torch.float64, device=device)

    def closure() -> Tensor:
        x, y = xy
        xy.grad = torch.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    # Without a line search the fixed step stops on tolerance_change a little short.
    opt = LBFGS([xy], lr=1 if line_search_fn else 0.5, line_search_fn=line_search_fn, max_iter=100)
    for _ in range(20):
        opt.step(closure)
    atol = 1e-5 if line_search_fn else 1e-4
    expected = torch.ones(2, dtype=torch.float64, device=device)
    torch.testing.assert_close(xy, expected, atol=atol, rtol=0)
