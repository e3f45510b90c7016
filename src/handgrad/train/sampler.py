"""Seeded, shuffled mini-batches: which samples each step of each epoch sees.

The batch order is a pure function of ``(seed, epoch)``, so every optimizer in a comparison
sees the same batches, and a run resumed at epoch ``e`` sees exactly the batches an
uninterrupted run sees.

The sampler yields the indices of the *global* batch. Data-parallel training splits each
global batch with :func:`shard`, so that the union of all ranks' shards is the batch a single
process would have used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.train import seeds


class EpochSampler:
    """Shuffled global batches of ``range(num_samples)``, reshuffled every epoch.

    Each epoch is a random permutation of the samples (drawn from a generator seeded by
    ``(seed, epoch)``) cut into consecutive batches of ``batch_size``; the last batch is
    smaller when ``batch_size`` does not divide ``num_samples``, unless ``drop_last``.
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, *, drop_last: bool = False
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if drop_last and batch_size > num_samples:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {num_samples} samples and drop_last=True "
                "would leave no batch"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seeds.check_seed(seed)
        self.drop_last = drop_last

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def order(self, epoch: int) -> Tensor:
        """The permutation of sample indices used in ``epoch`` (int64, on the CPU)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        gen = seeds.generator(self.seed, seeds.SHUFFLE, epoch)
        return torch.randperm(self.num_samples, generator=gen)

    def batches(self, epoch: int) -> list[Tensor]:
        """The index tensors of the global batches of ``epoch``, in training order."""
        chunks = list(self.order(epoch).split(self.batch_size))
        return chunks[: len(self)]


def shard(batch: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous share of a global batch of indices.

    Shard sizes differ by at most one (``tensor_split``); a rank may get an empty shard when
    the batch is smaller than the world. Averaged losses must then be weighted by
    ``len(shard) / len(batch)`` before the gradient all-reduce to equal the global gradient.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return batch.tensor_split(world_size)[rank]
