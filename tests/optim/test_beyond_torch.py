"""Every optimizer beyond torch.optim against its authors' implementation, by the same tests
(rows in tests/optim/beyond_rows.py): the same bits over the reference's options in float64
and float32 (0-d to 3-d tensors, two groups, a parameter now and then without gradient),
complex parameters, state_dict handover mid-run, refusals, the flat layout, convergence;
then what is particular to one of them (a reference bug, a switch, a callback).
"""

from __future__ import annotations

import builtins
import copy
import inspect
import pickle
from typing import Any

import pytest
import torch

import handgrad.optim as hg
from handgrad.check import check_optimizer
from handgrad.nn import accumulate_grad, flatten_parameters
from handgrad.optim._base import flat_updates
from handgrad.optim.names import resolve_optimizer
from tests.optim.beyond_harness import Pair, handover, run_beside
from tests.optim.beyond_rows import BY_NAME, ROWS, Row
from tests.optim.test_convergence import rosenbrock, rosenbrock_gradient

DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)


def _id(text: str) -> str:
    return text.replace(" ", "_").replace(",", "")


def _options(row: Row) -> dict[str, Any]:
    return {"second_group": row.group, "train_mode": row.train_mode}


MATCHES = [pytest.param(row, kwargs, id=f"{row.name}-{_id(desc)}")
           for row in ROWS for desc, kwargs in row.configs]  # fmt: skip


@DTYPES
@pytest.mark.parametrize(("row", "kwargs"), MATCHES)
def test_same_bits_as_the_reference(row: Row, kwargs: dict[str, Any], dtype: torch.dtype) -> None:
    run_beside(row.ours, row.reference_class(), kwargs, exact=True, dtype=dtype,
               none_every=row.none_every, second_group=row.group(kwargs),
               train_mode=row.train_mode, scheduler=True)  # fmt: skip


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
def test_on_each_device_like_the_reference_there(row: Row, device: torch.device) -> None:
    """Both on the same device. On the CPU the same bits; on CUDA handgrad's multi-tensor
    kernels may fuse differently from the reference's per-tensor ones: 1e-12 relative in
    float64 (the CPU rows above are the bitwise claim)."""
    kwargs = row.configs[1][1]
    run_beside(row.ours, row.reference_class(), kwargs, exact=device.type == "cpu",
               steps=20, none_every=row.none_every, second_group=row.group(kwargs),
               train_mode=row.train_mode, device=device)  # fmt: skip


LARGE_SHAPES = [(3, 4), (260, 256), (70_000,)]  # two of >= 65,536 elements: update_large


@pytest.mark.parametrize(("row", "kwargs"), MATCHES)
def test_large_tensors_same_bits_as_the_reference(row: Row, kwargs: dict[str, Any]) -> None:
    """The large-tensor bodies (one tensor at a time, temporaries in reused buffers) over
    every option of the reference, beside a small tensor that takes the multi-tensor body."""
    run_beside(row.ours, row.reference_class(), kwargs, exact=True, steps=12,
               shapes=LARGE_SHAPES, second_group=row.group(kwargs),
               train_mode=row.train_mode)  # fmt: skip


COMPLEX = [pytest.param(row, kwargs, id=f"{row.name}-{index}")
           for row in ROWS if row.complex
           for index, kwargs in enumerate(row.complex_configs)]  # fmt: skip


@pytest.mark.parametrize(("row", "kwargs"), COMPLEX)
def test_complex_parameters(row: Row, kwargs: dict[str, Any]) -> None:
    """"native": the reference on the same complex tensors; "real": the reference on their
    (Re, Im) views (where its own complex arithmetic is not the rule's)."""
    run_beside(row.ours, row.reference_class(), kwargs, exact=True, steps=30,
               complex_mode=row.complex, second_group=row.group(kwargs),
               train_mode=row.train_mode)  # fmt: skip


def test_soap_refuses_complex_parameters() -> None:
    p = torch.zeros(3, dtype=torch.complex128)
    p.grad = torch.ones(3, dtype=torch.complex128)
    with pytest.raises(RuntimeError, match="complex"):
        hg.SOAP([p]).step()


HANDOVER = [pytest.param(row, reverse, id=f"{row.name}-{'ours' if reverse else 'reference'}_first")
            for row in ROWS for reverse in (False, True)
            if not reverse or row.reverse_handover]  # fmt: skip


@pytest.mark.parametrize(("row", "reverse"), HANDOVER)
def test_state_dict_handover_mid_run(row: Row, reverse: bool) -> None:
    handover(row.ours, row.reference_class(), row.handover, exact=True, reverse=reverse,
             train_mode=row.train_mode, second_group=row.group(row.handover))  # fmt: skip


