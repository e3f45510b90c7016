"""Embedding lookup: y[..., :] = W[index[...], :], and its gradient, dense or sparse.

A lookup is a product with a one-hot matrix, y = onehot(index) W, so dW = onehot(index)ᵀ g:
row k of dW is the sum of the upstream gradients of every position that looked up k.
Written as a scatter-add of g's rows into a zero matrix (``index_add_``), or — for a
vocabulary far larger than a batch — as a sparse matrix holding only those rows.
There is no input gradient: indices are integers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn.functional._common import Ctx


def embedding_forward(
    indices: Tensor, weight: Tensor, padding_idx: int | None = None
) -> tuple[Tensor, Ctx]:
    """y = W[indices]: shape indices.shape + (embedding_dim,). The row ``padding_idx``
    (if any) is looked up like any other; it only receives no gradient."""
    out = torch.nn.functional.embedding(indices, weight, padding_idx)
    return out, (indices, weight.shape, padding_idx)


def embedding_backward(
    grad_out: Tensor,
    ctx: Ctx,
    sparse: bool = False,
    scale_grad_by_freq: bool = False,
) -> Tensor:
    """dW = onehot(indices)ᵀ g: each looked-up row collects the sum of its positions' gradients.

    - ``padding_idx``: its positions contribute nothing (the padding row's gradient is 0);
    - ``scale_grad_by_freq``: each position's gradient is divided by the number of times its
      index occurs in this batch;
    - ``sparse``: a sparse COO tensor of W's shape with one (uncoalesced) entry per kept
      position, as torch gives, instead of a dense (num_embeddings, dim) matrix (with
      ``scale_grad_by_freq`` a RuntimeError, as torch's).
    """
    indices, weight_shape, padding_idx = ctx
    if sparse and scale_grad_by_freq:
        raise RuntimeError(
            "embedding_backward: scale_grad_by_freq not supported with sparse gradients"
        )
    flat = indices.reshape(-1)
    rows = grad_out.reshape(-1, weight_shape[1])
    if scale_grad_by_freq:
        counts = torch.bincount(flat, minlength=weight_shape[0])
        rows = rows / counts[flat].unsqueeze(1).to(rows.dtype)
    if padding_idx is not None:
        kept = flat != padding_idx
        flat, rows = flat[kept], rows[kept]
    if sparse:
        # indices in range by construction (the module checks them): no invariant check
        return torch.sparse_coo_tensor(
            flat.unsqueeze(0), rows, weight_shape, check_invariants=False
        )
    grad_weight = torch.zeros(weight_shape, dtype=grad_out.dtype, device=grad_out.device)
    return grad_weight.index_add_(0, flat, rows)


def embedding_renorm_(
    weight: Tensor, indices: Tensor, max_norm: float, norm_type: float = 2.0
) -> None:
    """In place, as torch.nn.Embedding's ``max_norm``: every row of W that ``indices`` looks up
    and whose p-norm exceeds ``max_norm`` is rescaled by max_norm / (‖row‖ + 1e-7).

    This changes the weights, not the graph: the lookup that follows reads the rescaled rows
    and its backward treats them as constants (as torch does).
    """
    rows = torch.unique(indices.reshape(-1))
    norms = torch.linalg.vector_norm(weight[rows], ord=norm_type, dim=1)
    too_long = norms > max_norm
    rows, norms = rows[too_long], norms[too_long]
    weight[rows] *= (max_norm / (norms + 1e-7)).unsqueeze(1)
