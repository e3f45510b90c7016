"""DP-SGD's clipping, on the per-sample gradients a handgrad backward leaves.

Each example's whole gradient — across every parameter — is scaled to norm at most C:

    n_i = ‖(g_i^{(1)}, …, g_i^{(P)})‖ = √(Σ_p ‖g_i^{(p)}‖²),
    c_i = min(1, C / (n_i + 10⁻⁶)),
    clipped sum of parameter p = Σ_i c_i g_i^{(p)}

(the 10⁻⁶ keeps an all-zero gradient finite; Opacus uses the same constant, so the two agree).
The norms and the weighted sums come from :mod:`handgrad.nn.per_sample`, so on a factored
per-sample gradient (``backward(..., per_sample="factored")``) neither forms the
(batch × parameters) tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from handgrad.nn.per_sample import GradSample, grad_sample_norms_squared, grad_sample_weighted_sum

CLIP_EPSILON = 1e-6
"""Added to each norm before dividing: c_i = min(1, C / (n_i + 1e-6)), as Opacus does."""


def grad_samples(params: Iterable[Tensor]) -> list[GradSample | None]:
    """Each parameter's ``grad_sample`` (None where the last backward left none)."""
    return [getattr(param, "grad_sample", None) for param in params]


def batch_size_of(samples: Sequence[GradSample | None]) -> int:
    """The number of examples the per-sample gradients hold; ValueError if none or if they
    disagree."""
    sizes = {len(sample) for sample in samples if sample is not None}
    if not sizes:
        raise ValueError(
            "no per-sample gradients: run model.backward(grad_output, per_sample=True) "
            "(or per_sample='factored') before asking for them"
        )
    if len(sizes) > 1:
        raise ValueError(f"the per-sample gradients hold different batch sizes: {sorted(sizes)}")
    return sizes.pop()


def per_sample_norms(params: Iterable[Tensor], scale: float = 1.0) -> Tensor:
    """n_i = ‖example i's gradient over all ``params``‖, shape (batch,), times ``scale``.

    Reads ``p.grad_sample``; on factored ones (fully connected layers after
    ``backward(..., per_sample="factored")``) no per-sample gradient is formed: for a
    (batch, in) input ‖g_i x_iᵀ‖ = ‖g_i‖ ‖x_i‖. ``scale`` multiplies every gradient first
    (the batch size, to undo a mean-reduced loss's 1/N).
    """
    samples = grad_samples(params)
    batch_size_of(samples)
    squares = [grad_sample_norms_squared(sample) for sample in samples if sample is not None]
    total = torch.stack(squares).sum(0) if len(squares) > 1 else squares[0]
    return total.sqrt().mul_(scale) if scale != 1.0 else total.sqrt()


def clip_factors(norms: Tensor, max_grad_norm: float) -> Tensor:
    """c_i = min(1, C / (n_i + 1e-6)): the factor that brings example i's norm to ≤ C."""
    return (max_grad_norm / (norms + CLIP_EPSILON)).clamp_(max=1.0)


def clipped_sum(params: Iterable[Tensor], factors: Tensor) -> list[Tensor]:
    """Σ_i c_i g_i^{(p)} for each parameter p (zeros where it has no ``grad_sample``)."""
    sums = []
    for param in params:
        sample = getattr(param, "grad_sample", None)
        if sample is None:
            sums.append(torch.zeros_like(param))
        else:
            sums.append(grad_sample_weighted_sum(sample, factors).view_as(param))
    return sums
