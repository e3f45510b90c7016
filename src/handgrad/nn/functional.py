"""Pure forward/backward kernels: the arithmetic of every handgrad layer and loss.

Each operation is a pair of functions, CS231n style::

    out, ctx = relu_forward(x)
    dx = relu_backward(grad_out, ctx)

``ctx`` is a tuple holding exactly what the backward needs; nothing is hidden anywhere else.
The kernels trust their arguments (the modules in :mod:`handgrad.nn` check shapes, dtypes and
devices and raise the errors); they never use autograd, so they run under
``torch.inference_mode()``.

Notation: ``g`` is the gradient arriving from above, dL/d(out); every backward returns
dL/d(input) by the chain rule, written out in its docstring.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

Ctx = tuple[Any, ...]
"""What a forward hands to its backward."""

REDUCTIONS = ("mean", "sum", "none")

# GELU constants: sqrt(2/pi) for the tanh form, 1/sqrt(2) and 1/sqrt(2*pi) for the exact one.
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715


def _resolved(overload: Any) -> Any:
    """The callable behind an aten overload: its ``_op`` where torch has one (the overload's
    own ``__call__`` only forwards to it, a Python frame that costs ~1 µs per small call)."""
    return getattr(overload, "_op", overload)


# The fused aten kernels, resolved once: calling the overload skips picking it on every call.
_SIGMOID_BACKWARD = _resolved(torch.ops.aten.sigmoid_backward.default)
_THRESHOLD_BACKWARD = _resolved(torch.ops.aten.threshold_backward.default)

# dtypes in which a sum divided by a 0-d tensor of the same dtype holding the count is exactly
# torch's `sum / count` (the count is converted to the dtype once, either way).
_DIVIDE_BY_COUNT_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=256)
def _number(value: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """``value`` as a 0-d CPU tensor, made once and kept.

    torch turns a Python number operand into a 0-d float64 CPU tensor on every call, which
    costs as much as a small kernel. Multiplying a tensor of at least one dimension by this
    one gives the same bits (a 0-d operand changes neither the result's dtype nor how its
    value is converted); with a 0-d operand, pass that operand's dtype.
    """
    with torch.inference_mode(False):  # usable by autograd-recording callers too
        return torch.tensor(value, dtype=dtype)


def _operand(value: float, like: Tensor) -> Tensor:
    """:func:`_number` for a kernel on ``like`` (of at least one dimension): in ``like``'s dtype
    when that is float32 or float64 (kernels compute in it and round a number to it anyway,
    and an operand of another dtype measured ~1 µs slower per call), else float64."""
    dtype = like.dtype
    return _number(value, dtype if dtype in _DIVIDE_BY_COUNT_DTYPES else torch.float64)


# --------------------------------------------------------------------------- linear


def linear_forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Ctx]:
    """y = x Wᵀ + b, for x of shape (..., in) and W of shape (out, in) (torch's layout).

    torch's own linear kernel, as torch.nn.Linear: one fused addmm for a (batch, in) input.
    """
    return torch.nn.functional.linear(x, weight, bias), (x, weight, bias)


def linear_backward(
    grad_out: Tensor,
    ctx: Ctx,
    input_grad: bool = True,
    weight_out: Tensor | None = None,
    bias_out: Tensor | None = None,
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """(dx, dW, db) for y = x Wᵀ + b.

    dx = g W,   dW = Σ_rows gᵀ x,   db = Σ_rows g  (rows = every leading index of x).
    dx is None when ``input_grad`` is False (its matmul is skipped); db is None without bias.
    dW and db are written into ``weight_out`` and ``bias_out`` when given (tensors of W's and
    b's shape, such as the parameters' slots in a flat gradient buffer), saving a copy.
    """
    x, weight, bias = ctx
    if x.dim() == 2:  # the usual (batch, in) case needs no reshaping
        grad_2d, x_2d = grad_out, x
    else:
        grad_2d = grad_out.reshape(-1, weight.shape[0])
        x_2d = x.reshape(-1, weight.shape[1])
    rows, out_features = grad_2d.shape
    if rows != 1:
        grad_weight = torch.mm(grad_2d.t(), x_2d, out=weight_out)
    else:
        # One row: gᵀx is an outer product (each entry one exact multiply, the same bits as
        # the GEMM), done as a broadcast multiply, (out, 1) · (1, in); a 1 × 1 gradient is its
        # own transpose (a view costs as much as a small kernel).
        grad_t = grad_2d if out_features == 1 else grad_2d.t()
        grad_weight = torch.mul(grad_t, x_2d, out=weight_out)
    grad_bias = None
    if bias is not None:
        grad_bias = torch.sum(grad_2d, 0, out=bias_out)
    grad_x = None
    if input_grad:
        if out_features != 1 or (rows == 1 and grad_out.dim() == 2):
            # (A single (1, 1) · (1, in) product is also cheapest as a GEMM call: measured
            # ~2x faster than the broadcast multiply below, and the same exact products.)
            grad_x = torch.mm(grad_out, weight) if x_2d is x else grad_out.matmul(weight)
        else:
            # One output feature: g W is an outer product (each entry one exact multiply), done
            # as a broadcast multiply, (..., 1) · (1, in), rather than a GEMM with an inner
            # dimension of 1 (faster from a few rows on).
            grad_x = torch.mul(grad_out, weight if grad_out.dim() > 1 else weight[0])
    return grad_x, grad_weight, grad_bias


# --------------------------------------------------------------------------- activations


def relu_forward(x: Tensor) -> tuple[Tensor, Ctx]:
    """y = max(x, 0)."""
    out = torch.relu(x)  # the same kernel as x.clamp_min(0), without wrapping the 0
    return out, (out,)


def relu_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g · [x > 0] = g where y > 0, else 0  (the subgradient 0 at x = 0, as autograd).

    aten's ``threshold_backward(g, y, 0)`` is exactly "g where y > 0, else 0" in one pass
    with no temporary; on CPU it is ~1.7x faster than g · sign(y) (two passes) and ~25x
    faster than torch.where on a boolean mask. A plain kernel call: no autograd involved.
    """
    (out,) = ctx
    return _THRESHOLD_BACKWARD(grad_out, out, 0)


def sigmoid_forward(x: Tensor) -> tuple[Tensor, Ctx]:
    """y = σ(x) = 1 / (1 + e^-x), overflow-free.

    torch.sigmoid saturates to exactly 0 and 1 for large |x| and never returns inf or NaN;
    the backward uses only y, so it stays finite too. (The textbook derivative written in x,
    e^-x / (1 + e^-x)², is inf/inf = NaN for x ≪ 0.)
    """
    out = torch.sigmoid(x)
    return out, (out,)


def sigmoid_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g · σ(x)(1 − σ(x)) = g · (1 − y) · y, from the saved output y.

    aten's ``sigmoid_backward(g, y)`` evaluates exactly g · (1 − y) · y (bit-identical, checked
    in tests/nn/test_fast_path.py) in one pass instead of three.
    """
    (out,) = ctx
    return _SIGMOID_BACKWARD(grad_out, out)


def tanh_forward(x: Tensor) -> tuple[Tensor, Ctx]:
    """y = tanh(x)."""
    out = torch.tanh(x)
    return out, (out,)


def tanh_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g · (1 − tanh²(x)), from the saved output."""
    (out,) = ctx
    return grad_out * (1.0 - out * out)


