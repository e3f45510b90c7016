"""The table every optimizer is tested from: one row per handgrad optimizer with a torch twin.

A row names the torch class and what differs between optimizers: the combinations beyond
torch's own table, how our bodies are compared with torch's, the settings for complex
parameters, the state handover and convergence, the bad arguments, and which fast paths the
class has. ``test_against_torch.py`` turns each row into the same tests; tests of one
optimizer's own rule (a first step by hand, a documented difference) are in
``test_rules_by_hand.py``. LBFGS, SparseAdam and Muon, whose steps are not the element-wise
kind, have files of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import handgrad.optim as hg

TORCH_DEFAULT = "torch default"  # torch's own choice of body (its CPU default: single-tensor)

# (our foreach, torch's foreach) pairs, with an id each.
DEFAULT_OR_SINGLE = ((None, TORCH_DEFAULT, "default"), (False, TORCH_DEFAULT, "single"))
EACH_KIND = ((False, False, "single"), (True, True, "multi"), (None, None, "default"))
# ASGD: each of ours against torch's single-tensor body (see test_rules_by_hand).
EACH_AGAINST_SINGLE = ((False, False, "single"), (True, False, "multi"), (None, False, "default"))


def _adam_torch_side(hyperparams: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """torch's own kwargs: on CUDA its default is the foreach body, which refuses tensor betas
    without capturable (a ValueError at step; only a tensor lr flips it back), so tensor betas
    are compared with its single-tensor body there."""
    betas = hyperparams.get("betas", ())
    if device.type == "cuda" and any(isinstance(beta, torch.Tensor) for beta in betas):
        return {"foreach": False}
    return {}


def _without_decoupled(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """AdamW always decouples and does not take the argument."""
    return {k: v for k, v in hyperparams.items() if k != "decoupled_weight_decay"}


@dataclass(frozen=True)
class Row:
    """One optimizer's settings for the shared tests (see the module docstring)."""

    ours: type[torch.optim.Optimizer]
    theirs: type[torch.optim.Optimizer]
    extra: tuple[tuple[str, dict[str, Any]], ...]  # combinations beyond torch's table
    bad: tuple[dict[str, Any], ...]  # constructor kwargs both refuse
    bodies: tuple[tuple[bool | None, Any, str], ...] = DEFAULT_OR_SINGLE
    grad_none_every: int | None = 6  # the first parameter skips a step now and then
    complex: tuple[dict[str, Any], ...] = ()  # complex parameters (none: refused at step)
    complex_steps: int = 50
    handover: dict[str, Any] = field(default_factory=dict)  # state handover settings
    sparse_refused: bool = True  # a sparse gradient raises RuntimeError at step
    # differentiable=True compared with torch's (False for Adam, AdamW, NAdam: torch's
    # differentiable body computes the bias corrections from float32 step tensors, ~3e-9
    # relative from its own default and from ours).
    differentiable: bool = True
    capturable: bool = True  # accepts capturable=True (refused on the CPU at step)
    converges: tuple[dict[str, Any], int, float] | None = None  # least squares: kw, steps, atol
    flat: tuple[dict[str, Any], ...] = ()  # settings for the flat path (none: never flat)
    torch_side: Callable[[dict[str, Any], torch.device], dict[str, Any]] | None = None
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    fused_needs_every_grad: bool = False  # torch's fused body fails on a missing gradient
    large_with_complex: bool = False  # the large-tensor path is also run on complex tensors
    foreach_bitwise: bool = True  # our multi-tensor body has torch's foreach body's bits

    @property
    def name(self) -> str:
        return self.ours.__name__

    @property
    def large_path(self) -> bool:
        """Whether tensors of at least LARGE_TENSOR_ELEMENTS take a body of their own."""
        return getattr(self.ours, "update_large", None) is not None

    def kwargs(self, hyperparams: dict[str, Any]) -> dict[str, Any]:
        return self.prepare(hyperparams) if self.prepare else hyperparams

    def none_every(self, hyperparams: dict[str, Any]) -> int | None:
        if self.fused_needs_every_grad and hyperparams.get("fused"):
            return None
        return self.grad_none_every


