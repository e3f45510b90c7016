"""--dp settings: parsing and its errors, the Poisson schedule of an epoch, ε of a run."""

from __future__ import annotations

import math

import pytest
import torch

from handgrad.optim import SGD
from handgrad.privacy import DPOptimizer, epsilon
from handgrad.privacy.training import DPSettings, PoissonSchedule, epsilon_spent, private


def test_parse() -> None:
    settings = DPSettings.parse("max_grad_norm=1.0,noise_multiplier=1.1")
    assert settings == DPSettings(1.0, 1.1, 1e-5)
    assert DPSettings.parse(" noise_multiplier=0, max_grad_norm=2,delta=1e-6 ").as_dict() == {
        "max_grad_norm": 2.0, "noise_multiplier": 0.0, "delta": 1e-6,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("max_grad_norm=1.0", "give noise_multiplier"),
        ("noise_multiplier=1", "give max_grad_norm"),
        ("max_grad_norm=0,noise_multiplier=1", "max_grad_norm must be a number > 0, got 0.0"),
        ("max_grad_norm=1,noise_multiplier=-1", "noise_multiplier must be a number ≥ 0"),
        ("max_grad_norm=1,noise_multiplier=1,delta=2", "delta must be in"),
        ("max_grad_norm=one,noise_multiplier=1", "max_grad_norm must be a number, got 'one'"),
        ("clip=1,noise_multiplier=1", "expected KEY=VALUE with KEY one of"),
        ("max_grad_norm", "expected KEY=VALUE"),
    ],
)
def test_parse_errors_name_the_problem(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DPSettings.parse(text)


def test_schedule_is_opacus_loaders() -> None:
    """1797 examples in batches of 64: 29 steps an epoch at q = 1/29, ⌊1797/29⌋ = 61 expected."""
    schedule = PoissonSchedule(1797, 64)
    assert schedule.steps_per_epoch == 29
    assert schedule.sample_rate == 1 / 29
    assert schedule.expected_batch_size == 61
    batches = list(schedule.batches(seed=0, epoch=3))
    assert len(batches) == 29
    assert [b.tolist() for b in schedule.batches(0, 3)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in schedule.batches(0, 4)] != [b.tolist() for b in batches]


def test_epsilon_of_a_run() -> None:
    settings, schedule = DPSettings(1.0, 1.1), PoissonSchedule(1000, 50)
    assert epsilon_spent(settings, schedule, 0) == 0.0
    assert epsilon_spent(settings, schedule, 3) == epsilon(1.1, 1 / 20, 60, 1e-5)
    assert epsilon_spent(DPSettings(1.0, 0.0), schedule, 3) == math.inf
    optimizer = private(SGD([torch.zeros(2)], lr=0.1), settings, schedule)
    assert isinstance(optimizer, DPOptimizer)
    assert (optimizer.expected_batch_size, optimizer.max_grad_norm) == (50, 1.0)
