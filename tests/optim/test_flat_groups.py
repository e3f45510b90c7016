"""Flat groups: a group that is one FlatLayout (handgrad.nn.flatten_parameters) is updated as
one tensor (handgrad/optim/_flat.py) — bit for bit torch.optim's result.

The reference is torch.optim's multi-tensor body on ordinary, separately allocated copies
of the parameters (or, where torch's multi-tensor body rounds differently from ours, our own
per-parameter path); every comparison is exact (rtol = atol = 0). ``flat_updates(opt)``
counts the group updates that took the flat path, so a test fails if the path silently
stops being taken; a mismatch of any kind must take the per-parameter path, never give a
different answer.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor

import handgrad.nn as hnn
from handgrad.nn.flat import FlatLayout
from handgrad.optim import Adam
from handgrad.optim._base import flat_updates
from tests.optim.rows import ROWS, Row

# A 0-d parameter and sizes that are not multiples of any vector width, on purpose.
SHAPES: list[tuple[int, ...]] = [(7, 3), (5,), (), (4, 1, 2), (33,)]
STEPS = 30


class Flat:
    """Parameters laid out by flatten_parameters; their gradients stored in the layout's slots
    the way a handgrad backward stores them (accumulate_grad)."""

    def __init__(self, dtype: torch.dtype, shapes: list[tuple[int, ...]] = SHAPES) -> None:
        generator = torch.Generator().manual_seed(7)
        real = dtype.to_real() if dtype.is_complex else dtype
        self.params = []
        for shape in shapes:
            values = torch.randn((*shape, 2) if dtype.is_complex else shape,
                                 generator=generator, dtype=torch.float64).to(real)  # fmt: skip
            self.params.append(torch.view_as_complex(values) if dtype.is_complex else values)
        (self.layout,) = hnn.flatten_parameters(self.params)
        self.set_grads()

    def set_grads(self, fresh: bool = False) -> None:
        """Gradient of a non-convex objective; ``fresh``: stored again after zero_grad()."""
        for p in self.params:
            grad = torch.sin(3 * p) + 0.1 * p
            if fresh or p.grad is None:
                p.grad = None
                hnn.accumulate_grad(p, grad)
            else:
                p.grad.copy_(grad)

    def separate_copies(self) -> list[Tensor]:
        """The same values as ordinary tensors (the reference's parameters)."""
        return [p.detach().clone() for p in self.params]


def set_reference_grads(params: list[Tensor]) -> None:
    for p in params:
        p.grad = torch.sin(3 * p) + 0.1 * p


def assert_same(ours: list[Tensor], theirs: list[Tensor]) -> None:
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)


def steps_match(flat: Flat, reference: list[Tensor], ours: Any, theirs: Any, count: int) -> None:
    """``count`` steps of both optimizers on fresh gradients, parameters equal after each."""
    for _ in range(count):
        flat.set_grads()
        set_reference_grads(reference)
        ours.step()
        theirs.step()
        assert_same(flat.params, reference)


def accumulated_steps_match(
    params: list[Tensor], reference: list[Tensor], ours: Any, theirs: Any, count: int
) -> None:
    """``count`` steps with each gradient stored as a handgrad backward stores it
    (accumulate_grad, after a zero_grad), the reference's set directly; equal at the end."""
    for _ in range(count):
        for p in params:
            p.grad = None
            hnn.accumulate_grad(p, torch.sin(3 * p) + 0.1 * p)
        set_reference_grads(reference)
        ours.step()
        theirs.step()
    assert_same(params, reference)


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


def _reference(row: Row, params: list[Tensor], hyperparams: dict[str, Any]) -> Any:
    """torch's multi-tensor body (its CPU foreach refuses a tensor lr: then its single-tensor
    one), or ours per parameter where torch's multi-tensor body rounds differently."""
    if not row.foreach_bitwise:
        return row.ours(params, **copy.deepcopy(hyperparams))
    tensor_lr = isinstance(hyperparams.get("lr"), Tensor)
    return row.theirs(params, **copy.deepcopy(hyperparams), foreach=not tensor_lr)


