"""Loss kernels: forward gives the reduced loss, backward dL/d(prediction).

float16 and bfloat16 predictions compute in float32 and round the loss (and the gradient)
once (:func:`~handgrad.nn.functional._common.half_in_float32`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handgrad.nn.functional._common import (
    _DIVIDE_BY_COUNT_DTYPES,
    Ctx,
    _number,
    _operand,
    half_in_float32,
    half_in_float32_backward,
)

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` (as torch does) unless reduction is 'mean', 'sum' or 'none'."""
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{reduction!r} is not a valid value for reduction: expected one of {REDUCTIONS}"
        )


def _reduce(loss: Tensor, reduction: str, denominator: Tensor | float) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if not isinstance(denominator, int):
        return loss.sum() / denominator
    # A mean over every element. torch's CPU mean is this sum and division; dividing by a
    # kept 0-d tensor is cheaper than by a number, which torch wraps in a new tensor each call.
    total = loss.sum()
    if total.dtype in _DIVIDE_BY_COUNT_DTYPES:
        if denominator == 1:  # x / 1 is x, bit for bit: one kernel fewer at batch 1
            return total
        return total.div_(_number(denominator, total.dtype))
    return loss.mean()


def _per_element(grad: Tensor | float, reduction: str, denominator: Tensor | float) -> Any:
    """Upstream gradient of each unreduced loss term: g/denominator, g, or g itself."""
    if reduction == "mean":
        return grad / denominator
    return grad


def _times(t: Tensor, scale: Any) -> Tensor:
    """t · scale, with a float ``scale`` as a kept 0-d tensor where that gives the same bits
    (``t`` of at least one dimension): see :func:`_number`."""
    if type(scale) is float and t.dim():
        return t * _operand(scale, t)
    return t * scale


@half_in_float32
def mse_forward(prediction: Tensor, target: Tensor, reduction: str = "mean") -> tuple[Tensor, Ctx]:
    """ℓ_i = (p_i − t_i)², reduced by mean (÷ n), sum or none."""
    check_reduction(reduction)
    diff = prediction - target
    n = prediction.numel()
    squares = diff * diff
    if n == 1 and reduction != "none" and squares.dtype in _DIVIDE_BY_COUNT_DTYPES:
        # One square is its own sum and mean, bit for bit (0 + s = s: a square is never
        # −0), read without a reduction kernel: the per-sample case. (squeeze() drops every
        # dimension, all of size 1 here; measured cheaper than reshape(()).)
        return squares.squeeze(), (diff, reduction, n)
    return _reduce(squares, reduction, n), (diff, reduction, n)


@half_in_float32_backward
def mse_backward(grad: Tensor | float, ctx: Ctx) -> Tensor:
    """dℓ/dp_i = 2(p_i − t_i) · g_i, g_i = g/n for mean."""
    diff, reduction, n = ctx
    if type(grad) is float and diff.dim():  # the usual case, without the helpers' calls
        return diff * _operand(2.0 * (grad / n if reduction == "mean" else grad), diff)
    scale = _per_element(grad, reduction, n)
    if not isinstance(scale, Tensor):
        # One pass: diff · (2g/n) is bit-identical to (2 diff) · (g/n), doubling being exact.
        return _times(diff, 2.0 * scale)
    return 2.0 * diff * scale


@half_in_float32
def l1_forward(prediction: Tensor, target: Tensor, reduction: str = "mean") -> tuple[Tensor, Ctx]:
    """ℓ_i = |p_i − t_i|."""
    check_reduction(reduction)
    diff = prediction - target
    n = prediction.numel()
    return _reduce(diff.abs(), reduction, n), (diff, reduction, n)


@half_in_float32_backward
def l1_backward(grad: Tensor | float, ctx: Ctx) -> Tensor:
    """dℓ/dp_i = sign(p_i − t_i) · g_i (0 where p_i = t_i, as autograd)."""
    diff, reduction, n = ctx
    return _times(torch.sign(diff), _per_element(grad, reduction, n))


