"""The agreement harness: a handgrad optimizer beside its torch.optim namesake, step by step.

Shared by every optimizer test (keep the API stable):

- :func:`assert_matches_torch` — identical parameters, the same non-convex objective with
  hand-written gradients, both optimizers stepped side by side (two parameter groups, an LR
  scheduler, optional complex parameters or a closure); parameters compared after every step
  and every state tensor at the end, within 1e-9 relative in float64 and 1e-4 in float32.
  ``device=`` puts parameters, gradients and the objective on that device, so both libraries
  run their kernels for it there (torch's CUDA default is its foreach path).
- :func:`assert_state_dict_handover` — run with one library, hand the state_dict to the other
  mid-run (either direction), and require the trajectory of torch alone.
- :func:`assert_same_error` — the same bad input gives the same exception type (and message)
  or warning in both libraries.
- :func:`torch_optim_inputs` / :func:`torch_error_inputs` — the hyperparameter combinations
  and bad inputs of torch's own suite (``torch.testing._internal.common_optimizers``,
  ``optim_inputs_func_*``; CPU entries), transcribed because importing that module needs
  ``expecttest``. ``test_harness_matches_torch_tables`` re-reads torch's tables when it can.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

SHAPES: tuple[tuple[int, ...], ...] = ((), (5,), (4, 3), (2, 3, 4))
# (rtol, atol) per parameter dtype: 1e-9 relative in float64, 1e-4 in float32.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-4, 1e-6),
    torch.complex128: (1e-9, 1e-12),
    torch.complex64: (1e-4, 1e-6),
}

OptimizerFactory = Callable[..., torch.optim.Optimizer]


# --------------------------------------------------------------------------------------------
# torch's own hyperparameter combinations (CPU), as (description, kwargs)
# --------------------------------------------------------------------------------------------


def _torch_inputs_table() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """A fresh copy every call: tensor hyperparameters must not be shared between tests."""
    adam = [
        ("default", {}),
        ("non-default lr", {"lr": 0.01}),
        ("nonzero weight_decay", {"weight_decay": 0.1}),
        ("maximize", {"weight_decay": 0.1, "maximize": True}),
        ("amsgrad", {"weight_decay": 0.1, "amsgrad": True}),
    ]
    return {
        "SGD": [
            ("default", {}),
            ("non-default lr", {"lr": 1e-2}),
            ("tensor lr", {"lr": torch.tensor(0.001)}),
            ("non-zero weight_decay", {"weight_decay": 0.5}),
            ("momentum", {"momentum": 0.9}),
            ("maximize", {"weight_decay": 0.1, "maximize": True}),
            ("dampening", {"momentum": 0.9, "dampening": 0.5}),
            ("weight_decay w/ momentum", {"momentum": 0.9, "weight_decay": 0.1}),
            ("nesterov", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
        ],
        "RMSprop": [
            ("default", {}),
            ("non-default lr", {"lr": 1e-3}),
            ("nonzero weight_decay", {"weight_decay": 0.1}),
            ("maximize", {"maximize": True}),
            ("centered", {"weight_decay": 0.1, "centered": True}),
            ("maximize, weight_decay", {"maximize": True, "weight_decay": 0.1}),
            ("momentum", {"weight_decay": 0.1, "centered": True, "momentum": 0.1}),
            (
                "maximize, centered, weight_decay, w/ momentum",
                {"weight_decay": 0.1, "centered": True, "momentum": 0.1, "maximize": True},
            ),
        ],
        "Adam": adam,
        "AdamW": copy.deepcopy(adam),
        "Adamax": [
            ("default", {}),
            ("non-default lr", {"lr": 0.1}),
            ("nonzero weight_decay", {"weight_decay": 0.1}),
            ("maximize", {"maximize": True}),
            ("maximize, weight_decay", {"weight_decay": 0.1, "maximize": True}),
        ],
        "NAdam": [
            ("default", {}),
            ("non-default lr", {"lr": 1e-3}),
            ("non-zero momentum_decay", {"momentum_decay": 6e-3}),
            ("weight_decay", {"weight_decay": 0.1}),
            ("weight_decay, momentum_decay", {"weight_decay": 0.1, "momentum_decay": 6e-3}),
            (
                "decoupled_weight_decay",
                {"weight_decay": 0.1, "momentum_decay": 6e-3, "decoupled_weight_decay": True},
            ),
            ("maximize", {"weight_decay": 0.1, "maximize": True}),
        ],
        "RAdam": [
            ("default", {}),
            ("non-default lr", {"lr": 2e-3}),
            ("non-default eps", {"eps": 1e-6}),
            ("nonzero weight_decay", {"weight_decay": 0.1}),
            ("decoupled_weight_decay", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
            ("maximize", {"weight_decay": 0.1, "maximize": True}),
        ],
        "Adagrad": [
            ("default", {}),
            ("nonzero weight_decay", {"weight_decay": 0.1}),
            ("maximize", {"weight_decay": 0.1, "maximize": True}),
            ("non-default lr", {"lr": 0.1}),
            ("initial_accumulator_value", {"initial_accumulator_value": 0.1, "weight_decay": 0.1}),
            ("lr_decay", {"lr": 0.1, "lr_decay": 0.5, "weight_decay": 0.1}),
            ("Tensor lr", {"lr": torch.tensor(0.001)}),
        ],
        "Adadelta": [
            ("default", {}),
            ("non-default lr", {"lr": 0.01}),
            ("nonzero weight_decay", {"weight_decay": 0.1}),
            ("maximize", {"maximize": True}),
            ("maximize, weight_decay", {"weight_decay": 0.1, "maximize": True}),
            ("rho", {"rho": 0.95, "weight_decay": 0.9}),
        ],
        "Rprop": [
            ("default", {}),
            ("non-default lr", {"lr": 2e-4}),
            ("non-default etas", {"etas": (0.5, 1.5)}),
            ("non-default step_sizes", {"step_sizes": (2e-6, 100)}),
            ("maximize", {"maximize": True}),
        ],
        "ASGD": [
            ("default", {}),
            ("non-default lambd", {"lambd": 0.1}),
            ("non-default lr", {"lr": 0.02}),
            ("t0", {"t0": 100}),
            ("maximize", {"maximize": True}),
            ("nonzero weight_decay", {"weight_decay": 0.1}),
            ("maximize, nonzero weight_decay", {"weight_decay": 0.1, "maximize": True}),
        ],
        "Adafactor": [
            ("default", {}),
            ("nonzero weight_decay", {"weight_decay": 0.1, "lr": 0.01}),
            ("maximize", {"weight_decay": 0.1, "maximize": True}),
            ("non-default beta2_decay", {"beta2_decay": -1.0}),
            ("non-default clipping threshold d", {"d": 1.5}),
        ],
        "SparseAdam": [
            ("default", {}),
            ("non-default lr", {"lr": 0.01}),
            ("Tensor lr", {"lr": torch.tensor(0.001)}),
            ("maximize", {"maximize": True}),
        ],
        "LBFGS": [
            ("default", {}),
            ("non-default lr", {"lr": 0.01}),
            ("Tensor lr", {"lr": torch.tensor(0.001)}),
            ("tolerance_grad", {"tolerance_grad": 1e-6}),
            ("strong_wolfe", {"line_search_fn": "strong_wolfe"}),
        ],
        "Muon": [
            ("default", {}),
            ("non-default lr", {"lr": 0.01}),
            ("Tensor lr", {"lr": torch.tensor(0.001)}),
            ("non-default weight_decay", {"weight_decay": 0.2}),
            ("non-default momentum", {"momentum": 0.8}),
            ("passing alternative ns_steps", {"ns_steps": 6}),
            ("passing alternative ns_coefficients", {"ns_coefficients": (3.4, -4.7, 2.0)}),
        ],
    }


def torch_optim_inputs(name: str) -> list[tuple[str, dict[str, Any]]]:
    """torch's ``optim_inputs_func_<name>`` for CPU: ``[(description, kwargs), ...]``.

    Fresh objects on every call (tensor ``lr`` included), so tests may mutate them.
    """
    return _torch_inputs_table()[name]


def torch_inputs_params(name: str, extra: Iterable[tuple[str, dict[str, Any]]] = ()) -> list[Any]:
    """``pytest.param(kwargs, id=description)`` for torch's combinations plus ``extra`` ones."""
    rows = [*torch_optim_inputs(name), *extra]
    return [pytest.param(kwargs, id=desc.replace(" ", "_")) for desc, kwargs in rows]


