"""Per-sample gradients of the fully connected layer: each example's own dW and db.

The batch gradient of y = x Wᵀ + b is a sum over the batch,

    dW = Σ_i Σ_t g_{i,t} x_{i,t}ᵀ,    db = Σ_i Σ_t g_{i,t},

where i runs over the examples (the first dimension) and t over the positions inside one
example (every dimension between the first and the last; none for a (batch, in) input). The
term of example i is its *per-sample gradient*

    dW_i = Σ_t g_{i,t} x_{i,t}ᵀ    (out × in),     db_i = Σ_t g_{i,t}    (out),

and the backward already holds both factors, g_i and x_i: no autograd trick is needed, only
the sum over i left undone. (For a mean-reduced loss, g already carries the 1/N, so the
per-sample gradients sum to exactly what ``.grad`` receives.)

Three things are asked of them, and two never build the (batch × out × in) tensor:

- :func:`linear_grad_sample`: dW_i and db_i themselves (N · out · in numbers).
- :func:`linear_grad_sample_norms`: ‖dW_i‖²_F and ‖db_i‖². For a (batch, in) input the
  outer product's norm factorises, ‖g_i x_iᵀ‖_F = ‖g_i‖ ‖x_i‖; with positions it is the
  Gram-matrix identity ‖Σ_t g_t x_tᵀ‖²_F = Σ_{t,s} (g_t·g_s)(x_t·x_s), i.e. the sum of
  (G_i G_iᵀ) ⊙ (X_i X_iᵀ) — T² numbers per example instead of out · in (chosen when smaller).
- :func:`linear_grad_sample_weighted_sum`: Σ_i c_i dW_i and Σ_i c_i db_i for per-example
  weights c (DP-SGD's clipped sum), which is the batch gradient of the rows g_i scaled by
  c_i: one matrix product, (c ⊙ G)ᵀ X.

Inputs follow :func:`handgrad.nn.functional.linear_backward`: ``grad_out`` of shape
(N, ..., out), ``x`` of shape (N, ..., in); the kernels trust them (the modules check).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _as_sequences(grad_out: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(N, T, out) and (N, T, in) views: every middle dimension folded into one (T)."""
    batch = x.shape[0]
    return grad_out.reshape(batch, -1, grad_out.shape[-1]), x.reshape(batch, -1, x.shape[-1])