def leaky_relu_forward(x: Tensor, negative_slope: float = 0.01) -> tuple[Tensor, Ctx]:
    """y = x for x > 0, else negative_slope · x."""
    return torch.where(x > 0, x, x * negative_slope), (x, negative_slope)


def leaky_relu_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g for x > 0, else negative_slope · g."""
    x, negative_slope = ctx
    return torch.where(x > 0, grad_out, grad_out * negative_slope)


def elu_forward(x: Tensor, alpha: float = 1.0) -> tuple[Tensor, Ctx]:
    """y = x for x > 0, else α(eˣ − 1) (expm1 keeps small |x| accurate)."""
    return torch.where(x > 0, x, alpha * torch.expm1(x.clamp_max(0))), (x, alpha)


def elu_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g for x > 0, else g · α eˣ."""
    x, alpha = ctx
    return torch.where(x > 0, grad_out, grad_out * (alpha * torch.exp(x.clamp_max(0))))


def gelu_forward(x: Tensor, approximate: str = "none") -> tuple[Tensor, Ctx]:
    """GELU.

    - ``"none"``: y = x Φ(x), Φ(x) = ½(1 + erf(x/√2)) the standard normal CDF;
    - ``"tanh"``: y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³).
    """
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)
        t = torch.tanh(inner)
        return 0.5 * x * (1.0 + t), (x, approximate, t)
    cdf = 0.5 * (1.0 + torch.erf(x * _INV_SQRT_2))
    return x * cdf, (x, approximate, cdf)