def test_adan_handover_to_the_reference_parts_in_float32_corrections() -> None:
    """Documented in the row: the reference computes its bias corrections from the float32
    step tensor it receives; the parameters still agree to float32 rounding."""
    row = BY_NAME["Adan"]
    with pytest.raises(AssertionError, match="not the same bits"):
        handover(row.ours, row.reference_class(), row.handover, exact=True, reverse=True)
    handover(row.ours, row.reference_class(), row.handover, exact=False, reverse=True,
             dtype=torch.float32)  # fmt: skip


BAD = [pytest.param(row, kwargs, expected, id=f"{row.name}-{_id(str(kwargs))}")
       for row in ROWS for kwargs, expected in row.bad]  # fmt: skip


def _raised(cls: Any, kwargs: dict[str, Any]) -> BaseException | None:
    try:
        cls([torch.zeros(2, requires_grad=True)], **kwargs)
    except Exception as error:  # the point: whatever the constructor raises
        return error
    return None


@pytest.mark.parametrize(("row", "kwargs", "expected"), BAD)
def test_bad_hyperparameters_are_refused(row: Row, kwargs: dict[str, Any],
                                         expected: type[Exception]) -> None:  # fmt: skip
    """The reference's exception type where it raises a builtin one; ValueError (TypeError
    for an unknown option) where it raises its own class or nothing. The message names the
    value."""
    ours = _raised(row.ours, kwargs)
    assert isinstance(ours, expected), f"{kwargs}: {ours!r}"
    theirs = _raised(row.reference_class(), kwargs)
    if theirs is not None and type(theirs).__name__ in vars(builtins):
        assert isinstance(ours, type(theirs)), f"{kwargs}: ours {ours!r}, reference {theirs!r}"
    else:
        assert isinstance(ours, (ValueError, TypeError))
    (key, value), = kwargs.items()
    values = value if isinstance(value, tuple) else (value,)
    assert key in str(ours) or any(str(v) in str(ours) for v in values), str(ours)


def test_the_lion_and_adan_errors_are_both_value_and_assertion_errors() -> None:
    for cls, kwargs in ((hg.Lion, {"lr": -1.0}), (hg.Adan, {"betas": (0.1, 0.2)})):
        error = _raised(cls, kwargs)
        assert isinstance(error, ValueError)
        assert isinstance(error, AssertionError)


def _converge(cls: Any, setting: tuple[dict[str, Any], int, float | None],
              params: list[torch.Tensor], gradients: Any) -> None:  # fmt: skip
    kwargs, steps, gamma = setting
    optimizer = cls(params, **kwargs)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma) if gamma else None
    if hasattr(optimizer, "train"):
        optimizer.train()
    for _ in range(steps):
        for p, g in zip(params, gradients(params), strict=True):
            p.grad = g
        optimizer.step()
        if schedule is not None:
            schedule.step()
    if hasattr(optimizer, "eval"):
        optimizer.eval()  # the averaged weights


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS if r.rosenbrock])
def test_rosenbrock_reaches_the_minimum(row: Row) -> None:
    assert row.rosenbrock is not None
    p = torch.tensor([-1.5, 2.0], dtype=torch.float64)
    start = rosenbrock(p).item()
    _converge(row.ours, row.rosenbrock, [p], lambda ps: [rosenbrock_gradient(ps[0])])
    assert (p - 1).abs().max().item() < 0.05, p
    assert rosenbrock(p).item() < 1e-3 * start


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS if r.least_squares])
def test_least_squares_reaches_the_solution(row: Row) -> None:
    assert row.least_squares is not None
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(20, 5, generator=generator, dtype=torch.float64)
    solution = torch.randn(5, generator=generator, dtype=torch.float64)
    b = a @ solution
    x = torch.zeros(5, dtype=torch.float64)
    _converge(row.ours, row.least_squares, [x], lambda ps: [a.T @ (a @ ps[0] - b) / 20])
    assert (x - solution).abs().max().item() < 0.02, x - solution


FLAT = [pytest.param(row, kwargs, id=f"{row.name}-{_id(desc)}")
        for row in ROWS if row.ours.elementwise for desc, kwargs in row.configs[:3]]  # fmt: skip


