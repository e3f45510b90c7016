"""Every optimizer of tests/optim/rows.py against its torch.optim twin, by the same tests.

Each test reads its settings from a row: agreement step by step (both dtypes, each body,
every combination of torch's own table and more, a parameter now and then without a
gradient, two groups and an LR schedule), complex parameters, the large-tensor fast path,
state_dict handover both ways mid-run, every refusal and its message, defaults, the
``differentiable`` and ``capturable`` flags, and convergence.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch

import handgrad.optim as hg
import handgrad.optim._base as base
from tests.optim._cases import (
    assert_capturable_on_cpu_refused,
    assert_defaults_match,
    assert_differentiable_matches_torch,
    assert_sparse_gradients_refused,
    least_squares_run,
)
from tests.optim.harness import (
    assert_matches_torch,
    assert_same_error,
    assert_state_dict_handover,
    common_error_cases,
    torch_error_inputs,
    torch_optim_inputs,
)
from tests.optim.rows import ROWS, TORCH_DEFAULT, Row


def _id(text: str) -> str:
    return text.replace(" ", "_")


def _combinations(row: Row) -> list[tuple[str, dict[str, Any]]]:
    return [*torch_optim_inputs(row.name), *row.extra]


def _torch_kwargs(row: Row, hyperparams: dict[str, Any], foreach: Any,
                  device: torch.device) -> dict[str, Any]:  # fmt: skip
    side = row.torch_side(hyperparams, device) if row.torch_side else {}
    return side if foreach is TORCH_DEFAULT else {**side, "foreach": foreach}


MATCHES = [
    pytest.param(row, kwargs, ours, theirs, id=f"{row.name}-{_id(desc)}-{body}")
    for row in ROWS
    for desc, kwargs in _combinations(row)
    for ours, theirs, body in row.bodies
]


@pytest.mark.parametrize(("row", "hyperparams", "ours_foreach", "torch_foreach"), MATCHES)
def test_matches_torch(
    row: Row,
    hyperparams: dict[str, Any],
    ours_foreach: bool | None,
    torch_foreach: Any,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    hyperparams = row.kwargs(hyperparams)
    assert_matches_torch(
        row.ours, row.theirs, hyperparams, dtype=dtype, ours_kwargs={"foreach": ours_foreach},
        torch_kwargs=_torch_kwargs(row, hyperparams, torch_foreach, device),
        grad_none_every=row.none_every(hyperparams), device=device,
    )  # fmt: skip


COMPLEX = [
    pytest.param(row, kwargs, ours, theirs, id=f"{row.name}-{index}-{body}")
    for row in ROWS
    for index, kwargs in enumerate(row.complex)
    for ours, theirs, body in row.bodies
]


@pytest.mark.parametrize(("row", "hyperparams", "ours_foreach", "torch_foreach"), COMPLEX)
def test_complex_parameters(
    row: Row,
    hyperparams: dict[str, Any],
    ours_foreach: bool | None,
    torch_foreach: Any,
    device: torch.device,
) -> None:
    assert_matches_torch(
        row.ours, row.theirs, hyperparams, complex_params=True, steps=row.complex_steps,
        ours_kwargs={"foreach": ours_foreach},
        torch_kwargs=_torch_kwargs(row, hyperparams, torch_foreach, device), device=device,
    )  # fmt: skip


LARGE = [
    pytest.param(row, kwargs, id=f"{row.name}-{_id(desc)}")
    for row in ROWS
    if row.large_path
    for desc, kwargs in _combinations(row)
]


@pytest.mark.parametrize(("row", "hyperparams"), LARGE)
def test_large_tensor_path_matches_torch(
    row: Row, hyperparams: dict[str, Any], monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    """With the size threshold at 10 elements the two larger test shapes go to update_large
    and the rest to the multi-tensor body: both must match torch."""
    monkeypatch.setattr(base, "LARGE_TENSOR_ELEMENTS", 10)
    hyperparams = row.kwargs(hyperparams)
    torch_kwargs = _torch_kwargs(row, hyperparams, TORCH_DEFAULT, device)
    assert_matches_torch(
        row.ours, row.theirs, hyperparams, grad_none_every=row.none_every(hyperparams),
        torch_kwargs=torch_kwargs, device=device,
    )  # fmt: skip
    if row.large_with_complex and not hyperparams.get("fused"):  # fused refuses complex
        assert_matches_torch(
            row.ours, row.theirs, hyperparams, complex_params=True, steps=10,
            torch_kwargs=torch_kwargs, device=device,
        )  # fmt: skip


FAST = [
    pytest.param(row, kwargs, id=f"{row.name}-{_id(desc)}")
    for row in ROWS
    if row.large_path
    for desc, kwargs in _combinations(row)[:4]
]


@pytest.mark.parametrize("dtype_", [torch.float64, torch.float32, torch.complex128], ids=str)
@pytest.mark.parametrize(("row", "hyperparams"), FAST)
def test_the_large_tensor_body_equals_the_plain_body_bitwise(
    row: Row, hyperparams: dict[str, Any], dtype_: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """update_large is a fast path: the same bits as update on the same tensors."""
    if dtype_.is_complex and (not row.complex or hyperparams.get("fused")):
        pytest.skip("complex parameters are refused")
    finals = []
    for threshold in (10, math.inf):  # everything large but the 0-d and (5,) tensors; nothing
        monkeypatch.setattr(base, "LARGE_TENSOR_ELEMENTS", threshold)
        generator = torch.Generator().manual_seed(0)
        params = [torch.randn(shape, generator=generator, dtype=dtype_)
                  for shape in ((), (5,), (4, 3), (2, 3, 4))]  # fmt: skip
        optimizer = row.ours(params, **row.kwargs(hyperparams))
        for _ in range(8):
            for p in params:
                p.grad = torch.sin(3 * p) + 0.1 * p
            optimizer.step()
        finals.append((params, optimizer.state))
    (large, large_state), (plain, plain_state) = finals
    for p, q in zip(large, plain, strict=True):
        assert torch.equal(p, q)
        for key, value in plain_state[q].items():
            assert torch.equal(large_state[p][key], value), key


HANDOVER = [
    pytest.param(row, direction, id=f"{row.name}-{direction}")
    for row in ROWS
    for direction in ("torch_to_ours", "ours_to_torch")
]


@pytest.mark.parametrize(("row", "direction"), HANDOVER)
def test_state_dict_handover_mid_run(
    row: Row, direction: str, dtype: torch.dtype, device: torch.device
) -> None:
    assert_state_dict_handover(
        row.ours, row.theirs, row.handover, direction=direction, dtype=dtype, device=device
    )


COMMON = [
    pytest.param(row, description, params, kwargs, id=f"{row.name}-{_id(description)}")
    for row in ROWS
    for description, params, kwargs in common_error_cases()
]


@pytest.mark.parametrize(("row", "description", "params", "kwargs"), COMMON)
def test_common_bad_inputs_are_refused_like_torch(
    row: Row, description: str, params: Any, kwargs: dict[str, Any]
) -> None:
    kind, _, _ = assert_same_error(row.ours, row.theirs, kwargs, params=params)
    assert kind != "ok", description


ROW = [pytest.param(row, id=row.name) for row in ROWS]


@pytest.mark.parametrize("row", ROW)
def test_bad_hyperparameters_are_refused_like_torch(row: Row) -> None:
    """torch's own error table for the class, and the row's bad arguments: the same type and
    message as torch's."""
    for _desc, kwargs, error_type, fragment in torch_error_inputs(row.name):
        kind, raised, message = assert_same_error(row.ours, row.theirs, kwargs)
        assert (kind, raised) == ("raise", error_type)
        assert fragment in message
    for kwargs in row.bad:
        kind, raised, message = assert_same_error(row.ours, row.theirs, kwargs)
        assert kind == "raise", kwargs
        assert message, kwargs