def gelu_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """GELU's derivative.

    - ``"none"``: dx = g (Φ(x) + x φ(x)), φ(x) = e^(−x²/2)/√(2π);
    - ``"tanh"``: dx = g (½(1 + t) + ½x(1 − t²) √(2/π)(1 + 3·0.044715x²)), t = tanh u.
    """
    x, approximate, saved = ctx
    if approximate == "tanh":
        t = saved
        du_dx = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x * x)
        return grad_out * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)
    pdf = _INV_SQRT_2PI * torch.exp(-0.5 * x * x)
    return grad_out * (saved + x * pdf)


def softplus_forward(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> tuple[Tensor, Ctx]:
    """y = log(1 + e^(βx)) / β, and y = x where βx > threshold (linear regime, as torch)."""
    bx = x * beta
    soft = torch.log1p(torch.exp(bx.clamp_max(threshold))) / beta
    return torch.where(bx > threshold, x, soft), (bx, threshold)


def softplus_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g · σ(βx), and g where βx > threshold."""
    bx, threshold = ctx
    return torch.where(bx > threshold, grad_out, grad_out * torch.sigmoid(bx))


# --------------------------------------------------------------------------- shape and noise


def dropout_forward(
    x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None
) -> tuple[Tensor, Ctx]:
    """Inverted dropout: y = x · m / (1 − p), m_i ~ Bernoulli(1 − p), in training only.

    The mask is drawn like torch's own dropout (``bernoulli_(1 − p)`` on a tensor like x), so
    with the same RNG state both draw the same mask. p = 1 zeroes everything; p = 0 or
    ``training=False`` is the identity and draws nothing.
    """
    if not training or p == 0.0:
        return x, (None,)
    if p == 1.0:
        scale = torch.zeros_like(x)
    else:
        scale = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator) / (1.0 - p)
    return x * scale, (scale,)


def dropout_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g · m / (1 − p): the same scaled mask as the forward."""
    (scale,) = ctx
    return grad_out if scale is None else grad_out * scale


def flatten_forward(x: Tensor, start_dim: int = 1, end_dim: int = -1) -> tuple[Tensor, Ctx]:
    """Merge dims start_dim..end_dim into one."""
    return x.flatten(start_dim, end_dim), (x.shape,)


def flatten_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx = g reshaped back to the input's shape."""
    (shape,) = ctx
    return grad_out.reshape(shape)


# --------------------------------------------------------------------------- losses


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


def l1_forward(prediction: Tensor, target: Tensor, reduction: str = "mean") -> tuple[Tensor, Ctx]:
    """ℓ_i = |p_i − t_i|."""
    check_reduction(reduction)
    diff = prediction - target
    n = prediction.numel()
    return _reduce(diff.abs(), reduction, n), (diff, reduction, n)


def l1_backward(grad: Tensor | float, ctx: Ctx) -> Tensor:
    """dℓ/dp_i = sign(p_i − t_i) · g_i (0 where p_i = t_i, as autograd)."""
    diff, reduction, n = ctx
    return _times(torch.sign(diff), _per_element(grad, reduction, n))


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


def huber_backward(grad: Tensor | float, ctx: Ctx) -> Tensor:
    """dℓ/dp_i = clamp(d, −δ, δ) · g_i."""
    diff, delta, reduction, n = ctx
    return _times(diff.clamp(-delta, delta), _per_element(grad, reduction, n))


def log_softmax(x: Tensor, dim: int) -> Tensor:
    """log softmax(x) = x − m − log Σ e^(x − m), m = max x: no exponential exceeds 1."""
    shifted = x - x.amax(dim, keepdim=True)
    return shifted - torch.log(torch.exp(shifted).sum(dim, keepdim=True))


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
    return _reduce(loss, reduction, n), (logits, target, weight, log_weight, reduction, n)


def bce_with_logits_backward(grad: Tensor | float, ctx: Ctx) -> Tensor:
    """dℓ_i/dx_i = w [(1 − t) − (1 + (p_w − 1) t) σ(−x)] · g_i  (= w(σ(x) − t) g_i if p_w = 1)."""
    logits, target, weight, log_weight, reduction, n = ctx
    local = (1.0 - target) - log_weight * torch.sigmoid(-logits)
    if weight is not None:
        local = local * weight
    return _times(local, _per_element(grad, reduction, n))
