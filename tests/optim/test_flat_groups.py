"""Flat groups: a group whose parameters, gradients and state tile one buffer each is updated
as one tensor (handgrad/optim/_flat.py) — bit for bit torch.optim's result.

The reference is torch.optim on ordinary, separately allocated copies of the parameters;
every comparison is exact (rtol = atol = 0). ``flat_cache(opt).updates`` counts the group
updates that took the flat path, so a test fails if the path silently stops being taken.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor

import handgrad.nn as hnn
from handgrad.optim import Adadelta, Adam, Adamax, AdamW, RMSprop
from handgrad.optim._flat import flat_cache, tiled_view

# A 0-d parameter and sizes that are not multiples of any vector width, on purpose.
SHAPES: list[tuple[int, ...]] = [(7, 3), (5,), (), (4, 1, 2), (33,)]
STEPS = 50


def _numel(shape: tuple[int, ...]) -> int:
    return torch.Size(shape).numel()


def flat_views(buffer: Tensor, shapes: list[tuple[int, ...]]) -> list[Tensor]:
    """Views of ``buffer`` shaped as ``shapes``, one after another (the flat layout)."""
    views, offset = [], 0
    for shape in shapes:
        views.append(buffer[offset : offset + _numel(shape)].view(shape))
        offset += _numel(shape)
    return views


class Flat:
    """Parameters living in one buffer, gradients in another, as flatten_parameters makes."""

    def __init__(self, dtype: torch.dtype, shapes: list[tuple[int, ...]] = SHAPES) -> None:
        total = sum(_numel(s) for s in shapes)
        generator = torch.Generator().manual_seed(7)
        self.shapes = shapes
        self.param = torch.randn(total, generator=generator, dtype=dtype)
        self.grad = torch.zeros(total, dtype=dtype)
        self.params = flat_views(self.param, shapes)
        self.set_grads()

    def set_grads(self, fresh_views: bool = False) -> None:
        """Gradient of a non-convex objective, written into the flat gradient buffer."""
        self.grad.copy_(torch.sin(3 * self.param) + 0.1 * self.param)
        if fresh_views or self.params[0].grad is None:
            for p, g in zip(self.params, flat_views(self.grad, self.shapes), strict=True):
                p.grad = g

    def separate_copies(self) -> list[Tensor]:
        """The same values as ordinary tensors (the torch reference's parameters)."""
        return [p.detach().clone() for p in self.params]


def set_reference_grads(params: list[Tensor]) -> None:
    for p in params:
        p.grad = torch.sin(3 * p) + 0.1 * p


def assert_same(ours: list[Tensor], theirs: list[Tensor]) -> None:
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)


def steps_match(
    flat: Flat, reference: list[Tensor], ours: Any, theirs: Any, count: int
) -> None:
    """``count`` steps of both optimizers on fresh gradients, parameters equal after each."""
    for _ in range(count):
        flat.set_grads()
        set_reference_grads(reference)
        ours.step()
        theirs.step()
        assert_same(flat.params, reference)


def assert_state_dicts_equal(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["state"].keys() == theirs["state"].keys()
    for index, state in theirs["state"].items():
        assert ours["state"][index].keys() == state.keys()
        for key, value in state.items():
            mine = ours["state"][index][key]
            assert (mine.dtype, mine.shape) == (value.dtype, value.shape), key
            torch.testing.assert_close(mine, value, rtol=0, atol=0)
    # Everything but the parameter ids and the reference's explicit foreach flag.
    def settings(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in g.items() if k not in ("params", "foreach")} for g in groups]

    assert settings(ours["param_groups"]) == settings(theirs["param_groups"])