_ADAM_EXTRA = (
    ("tensor lr", {"lr": torch.tensor(0.01)}),
    ("tensor betas", {"lr": 0.01, "betas": (torch.tensor(0.8), torch.tensor(0.95))}),
    ("1-element tensor betas", {"betas": (torch.tensor([0.9]), torch.tensor([[0.99]]))}),
    ("amsgrad maximize decoupled", {"amsgrad": True, "maximize": True, "weight_decay": 0.2,
                                    "decoupled_weight_decay": True, "lr": 0.02}),
    ("eps and betas", {"lr": 0.05, "betas": (0.5, 0.6), "eps": 1e-3}),
    ("fused", {"lr": 0.01, "fused": True, "weight_decay": 0.1}),
)  # fmt: skip
_ADAM_BAD = (
    {"lr": -0.1},
    {"eps": -1e-8},
    {"betas": (0.9, 1.0)},
    {"betas": (-0.1, 0.9)},
    {"betas": (torch.tensor([0.9, 0.9]), torch.tensor(0.9))},
    {"fused": True, "foreach": True},
    {"fused": True, "differentiable": True},
)
_ADAM_COMPLEX = ({"lr": 0.05}, {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1, "maximize": True})
_ADAM_FLAT = (
    {"lr": 0.01},
    {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
    {"lr": 0.01, "maximize": True, "weight_decay": 0.1},
    {"lr": 0.02, "betas": (0.8, 0.9), "eps": 1e-3},
    {"lr": torch.tensor(0.01), "amsgrad": True},
)

ROWS: tuple[Row, ...] = (
    Row(
        hg.SGD, torch.optim.SGD,
        extra=(
            ("nesterov maximize", {"lr": 0.02, "momentum": 0.5, "nesterov": True,
                                   "maximize": True}),
            ("nesterov no decay", {"lr": 0.02, "momentum": 0.8, "nesterov": True}),
            ("all options", {"lr": 0.05, "momentum": 0.7, "dampening": 0.3, "weight_decay": 0.2,
                             "maximize": True}),
            ("tensor lr with momentum", {"lr": torch.tensor(0.01), "momentum": 0.9}),
            ("tensor weight_decay", {"lr": 0.01, "weight_decay": torch.tensor(0.1)}),
            ("fused momentum", {"lr": 0.01, "momentum": 0.9, "fused": True}),
        ),
        bad=({"lr": -0.1}, {"weight_decay": -0.1}, {"nesterov": True},
             {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
             {"fused": True, "foreach": True}, {"fused": True, "differentiable": True}),
        complex=({"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},),
        handover={"lr": 0.05, "momentum": 0.9, "nesterov": True},
        sparse_refused=False, capturable=False, fused_needs_every_grad=True,
        flat=({"lr": 0.05}, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
              {"lr": 0.02, "momentum": 0.8, "dampening": 0.3, "maximize": True}),
    ),
    Row(
        hg.RMSprop, torch.optim.RMSprop,
        extra=(
            ("tensor lr", {"lr": torch.tensor(0.01), "momentum": 0.5, "centered": True}),
            ("momentum, not centered", {"lr": 0.005, "momentum": 0.9}),
            ("alpha and eps", {"lr": 0.02, "alpha": 0.5, "eps": 1e-3, "maximize": True}),
        ),
        bad=({"lr": -0.1}, {"eps": -0.1}, {"weight_decay": -0.1}, {"alpha": -0.1},
             {"fused": True}),
        complex=({"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1},),
        handover={"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1},
        flat=({"lr": 0.01}, {"lr": 0.01, "centered": True, "momentum": 0.9, "weight_decay": 0.1}),
    ),
    Row(
        hg.Adam, torch.optim.Adam, extra=_ADAM_EXTRA, bad=_ADAM_BAD, complex=_ADAM_COMPLEX,
        complex_steps=30, handover={"lr": 0.02, "amsgrad": True, "weight_decay": 0.1},
        differentiable=False, torch_side=_adam_torch_side, large_with_complex=True,
        flat=_ADAM_FLAT,
    ),
    Row(
        hg.AdamW, torch.optim.AdamW, extra=_ADAM_EXTRA, bad=_ADAM_BAD, complex=_ADAM_COMPLEX,
        complex_steps=30, handover={"lr": 0.02, "amsgrad": True}, differentiable=False,
        torch_side=_adam_torch_side, prepare=_without_decoupled, large_with_complex=True,
        flat=({"lr": 0.01, "amsgrad": True}, {"lr": 0.01, "weight_decay": 0.3}),
    ),
    Row(
        hg.Adamax, torch.optim.Adamax,
        extra=(
            ("tensor lr", {"lr": torch.tensor(0.01), "weight_decay": 0.1}),
            ("betas and eps", {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3, "maximize": True}),
        ),
        bad=({"lr": -1.0}, {"eps": -1.0}, {"weight_decay": -1.0}, {"betas": (1.0, 0.9)}),
        complex=({"lr": 0.05, "weight_decay": 0.1},),
        handover={"lr": 0.02},
        flat=({"lr": 0.01}, {"lr": 0.01, "maximize": True, "weight_decay": 0.1}),
    ),
    Row(
        hg.NAdam, torch.optim.NAdam,
        extra=(
            ("tensor lr decoupled", {"lr": torch.tensor(0.01), "weight_decay": 0.1,
                                     "decoupled_weight_decay": True}),
            ("maximize decoupled", {"lr": 0.02, "weight_decay": 0.2,
                                    "decoupled_weight_decay": True, "maximize": True,
                                    "betas": (0.8, 0.9)}),
        ),
        bad=({"lr": -1.0}, {"eps": -1.0}, {"weight_decay": -1.0}, {"betas": (0.9, 1.5)}),
        complex=({"lr": 0.05, "weight_decay": 0.1},),
        handover={"lr": 0.02, "weight_decay": 0.1}, differentiable=False,
    ),
    Row(
        hg.RAdam, torch.optim.RAdam,
        extra=(
            ("tensor lr", {"lr": torch.tensor(0.01), "weight_decay": 0.1}),
            # small beta2: the rectified phase starts after a couple of steps
            ("early rectification", {"lr": 0.02, "betas": (0.8, 0.9), "maximize": True}),
        ),
        bad=({"lr": -1.0}, {"eps": -1.0}, {"betas": (0.9, 1.0)}),
        complex=({"lr": 0.05, "weight_decay": 0.1},),
        handover={"lr": 0.02, "betas": (0.9, 0.9)}, foreach_bitwise=False,
        flat=({"lr": 0.02, "betas": (0.8, 0.9)}, {"lr": 0.01, "weight_decay": 0.1,
                                                  "decoupled_weight_decay": True}),
    ),
    Row(
        hg.Adagrad, torch.optim.Adagrad,
        extra=(
            ("lr_decay alone", {"lr": 0.05, "lr_decay": 0.01}),
            ("maximize, lr_decay, accumulator", {"maximize": True, "lr_decay": 0.1,
                                                 "initial_accumulator_value": 0.5}),
            ("eps", {"eps": 1e-3, "weight_decay": 0.2}),
        ),
        bad=({"lr": -0.1}, {"lr_decay": -0.5}, {"weight_decay": -1.0},
             {"initial_accumulator_value": -0.1}, {"eps": -1e-3},
             {"fused": True, "foreach": True}, {"fused": True, "differentiable": True}),
        bodies=EACH_KIND, grad_none_every=5,
        complex=({"weight_decay": 0.1, "lr_decay": 0.01},),
        handover={"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1},
        sparse_refused=False, capturable=False,
        converges=({"lr": 0.5}, 1000, 1e-6),
        flat=({"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1},),
    ),
    Row(
        hg.Adadelta, torch.optim.Adadelta,
        extra=(
            ("tensor lr", {"lr": torch.tensor(0.5)}),
            ("eps, rho", {"eps": 1e-3, "rho": 0.5, "maximize": True}),
        ),
        bad=({"lr": -0.1}, {"rho": 1.1}, {"rho": -0.1}, {"eps": -1e-3}, {"weight_decay": -1.0}),
        bodies=EACH_KIND, grad_none_every=5,
        complex=({"weight_decay": 0.1},),
        handover={"lr": 0.5, "weight_decay": 0.1},
        converges=({"lr": 1.0}, 3000, 1e-4),
        flat=({"lr": 1.0}, {"lr": 0.5, "rho": 0.8, "weight_decay": 0.1, "maximize": True}),
    ),
    Row(
        hg.Rprop, torch.optim.Rprop,
        extra=(
            ("tensor lr", {"lr": torch.tensor(0.001)}),
            ("tight step sizes", {"step_sizes": (1e-3, 0.05), "etas": (0.3, 1.1)}),
        ),
        bad=({"lr": -0.1}, {"etas": (1.0, 0.5)}, {"etas": (0.5, 1.0)}, {"etas": (0.0, 1.2)}),
        bodies=EACH_KIND, grad_none_every=5,
        complex=({"etas": (0.4, 1.3)},),
        handover={"lr": 0.05},
        converges=({"lr": 0.01}, 500, 1e-5),
        flat=({"lr": 0.01}, {"lr": 0.05, "etas": (0.3, 1.1), "maximize": True}),
    ),
    Row(
        hg.ASGD, torch.optim.ASGD,
        extra=(
            ("tensor lr", {"lr": torch.tensor(0.001)}),
            ("early averaging", {"t0": 5, "lambd": 0.01, "alpha": 0.5, "weight_decay": 0.05}),
        ),
        bad=({"lr": -0.1}, {"weight_decay": -0.5}),
        bodies=EACH_AGAINST_SINGLE, grad_none_every=5,
        complex=({"t0": 10, "weight_decay": 0.1},),
        handover={"t0": 5, "lambd": 0.01},
    ),
    Row(
        hg.Adafactor, torch.optim.Adafactor,
        extra=(
            ("tensor lr, weight_decay", {"lr": torch.tensor(0.001), "weight_decay": 0.1}),
            ("explicit eps1, large eps2", {"eps": (1e-20, 1e-2), "d": 2.0}),
            ("beta2_decay 0 (plain average)", {"beta2_decay": 0.0, "lr": 0.05}),
        ),
        bad=({"lr": -0.1}, {"eps": (-1e-30, 1e-3)}, {"eps": (None, -1.0)}, {"d": 0.0},
             {"beta2_decay": 0.8}, {"weight_decay": -0.1}),
        bodies=EACH_KIND, grad_none_every=5,
        handover={"lr": 0.05, "weight_decay": 0.1},
        differentiable=False, capturable=False,
    ),
)  # fmt: skip

BY_NAME = {row.name: row for row in ROWS}
