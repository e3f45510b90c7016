"""The torch.optim contract: state_dicts both ways mid-run, schedulers, hooks, param groups."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch

import handgrad.optim as hg
from tests.optim.harness import assert_matches_torch, assert_state_dict_handover
from tests.optim.rows import ROWS

# Hyperparameters that create every state key each optimizer has (the rows' handover ones;
# the handover itself is in test_against_torch.py).
FULL_STATE: list[Any] = [
    pytest.param(row.ours, row.theirs, row.handover, id=row.name) for row in ROWS
]
DIRECTIONS = ["torch_to_ours", "ours_to_torch"]


@pytest.mark.parametrize(("ours", "theirs", "hyperparams"), FULL_STATE)
def test_state_dict_has_torch_layout(
    ours: Any, theirs: Any, hyperparams: dict[str, Any], device: torch.device
) -> None:
    """Same keys, dtypes and devices as torch's (on CUDA: moments on the device, ``step`` on
    the CPU, as torch keeps it without capturable/fused)."""
    dicts = []
    for cls in (ours, theirs):
        params = [torch.ones(3, device=device), torch.ones(2, 2, device=device)]
        opt = cls(params, **hyperparams)
        for p in params:
            p.grad = torch.full_like(p, 0.5)
        opt.step()
        dicts.append(opt.state_dict())
    mine, reference = dicts
    assert mine["param_groups"] == reference["param_groups"]
    for key, state in reference["state"].items():
        assert sorted(mine["state"][key]) == sorted(state)
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                assert mine["state"][key][name].dtype == value.dtype, name
                assert mine["state"][key][name].device == value.device, name
                torch.testing.assert_close(mine["state"][key][name], value, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("ours", "theirs", "hyperparams"), FULL_STATE)
def test_old_state_dict_with_number_steps_loads(
    ours: Any, theirs: Any, hyperparams: dict[str, Any]
) -> None:
    params = [torch.ones(3)]
    opt = ours(params, **hyperparams)
    params[0].grad = torch.ones(3)
    opt.step()
    state = opt.state_dict()
    for per_param in state["state"].values():
        for key in ("step", "mu_product"):
            if key in per_param:
                per_param[key] = float(per_param[key])  # as torch < 1.12 saved it
    fresh = ours([torch.ones(3)], **hyperparams)
    fresh.load_state_dict(state)
    for per_param in fresh.state.values():
        if "step" in per_param:
            assert torch.is_tensor(per_param["step"])
            assert per_param["step"].item() == 1.0
    fresh.param_groups[0]["params"][0].grad = torch.ones(3)
    fresh.step()


@pytest.mark.parametrize(("ours", "theirs", "hyperparams"), FULL_STATE)
def test_deepcopy_and_pickle_keep_the_trajectory(
    ours: Any, theirs: Any, hyperparams: dict[str, Any]
) -> None:
    p = torch.linspace(-1, 1, 4, dtype=torch.float64)
    opt = ours([p], **hyperparams)
    for _ in range(3):
        p.grad = torch.sin(3 * p)
        opt.step()
    restored = pickle.loads(pickle.dumps(opt))
    twin = copy.deepcopy(opt)
    for other in (restored, twin):
        q = other.param_groups[0]["params"][0]
        assert torch.equal(q, p)
        assert other.param_groups[0].keys() == opt.param_groups[0].keys()


SCHEDULERS: list[Any] = [
    pytest.param(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=40),
                 id="OneCycleLR"),
    pytest.param(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5),
                 id="CosineWarmRestarts"),
    pytest.param(lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.001, 0.05, step_size_up=4,
                                                             cycle_momentum=False),
                 id="CyclicLR"),
]  # fmt: skip


@pytest.mark.parametrize("make_scheduler", SCHEDULERS)
@pytest.mark.parametrize(
    ("ours", "theirs", "hyperparams"),
    [
        pytest.param(hg.Adam, torch.optim.Adam, {"lr": 0.01}, id="Adam"),
        pytest.param(hg.SGD, torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, id="SGD"),
        pytest.param(hg.RMSprop, torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5}, id="RMSprop"),
    ],
)
def test_other_schedulers_drive_both_alike(
    ours: Any, theirs: Any, hyperparams: dict[str, Any], make_scheduler: Any, device: torch.device
) -> None:
    """Schedulers that also cycle momentum / betas (OneCycleLR) act on our groups too."""
    params = {key: torch.linspace(-2, 2, 6, device=device) for key in ("ours", "theirs")}
    opts = {"ours": ours([params["ours"]], **hyperparams),
            "theirs": theirs([params["theirs"]], **hyperparams)}  # fmt: skip
    scheds = {k: make_scheduler(o) for k, o in opts.items()}
    for _ in range(30):
        for key in ("ours", "theirs"):
            p = params[key]
            p.grad = torch.cos(2 * p) + 0.1 * p
            opts[key].step()
            scheds[key].step()
        torch.testing.assert_close(params["ours"], params["theirs"], rtol=1e-5, atol=1e-7)
    assert opts["ours"].param_groups[0]["lr"] == opts["theirs"].param_groups[0]["lr"]


def test_tensor_lr_scheduled_in_place(device: torch.device) -> None:
    assert_matches_torch(
        hg.Adam, torch.optim.Adam, {"lr": torch.tensor(0.02)}, steps=30, device=device
    )
    assert_matches_torch(hg.SGD, torch.optim.SGD, {"lr": torch.tensor(0.02), "momentum": 0.5},
                         steps=30, device=device)  # fmt: skip


def test_zero_grad_hooks_add_param_group_and_clipping() -> None:
    first, second = torch.ones(3), torch.ones(2)
    opt = hg.Adam([first], lr=0.1)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    opt.add_param_group({"params": [second], "lr": 0.5})
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    assert opt.param_groups[1]["lr"] == 0.5
    first.grad, second.grad = torch.full((3,), 10.0), torch.full((2,), 10.0)
    norm = torch.nn.utils.clip_grad_norm_([first, second], max_norm=1.0)
    assert norm.item() == pytest.approx(10 * 5**0.5)
    opt.step()
    assert calls == ["pre", "post"]
    # the first Adam step moves each coordinate by lr, whatever the gradient scale
    torch.testing.assert_close(first, torch.full((3,), 0.9))
    torch.testing.assert_close(second, torch.full((2,), 0.5))
    opt.zero_grad()
    assert first.grad is None
    assert second.grad is None
    with pytest.raises(ValueError, match="some parameters appear in more than one"):
        opt.add_param_group({"params": [first]})


def test_trains_a_torch_module(device: torch.device) -> None:
    """Any torch.nn.Module trains with ours exactly as with torch's (autograd in the test)."""
    torch.manual_seed(0)
    layers = (torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    models = [torch.nn.Sequential(*layers).to(device)]
    models.append(copy.deepcopy(models[0]))
    opts = [hg.AdamW(models[0].parameters(), lr=0.01), torch.optim.AdamW(models[1].parameters(),
                                                                         lr=0.01)]  # fmt: skip
    x, y = torch.randn(32, 3).to(device), torch.randn(32, 1).to(device)
    for _ in range(20):
        for model, opt in zip(models, opts, strict=True):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- the harness itself -------------------------------------------------------------------


def test_harness_matches_torch_tables() -> None:
    """Our transcription of torch's optim_inputs_func_* (CPU) equals torch's own tables."""
    common = pytest.importorskip(
        "torch.testing._internal.common_optimizers", reason="torch's test helpers need expecttest"
    )
    from tests.optim.harness import torch_optim_inputs

    for name in ("SGD", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"):
        func = getattr(common, f"optim_inputs_func_{name.lower()}")
        theirs = [(each.desc, each.kwargs) for each in func(device="cpu")]
        ours = torch_optim_inputs(name)
        assert [desc for desc, _ in ours] == [desc for desc, _ in theirs]
        for (_, mine), (_, reference) in zip(ours, theirs, strict=True):
            assert mine.keys() == reference.keys()


def test_harness_catches_a_wrong_optimizer() -> None:
    """A test that cannot fail is a defect: an Adam with beta2 slightly off must fail."""

    class SlightlyWrongAdam(hg.Adam):
        def __init__(self, params: Any, **kwargs: Any) -> None:
            super().__init__(params, **kwargs)
            for group in self.param_groups:
                group["betas"] = (group["betas"][0], group["betas"][1] - 1e-6)

    with pytest.raises(AssertionError, match=r"step \d+ param"):
        assert_matches_torch(SlightlyWrongAdam, torch.optim.Adam, {"lr": 0.01}, steps=5)


def test_handover_helper_catches_a_lost_state() -> None:
    class ForgetfulSGD(hg.SGD):
        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            state_dict = {**state_dict, "state": {}}
            super().load_state_dict(state_dict)

    with pytest.raises(AssertionError):
        assert_state_dict_handover(ForgetfulSGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9},
                                   direction="torch_to_ours")  # fmt: skip


FUSED: list[Any] = [
    pytest.param(hg.Adam, torch.optim.Adam, {"lr": 0.02, "amsgrad": True}, id="Adam"),
    pytest.param(hg.AdamW, torch.optim.AdamW, {"lr": 0.02}, id="AdamW"),
    pytest.param(hg.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, id="SGD"),
    pytest.param(hg.Adagrad, torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.1}, id="Adagrad"),
]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(("ours", "theirs", "hyperparams"), FUSED)
def test_fused_state_dict_handover_mid_run(
    ours: Any, theirs: Any, hyperparams: dict[str, Any], direction: str, device: torch.device
) -> None:
    """fused=True (torch's fused kernels on the CPU and on CUDA): ``step`` lives on the
    parameter's device in float32, as torch keeps it, and survives the handover either way."""
    layouts = []
    for cls in (ours, theirs):
        p = torch.ones(3, device=device)
        opt = cls([p], **hyperparams, fused=True)
        p.grad = torch.full_like(p, 0.5)
        opt.step()
        layouts.append({k: (v.device, v.dtype) for k, v in opt.state[p].items()})
    assert layouts[0] == layouts[1]
    assert_state_dict_handover(
        ours, theirs, {**hyperparams, "fused": True}, direction=direction, dtype=torch.float32,
        steps=8, switch_at=4, device=device,
    )  # fmt: skip