FLAT = [
    pytest.param(row, kwargs, id=f"{row.name}-{index}")
    for row in ROWS
    for index, kwargs in enumerate(row.flat)
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("row", "hyperparams"), FLAT)
def test_flat_steps_match_torch_bitwise(
    row: Row, hyperparams: dict[str, Any], dtype: torch.dtype
) -> None:
    flat = Flat(dtype)
    reference = flat.separate_copies()
    ours = row.ours(flat.params, **copy.deepcopy(hyperparams))
    theirs = _reference(row, reference, hyperparams)
    schedulers = [torch.optim.lr_scheduler.StepLR(opt, 10, 0.5) for opt in (ours, theirs)]
    for step in range(STEPS):
        flat.set_grads(fresh=step % 3 == 0)  # stored again after a zero_grad now and then
        set_reference_grads(reference)
        ours.step()
        theirs.step()
        for scheduler in schedulers:
            scheduler.step()
        assert_same(flat.params, reference)
    # SGD's momentum buffer starts as the first gradient: its first step is per-parameter.
    first_steps = 1 if row.name == "SGD" and hyperparams.get("momentum") else 0
    assert flat_updates(ours) == STEPS - first_steps
    assert_state_dicts_equal(ours.state_dict(), theirs.state_dict())
    # The state lives in flat buffers (one view per parameter): the next steps stay flat.
    for key, value in ours.state[flat.params[0]].items():
        if key != "step":
            assert value._base is not None, key