@DTYPES
@pytest.mark.parametrize(("row", "kwargs"), FLAT)
def test_a_flat_network_takes_the_flat_path_with_the_same_bits(
    row: Row, kwargs: dict[str, Any], dtype: torch.dtype
) -> None:
    shapes = ((3, 2), (3,), (1, 3), (1,))
    finals = []
    for flat in (True, False):
        generator = torch.Generator().manual_seed(0)
        params = [torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes]
        if flat:
            flatten_parameters(params)
        optimizer = row.ours(params, **copy.deepcopy(kwargs))
        if row.train_mode:
            optimizer.train()  # type: ignore[attr-defined]
        for _ in range(12):
            for p in params:
                grad = torch.sin(3 * p) + 0.1 * p
                if flat:
                    accumulate_grad(p, grad)  # into the layout's gradient slot
                else:
                    p.grad = grad
            optimizer.step()
            if flat:
                optimizer.zero_grad(set_to_none=False)
        if flat:
            assert flat_updates(optimizer) == 12
        finals.append((params, optimizer.state))
    (flat_params, flat_state), (plain, plain_state) = finals
    for p, q in zip(flat_params, plain, strict=True):
        assert torch.equal(p, q)
        for key, value in plain_state[q].items():
            assert torch.equal(flat_state[p][key], value), key


def test_options_that_look_at_whole_tensors_keep_a_group_off_the_flat_path() -> None:
    for cls, kwargs in ((hg.ADOPT, {"cautious": True}), (hg.Adan, {"restart_cond": bool})):
        params = [torch.randn(3), torch.randn(2)]
        flatten_parameters(params)
        optimizer = cls(params, **kwargs)
        for p in params:
            accumulate_grad(p, torch.ones_like(p))
        optimizer.step()
        assert flat_updates(optimizer) == 0


# ---------------------------------------------------------------- one optimizer at a time


def test_soap_merge_dims_bug_is_fixed_and_otherwise_equal_to_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pytorch-optimizer's merge_small_dims returns [1] when every dim merges into one, so
    its merge_dims=True fails on a 1-d tensor (and on any tensor of at most
    max_precondition_dim elements). With that function corrected it equals ours."""
    reference = BY_NAME["SOAP"].reference_class()
    kwargs = {"lr": 0.01, "merge_dims": True, "precondition_frequency": 2}
    with pytest.raises(RuntimeError, match="shape '\\[1\\]' is invalid"):
        run_beside(hg.SOAP, reference, kwargs, exact=True, steps=3)
    import pytorch_optimizer.optimizer.soap as soap_module

    from handgrad.optim.soap import merge_small_dims

    monkeypatch.setattr(soap_module, "merge_small_dims", merge_small_dims)
    for dtype in (torch.float64, torch.float32):
        run_beside(hg.SOAP, reference, kwargs, exact=True, dtype=dtype, none_every=6,
                   second_group={"lr": 0.005})  # fmt: skip


def test_merge_small_dims() -> None:
    from handgrad.optim.soap import merge_small_dims

    assert merge_small_dims([1, 2, 512, 1, 2048, 1, 3, 4], 1024) == [1024, 2048, 12]
    assert merge_small_dims([1, 2, 768, 1, 2048], 1024) == [2, 768, 2048]
    assert merge_small_dims([5], 10) == [5]  # the reference: [1]
    assert merge_small_dims([4, 3], 100) == [12]
    assert merge_small_dims([], 10) == [1]


def test_soap_channels_last_merging_equals_the_reference() -> None:
    """4-d tensors merged channels last; max_precondition_dim small enough that the
    reference's merging keeps two dims (where it works)."""
    kwargs = {"lr": 0.01, "merge_dims": True, "data_format": "channels_last",
              "max_precondition_dim": 6, "precondition_frequency": 2}  # fmt: skip
    run_beside(hg.SOAP, BY_NAME["SOAP"].reference_class(), kwargs, exact=True, steps=20,
               shapes=((2, 3, 2, 4), (3, 1, 2, 5)), second_group={"lr": 0.005})  # fmt: skip


def test_prodigy_leaves_an_lr_zero_group_alone() -> None:
    """prodigyopt moves a group whose lr is 0 by the others' step size (weight decay, and
    with β₁ = 0 the gradient: it diverges); ours freezes it, and the other group keeps the
    reference's bits."""
    reference = BY_NAME["Prodigy"].reference_class()
    for kwargs in ({"weight_decay": 0.1}, {"betas": (0.0, 0.99)}):
        pair = Pair(hg.Prodigy, reference, kwargs, second_group={"lr": 0.0})
        frozen = [p.clone() for p in pair.ours_params[2:]]
        for step in range(1, 21):
            pair.set_grads(step, None)
            pair.ours.step()
            pair.theirs.step()
            for p, q in zip(pair.ours_params[:2], pair.theirs_params[:2], strict=True):
                assert torch.equal(p, q)
        for p, before, q in zip(pair.ours_params[2:], frozen, pair.theirs_params[2:],
                                strict=True):  # fmt: skip
            assert torch.equal(p, before)
            assert not torch.equal(q, before)  # the reference's moved


