"""DP-SGD settings for a training run: what ``handgrad train --dp ...`` asks for.

``--dp max_grad_norm=1.0,noise_multiplier=1.1[,delta=1e-5]`` trains every optimizer as
DP-SGD (:class:`~handgrad.privacy.DPOptimizer` around it) on Poisson-sampled batches, and
reports the ε spent at δ. The sampling follows Opacus's data loader: with n examples and a
batch size B an epoch is ⌈n/B⌉ steps, each example joins each step's batch with probability
q = 1/⌈n/B⌉, and the expected batch size is ⌊q·n⌋.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from handgrad.privacy.accountant import epsilon
from handgrad.privacy.optimizer import DPOptimizer, check_dp_arguments
from handgrad.privacy.sampling import poisson_batches

DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class DPSettings:
    """Clip norm C, noise multiplier σ and the δ at which ε is reported."""

    max_grad_norm: float
    noise_multiplier: float
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        check_dp_arguments(self.noise_multiplier, self.max_grad_norm, 1, "mean")
        if not isinstance(self.delta, int | float) or not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")

    @classmethod
    def parse(cls, text: str) -> DPSettings:
        """From ``"max_grad_norm=1.0,noise_multiplier=1.1[,delta=1e-5]"``; ValueError naming
        the key or value that is wrong."""
        known = {"max_grad_norm", "noise_multiplier", "delta"}
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, equals, value = item.partition("=")
            key = key.strip()
            if not equals or key not in known:
                raise ValueError(
                    f"--dp: expected KEY=VALUE with KEY one of {sorted(known)}, got {item!r}"
                )
            try:
                values[key] = float(value)
            except ValueError:
                raise ValueError(f"--dp: {key} must be a number, got {value.strip()!r}") from None
        missing = {"max_grad_norm", "noise_multiplier"} - set(values)
        if missing:
            raise ValueError(f"--dp: give {' and '.join(sorted(missing))} (e.g. "
                             "max_grad_norm=1.0,noise_multiplier=1.1)")  # fmt: skip
        return cls(**values)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PoissonSchedule:
    """An epoch of ⌈n/B⌉ Poisson-sampled steps at rate q = 1/⌈n/B⌉ (Opacus's loader)."""

    num_samples: int
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def sample_rate(self) -> float:
        return 1 / self.steps_per_epoch

    @property
    def expected_batch_size(self) -> int:
        return max(1, int(self.num_samples * self.sample_rate))

    def batches(self, seed: int, epoch: int) -> Iterator[Tensor]:
        """The epoch's batches, from a generator seeded by (seed, epoch): an epoch is the
        same whether or not the run was resumed before it."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return poisson_batches(self.num_samples, self.sample_rate, self.steps_per_epoch,
                               generator)  # fmt: skip


def private(optimizer: torch.optim.Optimizer, settings: DPSettings,
            schedule: PoissonSchedule) -> DPOptimizer:  # fmt: skip
    """``optimizer`` wrapped for DP-SGD with ``settings`` (noise from torch's global RNG)."""
    return DPOptimizer(optimizer, settings.noise_multiplier, settings.max_grad_norm,
                       schedule.expected_batch_size)  # fmt: skip


def epsilon_spent(settings: DPSettings, schedule: PoissonSchedule, epochs: int) -> float:
    """ε at ``settings.delta`` after ``epochs`` epochs of the schedule (Opacus's RDP
    accountant); infinite without noise."""
    steps = epochs * schedule.steps_per_epoch
    if steps == 0:
        return 0.0
    if settings.noise_multiplier == 0:
        return math.inf
    return epsilon(settings.noise_multiplier, schedule.sample_rate, steps, settings.delta)
