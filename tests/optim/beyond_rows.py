"""The table the optimizers beyond torch.optim are tested from: one row per optimizer, its
reference implementation (the authors' package, a test dependency pinned in
constraints.txt) and what differs between them. ``test_beyond_torch.py`` turns every row
into the same tests.

Every combination is compared **bit for bit** (parameters at every step, then state and
group entries): each handgrad rule performs the reference's operations in the reference's
order, element-wise parts on whole lists. That is also why no combination needs a test
problem chosen to keep rounding small: Prodigy's estimate multiplies by x₀ − θ (tiny early
on) and SOAP's eigenbases are not unique on a first gradient's rank-deficient statistics,
so a reimplementation off by one rounding would part by far more than 1e-12 there; with
the same bits there is nothing to amplify. The objective is tests/optim/harness.py's
(non-convex, separable, 0-d to 3-d tensors, two groups, a parameter without a gradient
now and then).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import handgrad.optim as hg

Config = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Row:
    """One optimizer's settings for the shared tests."""

    ours: type[torch.optim.Optimizer]
    reference: str  # "module:Class"
    configs: tuple[Config, ...]
    # complex parameters: "native" (the reference takes them as they are), "real" (it runs
    # on torch.view_as_real copies: handgrad's (Re, Im) convention), None (refused)
    complex: str | None
    complex_configs: tuple[dict[str, Any], ...] = ()
    handover: dict[str, Any] = field(default_factory=dict)
    reverse_handover: bool = True  # ours → reference also gives the same bits
    # (kwargs, the exception handgrad raises); the reference's is read and compared
    bad: tuple[tuple[dict[str, Any], type[Exception]], ...] = ()
    second_group: dict[str, Any] | None = None  # default: half the lr
    train_mode: bool = False  # schedule-free: train() before stepping
    none_every: int | None = 6
    # convergence: (kwargs, steps, ExponentialLR gamma or None)
    rosenbrock: tuple[dict[str, Any], int, float | None] | None = None
    least_squares: tuple[dict[str, Any], int, float | None] | None = None

    @property
    def name(self) -> str:
        return self.ours.__name__

    def reference_class(self) -> type[torch.optim.Optimizer]:
        module, _, name = self.reference.partition(":")
        cls: type[torch.optim.Optimizer] = getattr(pytest.importorskip(module), name)
        return cls

    def group(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.second_group is not None:
            return self.second_group
        lr = kwargs.get("lr", inspect.signature(self.ours).parameters["lr"].default)
        return {"lr": lr / 2}


def reference_available(row: Row) -> bool:
    module = row.reference.partition(":")[0]
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


ROWS: tuple[Row, ...] = (
    Row(
        hg.Lion, "lion_pytorch:Lion",
        configs=(("default", {}), ("lr, weight_decay", {"lr": 0.01, "weight_decay": 0.1}),
                 ("decoupled", {"lr": 0.01, "weight_decay": 1e-3,
                                "decoupled_weight_decay": True}),
                 ("betas", {"lr": 0.02, "betas": (0.5, 0.8)})),
        complex="real", complex_configs=({"lr": 0.01, "weight_decay": 0.1},),
        handover={"lr": 0.01, "weight_decay": 0.1},
        bad=(({"lr": 0.0}, AssertionError), ({"lr": -1.0}, ValueError),
             ({"betas": (1.5, 0.9)}, ValueError), ({"betas": (0.9, -0.1)}, AssertionError)),
        rosenbrock=({"lr": 1e-2, "betas": (0.95, 0.98)}, 5000, 0.9985),
        least_squares=({"lr": 1e-2}, 1000, 0.995),
    ),
    Row(
        hg.SGDScheduleFree, "schedulefree:SGDScheduleFree",
        configs=(("default", {"lr": 0.05}), ("warmup, decay", {"lr": 0.05, "warmup_steps": 10,
                                                               "weight_decay": 0.01}),
                 ("r, weight_lr_power", {"lr": 0.05, "r": 1.0, "weight_lr_power": 1.0,
                                         "momentum": 0.5}),
                 ("foreach off", {"lr": 0.05, "foreach": False, "weight_decay": 0.01})),
        complex="native", complex_configs=({"lr": 0.05, "warmup_steps": 5, "weight_decay": 0.1},),
        handover={"lr": 0.05, "warmup_steps": 15, "weight_decay": 0.01}, train_mode=True,
        bad=(({"lr": -0.1}, ValueError), ({"weight_decay": -1.0}, ValueError),
             ({"momentum": 1.0}, ValueError), ({"momentum": 0.0}, ValueError)),
        rosenbrock=({"lr": 3e-3, "r": 4.0, "warmup_steps": 100}, 5000, None),
        least_squares=({"lr": 0.1, "r": 2.0}, 1000, None),
    ),
    Row(
        hg.AdamWScheduleFree, "schedulefree:AdamWScheduleFree",
        configs=(("default", {}), ("warmup, decay", {"lr": 0.05, "warmup_steps": 10,
                                                     "weight_decay": 0.01}),
                 ("r, betas, eps", {"lr": 0.05, "r": 1.0, "weight_lr_power": 0.5,
                                    "betas": (0.8, 0.9), "eps": 1e-3}),
                 ("foreach off", {"lr": 0.05, "foreach": False})),
        complex="real", complex_configs=({"lr": 0.05, "warmup_steps": 5, "weight_decay": 0.1},),
        handover={"lr": 0.05, "warmup_steps": 15, "weight_decay": 0.01}, train_mode=True,
        bad=(({"lr": -0.1}, ValueError), ({"betas": (0.0, 0.9)}, ValueError),
             ({"betas": (0.9, 1.0)}, ValueError), ({"eps": -1.0}, ValueError),
             ({"weight_decay": -0.1}, ValueError)),
        rosenbrock=({"lr": 0.02, "betas": (0.95, 0.999), "r": 2.0}, 5000, None),
        least_squares=({"lr": 0.05}, 1000, None),
    ),
    Row(
        hg.Prodigy, "prodigyopt:Prodigy",
        configs=(("default", {}), ("decoupled decay", {"weight_decay": 0.1}),
                 ("coupled decay", {"weight_decay": 0.1, "decouple": False}),
                 ("bias correction", {"use_bias_correction": True}),
                 ("safeguard warmup", {"safeguard_warmup": True, "d0": 1e-4}),
                 ("no first moment", {"betas": (0.0, 0.99)}),
                 ("growth, d_coef", {"growth_rate": 1.05, "d_coef": 0.5}),
                 ("slice_p, beta3", {"slice_p": 3, "beta3": 0.9, "lr": 0.5})),
        complex="real", complex_configs=({"weight_decay": 0.1, "decouple": False},),
        handover={"weight_decay": 0.1, "use_bias_correction": True},
        second_group={"weight_decay": 0.05},
        bad=(({"lr": 0.0}, ValueError), ({"d0": 0.0}, ValueError), ({"eps": 0.0}, ValueError),
             ({"betas": (1.0, 0.9)}, ValueError), ({"betas": (0.9, -0.5)}, ValueError)),
        rosenbrock=({"d_coef": 0.5}, 5000, None),
        least_squares=({}, 1000, None),
    ),
    Row(
        hg.Adan, "adan_pytorch:Adan",
        configs=(("default", {}), ("lr, weight_decay", {"lr": 0.01, "weight_decay": 0.02}),
                 ("betas, eps", {"lr": 0.01, "betas": (0.1, 0.2, 0.05), "eps": 1e-4})),
        complex="real", complex_configs=({"lr": 0.01, "weight_decay": 0.02},),
        handover={"lr": 0.01, "weight_decay": 0.02},
        # ours → reference: the reference computes its bias corrections from the step it
        # receives, a float32 tensor from handgrad (an int of its own): not the same bits.
        reverse_handover=False,
        bad=(({"betas": (0.02, 0.08)}, AssertionError), ({"lr": -1.0}, ValueError),
             ({"betas": (0.02, 1.5, 0.01)}, ValueError), ({"eps": -1.0}, ValueError),
             ({"weight_decay": -0.1}, ValueError)),
        rosenbrock=({"lr": 0.01}, 3000, None),
        least_squares=({"lr": 0.01}, 1000, None),
    ),
    Row(
        hg.Lamb, "pytorch_optimizer:Lamb",
        configs=(("default", {}), ("lr, decay", {"lr": 0.01, "weight_decay": 0.1}),
                 ("coupled decay", {"lr": 0.01, "weight_decay": 0.1, "weight_decouple": False}),
                 ("fixed decay", {"lr": 0.01, "weight_decay": 0.1, "fixed_decay": True}),
                 ("pre_norm", {"lr": 0.01, "pre_norm": True, "max_grad_norm": 0.5}),
                 ("maximize, adam", {"lr": 0.01, "maximize": True, "adam": True}),
                 ("no grad averaging", {"lr": 0.01, "grad_averaging": False}),
                 ("rectify", {"lr": 0.01, "rectify": True}),
                 ("rectify to sgd", {"lr": 0.01, "rectify": True, "degenerated_to_sgd": True,
                                     "betas": (0.9, 0.9)}),
                 ("adanorm", {"lr": 0.01, "adanorm": True, "adanorm_r": 0.9}),
                 ("adam_debias", {"lr": 0.01, "adam_debias": True}),
                 ("per-parameter body", {"lr": 0.01, "foreach": False, "weight_decay": 0.1,
                                         "pre_norm": True})),
        complex="native", complex_configs=({"lr": 0.01, "weight_decay": 0.1},
                                           {"lr": 0.01, "rectify": True}),
        handover={"lr": 0.01, "weight_decay": 0.1},
        bad=(({"lr": -1.0}, ValueError), ({"betas": (1.0, 0.9)}, ValueError),
             ({"weight_decay": -1.0}, ValueError), ({"max_grad_norm": -1.0}, ValueError),
             ({"eps": -1.0}, ValueError), ({"adanrom": True}, TypeError)),
        rosenbrock=({"lr": 0.05, "betas": (0.9, 0.99)}, 5000, 0.999),
        least_squares=({"lr": 0.01}, 1000, None),
    ),
    Row(
        hg.ADOPT, "pytorch_optimizer:ADOPT",
        configs=(("default", {}), ("lr, coupled decay", {"lr": 0.01, "weight_decay": 0.1}),
                 ("decoupled, maximize", {"lr": 0.01, "weight_decay": 0.1,
                                          "weight_decouple": True, "maximize": True}),
                 ("fixed decay, no clip", {"lr": 0.01, "weight_decay": 0.01,
                                           "weight_decouple": True, "fixed_decay": True,
                                           "clip_lambda": None}),
                 ("cautious", {"lr": 0.01, "cautious": True}),
                 ("stable_adamw", {"lr": 0.01, "stable_adamw": True, "weight_decay": 0.1}),
                 ("per-parameter body", {"lr": 0.01, "foreach": False, "betas": (0.5, 0.9)})),
        complex="native", complex_configs=({"lr": 0.01, "weight_decay": 0.1},),
        handover={"lr": 0.01, "weight_decay": 0.1},
        bad=(({"lr": -1.0}, ValueError), ({"betas": (0.9, 1.0)}, ValueError),
             ({"weight_decay": -1.0}, ValueError), ({"eps": -1.0}, ValueError),
             ({"cautios": True}, TypeError)),
        rosenbrock=({"lr": 0.05, "betas": (0.9, 0.99)}, 5000, 0.999),
        least_squares=({"lr": 0.05}, 1000, None),
    ),
    Row(
        hg.SOAP, "pytorch_optimizer:SOAP",
        configs=(("default", {}), ("lr", {"lr": 0.01}),
                 ("precondition_1d", {"lr": 0.01, "precondition_1d": True}),
                 ("frequent bases", {"lr": 0.01, "precondition_frequency": 3}),
                 ("small max dim", {"lr": 0.01, "max_precondition_dim": 3,
                                    "precondition_frequency": 2}),
                 ("no bias correction, normalized", {"lr": 0.01, "correct_bias": False,
                                                     "normalize_gradient": True}),
                 ("shampoo_beta, betas", {"lr": 0.01, "shampoo_beta": 0.8,
                                          "betas": (0.9, 0.99), "weight_decay": 0.0}),
                 ("maximize", {"lr": 0.01, "maximize": True}),
                 # the reference's merging works only when at least two merged dims remain
                 ("merge_dims", {"lr": 0.01, "merge_dims": True, "max_precondition_dim": 2,
                                 "precondition_1d": True, "precondition_frequency": 2})),
        complex=None,
        handover={"lr": 0.01, "precondition_frequency": 4},
        bad=(({"lr": -1.0}, ValueError), ({"betas": (0.9, 1.0)}, ValueError),
             ({"shampoo_beta": -0.5}, ValueError), ({"weight_decay": -1.0}, ValueError),
             ({"precondition_frequency": 0}, ValueError),
             ({"max_precondition_dim": 0}, ValueError), ({"eps": -1.0}, ValueError)),
        rosenbrock=({"lr": 0.01, "weight_decay": 0.0, "precondition_1d": True}, 3000, None),
        least_squares=({"lr": 0.01, "weight_decay": 0.0, "precondition_1d": True}, 1000, None),
    ),
)  # fmt: skip

BY_NAME = {row.name: row for row in ROWS}

__all__ = ["BY_NAME", "ROWS", "Row", "reference_available"]