CASES = [
    ("default", {"lr": 0.01}),
    ("amsgrad", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("maximize, weight_decay", {"lr": 0.01, "maximize": True, "weight_decay": 0.1}),
    ("decoupled", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("betas, eps", {"lr": 0.02, "betas": (0.8, 0.9), "eps": 1e-3}),
    ("tensor lr", {"lr": torch.tensor(0.01), "amsgrad": True}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    ("cls", "hyperparams"),
    [pytest.param(Adam, kw, id=f"Adam-{name}") for name, kw in CASES]
    + [pytest.param(AdamW, {"lr": 0.01, "amsgrad": True}, id="AdamW-amsgrad")],
)
def test_flat_steps_match_torch_bitwise(
    cls: type[Adam], hyperparams: dict[str, Any], dtype: torch.dtype
) -> None:
    flat = Flat(dtype)
    reference = flat.separate_copies()
    ours = cls(flat.params, **copy.deepcopy(hyperparams))
    tensor_lr = isinstance(hyperparams["lr"], Tensor)  # torch's foreach refuses it on CPU
    theirs = getattr(torch.optim, cls.__name__)(
        reference, **copy.deepcopy(hyperparams), foreach=not tensor_lr
    )
    schedulers = [torch.optim.lr_scheduler.StepLR(opt, 10, 0.5) for opt in (ours, theirs)]
    for step in range(STEPS):
        flat.set_grads(fresh_views=step % 3 == 0)  # new gradient views now and then
        set_reference_grads(reference)
        ours.step()
        theirs.step()
        for scheduler in schedulers:
            scheduler.step()
        assert_same(flat.params, reference)
    assert flat_cache(ours).updates == STEPS
    assert_state_dicts_equal(ours.state_dict(), theirs.state_dict())
    # The state lives in flat buffers: the next steps stay flat.
    for key in ours.state[flat.params[0]]:
        assert tiled_view([ours.state[p][key] for p in flat.params]) is not None, key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    ("cls", "hyperparams"),
    [
        (RMSprop, {"lr": 0.01}),
        (RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.9, "weight_decay": 0.1}),
        (Adamax, {"lr": 0.01, "maximize": True, "weight_decay": 0.1}),
        (Adamax, {"lr": 0.01}),
        (Adadelta, {"lr": 1.0}),
        (Adadelta, {"lr": 0.5, "rho": 0.8, "weight_decay": 0.1, "maximize": True}),
    ],
    ids=[
        "RMSprop", "RMSprop-centered-momentum", "Adamax-maximize", "Adamax", "Adadelta",
        "Adadelta-maximize-weight_decay",
    ],
)
def test_other_flat_optimizers_match_torch_bitwise(
    cls: type[torch.optim.Optimizer], hyperparams: dict[str, Any], dtype: torch.dtype
) -> None:
    flat = Flat(dtype)
    reference = flat.separate_copies()
    ours = cls(flat.params, **hyperparams)
    theirs = getattr(torch.optim, cls.__name__)(reference, **hyperparams, foreach=True)
    steps_match(flat, reference, ours, theirs, 30)
    assert flat_cache(ours).updates == 30
    assert_state_dicts_equal(ours.state_dict(), theirs.state_dict())


def _run(
    flat: Flat, reference: list[Tensor], ours: Adam, theirs: torch.optim.Optimizer, steps: int
) -> None:
    for _ in range(steps):
        flat.set_grads()
        set_reference_grads(reference)
        ours.step()
        theirs.step()
    assert_same(flat.params, reference)


def _pair(dtype: torch.dtype = torch.float64) -> tuple[Flat, list[Tensor], Adam, Any]:
    flat = Flat(dtype)
    reference = flat.separate_copies()
    return flat, reference, Adam(flat.params, lr=0.01), torch.optim.Adam(reference, lr=0.01)


def test_replaced_gradient_falls_back_then_returns() -> None:
    flat, reference, ours, theirs = _pair()
    _run(flat, reference, ours, theirs, 3)
    assert flat_cache(ours).updates == 3
    flat.set_grads()
    flat.params[1].grad = flat.params[1].grad.clone()  # no longer a view of the buffer
    set_reference_grads(reference)
    ours.step()
    theirs.step()
    assert_same(flat.params, reference)
    assert flat_cache(ours).updates == 3
    flat.set_grads(fresh_views=True)
    _run(flat, reference, ours, theirs, 3)
    assert flat_cache(ours).updates == 6


def test_parameter_without_gradient_is_skipped_like_torch() -> None:
    flat, reference, ours, theirs = _pair()
    _run(flat, reference, ours, theirs, 2)
    flat.set_grads()
    set_reference_grads(reference)
    flat.params[2].grad = reference[2].grad = None
    ours.step()
    theirs.step()
    assert_same(flat.params, reference)
    # Its step count now lags the others': never flat again, still torch's trajectory.
    flat.set_grads(fresh_views=True)
    _run(flat, reference, ours, theirs, 3)
    assert flat_cache(ours).updates == 2
    assert_state_dicts_equal(ours.state_dict(), theirs.state_dict())


def test_moved_parameters_rebuild_or_fall_back() -> None:
    flat, reference, ours, theirs = _pair()
    _run(flat, reference, ours, theirs, 2)
    # Re-homed into a new buffer (as flatten_parameters or .to() would): flat again.
    flat.param = flat.param.clone()
    flat.grad = flat.grad.clone()
    for p, view in zip(flat.params, flat_views(flat.param, flat.shapes), strict=True):
        p.data = view
    flat.set_grads(fresh_views=True)
    _run(flat, reference, ours, theirs, 2)
    assert flat_cache(ours).updates == 4
    # Each parameter on its own again: the per-parameter path.
    for p in flat.params:
        p.data = p.data.clone()
    for _ in range(2):
        for p in flat.params:
            p.grad = torch.sin(3 * p) + 0.1 * p
        set_reference_grads(reference)
        ours.step()
        theirs.step()
    assert_same(flat.params, reference)
    assert flat_cache(ours).updates == 4


def test_mixed_dtypes_are_not_flat() -> None:
    single, double = Flat(torch.float32, [(3, 2), (4,)]), Flat(torch.float64, [(5,)])
    params = single.params + double.params
    reference = [p.detach().clone() for p in params]
    ours, theirs = Adam(params, lr=0.01), torch.optim.Adam(reference, lr=0.01)
    for _ in range(3):
        single.set_grads()
        double.set_grads()
        set_reference_grads(reference)
        ours.step()
        theirs.step()
    assert_same(params, reference)
    assert flat_cache(ours).updates == 0


def test_two_groups_one_flat() -> None:
    flat = Flat(torch.float64)
    # Two separately allocated tensors: not flat (one tensor alone would be a flat group).
    loose = [torch.linspace(-1, 1, 6, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    reference, loose_reference = flat.separate_copies(), [t.clone() for t in loose]
    ours = Adam([{"params": flat.params}, {"params": loose, "lr": 0.1}], lr=0.01)
    theirs = torch.optim.Adam([{"params": reference}, {"params": loose_reference, "lr": 0.1}])
    theirs.param_groups[0]["lr"] = 0.01
    for _ in range(4):
        flat.set_grads()
        set_reference_grads(reference)
        set_reference_grads(loose)
        set_reference_grads(loose_reference)
        ours.step()
        theirs.step()
    assert_same(flat.params + loose, reference + loose_reference)
    assert flat_cache(ours).updates == 4


def test_large_flat_group_matches_torch() -> None:
    # Over LARGE_TENSOR_ELEMENTS elements the one tensor still takes the scratch-buffer body.
    flat = Flat(torch.float32, [(300, 220), (17,)])
    reference = flat.separate_copies()
    ours = Adam(flat.params, lr=0.01, amsgrad=True, maximize=True, weight_decay=0.1)
    theirs = torch.optim.Adam(
        reference, lr=0.01, amsgrad=True, maximize=True, weight_decay=0.1, foreach=True
    )
    _run(flat, reference, ours, theirs, 5)
    assert flat_cache(ours).updates == 5


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover_mid_run(direction: str) -> None:
    flat, reference, ours, theirs = _pair(torch.float32)
    _run(flat, reference, ours, theirs, 5)
    if direction == "ours_to_torch":
        # A torch optimizer on separate copies takes over our flat state...
        taker = [p.detach().clone() for p in flat.params]
        receiver: torch.optim.Optimizer = torch.optim.Adam(taker, lr=0.01)
        receiver.load_state_dict(copy.deepcopy(ours.state_dict()))
        for _ in range(5):
            flat.set_grads()
            set_reference_grads(taker)
            receiver.step()
            ours.step()
        assert_same(taker, flat.params)  # ... and goes on exactly as we do
        assert flat_cache(ours).updates == 10
    else:
        # A flat group takes over torch's state (fresh tensors, laid flat once) ...
        other = Flat(torch.float32)
        other.param.copy_(torch.cat([p.reshape(-1) for p in reference]))
        receiver = Adam(other.params, lr=0.01)
        receiver.load_state_dict(copy.deepcopy(theirs.state_dict()))
        for _ in range(5):
            other.set_grads()
            set_reference_grads(reference)
            receiver.step()
            theirs.step()
        assert_same(other.params, reference)  # ... and goes on exactly as torch does
        assert flat_cache(receiver).updates == 5
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert tiled_view([receiver.state[p][key] for p in other.params]) is not None
        assert_state_dicts_equal(receiver.state_dict(), theirs.state_dict())


def test_flattened_handgrad_network_trains_flat_like_torch() -> None:
    # handgrad.nn.flatten_parameters builds the layout; the backward fills the flat gradients.
    torch.manual_seed(3)
    model = hnn.Sequential(hnn.Linear(1, 100), hnn.Sigmoid(), hnn.Linear(100, 1))
    twin = copy.deepcopy(model)  # not flat: the torch reference trains this one
    hnn.flatten_parameters(model)
    loss_fn = hnn.MSELoss()
    ours = Adam(model.parameters(), lr=5e-3)
    theirs = torch.optim.Adam(twin.parameters(), lr=5e-3, foreach=True)
    x = torch.linspace(-2, 2, 16).unsqueeze(1)
    y = x**3
    for _ in range(20):
        for net, opt in ((model, ours), (twin, theirs)):
            opt.zero_grad()
            loss_fn(net(x), y)
            net.backward(loss_fn.backward(), input_grad=False)
            opt.step()
    assert_same(list(model.parameters()), list(twin.parameters()))
    assert flat_cache(ours).updates == 20


def test_complex_flat_group_matches_torch() -> None:
    # Complex parameters are updated as (Re, Im) pairs, in one flat buffer as well.
    flat = Flat(torch.complex128, [(3, 2), (4,)])
    reference = flat.separate_copies()
    ours = Adam(flat.params, lr=0.01, amsgrad=True)
    theirs = torch.optim.Adam(reference, lr=0.01, amsgrad=True, foreach=True)
    _run(flat, reference, ours, theirs, 10)
    assert flat_cache(ours).updates == 10


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_groups_are_not_flat_and_match_torch(dtype: torch.dtype) -> None:
    # torch's _foreach_mul_ rounds a scalar to bfloat16/float16 first and Tensor.mul_ does not,
    # so a flat update (per-tensor kernels) would differ from torch's foreach update in the
    # last bit: such groups take the per-parameter path, which matches.
    flat = Flat(dtype)
    reference = flat.separate_copies()
    ours = Adam(flat.params, lr=0.01, betas=(0.8, 0.99), eps=1e-3)
    theirs = torch.optim.Adam(reference, lr=0.01, betas=(0.8, 0.99), eps=1e-3, foreach=True)
    steps_match(flat, reference, ours, theirs, 20)
    assert flat_cache(ours).updates == 0