@pytest.mark.parametrize(
    "row", [pytest.param(row, id=row.name) for row in ROWS if row.ours.update_flat is not None]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_the_flat_body_equals_the_plain_body_bitwise(row: Row, dtype: torch.dtype) -> None:
    """update_flat is a fast path: the same bits as update on the same flat group."""
    plain_cls = type(f"Plain{row.name}", (row.ours,), {"update_flat": None})
    finals = []
    for cls in (row.ours, plain_cls):
        for hyperparams in row.flat:
            flat = Flat(dtype)
            optimizer = cls(flat.params, **copy.deepcopy(hyperparams))
            for _ in range(10):
                flat.set_grads()
                optimizer.step()
            assert flat_updates(optimizer) >= 9
            finals.append([p.clone() for p in flat.params])
    half = len(finals) // 2
    for fast, plain in zip(finals[:half], finals[half:], strict=True):
        assert_same(fast, plain)


def test_complex_flat_group_matches_torch() -> None:
    # Complex parameters are updated as (Re, Im) pairs, in one flat buffer as well.
    flat = Flat(torch.complex128, [(3, 2), (4,)])
    reference = flat.separate_copies()
    ours = Adam(flat.params, lr=0.01, amsgrad=True)
    theirs = torch.optim.Adam(reference, lr=0.01, amsgrad=True, foreach=True)
    steps_match(flat, reference, ours, theirs, 10)
    assert flat_updates(ours) == 10


def _pair(dtype: torch.dtype = torch.float64) -> tuple[Flat, list[Tensor], Adam, Any]:
    flat = Flat(dtype)
    reference = flat.separate_copies()
    return flat, reference, Adam(flat.params, lr=0.01), torch.optim.Adam(reference, lr=0.01)


def test_a_gradient_of_its_own_is_gathered_and_the_step_stays_flat() -> None:
    flat, reference, ours, theirs = _pair()
    steps_match(flat, reference, ours, theirs, 3)
    assert flat_updates(ours) == 3
    flat.set_grads()
    flat.params[1].grad = flat.params[1].grad.clone()  # not its slot: gathered into it
    set_reference_grads(reference)
    ours.step()
    theirs.step()
    assert_same(flat.params, reference)
    assert flat_updates(ours) == 4
    flat.set_grads(fresh=True)  # zero_grad() and a backward
    steps_match(flat, reference, ours, theirs, 3)
    assert flat_updates(ours) == 7


def test_a_slot_handed_out_as_grad_and_moved_takes_the_per_parameter_path() -> None:
    params = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    for p in params:
        p.grad = torch.sin(3 * p) + 0.1 * p
    (layout,) = hnn.flatten_parameters(params)  # the existing gradients move into the slots
    assert all(p.grad is slot for p, slot in zip(params, layout.slots, strict=True))
    reference = [p.detach().clone() for p in params]
    set_reference_grads(reference)
    ours, theirs = Adam(params, lr=0.01), torch.optim.Adam(reference, lr=0.01, foreach=True)
    ours.step()
    theirs.step()
    assert flat_updates(ours) == 1
    grad = params[0].grad
    grad.set_(torch.sin(3 * params[0]) + 0.1 * params[0])  # the slot is now memory of its own
    params[1].grad.copy_(torch.sin(3 * params[1]) + 0.1 * params[1])
    set_reference_grads(reference)
    ours.step()
    theirs.step()
    assert flat_updates(ours) == 1  # the layout's gradient buffer is stale: not flat
    assert_same(params, reference)


def test_a_parameter_without_gradient_is_skipped_like_torch() -> None:
    flat, reference, ours, theirs = _pair()
    steps_match(flat, reference, ours, theirs, 2)
    flat.set_grads()
    set_reference_grads(reference)
    flat.params[2].grad = reference[2].grad = None
    ours.step()
    theirs.step()
    assert_same(flat.params, reference)
    # Its step count now lags the others': never flat again, still torch's trajectory.
    flat.set_grads(fresh=True)
    steps_match(flat, reference, ours, theirs, 3)
    assert flat_updates(ours) == 2
    assert_state_dicts_equal(ours.state_dict(), theirs.state_dict())


def test_a_sparse_gradient_on_a_flat_group_is_refused_like_torch() -> None:
    """The gather refuses it (the per-parameter path then raises torch's error); the flat
    path takes over again once the gradients are dense."""
    flat, reference, ours, theirs = _pair()
    steps_match(flat, reference, ours, theirs, 2)
    flat.set_grads()
    flat.params[1].grad = flat.params[1].grad.to_sparse()
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
        ours.step()
    flat.set_grads(fresh=True)
    steps_match(flat, reference, ours, theirs, 2)
    assert flat_updates(ours) == 4


def test_moved_parameters_take_the_per_parameter_path() -> None:
    flat, reference, ours, theirs = _pair()
    steps_match(flat, reference, ours, theirs, 2)
    for p in flat.params:  # each parameter on memory of its own (as module.to() would)
        p.data = p.data.clone()
    assert not flat.layout.holds()
    for _ in range(2):
        for p in flat.params:
            p.grad = None
            hnn.accumulate_grad(p, torch.sin(3 * p) + 0.1 * p)  # not its old slot
        set_reference_grads(reference)
        ours.step()
        theirs.step()
    assert_same(flat.params, reference)
    assert flat_updates(ours) == 2
    # Flattened again, a new layout: an optimizer built (or loaded) afterwards is flat again.
    hnn.flatten_parameters(flat.params)
    again = Adam(flat.params, lr=0.01)
    again.load_state_dict(ours.state_dict())
    flat.set_grads(fresh=True)
    steps_match(flat, reference, again, theirs, 2)
    assert flat_updates(again) == 2


def test_an_optimizer_built_before_flattening_is_correct_not_flat() -> None:
    params = Flat(torch.float64).separate_copies()
    reference = [p.clone() for p in params]
    ours = Adam(params, lr=0.01)  # before: the group is not a layout
    hnn.flatten_parameters(params)
    theirs = torch.optim.Adam(reference, lr=0.01)
    accumulated_steps_match(params, reference, ours, theirs, 3)
    assert flat_updates(ours) == 0


def test_mixed_dtypes_are_two_layouts_and_not_flat() -> None:
    params = [torch.randn(3, 2), torch.randn(4), torch.randn(5, dtype=torch.float64)]
    layouts = hnn.flatten_parameters(params)
    assert [layout.data.dtype for layout in layouts] == [torch.float32, torch.float64]
    reference = [p.detach().clone() for p in params]
    ours, theirs = Adam(params, lr=0.01), torch.optim.Adam(reference, lr=0.01)
    accumulated_steps_match(params, reference, ours, theirs, 3)
    assert flat_updates(ours) == 0


def test_part_of_a_layout_is_not_flat() -> None:
    flat = Flat(torch.float64)
    reference = flat.separate_copies()
    ours = Adam([{"params": flat.params[:2]}, {"params": flat.params[2:]}], lr=0.01)
    theirs = torch.optim.Adam([{"params": reference[:2]}, {"params": reference[2:]}], lr=0.01)
    steps_match(flat, reference, ours, theirs, 3)
    assert flat_updates(ours) == 0


def test_two_groups_one_flat() -> None:
    flat = Flat(torch.float64)
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
    assert flat_updates(ours) == 4


def test_large_flat_group_matches_torch() -> None:
    # Over LARGE_TENSOR_ELEMENTS elements: Adam's flat body, or for maximize its plain one.
    flat = Flat(torch.float32, [(300, 220), (17,)])
    reference = flat.separate_copies()
    ours = Adam(flat.params, lr=0.01, amsgrad=True, maximize=True, weight_decay=0.1)
    theirs = torch.optim.Adam(
        reference, lr=0.01, amsgrad=True, maximize=True, weight_decay=0.1, foreach=True
    )
    steps_match(flat, reference, ours, theirs, 5)
    assert flat_updates(ours) == 5


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_handover_mid_run(direction: str) -> None:
    flat, reference, ours, theirs = _pair(torch.float32)
    steps_match(flat, reference, ours, theirs, 5)
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
        assert flat_updates(ours) == 10
    else:
        # A flat group takes over torch's state (fresh tensors, laid flat once) ...
        other = Flat(torch.float32)
        with torch.no_grad():
            for p, q in zip(other.params, reference, strict=True):
                p.copy_(q)
        receiver = Adam(other.params, lr=0.01)
        receiver.load_state_dict(copy.deepcopy(theirs.state_dict()))
        for _ in range(5):
            other.set_grads()
            set_reference_grads(reference)
            receiver.step()
            theirs.step()
        assert_same(other.params, reference)  # ... and goes on exactly as torch does
        assert flat_updates(receiver) == 5
        for key in ("exp_avg", "exp_avg_sq"):
            assert receiver.state[other.params[1]][key]._base is not None
        assert_state_dicts_equal(receiver.state_dict(), theirs.state_dict())


def test_flattened_handgrad_network_trains_flat_like_torch() -> None:
    # handgrad.nn.flatten_parameters builds the layout; the backward fills the flat gradients.
    torch.manual_seed(3)
    model = hnn.Sequential(hnn.Linear(1, 100), hnn.Sigmoid(), hnn.Linear(100, 1))
    twin = copy.deepcopy(model)  # not flat: the torch reference trains this one
    (layout,) = hnn.flatten_parameters(model)
    assert isinstance(layout, FlatLayout)
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
    assert flat_updates(ours) == 20


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_layouts_are_not_flat_and_match_torch(dtype: torch.dtype) -> None:
    # float16/bfloat16 kernels round differently in a tensor's vectorised part and its tail,
    # so one flat tensor and separate tensors could differ in the last bit: such groups take
    # the per-parameter path, which matches torch's multi-tensor body.
    flat = Flat(dtype)
    reference = flat.separate_copies()
    ours = Adam(flat.params, lr=0.01, betas=(0.8, 0.99), eps=1e-3)
    theirs = torch.optim.Adam(reference, lr=0.01, betas=(0.8, 0.99), eps=1e-3, foreach=True)
    steps_match(flat, reference, ours, theirs, 20)
    assert flat_updates(ours) == 0
