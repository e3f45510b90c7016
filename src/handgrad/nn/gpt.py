"""A GPT — a decoder-only transformer language model — with every gradient written by hand.

    tokens (B, T) ──► token embedding + position embedding ──► dropout
                  ──► N blocks:  x = x + attn(ln_1(x))     causal self-attention
                                 x = x + mlp(ln_2(x))      4× wide GELU network
                  ──► ln_f ──► head (a Linear to vocabulary logits, tied to the token embedding)

Each class below has a ``forward`` that calls its parts in order and a ``backward`` that calls
their backward in reverse. Two rules do all the work:

- a residual y = x + f(x) sends its gradient g both ways: dx = g + f′(x)ᵀ g;
- a parameter used twice collects both gradients: with the head tied to the token
  embedding E (logits = h Eᵀ), dE = gᵀ h (from the head) + onehot(tokens)ᵀ d(embedding)
  (from the lookup) — each backward *adds* its share into ``E.grad``, so the sum happens by
  itself.

Layout and initialisation follow GPT-2 (Radford et al., 2019) as nanoGPT writes it: weights
N(0, 0.02²), the two projections into the residual stream N(0, (0.02/√(2N))²), zero biases.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor

from handgrad.nn import functional as F
from handgrad.nn._saving import accumulate, required
from handgrad.nn.convert import register_conversion
from handgrad.nn.embedding import Embedding
from handgrad.nn.gpt_torch import TorchGPT, convert_gpt
from handgrad.nn.layer_norm import LayerNorm
from handgrad.nn.layers import Linear
from handgrad.nn.module import Module
from handgrad.nn.per_sample import (
    PerSample,
    per_sample_active,
    per_sample_paused,
    store_grad_samples,
)


def _linear_backward(layer: Linear, grad: Tensor, x: Tensor, input_grad: bool = True) -> Any:
    """Backward of y = x Wᵀ + b for ``layer``'s W and b and the input x the caller kept:
    dW += gᵀx, db += Σ g accumulated; returns dx = g W (None without ``input_grad``).

    Under ``torch.autocast`` the product ran in bfloat16 on a float32 x and W: dx is
    returned, and dW, db accumulated, in the dtypes of x, W and b (as autograd's backward
    of autocast's casts gives them).
    """
    weight, bias = layer.weight, layer.bias
    if per_sample_active():  # the layer's own _recall does not run: store them here
        store_grad_samples(layer, layer.per_sample_grads(grad, (x, weight, bias)))
    grad_x, grad_weight, grad_bias = F.linear_backward(grad, (x, weight, bias), input_grad)
    accumulate(weight, grad_weight)
    if bias is not None and grad_bias is not None:
        accumulate(bias, grad_bias)
    if grad_x is None or grad_x.dtype == x.dtype:
        return grad_x
    return grad_x.to(x.dtype)


def _linear(layer: Linear, x: Tensor) -> Tensor:
    """y = x Wᵀ + b with ``layer``'s parameters (the caller keeps x for the backward)."""
    return torch.nn.functional.linear(x, layer.weight, layer.bias)


def _folds(norm: LayerNorm, x: Tensor) -> bool:
    """Whether the Linear after ``norm`` (input ``x``) takes the norm's γ and β into its own
    weights (:func:`_folded_linear`): for float32/float64 parameters and input, outside
    ``torch.autocast`` (whose product runs in bfloat16 on the norm's float32 output, as
    autograd's does: it keeps that path)."""
    weight = norm.weight
    return (
        weight is not None
        and x.dtype in (torch.float32, torch.float64)
        and weight.dtype == x.dtype
        and not torch.is_autocast_enabled(x.device.type)
    )


def _folded_parameters(layer: Linear, norm: LayerNorm) -> tuple[Tensor, Tensor | None]:
    """W′ = W diag γ and b′ = W β + b, so that layer(γ ⊙ x̂ + β) = x̂ W′ᵀ + b′."""
    weight = layer.weight * cast(Tensor, norm.weight)
    bias: Tensor | None = layer.bias
    beta = norm.bias
    if beta is not None and bias is not None:
        bias = torch.addmv(bias, layer.weight, beta)
    elif beta is not None:
        bias = torch.mv(layer.weight, beta)
    return weight, bias


def _folded_linear(layer: Linear, norm: LayerNorm, xhat: Tensor) -> Tensor:
    """``layer`` applied to ``norm``'s output γ ⊙ x̂ + β, computed from x̂ as x̂ W′ᵀ + b′
    (:func:`_folded_parameters`): the norm's output is never formed, in forward or backward."""
    return torch.nn.functional.linear(xhat, *_folded_parameters(layer, norm))


def _folded_linear_backward(
    layer: Linear, norm: LayerNorm, grad: Tensor, xhat: Tensor, input_grad: bool = True
) -> Tensor | None:
    """Backward of z = x̂ W′ᵀ + b′ (:func:`_folded_linear`): accumulates W's, b's, γ's and β's
    gradients and returns dL/dx̂ (None without ``input_grad``).

    The Linear's gradients in W′ and b′ are dW′ = gᵀx̂ and db′ = Σ g. As W′_ok = W_ok γ_k and
    b′_o = Σ_k W_ok β_k + b_o, the chain rule gives entry by entry

        dW = dW′ diag γ + db′ βᵀ,   db = db′,   dγ_k = Σ_o W_ok dW′_ok,   dβ = Wᵀ db′

    (products of parameter size). The gradient at x̂ is h = g W′ = (g W) ⊙ γ; it is returned
    with its row means removed, h − mean(h) = g W″, W″ = W′ with each row's mean subtracted
    (one more parameter-sized pass): :meth:`LayerNorm.backward_normalized` takes it so
    (``centred=True``) and skips a pass over the activations.
    """
    gamma, beta = cast(Tensor, norm.weight), norm.bias
    weight, bias = layer.weight, layer.bias
    grad2 = grad.reshape(-1, weight.shape[0])
    grad_weight = torch.mm(grad2.t(), xhat.reshape(-1, weight.shape[1]))  # dW′ = gᵀx̂
    grad_xhat = None
    if input_grad:  # g W″, W″ = W′ − mean over each row (W′ = W diag γ, recomputed)
        folded = weight * gamma
        folded = folded.sub_(folded.mean(1, keepdim=True))
        grad_xhat = torch.mm(grad2, folded).view(*grad.shape[:-1], weight.shape[1])
    accumulate(gamma, (weight * grad_weight).sum(0))
    grad_weight.mul_(gamma)
    if bias is not None or beta is not None:  # (b′ exists: db′ = Σ g)
        grad_bias = grad2.sum(0)
        if beta is not None:
            accumulate(beta, torch.mv(weight.t(), grad_bias))
            grad_weight.addr_(grad_bias, beta)
        if bias is not None:
            accumulate(bias, grad_bias)
    accumulate(weight, grad_weight)
    return grad_xhat


def _norm_output(norm: LayerNorm, folded: bool) -> Tensor:
    """What the layer after ``norm`` read: x̂ where it took γ and β, else y = γ ⊙ x̂ + β."""
    return norm.normalized() if folded else norm.recompute_output()


def _norm_backward(
    norm: LayerNorm, grad: Tensor, folded: bool, residual: Tensor | None = None
) -> Tensor:
    """``norm``'s dL/dx from the next layer's input gradient (dL/dx̂ with its row means
    removed where that layer took γ and β: :func:`_folded_linear_backward`), plus
    ``residual`` where given."""
    if folded:
        return norm.backward_normalized(grad, centred=True, residual=residual)
    grad_input = required(norm.backward(grad))
    return grad_input if residual is None else residual + grad_input


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_MINUS_HALF_LOG2_E = -0.5 / math.log(2.0)
"""−½ log₂ e: e^(−h²/2) = 2^(−h² log₂(e)/2)."""


def _gelu_derivative(hidden: Tensor, activated: Tensor, scratch: Tensor, zero: Tensor) -> Tensor:
    """GELU′(h) = Φ(h) + h φ(h) for GELU(h) = h Φ(h), written into ``activated`` = GELU(h)'s
    buffer (``scratch``, of the same shape, holds φ on the way; ``zero``: a 0-d 0 of h's
    dtype, made once per call of :func:`_hidden_gradient`).

    Φ(h) = GELU(h)/h is read off GELU's value (torch's erf-based kernel, a few ulps) instead
    of a second erf, which costs more than the division; at h = 0 (0/0) Φ = ½. (For
    subnormal h, below 1.2e-38 in float32, GELU(h) ≈ h/2 has lost bits and Φ with them.)
    φ(h) = e^(−h²/2)/√(2π) is the standard normal density, computed as 2^(−h² log₂(e)/2):
    torch's exp2 kernel takes half the time of its exp here (measured, float32, AVX2), and
    the rounded constant costs a relative |h²/2|·ε in φ, a few ulps where φ is not ~0.
    """
    cdf = activated.div_(hidden).nan_to_num_(0.5)
    # −h² log₂(e)/2 in one pass: addcmul's 0 + c·h·h
    gauss = torch.addcmul(zero, hidden, hidden, value=_MINUS_HALF_LOG2_E, out=scratch)
    torch.exp2(gauss, out=gauss)  # e^(−h²/2)
    return cdf.addcmul_(gauss, hidden, value=_INV_SQRT_2PI)  # Φ(h) + h φ(h)


_GELU_CHUNK_ELEMENTS = 1 << 18
"""Elements per chunk of :func:`_hidden_gradient`: 1 MiB of float32 per operand (at the GPT
benchmark's shapes 0.96 of the time with 2¹⁷, measured paired, 1 thread; the step's memory
peak, at the end of the forward, is unchanged)."""


def _hidden_gradient(grad: Tensor, weight: Tensor, hidden: Tensor, activated: Tensor) -> Tensor:
    """dL/dh = (g W₂) ⊙ GELU′(h) for the MLP's h = W₁x + b₁, from the gradient g of its output
    and W₂ = proj's weight, written into h's own buffer (``activated`` = GELU(h) is
    overwritten too): no (B, T, 4C) tensor is allocated.

    A block of rows at a time (``_GELU_CHUNK_ELEMENTS``): GELU′ of the rows' h into their
    GELU(h) (:func:`_gelu_derivative`, five element-wise passes), then d(GELU(h)) = g W₂ for
    those rows into their h (read for the last time), times GELU′. The block's operands stay
    in cache from one pass to the next, where passes over whole (B, T, 4C) tensors would
    stream them from memory each time; and the memory peak holds h and GELU(h) alone, not a
    third such tensor for d(GELU(h)). Each element's arithmetic is that of whole-tensor passes.
    """
    width = hidden.shape[-1]
    hidden2 = hidden.view(-1, width)  # (fresh products, contiguous)
    activated2 = activated.view(-1, width)
    grad2 = grad.reshape(-1, grad.shape[-1])
    if grad2.dtype != hidden.dtype or weight.dtype != hidden.dtype:  # (autocast: bfloat16 h)
        grad2, weight = grad2.to(hidden.dtype), weight.to(hidden.dtype)
    rows = max(1, _GELU_CHUNK_ELEMENTS // max(1, width))
    scratch = hidden2.new_empty(min(rows, hidden2.shape[0]), width)
    zero = scratch.new_zeros(())
    for start in range(0, hidden2.shape[0], rows):
        chunk = slice(start, start + rows)
        h = hidden2[chunk]
        derivative = _gelu_derivative(h, activated2[chunk], scratch[: h.shape[0]], zero)
        torch.mm(grad2[chunk], weight, out=h).mul_(derivative)
    return hidden


def _heads(qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Q, K and V as (B, H, T, d) views of qkv's (B, T, 3, H, d) buffer."""
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def _given_back(layer: Module, kept: Tensor | None, given: Tensor | None) -> Tensor:
    """The forward's input for ``layer``'s backward: kept by the layer, or given back."""
    if kept is not None:
        return kept
    if given is None:
        raise ValueError(
            f"{layer._get_name()}.backward(): built with keep_input=False, it needs the "
            "forward's input given back (backward(grad, input=...))"
        )
    return given


class CausalSelfAttention(Module):
    """Each position attends to itself and the positions before it, in ``n_head`` heads.

    qkv = x W_qkvᵀ + b (one product gives Q, K and V), per head O_h = softmax(Q_h K_hᵀ/√d
    + causal mask) V_h, y = [O_1 … O_H] W_projᵀ + b. Backward: proj's, the attention
    kernel's (dQ, dK, dV; :mod:`handgrad.nn.functional.attention`, written side by side into
    one (B, T, 3C) gradient), then qkv's.

    Memory: kept are x, the heads' Q, K, V (views of the qkv product) and the merged heads
    [O_1 … O_H] (which proj's weight gradient needs and the attention backward reads as O);
    the backward recomputes the attention weights (B·H·T² numbers, more than all of those
    together) unless ``save_attention_weights`` is set, trading memory for one product and
    softmax per layer. With ``keep_input=False`` x is not kept either: the caller gives it
    back to ``backward`` (a :class:`Block` rebuilds it from its LayerNorm).
    """

    save_attention_weights = False

    def __init__(
        self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True, **factory: Any
    ) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(
                f"CausalSelfAttention: d_model={d_model} is not divisible by n_head={n_head}"
            )
        self.n_head = n_head
        self.keep_input = True
        self.qkv = Linear(d_model, 3 * d_model, bias=bias, **factory)
        self.proj = Linear(d_model, d_model, bias=bias, **factory)
        self.dropout = dropout  # on the attention weights and on the output

    def forward(self, input: Tensor, norm: LayerNorm | None = None) -> Tensor:
        """``norm``: the LayerNorm whose x̂ ``input`` is, its γ and β taken into qkv's weights
        (:func:`_folded_linear`); the backward is then given it too."""
        batch, length, width = input.shape
        heads = self.n_head
        head_dim = width // heads
        qkv = _linear(self.qkv, input) if norm is None else _folded_linear(self.qkv, norm, input)
        # (B, T, 3, H, d) -> 3 × (B, H, T, d) views of qkv's buffer, one attention problem
        # per (sequence, head): the attention kernels take the strides as they are (no copy)
        q, k, v = _heads(qkv.view(batch, length, 3, heads, head_dim))
        del qkv
        attended, attention = F.scaled_dot_product_attention_forward(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=True,
            save_weights=self.save_attention_weights,
        )
        merged = attended.transpose(1, 2).reshape(batch, length, width)
        del attended  # the ctx reads O from merged, which proj's backward needs anyway
        attention = attention._replace(
            out=merged.view(batch, length, heads, head_dim).transpose(1, 2)
        )
        out, dropped = F.dropout_forward(_linear(self.proj, merged), self.dropout, self.training)
        kept = input if self.keep_input else None
        self._remember((kept, attention, merged, dropped), out)
        return out

    def backward(
        self,
        grad_output: Tensor,
        input_grad: bool = True,
        input: Tensor | None = None,
        norm: LayerNorm | None = None,
    ) -> Tensor | None:
        """dL/d(input); the forward's input is given back as ``input`` when not kept; with
        ``norm`` (as in forward), dL/dx̂, γ's and β's gradients accumulated."""
        kept, attention, merged, dropped = self._recall(grad_output)
        input = _given_back(self, kept, input)
        batch, length, width = grad_output.shape
        heads = self.n_head
        grad = F.dropout_backward(grad_output, dropped)
        grad_merged = _linear_backward(self.proj, grad, merged)
        del merged
        grad_heads = grad_merged.view(batch, length, heads, width // heads).transpose(1, 2)
        # dQ, dK, dV written straight into qkv's layout (B, T, 3, H, d), side by side
        grad_qkv = attention.query.new_empty(batch, length, 3, heads, width // heads)
        F.scaled_dot_product_attention_backward(grad_heads, attention, out=_heads(grad_qkv))
        del attention, grad_heads, grad_merged
        grad_qkv = grad_qkv.view(batch, length, 3 * width)
        if norm is not None:
            return _folded_linear_backward(self.qkv, norm, grad_qkv, input, input_grad)
        return _linear_backward(self.qkv, grad_qkv, input, input_grad)


class MLP(Module):
    """y = W₂ GELU(W₁ x + b₁) + b₂, hidden width ``4 · d_model`` by default.

    Backward: dW₂ += gᵀ GELU(h), d(GELU(h)) = g W₂, dh = d(GELU(h)) ⊙ GELU′(h), then
    W₁'s like any Linear; GELU(h) gives Φ(h) for GELU′ on the way, and dh is written into
    h's buffer (:func:`_hidden_gradient`). Memory: the forward keeps x, h = W₁x + b₁ and
    GELU(h) (the two (B, T, 4C) tensors torch's autograd keeps). With
    ``keep_activation=False`` GELU(h) is recomputed from h in backward instead: one
    element-wise pass (an erf per element) for one (B, T, 4C) tensor less per block; in eval
    mode GELU(h) is never kept (a backward there recomputes it), because evaluation runs
    forwards of large batches whose contexts stay until the next forward. With
    ``keep_input=False`` x is not kept: the caller gives it back to ``backward``.
    """

    keep_activation = True

    def __init__(
        self, d_model: int, hidden: int, dropout: float = 0.0, bias: bool = True, **factory: Any
    ) -> None:
        super().__init__()
        self.keep_input = True
        self.fc = Linear(d_model, hidden, bias=bias, **factory)
        self.proj = Linear(hidden, d_model, bias=bias, **factory)
        self.dropout = dropout

    def forward(self, input: Tensor, norm: LayerNorm | None = None) -> Tensor:
        """``norm``: as :meth:`CausalSelfAttention.forward`'s, for fc."""
        hidden = _linear(self.fc, input) if norm is None else _folded_linear(self.fc, norm, input)
        activated = torch.nn.functional.gelu(hidden)
        out, dropped = F.dropout_forward(_linear(self.proj, activated), self.dropout, self.training)
        kept = activated if self.keep_activation and self.training else None
        self._remember((input if self.keep_input else None, hidden, kept, dropped), out)
        return out

    def backward(
        self,
        grad_output: Tensor,
        input_grad: bool = True,
        input: Tensor | None = None,
        norm: LayerNorm | None = None,
    ) -> Tensor | None:
        """dL/d(input); the forward's input is given back as ``input`` when not kept; with
        ``norm`` (as in forward), dL/dx̂, γ's and β's gradients accumulated."""
        kept, hidden, activated, dropped = self._recall(grad_output)
        input = _given_back(self, kept, input)
        grad = F.dropout_backward(grad_output, dropped)
        if activated is None:
            activated = torch.nn.functional.gelu(hidden)  # recomputed (see the class docstring)
        _linear_backward(self.proj, grad, activated, input_grad=False)  # dW₂, db₂
        if per_sample_active():  # proj's factored per-sample gradient still reads activated
            activated = activated.clone()
        grad_hidden = _hidden_gradient(grad, self.proj.weight, hidden, activated)
        del activated, hidden
        if norm is not None:
            return _folded_linear_backward(self.fc, norm, grad_hidden, input, input_grad)
        return _linear_backward(self.fc, grad_hidden, input, input_grad)


class Block(Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(·)): a pre-norm transformer block.

    Memory: a LayerNorm keeps x̂ for its backward, and the layer after it would keep the
    LayerNorm's output y = γ ⊙ x̂ + β for its weight gradient: the same numbers twice. So
    attn and mlp do not keep their inputs; the backward gives each its LayerNorm's x̂ back.

    Each LayerNorm's γ and β move into the Linear after it (qkv, fc) where :func:`_folds`
    allows: y Wᵀ + b = x̂ (W diag γ)ᵀ + (W β + b), so y is never formed and the norm's
    backward starts from dL/dx̂ (γ's and β's gradients come from W′'s and b′'s:
    :func:`_folded_linear_backward`). Otherwise, and for per-sample gradients (each layer's
    own, from y), the backward rebuilds y (:meth:`LayerNorm.recompute_output`, one pass).
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        bias: bool = True,
        **factory: Any,
    ) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(d_model, bias=bias, **factory)
        self.attn = CausalSelfAttention(d_model, n_head, dropout, bias, **factory)
        self.ln_2 = LayerNorm(d_model, bias=bias, **factory)
        self.mlp = MLP(d_model, dim_feedforward, dropout, bias, **factory)
        self.attn.keep_input = self.mlp.keep_input = False  # rebuilt from ln_1, ln_2

    def forward(self, input: Tensor) -> Tensor:
        if _folds(self.ln_1, input):  # (the class docstring)
            attended = self.attn(self.ln_1.normalize(input), norm=self.ln_1)
            x = input + attended
            transformed = self.mlp(self.ln_2.normalize(x), norm=self.ln_2)
            folded = True
        else:
            attended = self.attn(self.ln_1(input))
            x = input + attended
            transformed = self.mlp(self.ln_2(x))
            folded = False
        out = x + transformed
        # The branches' dtypes: under torch.autocast they compute in bfloat16 beside a float32
        # residual stream, and each receives its gradient in its own dtype.
        self._remember((attended.dtype, transformed.dtype, folded), out)
        return out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        attended_dtype, transformed_dtype, folded = self._recall(grad_output)
        folded = folded and not per_sample_active()  # (per-sample: from y, class docstring)
        ln_1, ln_2 = (self.ln_1, self.ln_2) if folded else (None, None)
        g = grad_output
        through_mlp = self.mlp.backward(
            g.to(transformed_dtype), input=_norm_output(self.ln_2, folded), norm=ln_2
        )
        g = _norm_backward(self.ln_2, required(through_mlp), folded, residual=g)
        through_attn = self.attn.backward(
            g.to(attended_dtype), input=_norm_output(self.ln_1, folded), norm=ln_1
        )
        return _norm_backward(self.ln_1, required(through_attn), folded, residual=g)


class GPT(Module):
    """A GPT language model: ``model(tokens)`` gives next-token logits (B, T, vocab_size).

    Arguments: ``vocab_size``; ``context_length``, the longest sequence (the size of the
    position table); ``n_layer`` blocks of ``n_head`` heads over ``d_model`` features; the
    MLP's ``dim_feedforward`` (4 · d_model by default); ``dropout`` (embeddings, attention,
    residual branches); ``bias`` for the Linear and LayerNorm layers; ``tie_weights``: the
    head shares the token embedding's matrix (``head.weight is token_embedding.weight``).

    ``backward(dL/dlogits)`` accumulates every parameter's gradient and returns None (the
    input holds token ids). Train it with :class:`handgrad.nn.CrossEntropyLoss` on
    ``logits.view(-1, vocab_size)`` and any optimizer; sample with :meth:`generate`.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        n_layer: int = 4,
        n_head: int = 4,
        d_model: int = 128,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        tie_weights: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("context_length", context_length),
            ("n_layer", n_layer),
            ("n_head", n_head),
            ("d_model", d_model),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPT: {name} must be a positive int, got {value!r}")
        if d_model % n_head:
            raise ValueError(f"GPT: d_model={d_model} is not divisible by n_head={n_head}")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.n_layer = n_layer
        self.n_head = n_head
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward or 4 * d_model
        self.dropout = dropout
        self.bias = bias
        self.tie_weights = tie_weights

        self.token_embedding = Embedding(vocab_size, d_model, **factory)
        self.position_embedding = Embedding(context_length, d_model, **factory)
        self.blocks = torch.nn.ModuleList(
            Block(d_model, n_head, self.dim_feedforward, dropout, bias, **factory)
            for _ in range(n_layer)
        )
        self.ln_f = LayerNorm(d_model, bias=bias, **factory)
        self.head = Linear(d_model, vocab_size, bias=False, **factory)
        if tie_weights:
            self.head.weight = self.token_embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation (see the module docstring), drawn in module order."""
        residual_std = 0.02 / math.sqrt(2 * self.n_layer)
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, (Linear, Embedding)):
                    std = residual_std if name.endswith(".proj") else 0.02
                    module.weight.normal_(0.0, std)
                    if isinstance(module, Linear) and module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, LayerNorm):
                    module.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"vocab_size={self.vocab_size}, context_length={self.context_length}, "
            f"n_layer={self.n_layer}, n_head={self.n_head}, d_model={self.d_model}, "
            f"tie_weights={self.tie_weights}"
        )

    def forward(self, input: Tensor) -> Tensor:
        tokens = self._check_tensor(input)
        if tokens.dim() != 2:
            raise ValueError(
                f"GPT: expected token ids of shape (batch, length), got {tuple(tokens.shape)}"
            )
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(
                f"GPT: input of shape {tuple(tokens.shape)} has {length} positions, more than "
                f"the position table holds (context_length={self.context_length}); crop it "
                f"to the last {self.context_length} tokens"
            )
        positions = torch.arange(length, device=tokens.device)
        x, dropped = F.dropout_forward(
            self.token_embedding(tokens) + self.position_embedding(positions),
            self.dropout,
            self.training,
        )
        for block in self.blocks:
            x = block(x)
        # ln_f's γ and β go into the head as a Block's into qkv (see Block); either way ln_f's
        # output is not kept.
        folded = _folds(self.ln_f, x)
        if folded:
            logits = _folded_linear(self.head, self.ln_f, self.ln_f.normalize(x))
        else:
            logits = _linear(self.head, self.ln_f(x))
        self._remember((dropped, folded), logits)
        return logits

    def backward(
        self, grad_output: Tensor, input_grad: bool = True, per_sample: PerSample = False
    ) -> None:
        """Accumulate every parameter's gradient from dL/dlogits; returns None (token ids).

        ``per_sample=True`` also stores each parameter's ``grad_sample``, one per sequence;
        the tied matrix's holds both contributions, the head's Σ_t g_{i,t} h_{i,t}ᵀ and the
        lookup's rows, as its ``.grad`` does.
        """
        if per_sample:
            return self._per_sample_backward(grad_output, input_grad, per_sample)
        dropped, folded = self._recall(grad_output)
        folded = folded and not per_sample_active()
        # head: dW += gᵀ features (with tied weights this is the first of the token
        # embedding's two gradient contributions; the lookup's comes last)
        features = _norm_output(self.ln_f, folded)
        if folded:
            grad_features = _folded_linear_backward(self.head, self.ln_f, grad_output, features)
        else:
            grad_features = _linear_backward(self.head, grad_output, features)
        del features  # (ln_f lets go of its x̂ in its backward: nothing else holds it then)
        g = _norm_backward(self.ln_f, required(grad_features), folded)
        for block in reversed(self.blocks):
            g = required(cast(Block, block).backward(g))
        g = F.dropout_backward(g, dropped)
        # x = tok[tokens] + pos[0..T): the sum's gradient reaches both; the position rows are
        # shared by every sequence in the batch, so theirs sums over the batch.
        if per_sample_active():  # sequence i's own: its rows g_i into rows 0..T-1
            self._store_position_grad_sample(g)
        with per_sample_paused():  # (the summed rows are no example's)
            self.position_embedding.backward(g.sum(0))
        self.token_embedding.backward(g)
        return None

    def _store_position_grad_sample(self, grad: Tensor) -> None:
        """The position table's per-sample gradients: sequence i looked up rows 0..T-1."""
        table = self.position_embedding
        batch, length = grad.shape[:2]
        positions = torch.arange(length, device=grad.device).expand(batch, length)
        ctx = (positions, table.weight.shape, table.padding_idx)
        store_grad_samples(table, table.per_sample_grads(grad, ctx))

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``prompt`` (T,) or (B, T) followed by ``max_new_tokens`` sampled tokens.

        Each new token is drawn from softmax(logits / temperature) of the last position,
        restricted to the ``top_k`` most likely tokens when given; ``temperature=0`` takes
        the most likely token. The model looks at the last ``context_length`` tokens and runs
        in evaluation mode (no dropout); its mode is restored afterwards.
        """
        if temperature < 0:
            raise ValueError(f"GPT.generate: temperature must be >= 0, got {temperature}")
        if top_k is not None and not top_k >= 1:
            raise ValueError(f"GPT.generate: top_k must be a positive int, got {top_k}")
        if max_new_tokens < 0:
            raise ValueError(f"GPT.generate: max_new_tokens must be >= 0, got {max_new_tokens}")
        tokens = self._check_tensor(prompt, "prompt")
        single = tokens.dim() == 1
        if single:
            tokens = tokens.unsqueeze(0)
        if tokens.shape[1] == 0:
            raise ValueError("GPT.generate: the prompt needs at least one token")
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                logits = self(tokens[:, -self.context_length :])[:, -1, :]
                if temperature == 0:
                    following = logits.argmax(-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, -math.inf)
                    probabilities = torch.softmax(logits, dim=-1)
                    following = torch.multinomial(probabilities, 1, generator=generator)
                tokens = torch.cat([tokens, following], dim=1)
        finally:
            self.train(was_training)
            for module in self.modules():  # sampling is not a step to differentiate
                if isinstance(module, Module):
                    module._saved = None
        return tokens[0] if single else tokens


register_conversion(
    TorchGPT,
    GPT,
    to_handgrad=lambda source, convert: convert_gpt(source, GPT),
    to_torch=lambda source, convert: convert_gpt(source, TorchGPT),
)