EDGE_VALUES = (float("nan"), float("inf"), -float("inf"), -0.0, 0.0, -1e-300, 1.0, 1e300, 2)


def _numeric_arguments(cls: type[torch.optim.Optimizer]) -> list[dict[str, Any]]:
    """Every numeric constructor argument of ``cls`` (and each entry of a numeric tuple)
    set to each of EDGE_VALUES in turn."""
    cases = []
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        default = parameter.default
        if isinstance(default, bool) or name in ("self", "params"):
            continue
        if isinstance(default, (int, float)):
            cases += [{name: value} for value in EDGE_VALUES]
        elif isinstance(default, tuple) and all(
            isinstance(x, (int, float)) or x is None for x in default
        ):
            for index in range(len(default)):
                for value in EDGE_VALUES:
                    entries = list(default)
                    entries[index] = value
                    cases.append({name: tuple(entries)})
    return cases


@pytest.mark.parametrize("row", ROW)
def test_numbers_at_the_edges_are_validated_exactly_as_torch(row: Row) -> None:
    """NaN, ±inf, ±0 and huge values in every numeric argument: accepted where torch accepts
    them (``SGD(params, lr=nan)`` is), refused with torch's error where torch refuses."""
    cases = _numeric_arguments(row.theirs)
    assert cases
    for kwargs in cases:
        assert_same_error(row.ours, row.theirs, kwargs)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS if r.sparse_refused])
def test_sparse_gradients_are_refused_like_torch(row: Row) -> None:
    assert_sparse_gradients_refused(row.ours, row.theirs)


@pytest.mark.parametrize("row", ROW)
def test_defaults_match_torch(row: Row) -> None:
    assert_defaults_match(row.ours, row.theirs)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS if r.differentiable])
def test_differentiable_flag_runs_the_single_tensor_body(row: Row, device: torch.device) -> None:
    assert_differentiable_matches_torch(row.ours, row.theirs, device=device)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS if r.capturable])
def test_capturable_on_cpu_is_refused_at_step_like_torch(row: Row) -> None:
    assert_capturable_on_cpu_refused(row.ours, row.theirs)


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=r.name) for r in ROWS if r.converges is not None]
)
def test_converges_on_least_squares(row: Row, device: torch.device) -> None:
    assert row.converges is not None
    hyperparams, steps, atol = row.converges
    w, _opt, best = least_squares_run(
        lambda params: row.ours(params, **hyperparams), steps=steps, device=device
    )
    torch.testing.assert_close(w, best, atol=atol, rtol=0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_takes_a_nan_learning_rate_as_torch_does(momentum: float) -> None:
    """torch.optim.SGD accepts lr=nan (its check is ``lr < 0``, false for NaN) and steps every
    parameter to NaN; ours accepts it too and gives the same result (issue 16, item 5)."""
    results = []
    for cls in (hg.SGD, torch.optim.SGD):
        p = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
        p.grad = torch.linspace(0.5, -0.5, 5, dtype=torch.float64)
        optimizer = cls([p], lr=float("nan"), momentum=momentum)
        assert math.isnan(optimizer.param_groups[0]["lr"])
        optimizer.step()
        results.append(p)
    ours, theirs = results
    assert bool(ours.isnan().all())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)