def linear_grad_sample(
    grad_out: Tensor,
    x: Tensor,
    bias: bool = True,
    weight_out: Tensor | None = None,
    accumulate: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Per-sample (dW_i, db_i) of y = x Wᵀ + b, of shapes (N, out, in) and (N, out).

    dW_i = Σ_t g_{i,t} x_{i,t}ᵀ,   db_i = Σ_t g_{i,t}   (t: the positions of example i).

    For a (N, in) input dW_i is the outer product g_i x_iᵀ, one exact multiply per entry (a
    broadcast multiply); with positions it is a batched matrix product. db_i is None without
    bias. ``weight_out`` (N, out, in), when given, receives dW — overwritten, or added to with
    ``accumulate=True`` — which saves allocating N · out · in fresh numbers: for large
    layers the fresh pages cost several times the arithmetic.
    """
    if x.dim() == 2:
        g_col, x_row = grad_out.unsqueeze(2), x.unsqueeze(1)  # (N, out, 1), (N, 1, in)
        if weight_out is None:
            grad_weight = g_col * x_row
        elif accumulate:
            grad_weight = weight_out.addcmul_(g_col, x_row)
        else:
            grad_weight = torch.mul(g_col, x_row, out=weight_out)
        return grad_weight, (linear_bias_grad_sample(grad_out) if bias else None)
    g_seq, x_seq = _as_sequences(grad_out, x)
    g_t = g_seq.transpose(1, 2)  # (N, out, T)
    if weight_out is None:
        grad_weight = torch.bmm(g_t, x_seq)
    elif accumulate:
        grad_weight = weight_out.baddbmm_(g_t, x_seq)
    else:
        grad_weight = torch.bmm(g_t, x_seq, out=weight_out)
    return grad_weight, (linear_bias_grad_sample(grad_out) if bias else None)


def linear_bias_grad_sample(grad_out: Tensor) -> Tensor:
    """Per-sample db_i = Σ_t g_{i,t}, shape (N, out): a copy of g for a (N, out) gradient."""
    if grad_out.dim() == 2:
        return grad_out.clone()
    return grad_out.reshape(grad_out.shape[0], -1, grad_out.shape[-1]).sum(1)


def linear_grad_sample_norms(
    grad_out: Tensor, x: Tensor, bias: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Squared norms (‖dW_i‖²_F, ‖db_i‖²), each of shape (N,), without forming dW_i.

    (N, in) input:  ‖g_i x_iᵀ‖²_F = ‖g_i‖² ‖x_i‖²  — O(N(out + in)) work and memory.
    (N, T, in) input: ‖Σ_t g_t x_tᵀ‖²_F = Σ_{t,s} (g_t·g_s)(x_t·x_s) — two (N, T, T) Gram
    matrices, used when T² ≤ out · in; otherwise dW_i is formed (N · out · in, then the
    smaller of the two) and its norm taken. ‖db_i‖² = ‖Σ_t g_t‖².
    """
    if x.dim() == 2:
        grad_norms = grad_out.pow(2).sum(1)
        return grad_norms * x.pow(2).sum(1), (grad_norms if bias else None)
    g_seq, x_seq = _as_sequences(grad_out, x)
    positions = g_seq.shape[1]
    if positions * positions <= g_seq.shape[2] * x_seq.shape[2]:
        gram_g = torch.bmm(g_seq, g_seq.transpose(1, 2))
        gram_x = torch.bmm(x_seq, x_seq.transpose(1, 2))
        weight_norms = (gram_g * gram_x).sum((1, 2))
    else:
        weight_norms = torch.bmm(g_seq.transpose(1, 2), x_seq).pow(2).sum((1, 2))
    bias_norms = g_seq.sum(1).pow(2).sum(1) if bias else None
    return weight_norms, bias_norms


def linear_grad_sample_weighted_sum(
    grad_out: Tensor, x: Tensor, weights: Tensor, bias: bool = True
) -> tuple[Tensor, Tensor | None]:
    """(Σ_i c_i dW_i, Σ_i c_i db_i) for per-example weights c of shape (N,).

    Σ_i c_i Σ_t g_{i,t} x_{i,t}ᵀ = (c ⊙ G)ᵀ X with the rows of example i scaled by c_i: the
    batch gradient of the scaled rows, one matrix product, no per-sample gradient formed.
    """
    scale = weights.reshape((-1,) + (1,) * (grad_out.dim() - 1)).to(grad_out.dtype)
    scaled = grad_out * scale
    rows = scaled.reshape(-1, scaled.shape[-1])
    grad_weight = torch.mm(rows.t(), x.reshape(-1, x.shape[-1]))
    grad_bias = rows.sum(0) if bias else None
    return grad_weight, grad_bias


# ----------------------------------------------------------------------------- other layers
#
# The same idea for the other layer families: the batch gradient's sum over examples left
# undone. A convolution is a fully connected layer applied at every output position to the
# window of input it sees (the unfolded input), so its per-sample weight gradient has the
# same two factors; a normalisation layer's affine parameters and an embedding table are
# summed over positions only.


def conv_grad_sample_factors(
    x_conv: Tensor,
    grad_out: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """The factors (N, L, O) and (N, L, C·k) of a convolution's per-sample weight gradient,
    dW_i = Σ_l g_{i,l} u_{i,l}ᵀ (one group), u_{i,l} the window of x_i that output position l
    sees, flattened channel-major like the weight's (O, C, *k) (torch's ``unfold``).

    1-D convolutions are unfolded as 2-D ones of height 1.
    """
    if x_conv.dim() == 3:  # (N, C, L) as (N, C, 1, L)
        x_conv, grad_out = x_conv.unsqueeze(2), grad_out.unsqueeze(2)
        kernel_size, stride = (1, *kernel_size), (1, *stride)
        padding, dilation = (0, *padding), (1, *dilation)
    windows = torch.nn.functional.unfold(
        x_conv, tuple(kernel_size), tuple(dilation), tuple(padding), tuple(stride)
    )  # (N, C·k, L)
    return grad_out.flatten(2).transpose(1, 2), windows.transpose(1, 2)


def grouped_grad_sample(left: Tensor, right: Tensor, groups: int) -> Tensor:
    """Per-sample Σ_l a_{i,l} b_{i,l}ᵀ within each of ``groups`` blocks: left (N, L, G·Og),
    right (N, L, G·Cg·k) → (N, G·Og, Cg·k) — group j's outputs meet only group j's inputs."""
    batch, positions = left.shape[:2]
    a = left.reshape(batch, positions, groups, -1)
    b = right.reshape(batch, positions, groups, -1)
    return torch.einsum("nlgo,nlgc->ngoc", a, b).flatten(1, 2)


def norm_affine_grad_sample(
    grad_out: Tensor, xhat: Tensor, channel_dims: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Per-sample (dγ_i, dβ_i) of y = γ ⊙ x̂ + β with γ, β spanning ``channel_dims`` of x:
    dγ_i = Σ g_i ⊙ x̂_i and dβ_i = Σ g_i over every other dimension but the batch's (0)."""
    summed = [d for d in range(1, grad_out.dim()) if d not in channel_dims]
    if not summed:
        return grad_out * xhat, grad_out.clone()
    return (grad_out * xhat).sum(summed), grad_out.sum(summed)


def embedding_grad_sample_factors(
    grad_out: Tensor, indices: Tensor, num_embeddings: int, padding_idx: int | None = None
) -> tuple[Tensor, Tensor]:
    """The factors (N, T, V) and (N, T, D) of an embedding table's per-sample gradient,
    dE_i = Σ_t e_{idx_{i,t}} g_{i,t}ᵀ: the one-hot rows of the indices and the gradients
    (rows of ``padding_idx`` get none). ‖dE_i‖² = Σ_{t,s} [idx_t = idx_s] g_t·g_s then comes
    from the Gram matrices without forming the (N, V, D) tensor."""
    one_hot = torch.nn.functional.one_hot(indices.reshape(indices.shape[0], -1), num_embeddings)
    one_hot = one_hot.to(grad_out.dtype)
    if padding_idx is not None:
        one_hot[..., padding_idx] = 0
    return one_hot, grad_out.reshape(indices.shape[0], -1, grad_out.shape[-1])


def embedding_grad_sample(
    grad_out: Tensor, indices: Tensor, num_embeddings: int, padding_idx: int | None = None
) -> Tensor:
    """Per-sample gradients (N, V, D) of an embedding table: dE_i[k] = Σ_{t: idx_{i,t} = k}
    g_{i,t} — example i's gradient rows added into the rows it looked up (a scatter-add per
    example, the batch gradient's scatter with the sum over examples left undone); the row
    of ``padding_idx`` gets none."""
    batch = indices.shape[0]
    rows = grad_out.reshape(batch, -1, grad_out.shape[-1])  # (N, T, D)
    index = indices.reshape(batch, -1, 1).expand(rows.shape)
    grad = rows.new_zeros((batch, num_embeddings, rows.shape[-1]))
    grad.scatter_add_(1, index, rows)
    if padding_idx is not None:
        grad[:, padding_idx] = 0
    return grad
