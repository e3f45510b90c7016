"""EpochSampler and shard: every sample once per epoch, order a pure function of (seed, epoch)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from handgrad.train import seeds
from handgrad.train.sampler import EpochSampler, shard


@given(
    num_samples=st.integers(1, 300),
    batch_size=st.integers(1, 64),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 1000),
)
def test_an_epoch_visits_every_sample_exactly_once(
    num_samples: int, batch_size: int, seed: int, epoch: int
) -> None:
    sampler = EpochSampler(num_samples, batch_size, seed)
    batches = sampler.batches(epoch)
    assert len(batches) == len(sampler) == -(-num_samples // batch_size)
    assert all(len(batch) == batch_size for batch in batches[:-1])
    assert 1 <= len(batches[-1]) <= batch_size
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(num_samples))


def test_drop_last_leaves_out_the_short_batch() -> None:
    sampler = EpochSampler(10, 4, seed=0, drop_last=True)
    batches = sampler.batches(1)
    assert len(sampler) == 2
    assert [len(batch) for batch in batches] == [4, 4]
    assert torch.equal(torch.cat(batches), sampler.order(1)[:8])


def test_order_depends_only_on_seed_and_epoch() -> None:
    a = EpochSampler(100, 10, seed=3)
    b = EpochSampler(100, 7, seed=3)  # batch size does not change the permutation
    assert torch.equal(a.order(5), b.order(5))
    assert torch.equal(a.order(5), EpochSampler(100, 10, seed=3).order(5))
    assert not torch.equal(a.order(5), a.order(6))
    assert not torch.equal(a.order(5), EpochSampler(100, 10, seed=4).order(5))


def test_order_does_not_touch_the_global_rng() -> None:
    before = torch.get_rng_state()
    EpochSampler(50, 5, seed=1).batches(2)
    assert torch.equal(torch.get_rng_state(), before)


@given(
    size=st.integers(0, 40), world_size=st.integers(1, 8), seed=st.integers(0, 100)
)
def test_shards_partition_the_global_batch_in_order(size: int, world_size: int, seed: int) -> None:
    batch = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    shards = [shard(batch, rank, world_size) for rank in range(world_size)]
    assert torch.equal(torch.cat(shards), batch)
    sizes = [len(part) for part in shards]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 0, "batch_size": 1, "seed": 0}, "num_samples must be at least 1, got 0"),
        ({"num_samples": 5, "batch_size": 0, "seed": 0}, "batch_size must be a positive integer"),
        ({"num_samples": 5, "batch_size": True, "seed": 0}, "batch_size must be a positive"),
        ({"num_samples": 5, "batch_size": 2, "seed": -1}, "seed must be a non-negative integer"),
        (
            {"num_samples": 5, "batch_size": 6, "seed": 0, "drop_last": True},
            "batch_size=6 exceeds the 5 samples",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EpochSampler(**kwargs)


def test_bad_shard_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="rank must be in \\[0, 2\\), got 2"):
        shard(torch.arange(4), 2, 2)
    with pytest.raises(ValueError, match="world_size must be at least 1, got 0"):
        shard(torch.arange(4), 0, 0)


def test_derived_seeds_separate_streams_and_keys() -> None:
    values = {
        seeds.derived_seed(0, seeds.DATA),
        seeds.derived_seed(0, seeds.INIT),
        seeds.derived_seed(0, seeds.SHUFFLE, 1),
        seeds.derived_seed(0, seeds.SHUFFLE, 2),
        seeds.derived_seed(1, seeds.SHUFFLE, 1),
    }
    assert len(values) == 5
    assert all(0 <= value < 2**63 for value in values)
    assert seeds.derived_seed(7, seeds.DATA) == seeds.derived_seed(7, seeds.DATA)