def torch_error_inputs(name: str) -> list[tuple[str, dict[str, Any], type[Exception], str]]:
    """Constructor kwargs torch's suite rejects for ``name`` (CPU), beyond the common ones.

    ``[(description, kwargs, error type, message fragment), ...]``; the common cases (bad
    params, duplicates, 1-element tensor lr) are in :func:`common_error_cases`.
    """
    beta0 = (
        "beta1 should be between 0 and 1",
        {"lr": 1e-2, "betas": (1.0, 0.0)},
        ValueError,
        "Invalid beta parameter at index 0: 1.0",
    )
    wd = (
        "weight_decay should > 0",
        {"lr": 1e-2, "weight_decay": -1},
        ValueError,
        "Invalid weight_decay value: -1",
    )
    adam: list[tuple[str, dict[str, Any], type[Exception], str]] = [
        beta0,
        wd,
        (
            "tensor lr with foreach",
            {"lr": torch.tensor(0.001), "foreach": True},
            ValueError,
            "lr as a Tensor is not supported for capturable=False and foreach=True",
        ),
        (
            "mixed betas 1",
            {"lr": 1e-2, "betas": (0.9, torch.tensor(0.99))},
            ValueError,
            "betas must be either both floats or both Tensors",
        ),
        (
            "mixed betas 2",
            {"lr": 1e-2, "betas": (torch.tensor(0.9), 0.99)},
            ValueError,
            "betas must be either both floats or both Tensors",
        ),
        (
            "tensor betas with foreach",
            {"lr": 1e-2, "betas": (torch.tensor(0.9), torch.tensor(0.99)), "foreach": True},
            ValueError,
            "betas[0] as a Tensor is not supported for capturable=False and foreach=True",
        ),
    ]
    table: dict[str, list[tuple[str, dict[str, Any], type[Exception], str]]] = {
        "SGD": [
            (
                "momentum should be between 0 and 1",
                {"lr": 1e-2, "momentum": -0.5},
                ValueError,
                "Invalid momentum value: -0.5",
            )
        ],
        "RMSprop": [
            (
                "momentum should be between 0 and 1",
                {"lr": 1e-2, "momentum": -1.0},
                ValueError,
                "Invalid momentum value: -1.0",
            )
        ],
        "Adam": adam,
        "AdamW": adam,
        "Adamax": [
            (
                "beta2 should be between 0 and 1",
                {"lr": 1e-2, "betas": (0.0, 1.0)},
                ValueError,
                "Invalid beta parameter at index 1: 1.0",
            )
        ],
        "NAdam": [
            beta0,
            (
                "momentum_decay should > 0",
                {"lr": 1e-2, "momentum_decay": -0.2},
                ValueError,
                "Invalid momentum_decay value: -0.2",
            ),
        ],
        "RAdam": [beta0, wd],
    }
    return table.get(name, [])


