"""Poisson sampling: the batches DP-SGD's privacy analysis assumes.

Every step each of the n examples joins the batch independently with probability q (the
sample rate), so a batch has q·n examples on average and any size from 0 to n. The
accountant's amplification-by-sampling bound holds for exactly this scheme (not for
shuffled fixed-size batches). Drawn as Opacus's ``UniformWithReplacementSampler`` draws them
(one ``torch.rand(n)`` per step), so the same generator gives the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def check_sample_rate(sample_rate: float) -> None:
    """ValueError unless 0 < sample_rate ≤ 1."""
    if not isinstance(sample_rate, int | float) or not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")


def poisson_batches(
    num_samples: int,
    sample_rate: float,
    steps: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """``steps`` batches (default ⌊1/q⌋: one epoch in expectation) of example indices, each
    example in each batch with probability ``sample_rate`` = q, independently.

    Yields int64 index tensors in increasing order (possibly empty).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    check_sample_rate(sample_rate)
    if steps is None:
        steps = int(1 / sample_rate)
    elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    for _ in range(steps):
        mask = torch.rand(num_samples, generator=generator) < sample_rate
        yield mask.nonzero().reshape(-1)