def test_prodigy_refuses_unequal_learning_rates_like_the_reference() -> None:
    reference = BY_NAME["Prodigy"].reference_class()
    for cls in (hg.Prodigy, reference):
        pair = Pair(cls, cls, {}, second_group={"lr": 0.5})
        pair.set_grads(1, None)
        with pytest.raises(RuntimeError, match="different lr values"):
            pair.ours.step()


@pytest.mark.parametrize("name", ["SGDScheduleFree", "AdamWScheduleFree"])
def test_schedule_free_train_and_eval_switch_like_the_reference(name: str) -> None:
    row = BY_NAME[name]
    pair = run_beside(row.ours, row.reference_class(), {"lr": 0.05, "warmup_steps": 5},
                      exact=True, steps=15, train_mode=True)  # fmt: skip
    for switch in ("eval", "eval", "train", "eval"):  # a second eval() changes nothing
        getattr(pair.ours, switch)()
        getattr(pair.theirs, switch)()
        pair.compare_params(switch, exact=True, rtol=0.0)
    with pytest.raises(RuntimeError, match="train\\(\\)"):
        pair.ours.step()
    with pytest.raises(Exception, match="train mode"):  # the reference's bare Exception
        pair.theirs.step()


def test_schedule_free_eval_holds_the_average_of_the_iterates() -> None:
    """With r = 0, no warmup and weight_lr_power = 0 every step weighs 1 (cₖ = 1/(k + 1)),
    so after T steps x is the plain mean of z₁..z_T (the iterates after each step)."""
    p = torch.tensor([1.0, -2.0], dtype=torch.float64)
    optimizer = hg.SGDScheduleFree([p], lr=0.1, momentum=0.9, weight_lr_power=0.0)
    optimizer.train()
    zs = []
    for _ in range(5):
        p.grad = 2 * p
        optimizer.step()
        zs.append(optimizer.state[p]["z"].clone())
    optimizer.eval()
    torch.testing.assert_close(p, torch.stack(zs).mean(0), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["SGDScheduleFree", "AdamWScheduleFree"])
def test_schedule_free_leaves_the_direction_in_p_grad_like_the_reference(name: str) -> None:
    """Both references write the step's direction d into ``p.grad`` in place (it saves one
    tensor per parameter per step); handgrad does the same, with the same bits, on small
    tensors and on the large-tensor body (≥ 65,536 elements)."""
    row = BY_NAME[name]
    kwargs = {"lr": 0.05, "warmup_steps": 3, "weight_decay": 0.01}
    pair = Pair(row.ours, row.reference_class(), kwargs, shapes=[(), (3, 4), (260, 256)],
                train_mode=True)  # fmt: skip
    for step in range(1, 6):
        pair.set_grads(step, None)
        before = [p.grad.clone() for p in pair.ours_params]
        pair.ours.step()
        pair.theirs.step()
        pair.compare_params(f"step {step}", exact=True, rtol=0.0)
        for p, q, g in zip(pair.ours_params, pair.theirs_params, before, strict=True):
            assert torch.equal(p.grad, q.grad), f"step {step} {tuple(p.shape)}"
            assert not torch.equal(p.grad, g)  # d, not the gradient the step was given


def test_adan_restart_condition_like_the_reference() -> None:
    def every_fourth(state: dict[str, Any]) -> bool:
        return int(state["step"]) % 4 == 3

    run_beside(hg.Adan, BY_NAME["Adan"].reference_class(),
               {"lr": 0.01, "weight_decay": 0.02, "restart_cond": every_fourth}, exact=True,
               steps=20)  # fmt: skip


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
def test_pickled_optimizers_go_on_with_the_same_bits(row: Row) -> None:
    """Attributes the references keep outside state and groups (Lion's initial lr, ADOPT's
    clip function, Lamb's flags) travel with a pickle."""
    kwargs = row.configs[1][1]
    pair = Pair(row.ours, row.ours, kwargs, train_mode=row.train_mode)
    for step in range(1, 6):
        pair.set_grads(step, None)
        pair.ours.step()
        pair.theirs.step()
    params, optimizer = pickle.loads(pickle.dumps((pair.ours_params, pair.ours)))
    for step in range(6, 11):
        pair.set_grads(step, None)
        for p, q in zip(params, pair.theirs_params, strict=True):
            p.grad = q.grad.clone()  # the schedule-free steps write d into p.grad
        optimizer.step()
        pair.theirs.step()
    for p, q in zip(params, pair.theirs_params, strict=True):
        assert torch.equal(p, q)


