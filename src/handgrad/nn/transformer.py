"""TransformerEncoderLayer: self-attention and a feed-forward network, each with a residual.

A composite module with its own hand-written backward: the forward calls its children in
order, the backward calls their ``backward`` in the reverse order, and a residual x + f(x)
hands its gradient to both branches (d(x + f(x))/dx = I + f′(x): the gradient passes
through unchanged and also through f, and the two are added).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handgrad.nn._saving import required
from handgrad.nn.activations import GELU, ReLU
from handgrad.nn.attention import MultiheadAttention
from handgrad.nn.convert import register_conversion
from handgrad.nn.layer_norm import LayerNorm
from handgrad.nn.layers import Dropout, Linear
from handgrad.nn.module import Module
from handgrad.nn.per_sample import PerSample, per_sample_active


def _activation_module(activation: str | Module) -> Module:
    if isinstance(activation, Module):
        return activation
    if activation == "relu":
        return ReLU()
    if activation == "gelu":
        return GELU()
    if isinstance(activation, str):
        raise RuntimeError(f"activation should be relu/gelu, not {activation}")
    raise TypeError(
        "TransformerEncoderLayer: activation must be 'relu', 'gelu' or a handgrad Module (whose "
        f"backward is used), got {activation!r}"
    )


class TransformerEncoderLayer(Module):
    """torch.nn.TransformerEncoderLayer: the same arguments, children, parameter names and
    state_dict keys, so ``from_torch`` of torch's layer computes the same outputs and
    gradients.

    Post-norm (default):  x₁ = norm1(x + sa(x)),       y = norm2(x₁ + ff(x₁))
    Pre-norm (norm_first): x₁ = x + sa(norm1(x)),      y = x₁ + ff(norm2(x₁))
    with sa(x) = dropout1(self_attn(x, x, x)) and
    ff(x) = dropout2(linear2(dropout(activation(linear1(x))))).

    ``activation`` is "relu", "gelu" or a handgrad Module (its backward is used).
    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)`` as torch's.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Module = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        # Built in torch's order, so the same seed draws the same weights.
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **factory
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation_module(activation)

    # the two branches, forward and backward

    def _sa_block(
        self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        attended, _ = self.self_attn(
            x,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )
        return self.dropout1(attended)

    def _sa_block_backward(self, grad: Tensor) -> Tensor:
        grads = self.self_attn.backward(required(self.dropout1.backward(grad)))
        assert grads is not None  # input_grad=True
        d_query, d_key, d_value = grads
        return d_query + d_key + d_value  # x fed all three inputs

    def _ff_block(self, x: Tensor) -> Tensor:
        hidden = self.dropout(self.activation(self.linear1(x)))
        return self.dropout2(self.linear2(hidden))

    def _ff_block_backward(self, grad: Tensor) -> Tensor:
        for layer in (self.dropout2, self.linear2, self.dropout, self.activation, self.linear1):
            grad = required(layer.backward(grad))
        return grad

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = self._check_tensor(src, "src")
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        self._remember((), x)
        return x

    def backward(
        self, grad_output: Tensor, input_grad: bool = True, per_sample: PerSample = False
    ) -> Tensor | None:
        """dL/d(src); every child accumulates its own parameter gradients.

        A residual y = x + f(x) gives dx = g + f′(x)ᵀ g; a norm after it comes first in reverse.
        ``per_sample=True`` also stores each parameter's ``grad_sample`` (every child gives
        its own); it needs ``batch_first=True``: the children's per-sample gradients take the
        first dimension for the batch.
        """
        if per_sample:
            return self._per_sample_backward(grad_output, input_grad, per_sample)
        self._recall(grad_output)
        if per_sample_active() and (grad_output.dim() != 3 or not self.self_attn.batch_first):
            raise ValueError(
                f"{self._get_name()}: per-sample gradients need batch_first=True and a batched "
                f"(N, S, E) input; got batch_first={self.self_attn.batch_first} and an output "
                f"of shape {tuple(grad_output.shape)}"
            )
        g = grad_output
        if self.norm_first:
            g = g + required(self.norm2.backward(self._ff_block_backward(g)))
            g = g + required(self.norm1.backward(self._sa_block_backward(g)))
        else:
            g = required(self.norm2.backward(g))
            g = g + self._ff_block_backward(g)
            g = required(self.norm1.backward(g))
            g = g + self._sa_block_backward(g)
        return g if input_grad else None


_CHILDREN = ("self_attn", "linear1", "dropout", "linear2", "norm1", "norm2", "dropout1", "dropout2")


def _layer_arguments(source: Any, activation: Any) -> dict[str, Any]:
    return {
        "d_model": source.self_attn.embed_dim,
        "nhead": source.self_attn.num_heads,
        "dim_feedforward": source.linear1.out_features,
        "dropout": source.dropout.p,
        "activation": activation,
        "layer_norm_eps": source.norm1.eps,
        "batch_first": source.self_attn.batch_first,
        "norm_first": source.norm_first,
        "bias": source.linear1.bias is not None,
        "device": "meta",  # every child is replaced by its converted twin below
        "dtype": source.linear1.weight.dtype,
    }


def _with_children(twin: torch.nn.Module, source: Any, convert: Any) -> torch.nn.Module:
    for name in _CHILDREN:
        setattr(twin, name, convert(getattr(source, name), name))
    return twin


def _to_handgrad(source: Any, convert: Any) -> torch.nn.Module:
    activation = source.activation
    if activation is torch.nn.functional.relu:
        activation = "relu"
    elif activation is torch.nn.functional.gelu:
        activation = "gelu"
    elif isinstance(activation, torch.nn.Module):
        activation = convert(activation, "activation")
    else:
        raise TypeError(
            f"from_torch: TransformerEncoderLayer's activation {activation!r} is a function "
            "handgrad cannot differentiate; use 'relu', 'gelu' or a module (torch.nn.GELU())"
        )
    return _with_children(
        TransformerEncoderLayer(**_layer_arguments(source, activation)), source, convert
    )


def _to_torch(source: Any, convert: Any) -> torch.nn.Module:
    activation = source.activation
    if type(activation) is ReLU:
        activation = "relu"
    elif type(activation) is GELU and activation.approximate == "none":
        activation = "gelu"
    else:
        activation = convert(activation, "activation")
    twin = torch.nn.TransformerEncoderLayer(**_layer_arguments(source, activation))
    return _with_children(twin, source, convert)


register_conversion(
    torch.nn.TransformerEncoderLayer,
    TransformerEncoderLayer,
    to_handgrad=_to_handgrad,
    to_torch=_to_torch,
)