def common_error_cases() -> list[tuple[str, Callable[[], Any], dict[str, Any]]]:
    """torch's ``get_error_inputs_for_all_optims`` (CPU): ``(description, params(), kwargs)``.

    ``params()`` builds fresh parameters; feed each case to :func:`assert_same_error`.
    """

    def one() -> Tensor:
        return torch.nn.Parameter(torch.randn(1, 1))

    shared = one()
    other = one()
    return [
        ("invalid param type", lambda: shared, {}),
        ("duplicate parameters in a group", lambda: [shared, shared], {}),
        (
            "duplicate parameters across groups",
            lambda: [{"params": shared}, {"params": shared}],
            {},
        ),
        ("Tensor lr must be 1-element", lambda: [one()], {"lr": torch.tensor([0.001, 0.001])}),
        ("names missing", lambda: [("weight", shared), other], {}),
        (
            "group names missing",
            lambda: [{"params": [shared], "lr": 1e-2}, {"params": [("weight", other)]}],
            {},
        ),
    ]


# --------------------------------------------------------------------------------------------
# The objective: non-convex, separable, gradients by hand
# --------------------------------------------------------------------------------------------


def _real_view(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


class Objective:
    """``f(θ) = Σ_i Σ b_i·sin(a_i·θ_i) + 0.05·θ_i²`` (on the real view of complex θ).

    Non-convex (many local minima), bounded below, gradient ``b·a·cos(a·θ) + 0.1·θ``.
    For complex θ the gradient is ∂f/∂Re θ + i·∂f/∂Im θ, torch's convention.
    """

    def __init__(
        self,
        shapes: Sequence[tuple[int, ...]],
        dtype: torch.dtype,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        # Drawn on the CPU and moved: the same coefficients on every device.
        generator = torch.Generator().manual_seed(seed + 1)
        self.device = torch.device(device)
        real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
        self.coefficients: list[tuple[Tensor, Tensor]] = []
        for shape in shapes:
            real_shape = (*shape, 2) if dtype.is_complex else shape
            a = torch.rand(real_shape, generator=generator, dtype=torch.float64) * 2 + 0.5
            b = torch.randn(real_shape, generator=generator, dtype=torch.float64)
            self.coefficients.append((a.to(self.device, real), b.to(self.device, real)))

    def loss(self, params: Sequence[Tensor]) -> Tensor:
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for p, (a, b) in zip(params, self.coefficients, strict=True):
            x = _real_view(p.detach())
            total = total + (b * torch.sin(a * x) + 0.05 * x * x).sum().double()
        return total

    def gradients(self, params: Sequence[Tensor]) -> list[Tensor]:
        grads = []
        for p, (a, b) in zip(params, self.coefficients, strict=True):
            x = _real_view(p.detach())
            g = b * a * torch.cos(a * x) + 0.1 * x
            grads.append(torch.view_as_complex(g.contiguous()) if p.is_complex() else g)
        return grads


def make_params(
    shapes: Sequence[tuple[int, ...]],
    dtype: torch.dtype,
    seed: int,
    device: torch.device | str = "cpu",
) -> list[Tensor]:
    """Deterministic starting points in [-2, 2) (complex: both parts), the same on every
    device (drawn on the CPU, then moved)."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        if dtype.is_complex:
            real = torch.float64 if dtype == torch.complex128 else torch.float32
            parts = torch.rand((*shape, 2), generator=generator, dtype=torch.float64) * 4 - 2
            params.append(torch.view_as_complex(parts.to(real)).to(device))
        else:
            values = torch.rand(shape, generator=generator, dtype=torch.float64) * 4 - 2
            params.append(values.to(dtype).to(device))
    return params


# --------------------------------------------------------------------------------------------
# Building and stepping
# --------------------------------------------------------------------------------------------


def _clone_hyperparameters(value: Any) -> Any:
    """Deep copy; tensors cloned so that a scheduler on one side cannot move the other."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone_hyperparameters(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_clone_hyperparameters(v) for v in value)
    return value


def _second_group_overrides(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Half the learning rate (tensor lr stays a tensor) and, if any, other weight decay."""
    lr = hyperparams.get("lr")
    overrides: dict[str, Any] = {}
    if isinstance(lr, Tensor):
        overrides["lr"] = lr.detach().clone() * 0.5
    elif lr is not None:
        overrides["lr"] = lr * 0.5
    if hyperparams.get("weight_decay"):
        overrides["weight_decay"] = hyperparams["weight_decay"] * 0.5
    return overrides


def build(
    cls: OptimizerFactory,
    params: list[Tensor],
    hyperparams: dict[str, Any],
    *,
    two_groups: bool,
    second_group: dict[str, Any] | None = None,
) -> torch.optim.Optimizer:
    """``cls`` on ``params``: one group, or two (first half, second half with overrides)."""
    kwargs = _clone_hyperparameters(hyperparams)
    if not two_groups or len(params) < 2:
        return cls(params, **kwargs)
    half = len(params) // 2
    overrides = _clone_hyperparameters(
        second_group if second_group is not None else _second_group_overrides(hyperparams)
    )
    groups = [{"params": params[:half]}, {"params": params[half:], **overrides}]
    return cls(groups, **kwargs)


def _set_grads(
    params: list[Tensor], objective: Objective, step: int, grad_none_every: int | None
) -> None:
    for index, (p, g) in enumerate(zip(params, objective.gradients(params), strict=True)):
        # A parameter without a gradient this step: torch skips it (no state, no step count).
        skip = grad_none_every is not None and index == 0 and step % grad_none_every == 1
        p.grad = None if skip else g


def _closure(params: list[Tensor], objective: Objective) -> Any:
    """Sets every gradient and returns the loss, like a training closure for LBFGS."""

    def closure() -> Tensor:
        for p, g in zip(params, objective.gradients(params), strict=True):
            p.grad = g
        return objective.loss(params)

    return closure


def _compare_tensors(
    ours: Tensor, theirs: Tensor, what: str, rtol: float | None, atol: float | None
) -> None:
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} vs torch {theirs.dtype}"
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    default_rtol, default_atol = TOLERANCES.get(ours.dtype, (1e-4, 1e-6))
    torch.testing.assert_close(
        ours,
        theirs,
        rtol=default_rtol if rtol is None else rtol,
        atol=default_atol if atol is None else atol,
        msg=lambda m: f"{what}: {m}",
    )


def assert_states_match(
    ours: torch.optim.Optimizer,
    theirs: torch.optim.Optimizer,
    ours_params: list[Tensor],
    theirs_params: list[Tensor],
    *,
    where: str = "",
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Same state keys for every parameter, tensors equal within tolerance, others equal."""
    for index, (p, q) in enumerate(zip(ours_params, theirs_params, strict=True)):
        mine, reference = ours.state.get(p, {}), theirs.state.get(q, {})
        assert set(mine) == set(reference), (
            f"{where}param {index}: state keys {sorted(mine)} vs torch {sorted(reference)}"
        )
        for key, value in reference.items():
            what = f"{where}param {index} state[{key!r}]"
            if isinstance(value, Tensor):
                assert isinstance(mine[key], Tensor), f"{what}: not a tensor: {mine[key]!r}"
                assert mine[key].device == value.device, f"{what}: device differs"
                _compare_tensors(mine[key], value, what, rtol, atol)
            else:
                assert mine[key] == value, f"{what}: {mine[key]!r} vs torch {value!r}"


def _compare_groups(ours: torch.optim.Optimizer, theirs: torch.optim.Optimizer) -> None:
    for index, (mine, reference) in enumerate(
        zip(ours.param_groups, theirs.param_groups, strict=True)
    ):
        assert set(mine) == set(reference), (
            f"group {index}: keys {sorted(mine)} vs torch {sorted(reference)}"
        )


def assert_matches_torch(
    ours_cls: OptimizerFactory,
    torch_cls: OptimizerFactory,
    hyperparams: dict[str, Any],
    *,
    dtype: torch.dtype = torch.float64,
    steps: int = 50,
    shapes: Sequence[tuple[int, ...]] = SHAPES,
    two_groups: bool = True,
    second_group: dict[str, Any] | None = None,
    scheduler: bool = True,
    complex_params: bool = False,
    closure_based: bool = False,
    grad_none_every: int | None = None,
    ours_kwargs: dict[str, Any] | None = None,
    torch_kwargs: dict[str, Any] | None = None,
    check_state: bool = True,
    check_group_keys: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[list[Tensor], list[Tensor]]:
    """Step ``ours_cls`` and ``torch_cls`` side by side; fail at the first step they part.

    Both start from the same parameters (``dtype``; complex of that precision when
    ``complex_params``) and see the gradient of the same non-convex objective at their own
    parameters. ``hyperparams`` go to both; ``ours_kwargs``/``torch_kwargs`` to one side only
    (e.g. ``{"foreach": False}``). With ``two_groups`` the second half of the parameters forms
    a second group with ``second_group`` overrides (default: half the lr, half the weight
    decay). ``scheduler`` attaches a StepLR (×0.7 every 7 steps) to both. ``closure_based``
    passes a closure to ``step`` (LBFGS). ``grad_none_every=k`` leaves the first parameter
    without a gradient on steps k+1, 2k+1, ... ``device``: where parameters, gradients and
    the objective live (tensor hyperparameters stay where the caller made them, on the CPU,
    as torch's suite has them). Returns the final parameters (ours, torch).
    """
    if complex_params:
        dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    ours_params = make_params(shapes, dtype, seed, device)
    theirs_params = make_params(shapes, dtype, seed, device)
    objective = Objective(shapes, dtype, seed, device)
    ours = build(
        ours_cls,
        ours_params,
        {**hyperparams, **(ours_kwargs or {})},
        two_groups=two_groups,
        second_group=second_group,
    )
    theirs = build(
        torch_cls,
        theirs_params,
        {**hyperparams, **(torch_kwargs or {})},
        two_groups=two_groups,
        second_group=second_group,
    )
    schedulers = []
    if scheduler:
        schedulers = [
            torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.7) for opt in (ours, theirs)
        ]
    for step in range(1, steps + 1):
        if closure_based:
            loss_ours = ours.step(_closure(ours_params, objective))
            loss_theirs = theirs.step(_closure(theirs_params, objective))
            if isinstance(loss_theirs, Tensor):
                assert isinstance(loss_ours, Tensor), f"step {step}: step() returned {loss_ours!r}"
                _compare_tensors(loss_ours, loss_theirs, f"step {step} loss", rtol, atol)
        else:
            _set_grads(ours_params, objective, step, grad_none_every)
            _set_grads(theirs_params, objective, step, grad_none_every)
            ours.step()
            theirs.step()
        for index, (p, q) in enumerate(zip(ours_params, theirs_params, strict=True)):
            _compare_tensors(
                p, q, f"step {step} param {index} (shape {tuple(p.shape)})", rtol, atol
            )
        for each in schedulers:
            each.step()
    if check_state:
        assert_states_match(ours, theirs, ours_params, theirs_params, rtol=rtol, atol=atol)
    if check_group_keys:
        _compare_groups(ours, theirs)
    assert all(torch.isfinite(p).all() for p in ours_params), "non-finite parameters"
    return ours_params, theirs_params


def assert_state_dict_handover(
    ours_cls: OptimizerFactory,
    torch_cls: OptimizerFactory,
    hyperparams: dict[str, Any],
    *,
    direction: str,
    dtype: torch.dtype = torch.float64,
    steps: int = 20,
    switch_at: int = 10,
    shapes: Sequence[tuple[int, ...]] = SHAPES,
    two_groups: bool = True,
    scheduler: bool = True,
    closure_based: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> None:
    """Run ``switch_at`` steps with one library, load its state_dict into the other, go on.

    ``direction`` is ``"torch_to_ours"`` or ``"ours_to_torch"``. The parameters at the end (and
    at every step after the switch) must equal those of torch alone; the state_dict that
    arrives must round-trip (the receiver's state_dict equals the sender's). ``device``:
    where the parameters live; the receiver puts the state where torch's contract says
    (on the parameter's device, ``step`` on the CPU unless capturable or fused).
    """
    if direction not in ("torch_to_ours", "ours_to_torch"):
        raise ValueError(f"direction must be 'torch_to_ours' or 'ours_to_torch', got {direction!r}")
    first_cls, second_cls = (
        (torch_cls, ours_cls) if direction == "torch_to_ours" else (ours_cls, torch_cls)
    )
    objective = Objective(shapes, dtype, seed, device)

    reference_params = make_params(shapes, dtype, seed, device)
    reference = build(torch_cls, reference_params, hyperparams, two_groups=two_groups)
    reference_sched = (
        torch.optim.lr_scheduler.StepLR(reference, step_size=7, gamma=0.7) if scheduler else None
    )

    params = make_params(shapes, dtype, seed, device)
    current = build(first_cls, params, hyperparams, two_groups=two_groups)
    current_sched = (
        torch.optim.lr_scheduler.StepLR(current, step_size=7, gamma=0.7) if scheduler else None
    )

    def advance(opt: torch.optim.Optimizer, ps: list[Tensor]) -> None:
        if closure_based:
            opt.step(_closure(ps, objective))
        else:
            _set_grads(ps, objective, 0, None)
            opt.step()

    for step in range(1, steps + 1):
        if step == switch_at + 1:
            sent = current.state_dict()
            receiver = build(second_cls, params, hyperparams, two_groups=two_groups)
            receiver.load_state_dict(copy.deepcopy(sent))
            _assert_state_dicts_equal(receiver.state_dict(), sent)
            if current_sched is not None:
                sched_state = current_sched.state_dict()
                current_sched = torch.optim.lr_scheduler.StepLR(receiver, step_size=7, gamma=0.7)
                current_sched.load_state_dict(sched_state)
            current = receiver
        advance(reference, reference_params)
        advance(current, params)
        for index, (p, q) in enumerate(zip(params, reference_params, strict=True)):
            _compare_tensors(p, q, f"{direction} step {step} param {index}", rtol, atol)
        for each in (reference_sched, current_sched):
            if each is not None:
                each.step()


def _assert_state_dicts_equal(mine: dict[str, Any], sent: dict[str, Any]) -> None:
    assert set(mine["state"]) == set(sent["state"]), "state_dict parameter ids differ"
    for key, state in sent["state"].items():
        assert set(mine["state"][key]) == set(state), f"state {key}: keys differ"
        for name, value in state.items():
            if isinstance(value, Tensor):
                # load_state_dict casts floating state (not "step") to the parameter's dtype,
                # e.g. NAdam's float32 mu_product next to float64 parameters.
                torch.testing.assert_close(
                    mine["state"][key][name], value, rtol=0, atol=0, check_dtype=False
                )
            else:
                assert mine["state"][key][name] == value
    for mine_group, sent_group in zip(mine["param_groups"], sent["param_groups"], strict=True):
        assert set(mine_group) == set(sent_group), (
            f"param_group keys {sorted(mine_group)} vs {sorted(sent_group)}"
        )


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _outcome(
    cls: OptimizerFactory, params: Any, kwargs: dict[str, Any], at_step: bool
) -> tuple[str, type[BaseException] | None, str]:
    """("raise", type, message) | ("warn", category, message) | ("ok", None, "")."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            opt = cls(params, **_clone_hyperparameters(kwargs))
            if at_step:
                opt.step()
        except Exception as error:  # the point: capture whatever the constructor raises
            return "raise", type(error), str(error)
    relevant = [w for w in caught if issubclass(w.category, UserWarning)]
    if relevant:
        return "warn", relevant[0].category, str(relevant[0].message)
    return "ok", None, ""


def assert_same_error(
    ours_cls: OptimizerFactory,
    torch_cls: OptimizerFactory,
    kwargs: dict[str, Any],
    *,
    params: Callable[[], Any] | None = None,
    at_step: bool = False,
    same_message: bool = True,
) -> tuple[str, type[BaseException] | None, str]:
    """Both constructors (then ``step()`` if ``at_step``) fail or warn the same way.

    ``params()`` builds the parameters (fresh for each side; default: one 2x2 tensor with a
    gradient). Requires the same outcome kind and exception type, and with ``same_message``
    the same text. Returns torch's outcome, so tests can also assert it is not "ok".
    """

    def default_params() -> list[Tensor]:
        p = torch.randn(2, 2)
        p.grad = torch.randn(2, 2)
        return [p]

    build_params = params or default_params
    torch.manual_seed(0)
    theirs = _outcome(torch_cls, build_params(), kwargs, at_step)
    torch.manual_seed(0)
    ours = _outcome(ours_cls, build_params(), kwargs, at_step)
    assert ours[:2] == theirs[:2], f"ours {ours} vs torch {theirs} for {kwargs}"
    if same_message:
        assert ours[2] == theirs[2], f"message {ours[2]!r} vs torch {theirs[2]!r}"
    return theirs


def nan_free(values: Iterable[Tensor]) -> bool:
    """Every tensor finite (used by convergence tests)."""
    return all(bool(torch.isfinite(v).all()) for v in values)


def distance(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """Largest absolute difference between two parameter lists."""
    return max((float((x - y).abs().max()) for x, y in zip(a, b, strict=True)), default=0.0)


__all__ = [
    "SHAPES",
    "TOLERANCES",
    "Objective",
    "assert_matches_torch",
    "assert_same_error",
    "assert_state_dict_handover",
    "assert_states_match",
    "build",
    "common_error_cases",
    "distance",
    "make_params",
    "nan_free",
    "torch_error_inputs",
    "torch_inputs_params",
    "torch_optim_inputs",
]
