"""Optimizer trajectories: the runner's paths against the update rules, and its guard."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import handgrad.optim
from handgrad.landscapes.functions2d import FUNCTIONS, Function2D
from handgrad.landscapes.trajectories import (
    Trajectory,
    default_lr,
    resolve_optimizer,
    run_trajectories,
    run_trajectory,
)

ROSENBROCK = FUNCTIONS["rosenbrock"]
SADDLE = FUNCTIONS["saddle"]
# Everything a plain (2,) point can be optimized with.
RUNNABLE = [
    "sgd", "momentum", "nesterov", "asgd", "rmsprop", "adam", "adamw", "nadam", "radam",
    "adamax", "adagrad", "adadelta", "rprop", "adafactor",
]  # fmt: skip


def _torch_class(name: str) -> type[Any]:
    classes = {n.lower(): getattr(torch.optim, n) for n in dir(torch.optim)}
    cls: type[Any] = classes[name]
    return cls


def _handgrad_or_torch(name: str) -> type[Any]:
    """The handgrad class; its torch.optim namesake while that handgrad class is not written."""
    try:
        return handgrad.optim.optimizer_class(name)
    except ImportError:
        return _torch_class(name)


def _handgrad_available(name: str) -> bool:
    try:
        handgrad.optim.optimizer_class(name)
    except ImportError:
        return False
    return True


def _gradient(function: Function2D, p: torch.Tensor) -> torch.Tensor:
    return torch.stack(function.gradient(p[0], p[1]))


def _run(function: Function2D, name: str, **kwargs: Any) -> Trajectory:
    return run_trajectory(function, name, lookup=_handgrad_or_torch, **kwargs)


# --- the paths follow the update rules -------------------------------------------------------


def test_sgd_path_is_plain_gradient_descent() -> None:
    lr = 1e-3
    trajectory = _run(ROSENBROCK, "sgd", steps=40, lr=lr)
    p = torch.tensor(ROSENBROCK.start, dtype=torch.float64)
    expected = [p.clone()]
    for _ in range(40):
        p = p - lr * _gradient(ROSENBROCK, p)
        expected.append(p)
    torch.testing.assert_close(trajectory.points, torch.stack(expected), rtol=1e-14, atol=1e-14)
    assert trajectory.values[-1] == pytest.approx(float(ROSENBROCK.value(p[0], p[1])), rel=1e-14)


def test_momentum_is_the_heavy_ball_with_momentum_0_9() -> None:
    lr = 1e-3
    trajectory = _run(ROSENBROCK, "momentum", steps=40, lr=lr)
    p = torch.tensor(ROSENBROCK.start, dtype=torch.float64)
    velocity = torch.zeros(2, dtype=torch.float64)
    for _ in range(40):
        # v ← 0.9 v + g (torch's buffer starts at the first gradient: same as from zero here)
        velocity = 0.9 * velocity + _gradient(ROSENBROCK, p)
        p = p - lr * velocity
    torch.testing.assert_close(trajectory.points[-1], p, rtol=1e-13, atol=1e-13)


def test_adam_path_follows_the_bias_corrected_adam_rule() -> None:
    lr, beta1, beta2, eps = 0.03, 0.9, 0.999, 1e-8
    trajectory = _run(ROSENBROCK, "adam", steps=60)
    assert trajectory.lr == lr
    p = torch.tensor(ROSENBROCK.start, dtype=torch.float64)
    m = torch.zeros(2, dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    for t in range(1, 61):
        g = _gradient(ROSENBROCK, p)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        p = p - lr * m_hat / (v_hat.sqrt() + eps)
    torch.testing.assert_close(trajectory.points[-1], p, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", RUNNABLE)
def test_handgrad_optimizers_draw_torch_optims_path(name: str) -> None:
    base = {"momentum": "sgd", "nesterov": "sgd"}.get(name, name)
    if not _handgrad_available(base):
        pytest.skip(f"handgrad.optim has no {base!r} yet")
    ours = run_trajectory(FUNCTIONS["beale"], name, steps=200)
    reference = run_trajectory(FUNCTIONS["beale"], name, steps=200, lookup=_torch_class)
    torch.testing.assert_close(ours.points, reference.points, rtol=1e-12, atol=1e-12)


def test_the_feature_uses_handgrad_optimizers_by_default() -> None:
    if not _handgrad_available("adam"):
        pytest.skip("handgrad.optim has no Adam yet")
    cls, extra = resolve_optimizer("adam")
    assert cls.__module__.startswith("handgrad.optim")
    assert extra == {}
    cls, extra = resolve_optimizer("Nesterov")
    assert extra == {"momentum": 0.9, "nesterov": True}


def test_runner_uses_no_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("autograd was called")

    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    trajectory = _run(ROSENBROCK, "adam", steps=20)
    assert not trajectory.points.requires_grad
    assert trajectory.steps_taken == 20


# --- defaults: every optimizer starts at the same point and goes downhill ---------------------


@pytest.mark.parametrize("function_name", ["rosenbrock", "beale", "himmelblau"])
def test_every_optimizer_goes_downhill_from_the_shared_start(function_name: str) -> None:
    function = FUNCTIONS[function_name]
    trajectories = run_trajectories(function, RUNNABLE, steps=150, lookup=_handgrad_or_torch)
    assert [t.optimizer for t in trajectories] == RUNNABLE
    for trajectory in trajectories:
        assert trajectory.points[0].tolist() == list(function.start), trajectory.optimizer
        assert trajectory.diverged_at is None, trajectory.optimizer
        assert trajectory.final_value < float(trajectory.values[0]), trajectory.optimizer
        assert torch.isfinite(trajectory.points).all()


def test_adam_reaches_rosenbrocks_minimum_with_its_defaults() -> None:
    trajectory = _run(ROSENBROCK, "adam")
    assert trajectory.steps_taken == ROSENBROCK.steps
    distance = ROSENBROCK.distance_to_minimum(trajectory.final_point)
    assert distance is not None
    assert distance < 1e-2
    assert trajectory.final_value < 1e-5


def test_plain_sgd_is_still_in_rosenbrocks_valley_when_adam_has_arrived() -> None:
    sgd = _run(ROSENBROCK, "sgd")
    distance = ROSENBROCK.distance_to_minimum(sgd.final_point)
    assert distance is not None
    assert 0.3 < distance < 1.5  # the textbook picture: slow along the valley floor


def test_himmelblau_optimizers_find_different_minima_from_near_the_maximum() -> None:
    function = FUNCTIONS["himmelblau"]
    sgd, adam = run_trajectories(function, ["sgd", "adam"], lookup=_handgrad_or_torch)
    assert sgd.final_point == pytest.approx(function.minima[2], abs=1e-6)
    assert adam.final_point == pytest.approx(function.minima[1], abs=1e-6)


def test_saddle_sgd_stays_on_the_stable_axis_and_escapes_off_it() -> None:
    on_axis = _run(SADDLE, "sgd", start=(1.0, 0.0))
    assert on_axis.points[:, 1].abs().max() == 0.0
    assert on_axis.final_point[0] == pytest.approx(0.0, abs=0.01)  # it settles on the saddle
    off_axis = _run(SADDLE, "sgd")  # from (1, 1e-3): y grows like (1 + 2 lr)^t
    assert off_axis.final_point[1] == pytest.approx(1e-3 * 1.02**300, rel=1e-9)
    adam = _run(SADDLE, "adam")  # normalised steps leave at once
    assert adam.final_point[1] > 10 * off_axis.final_point[1]


def test_default_lr_by_family() -> None:
    rates = ROSENBROCK.learning_rates
    assert default_lr(ROSENBROCK, "sgd") == rates["sgd"]
    assert default_lr(ROSENBROCK, "ASGD") == rates["sgd"]
    assert default_lr(ROSENBROCK, "momentum") == rates["momentum"]
    assert default_lr(ROSENBROCK, "nesterov") == rates["momentum"]
    assert default_lr(ROSENBROCK, "adam") == rates["adaptive"]
    assert default_lr(ROSENBROCK, "rmsprop") == rates["adaptive"]
    assert default_lr(ROSENBROCK, "adagrad") == 10 * rates["adaptive"]
    assert default_lr(ROSENBROCK, "radam") == rates["sgd"]
    assert default_lr(ROSENBROCK, "adadelta") == 1.0


# --- the guard against divergence -------------------------------------------------------------


def test_divergence_stops_the_run_and_keeps_the_finite_path() -> None:
    trajectory = _run(ROSENBROCK, "sgd", lr=0.1, steps=500)
    assert trajectory.diverged_at is not None
    assert 1 < trajectory.diverged_at < 20
    assert len(trajectory.points) == trajectory.diverged_at  # start + the finite steps
    assert trajectory.steps_taken == trajectory.diverged_at - 1
    assert torch.isfinite(trajectory.points).all()
    assert torch.isfinite(trajectory.values).all()
    assert math.isfinite(trajectory.final_value)


@given(
    name=st.sampled_from(sorted(FUNCTIONS)),
    optimizer=st.sampled_from(["sgd", "momentum", "adam", "rmsprop"]),
    log_lr=st.floats(-4, 1),
    unit_start=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_any_lr_from_any_start_gives_a_finite_path_or_reports_divergence(
    name: str, optimizer: str, log_lr: float, unit_start: tuple[float, float]
) -> None:
    function = FUNCTIONS[name]
    (x_lo, x_hi), (y_lo, y_hi) = function.window
    start = (x_lo + unit_start[0] * (x_hi - x_lo), y_lo + unit_start[1] * (y_hi - y_lo))
    trajectory = _run(function, optimizer, lr=10**log_lr, steps=30, start=start)
    assert torch.isfinite(trajectory.points).all()
    assert torch.isfinite(trajectory.values).all()
    assert trajectory.points[0].tolist() == list(start)
    expected_points = 31 if trajectory.diverged_at is None else trajectory.diverged_at
    assert len(trajectory.points) == len(trajectory.values) == expected_points
    # The recorded values are f at the recorded points.
    x, y = trajectory.points[:, 0], trajectory.points[:, 1]
    torch.testing.assert_close(trajectory.values, function.value(x, y), rtol=1e-14, atol=0)


def test_an_overflowing_value_counts_as_divergence() -> None:
    # The saddle's value -y² overflows to -inf before y does.
    trajectory = _run(SADDLE, "sgd", lr=0.9, steps=2000, start=(0.0, 1.0))
    assert trajectory.diverged_at is not None
    assert torch.isfinite(trajectory.points).all()
    assert torch.isfinite(trajectory.values).all()


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, r"steps must be a positive integer, got 0"),
        ({"steps": 2.5}, r"steps must be a positive integer, got 2.5"),
        ({"steps": True}, r"steps must be a positive integer, got True"),
        ({"lr": -0.1}, r"lr must be a positive finite number, got -0.1"),
        ({"lr": float("nan")}, r"lr must be a positive finite number, got nan"),
        ({"start": (0.0, float("inf"))}, r"start must be two finite numbers"),
        ({"start": (1.0,)}, r"start must be two finite numbers"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _run(ROSENBROCK, "adam", **kwargs)


def test_unknown_optimizer_names_the_input_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'adma'.*adam.*aliases: momentum, nesterov"):
        run_trajectories(ROSENBROCK, ["adam", "adma"])


@pytest.mark.parametrize("name", ["lbfgs", "SparseAdam", "muon"])
def test_optimizers_that_cannot_step_a_plain_point_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"optimizer '{name}' cannot draw a trajectory: it "):
        resolve_optimizer(name)


def test_no_optimizers_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one optimizer"):
        run_trajectories(ROSENBROCK, [])
