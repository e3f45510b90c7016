"""Test cases every element-wise optimizer shares: each file calls them with its own pair.

Each helper asserts (through the harness) and fails loudly; a test file keeps one test per
case, so test ids and what each test checks stay visible where the optimizer is tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch
from torch import Tensor

import handgrad.optim._base as common
from tests.optim.harness import (
    assert_matches_torch,
    assert_same_error,
    common_error_cases,
    torch_error_inputs,
)

Ours = type[torch.optim.Optimizer]

# Each of our bodies against torch's body of the same kind (None: both defaults).
FOREACH = [
    pytest.param(False, id="single"),
    pytest.param(True, id="multi"),
    pytest.param(None, id="default"),
]
# Our default (the fast path) and our single-tensor body, each against torch's default.
DEFAULT_OR_SINGLE = pytest.mark.parametrize("foreach", [None, False], ids=["default", "single"])
DTYPES = pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32], ids=["float64", "float32"]
)
# The harness's bad constructions torch refuses (bad params, duplicates, ...), one test each.
COMMON_ERROR_CASES = pytest.mark.parametrize(
    ("description", "params", "kwargs"),
    [pytest.param(*case, id=case[0].replace(" ", "_")) for case in common_error_cases()],
)


def sparse_grad_params() -> list[Tensor]:
    """One parameter whose gradient is sparse."""
    p = torch.zeros(3)
    p.grad = torch.ones(3).to_sparse()
    return [p]


def assert_common_bad_input_refused(
    ours: Ours, theirs: Ours, description: str, params: Any, kwargs: dict[str, Any]
) -> None:
    """Both refuse the construction the same way (the harness compares the outcomes)."""
    kind, _, _ = assert_same_error(ours, theirs, kwargs, params=params)
    assert kind != "ok", description


def assert_bad_hyperparameter_refused(ours: Ours, theirs: Ours, kwargs: dict[str, Any]) -> None:
    """Both raise ValueError with a message for ``kwargs``."""
    kind, error, message = assert_same_error(ours, theirs, kwargs)
    assert (kind, error) == ("raise", ValueError)
    assert message


def assert_sparse_gradients_refused(ours: Ours, theirs: Ours) -> None:
    """Both raise RuntimeError at step for a sparse gradient."""
    kind, error, _ = assert_same_error(ours, theirs, {}, params=sparse_grad_params, at_step=True)
    assert (kind, error) == ("raise", RuntimeError)


def assert_capturable_on_cpu_refused(ours: Ours, theirs: Ours) -> None:
    """``capturable=True`` on the CPU: both raise AssertionError at step."""
    kind, error, _ = assert_same_error(
        ours, theirs, {"capturable": True}, at_step=True, same_message=False
    )
    assert (kind, error) == ("raise", AssertionError)


def assert_differentiable_matches_torch(
    ours: Ours, theirs: Ours, device: torch.device | str = "cpu"
) -> None:
    """``differentiable=True`` is accepted and runs the single-tensor body, as torch's does on
    tensors that do not require grad (no autograd is recorded either way)."""
    assert_matches_torch(
        ours, theirs, {"differentiable": True}, steps=10, scheduler=False, device=device
    )


def assert_rejects_what_torch_rejects(
    ours: Ours,
    theirs: Ours,
    name: str,
    bad_kwargs: Iterable[dict[str, Any]],
    *,
    refuses_sparse: bool = True,
) -> None:
    """The harness's common cases, torch's own error table for ``name``, each of
    ``bad_kwargs`` refused at construction, and (``refuses_sparse``) a sparse gradient
    refused at step."""
    for _desc, params, kwargs in common_error_cases():
        assert_same_error(ours, theirs, kwargs, params=params)
    for _desc, kwargs, error_type, fragment in torch_error_inputs(name):
        kind, raised, message = assert_same_error(ours, theirs, kwargs)
        assert (kind, raised) == ("raise", error_type)
        assert fragment in message
    for kwargs in bad_kwargs:
        assert assert_same_error(ours, theirs, kwargs)[0] == "raise", kwargs
    if refuses_sparse:
        assert_sparse_gradients_refused(ours, theirs)


def assert_defaults_match(ours: Ours, theirs: Ours) -> None:
    """The same ``defaults`` dict as torch's class (names, values, flags)."""
    assert ours([torch.zeros(1)]).defaults == theirs([torch.zeros(1)]).defaults


def assert_large_tensor_path_matches(
    ours: Ours,
    theirs: Ours,
    hyperparams: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    grad_none_every: int | None = 6,
    device: torch.device | str = "cpu",
) -> None:
    """With the size threshold at 10 elements the two larger test shapes go tensor-at-a-time
    with scratch buffers and the rest through the multi-tensor body: both must match."""
    monkeypatch.setattr(common, "LARGE_TENSOR_ELEMENTS", 10)
    assert_matches_torch(ours, theirs, hyperparams, grad_none_every=grad_none_every, device=device)


def least_squares_run(
    make: Callable[[list[Tensor]], torch.optim.Optimizer],
    steps: int,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, torch.optim.Optimizer, Tensor]:
    """Run ``make([w])`` for ``steps`` on linear regression; return (w, optimizer, lstsq's w).

    Loss ½‖Xw − y‖²/n, gradient Xᵀ(Xw − y)/n, 64 noisy samples of 3 features. The data are
    drawn on the CPU (the same on every device) and ``w`` lives on ``device``; lstsq's answer
    is computed on the CPU and moved there.
    """
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    y = y + 0.1 * torch.randn(64, generator=generator, dtype=torch.float64)
    best = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1).to(device)
    x, y = x.to(device), y.to(device)
    w = torch.zeros(3, dtype=torch.float64, device=device)
    opt = make([w])
    for _ in range(steps):
        w.grad = x.T @ (x @ w - y) / len(y)
        opt.step()
    return w, opt, best