@half_in_float32
def huber_forward(
    prediction: Tensor, target: Tensor, delta: float = 1.0, reduction: str = "mean"
) -> tuple[Tensor, Ctx]:
    """ℓ_i = ½d² for |d| < δ, else δ(|d| − ½δ), with d = p_i − t_i."""
    check_reduction(reduction)
    diff = prediction - target
    size = diff.abs()
    loss = torch.where(size < delta, 0.5 * diff * diff, delta * (size - 0.5 * delta))
    n = prediction.numel()
    return _reduce(loss, reduction, n), (diff, delta, reduction, n)


@half_in_float32_backward
def huber_backward(grad: Tensor | float, ctx: Ctx) -> Tensor:
    """dℓ/dp_i = clamp(d, −δ, δ) · g_i."""
    diff, delta, reduction, n = ctx
    return _times(diff.clamp(-delta, delta), _per_element(grad, reduction, n))


def log_softmax(x: Tensor, dim: int) -> Tensor:
    """log softmax(x) = x − m − log Σ e^(x − m), m = max x: no exponential exceeds 1."""
    shifted = x - x.amax(dim, keepdim=True)
    return shifted - torch.log(torch.exp(shifted).sum(dim, keepdim=True))


@half_in_float32
def cross_entropy_forward(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> tuple[Tensor, Ctx]:
    """Cross-entropy from logits of shape (C,), (N, C) or (N, C, d1, ...), as torch.

    Every case is ℓ_i = −Σ_c a_ic log softmax(x_i)_c with a coefficient a_ic:

    - class indices y_i: a_ic = w_yi (1 − ε)[c = y_i] + w_c ε/C, and a_i· = 0 where
      y_i = ignore_index; mean divides by Σ_i w_yi over the kept samples (w ≡ 1 without
      weights);
    - probabilities q_i: a_ic = w_c ((1 − ε) q_ic + ε/C); mean divides by the sample count.
    """
    check_reduction(reduction)
    class_dim = 0 if logits.dim() == 1 else 1
    n_classes = logits.shape[class_dim]
    log_prob = log_softmax(logits, class_dim)
    # The class weights broadcast along the class dim: shape (C, 1, ..., 1).
    class_shape = (n_classes, *[1] * (logits.dim() - class_dim - 1))
    denominator: Tensor | float
    if target.is_floating_point():
        coef = target * (1.0 - label_smoothing) + label_smoothing / n_classes
        if weight is not None:
            coef = coef * weight.reshape(class_shape)
        denominator = logits.numel() / n_classes
    else:
        kept = target != ignore_index
        safe_target = torch.where(kept, target, 0).long()  # any valid class; its terms are zeroed
        one_hot = torch.zeros_like(logits)
        one_hot.scatter_(class_dim, safe_target.unsqueeze(class_dim), 1.0)
        if weight is None:
            coef = (1.0 - label_smoothing) * one_hot + label_smoothing / n_classes
            denominator = kept.sum().to(logits.dtype)
        else:
            target_weight = torch.where(kept, weight[safe_target], 0.0)
            coef = (1.0 - label_smoothing) * one_hot * target_weight.unsqueeze(class_dim)
            coef = coef + (label_smoothing / n_classes) * weight.reshape(class_shape)
            denominator = target_weight.sum()
        coef = coef * kept.unsqueeze(class_dim)
    per_sample = -(coef * log_prob).sum(class_dim)
    ctx = (torch.exp(log_prob), coef, False, class_dim, reduction, denominator)
    return _reduce(per_sample, reduction, denominator), ctx


@half_in_float32
def cross_entropy_of_labels_forward(
    logits: Tensor, target: Tensor, reduction: str = "mean"
) -> tuple[Tensor, Ctx]:
    """Cross-entropy's common case: class-index targets, every one a class (none ignored),
    no weights, no smoothing — :func:`cross_entropy_forward` with a = one-hot(y).

    With s = x − max x (no exponential exceeds 1) and Z = Σ_c e^(s_c):
    ℓ_i = log Z_i − s_(i,y_i), picked out with one gather (not a product with the one-hot
    and a sum; the same bits as −log_softmax(x)_y), and softmax = e^s / Z reuses the
    exponentials. The rows of a sum to 1; the mean divides by the sample count. The
    backward is :func:`cross_entropy_backward`.
    """
    check_reduction(reduction)
    class_dim = 0 if logits.dim() == 1 else 1
    shifted = logits - logits.amax(class_dim, keepdim=True)
    exp = torch.exp(shifted)
    total = exp.sum(class_dim, keepdim=True)
    index = target.long().unsqueeze(class_dim)
    per_sample = (torch.log(total) - shifted.gather(class_dim, index)).squeeze(class_dim)
    one_hot = torch.zeros_like(logits).scatter_(class_dim, index, 1.0)
    count = per_sample.numel()
    ctx = (exp / total, one_hot, True, class_dim, reduction, count)
    return _reduce(per_sample, reduction, count), ctx


@half_in_float32_backward
def cross_entropy_backward(grad: Tensor | float, ctx: Ctx) -> Tensor:
    """dℓ_i/dx_ic = (Σ_c' a_ic') softmax(x_i)_c − a_ic, times g_i (g/denominator for mean).

    With one-hot targets Σ_c' a_ic' = 1 and this is softmax(x_i) − onehot(y_i).
    """
    prob, coef, rows_sum_to_one, class_dim, reduction, denominator = ctx
    per_sample = _per_element(grad, reduction, denominator)
    if isinstance(per_sample, Tensor) and reduction == "none":
        per_sample = per_sample.unsqueeze(class_dim)
    if rows_sum_to_one:
        return _times(prob - coef, per_sample)
    return _times(coef.sum(class_dim, keepdim=True) * prob - coef, per_sample)


@half_in_float32
def bce_with_logits_forward(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
) -> tuple[Tensor, Ctx]:
    """Binary cross-entropy on logits, with positive-class weight p_w and element weight w.

    ℓ_i = −w [p_w t log σ(x) + (1 − t) log(1 − σ(x))]
        = w [(1 − t) x + (1 + (p_w − 1) t) softplus(−x)],
    with softplus(−x) = max(−x, 0) + log(1 + e^−|x|), which never overflows.
    """
    check_reduction(reduction)
    log_weight = 1.0 if pos_weight is None else 1.0 + (pos_weight - 1.0) * target
    softplus_neg = (-logits).clamp_min(0) + torch.log1p(torch.exp(-logits.abs()))
    loss = (1.0 - target) * logits + log_weight * softplus_neg
    if weight is not None:
        loss = loss * weight
    n = logits.numel()
    positive = target if pos_weight is None else pos_weight * target
    ctx = (logits, target, weight, log_weight, positive, reduction, n)
    return _reduce(loss, reduction, n), ctx


@half_in_float32_backward
def bce_with_logits_backward(grad: Tensor | float, ctx: Ctx) -> Tensor:
    """dℓ_i/dx_i = w [l σ(x) − p_w t] · g_i, l = 1 + (p_w − 1) t  (= w(σ(x) − t) g_i if p_w = 1).

    With s = σ(−|x|) ≤ ½, the sigmoid that keeps its digits: for x < 0, σ(x) = s and the
    bracket is l·s − p_w t; for x ≥ 0, σ(x) = 1 − s and it is (1 − t) − l·s (l − p_w t being
    1 − t). Neither form cancels for a 0/1 target: t = 0, x ≪ 0 gives σ(x) itself (as torch;
    1 − σ(−x) is 0 from x < −17 in float32), t = 1, x ≫ 0 gives −p_w σ(−x) (where torch's
    σ(x) − 1 is 0).
    """
    logits, target, weight, log_weight, positive, reduction, n = ctx
    s = torch.sigmoid(-logits.abs())
    scaled = s if type(log_weight) is float else log_weight * s  # l = 1 without pos_weight
    local = torch.where(logits < 0, scaled - positive, (1.0 - target) - scaled)
    if weight is not None:
        local = local * weight
    return _times(local, _per_element(grad, reduction, n))
