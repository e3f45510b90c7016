"""Adam and AdamW against torch.optim: every combination torch's suite runs, and more."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import handgrad.optim as hg
import handgrad.optim._common as common
from tests.optim._cases import (
    DEFAULT_OR_SINGLE,
    assert_defaults_match,
    assert_rejects_what_torch_rejects,
    assert_sparse_gradients_refused,
)
from tests.optim.harness import (
    assert_matches_torch,
    assert_same_error,
    torch_inputs_params,
)

EXTRA = [
    ("tensor lr", {"lr": torch.tensor(0.01)}),
    ("tensor betas", {"lr": 0.01, "betas": (torch.tensor(0.8), torch.tensor(0.95))}),
    ("1-element tensor betas", {"betas": (torch.tensor([0.9]), torch.tensor([[0.99]]))}),
    ("amsgrad maximize decoupled", {"amsgrad": True, "maximize": True, "weight_decay": 0.2,
                                    "decoupled_weight_decay": True, "lr": 0.02}),
    ("eps and betas", {"lr": 0.05, "betas": (0.5, 0.6), "eps": 1e-3}),
    ("fused", {"lr": 0.01, "fused": True, "weight_decay": 0.1}),
]  # fmt: skip


def torch_side(hyperparams: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """torch's own kwargs: on CUDA its default is the foreach body, which refuses tensor betas
    without capturable (a ValueError at step; only a tensor lr flips it back), so tensor betas
    are compared with its single-tensor body there."""
    betas = hyperparams.get("betas", ())
    if device.type == "cuda" and any(isinstance(beta, torch.Tensor) for beta in betas):
        return {"foreach": False}
    return {}


CLASSES = [pytest.param(hg.Adam, torch.optim.Adam, id="Adam"),
           pytest.param(hg.AdamW, torch.optim.AdamW, id="AdamW")]  # fmt: skip


@DEFAULT_OR_SINGLE
@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adam", EXTRA))
@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_matches_torch(
    ours: Any,
    theirs: Any,
    hyperparams: dict[str, Any],
    foreach: bool | None,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    if ours is hg.AdamW:  # AdamW always decouples and does not take the argument
        hyperparams = {k: v for k, v in hyperparams.items() if k != "decoupled_weight_decay"}
    assert_matches_torch(
        ours, theirs, hyperparams, dtype=dtype, ours_kwargs={"foreach": foreach},
        torch_kwargs=torch_side(hyperparams, device), grad_none_every=6, device=device,
    )  # fmt: skip


@pytest.mark.parametrize(
    "hyperparams",
    [{}, {"amsgrad": True, "weight_decay": 0.1, "maximize": True}],
    ids=["default", "amsgrad"],
)
@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_complex_parameters(
    ours: Any, theirs: Any, hyperparams: dict[str, Any], device: torch.device
) -> None:
    for foreach in (None, False):
        assert_matches_torch(
            ours, theirs, {"lr": 0.05, **hyperparams}, complex_params=True, steps=30,
            ours_kwargs={"foreach": foreach}, device=device,
        )  # fmt: skip


def test_single_and_multi_tensor_bodies_agree_bitwise(device: torch.device) -> None:
    final = []
    for foreach in (False, True):
        ours, _ = assert_matches_torch(hg.Adam, torch.optim.Adam, {"amsgrad": True, "lr": 0.03},
                                       ours_kwargs={"foreach": foreach}, steps=20,
                                       device=device)  # fmt: skip
        final.append(ours)
    for single, multi in zip(*final, strict=True):
        assert torch.equal(single, multi)


def test_adamw_is_adam_with_decoupled_decay() -> None:
    opt = hg.AdamW([torch.zeros(2)])
    assert opt.defaults["weight_decay"] == 1e-2
    assert opt.defaults["decoupled_weight_decay"] is True
    assert isinstance(opt, hg.Adam)
    assert not isinstance(opt, torch.optim.Adam)


ERRORS = [
    ("negative lr", {"lr": -0.1}),
    ("negative eps", {"eps": -1e-8}),
    ("beta2 = 1", {"betas": (0.9, 1.0)}),
    ("beta1 negative", {"betas": (-0.1, 0.9)}),
    ("2-element tensor beta", {"betas": (torch.tensor([0.9, 0.9]), torch.tensor(0.9))}),
    ("fused and foreach", {"fused": True, "foreach": True}),
    ("fused and differentiable", {"fused": True, "differentiable": True}),
]


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_rejects_what_torch_rejects(ours: Any, theirs: Any) -> None:
    bad = [kwargs for _, kwargs in ERRORS]
    assert_rejects_what_torch_rejects(ours, theirs, "Adam", bad, refuses_sparse=False)


def _complex_param() -> list[torch.Tensor]:
    p = torch.zeros(3, dtype=torch.complex64)
    p.grad = torch.ones(3, dtype=torch.complex64)
    return [p]


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_step_errors_match_torch(ours: Any, theirs: Any) -> None:
    assert_sparse_gradients_refused(ours, theirs)
    kind, raised, _ = assert_same_error(
        ours, theirs, {"fused": True}, params=_complex_param, at_step=True
    )
    assert (kind, raised) == ("raise", RuntimeError)


def test_defaults_and_group_keys_match_torch() -> None:
    assert_defaults_match(hg.Adam, torch.optim.Adam)
    assert_defaults_match(hg.AdamW, torch.optim.AdamW)


@pytest.mark.parametrize("hyperparams", torch_inputs_params("Adam", EXTRA))
@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_large_tensor_path_matches_torch(
    ours: Any,
    theirs: Any,
    hyperparams: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    device: torch.device,
) -> None:
    """Tensors above the size threshold go tensor-at-a-time with scratch buffers (here the
    two larger shapes), the rest through the multi-tensor body: both must match torch."""
    monkeypatch.setattr(common, "LARGE_TENSOR_ELEMENTS", 10)
    if ours is hg.AdamW:
        hyperparams = {k: v for k, v in hyperparams.items() if k != "decoupled_weight_decay"}
    theirs_kwargs = torch_side(hyperparams, device)
    assert_matches_torch(
        ours, theirs, hyperparams, grad_none_every=6, torch_kwargs=theirs_kwargs, device=device
    )
    if not hyperparams.get("fused"):  # fused refuses complex parameters, like torch's
        assert_matches_torch(
            ours,
            theirs,
            hyperparams,
            complex_params=True,
            steps=10,
            torch_kwargs=theirs_kwargs,
            device=device,
        )