def test_check_optimizer_takes_handgrads_lion_as_the_reference() -> None:
    """docs/writing-an-optimizer.md's learner checks a Lion of their own against ours."""

    class TextbookLion(torch.optim.Optimizer):
        def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                     weight_decay: float = 0.0) -> None:  # fmt: skip
            super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

        @torch.no_grad()
        def step(self, closure: Any = None) -> None:
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    real = torch.view_as_real(p) if p.is_complex() else p
                    grad = torch.view_as_real(p.grad) if p.is_complex() else p.grad
                    if not self.state[p]:
                        self.state[p]["exp_avg"] = torch.zeros_like(p)
                    m = self.state[p]["exp_avg"]
                    m = torch.view_as_real(m) if p.is_complex() else m
                    real.mul_(1 - group["lr"] * group["weight_decay"])
                    real.add_(torch.lerp(m, grad, 1 - beta1).sign_(), alpha=-group["lr"])
                    m.lerp_(grad, 1 - beta2)

    result = check_optimizer(TextbookLion, reference=hg.Lion, lr=0.01, weight_decay=0.1)
    assert result.passed, str(result)


REAL_LAYOUTS = ("separate", "float32", "flat", "large", "float16", "bfloat16")


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
def test_check_optimizer_passes_each_against_its_authors_implementation(row: Row) -> None:
    """check_optimizer's layouts beyond the suite's: float16, bfloat16, 65,536+ elements, the
    flat layout (schedule-free ones put in train mode on both sides). Complex parameters
    are the suite's business (the "real" rows take (Re, Im) where the reference does not)."""
    layouts = REAL_LAYOUTS + (("complex",) if row.complex == "native" else ())
    # The same bits except in half precision, where torch's _foreach_mul_ by a Python
    # scalar rounds differently from Tensor.mul_ (Lion's decay factor in float16, Adan's in
    # bfloat16): within check_optimizer's float16/bfloat16 tolerances, not bitwise.
    half = ("float16", "bfloat16")
    exact = tuple(layout for layout in layouts if layout not in half)
    kwargs = row.configs[1][1]
    for chosen in (exact, half):
        result = check_optimizer(row.ours, reference=row.reference_class(), steps=12,
                                 layouts=chosen, **copy.deepcopy(kwargs))  # fmt: skip
        assert result.passed, str(result)
        assert result.layouts == chosen
        if chosen == exact:
            assert result.max_rel_error == 0.0, str(result)


def test_check_optimizer_finds_the_reference_by_name_among_handgrads() -> None:
    """A learner's class named like one of BEYOND_TORCH is checked against handgrad's."""

    class AdamWScheduleFree(hg.SGDScheduleFree):  # the wrong rule under the right name
        pass

    result = check_optimizer(AdamWScheduleFree, lr=0.01, layouts=("separate",))
    assert result.reference == "AdamWScheduleFree"
    assert not result.passed
    assert result.step == 1


def test_check_optimizer_fails_when_the_reference_refuses_every_layout() -> None:
    result = check_optimizer(hg.SOAP, reference=hg.SOAP, layouts=("complex",))
    assert not result.passed
    assert result.layouts == ()
    assert "refused every layout" in str(result)
    assert "NoComplexParameterError" in str(result) or "complex" in str(result)


@pytest.mark.parametrize("name", sorted(hg.BEYOND_TORCH))
def test_every_one_is_registered_by_name_with_the_references_signature(name: str) -> None:
    cls = hg.BEYOND_TORCH[name]
    assert getattr(hg, name) is cls
    assert name in hg.__all__
    assert hg.optimizer_class(name.lower()) is cls
    assert resolve_optimizer(name.lower()) == (cls, {})
    row = BY_NAME[name]
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(row.reference_class()).parameters
    assert list(ours) == list(theirs)
    for key, parameter in theirs.items():
        if key == "clip_lambda":  # a lambda there, a named (picklable) function here
            assert ours[key].default(16.0) == parameter.default(16.0)
        elif key != "foreach":  # schedulefree's default is hasattr(torch, "_foreach_mul_")
            assert ours[key].default == parameter.default, key
