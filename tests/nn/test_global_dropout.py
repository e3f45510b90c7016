"""GlobalBatchDropout: every rank's slice of one global mask is the one-process dropout."""

from __future__ import annotations

import pytest
import torch

import handgrad.nn as hnn
from handgrad.nn.global_dropout import GlobalBatchDropout, TorchGlobalBatchDropout
from handgrad.train.distributed import Replicas


def test_exported_with_the_other_layers() -> None:
    assert hnn.GlobalBatchDropout is GlobalBatchDropout


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("size", [1, 5, 8])
def test_global_batch_dropout_slices_are_one_process_mask(world_size: int, size: int) -> None:
    x = torch.randn(size, 6, dtype=torch.float64)
    g = torch.randn(size, 6, dtype=torch.float64)
    reference = hnn.Dropout(0.4)
    torch.manual_seed(3)
    expected_out = reference(x)
    expected_grad = reference.backward(g)
    outs, grads = [], []
    for rank in range(world_size):
        replicas = Replicas(rank, world_size)
        index = replicas.shard(torch.arange(size))
        layer = GlobalBatchDropout(0.4, replicas.window)
        torch.manual_seed(3)  # every rank's RNG is in the same state
        outs.append(layer(x[index]))
        grads.append(layer.backward(g[index]))
        torch_layer = TorchGlobalBatchDropout(0.4, replicas.window)
        torch.manual_seed(3)
        torch.testing.assert_close(torch_layer(x[index]), outs[-1], rtol=0, atol=0)
    assert torch.equal(torch.cat(outs), expected_out)
    assert torch.equal(torch.cat(grads), expected_grad)  # type: ignore[arg-type]
    assert not torch.equal(expected_out, x)  # the mask did drop something
