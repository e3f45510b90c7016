"""Independent random streams derived from one user seed.

A run has several sources of randomness (the data's noise, the initial weights, the batch
order of each epoch, dropout masks). Drawing each from its own generator, seeded from
``(seed, stream, *keys)``, makes every one of them a pure function of the user's seed: the
batch order of epoch 7 does not depend on how many random numbers epochs 1-6 consumed, which
is what lets a resumed run repeat an uninterrupted one bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

# Stream identifiers: part of the checkpoint format, so never renumber them.
DATA = 0
INIT = 1
SHUFFLE = 2
SPLIT = 3
DROPOUT = 4


def check_seed(seed: int) -> int:
    """``seed`` itself when it is a non-negative integer; else ``ValueError`` naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def derived_seed(seed: int, stream: int, *keys: int) -> int:
    """A 63-bit seed for ``stream`` (and e.g. an epoch number), mixed by numpy's SeedSequence.

    SeedSequence hashes its whole entropy tuple, so nearby inputs give unrelated seeds.
    """
    entropy = [check_seed(seed), stream, *keys]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def generator(
    seed: int, stream: int, *keys: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with :func:`derived_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derived_seed(seed, stream, *keys))
    return gen
