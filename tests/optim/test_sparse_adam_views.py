"""SparseAdam on parameters that are views into one buffer (flatten_parameters' layout).

torch 2.13's ``dense.add_(sparse)`` applies a view's storage offset twice, so torch's own
SparseAdam updates the wrong elements of such a view (and can write past the buffer). Ours
must update exactly the elements an owning tensor would.
"""

from __future__ import annotations

import torch

from handgrad.optim import SparseAdam


def _sparse_grads(shapes: list[tuple[int, ...]], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    grads = []
    for shape in shapes:
        dense = torch.randn(shape, generator=generator, dtype=torch.float64)
        keep = torch.rand(shape[0], generator=generator) < 0.6
        dense[~keep] = 0
        grads.append(dense.to_sparse(1))  # hybrid: sparse rows, dense columns (as Embedding)
    return grads


def test_views_into_one_buffer_step_exactly_as_owning_tensors() -> None:
    shapes = [(7, 3), (5,), (4, 2), (3, 3)]
    generator = torch.Generator().manual_seed(0)
    owning = [torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes]
    buffer = torch.cat([t.reshape(-1) for t in owning]) + 0.0
    views, offset = [], 0
    for t in owning:
        views.append(buffer[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    guard = buffer.clone()
    reference, flat = SparseAdam(owning, lr=0.1), SparseAdam(views, lr=0.1)
    for step in range(20):
        grads = _sparse_grads(shapes, seed=step)
        for p, q, g in zip(owning, views, grads, strict=True):
            p.grad, q.grad = g, g.clone()
        reference.step()
        flat.step()
        for p, q in zip(owning, views, strict=True):
            assert torch.equal(p, q), f"step {step}"
    assert not torch.equal(buffer, guard)  # the steps did move the parameters
