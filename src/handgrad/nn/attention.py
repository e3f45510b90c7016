"""MultiheadAttention: torch.nn.MultiheadAttention with a hand-written backward.

For one batch entry, with E = embed_dim split into H heads of d = E/H features:

    Q = query W_qᵀ + b_q,   K = key W_kᵀ + b_k,   V = value W_vᵀ + b_v      (in-projection)
    head h:  O_h = softmax(Q_h K_hᵀ/√d + M) V_h                            (attention)
    out = [O_1 … O_H] W_oᵀ + b_o                                            (out_proj)

Backward runs the three lines in reverse: ``out_proj``'s (a Linear), the attention kernel's
(:mod:`handgrad.nn.functional.attention`, which derives dQ, dK, dV through the softmax and
the mask), then the in-projection's: dW_q += dQᵀ query, d(query) = dQ W_q (likewise for K
and V), db = Σ dQ. The backward returns ``(d_query, d_key, d_value)``, one gradient per
tensor input in argument order; a self-attention caller (query = key = value) adds the three.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, cast

import torch
from torch import Tensor

from handgrad.nn import functional as F
from handgrad.nn._saving import accumulate
from handgrad.nn.convert import copy_tensors, register_conversion
from handgrad.nn.functional.per_sample import linear_bias_grad_sample
from handgrad.nn.layers import Linear
from handgrad.nn.module import Module
from handgrad.nn.per_sample import (
    FactoredGradSample,
    GradSample,
    PerSample,
    per_sample_active,
    per_sample_paused,
    store_grad_samples,
)


def _canonical_mask(mask: Tensor | None, name: str, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask (True = may not attend) as 0/−∞ floats; a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, -math.inf)
    if not mask.is_floating_point():
        raise AssertionError(
            f"MultiheadAttention: only bool and floating types of {name} are supported, "
            f"got {mask.dtype}"
        )
    if mask.dtype != dtype:
        raise RuntimeError(
            f"MultiheadAttention: a float {name} must have the query's dtype {dtype}, "
            f"got {mask.dtype}"
        )
    return mask


class MultiheadAttention(Module):
    """Multi-head attention with torch.nn.MultiheadAttention's arguments, parameters and init.

    Parameters: ``in_proj_weight`` (3E, E) when kdim = vdim = E, else ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight``; ``in_proj_bias`` (3E); ``out_proj`` (a Linear);
    ``bias_k``/``bias_v`` (1, 1, E) with ``add_bias_kv``. Initialised as torch does (Xavier
    uniform in-projection, zero biases), drawn in the same order: the same seed gives the
    same weights.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(attn_output, attn_weights)``
    as torch's (masks: boolean True = may not attend, or float added; ``is_causal`` is a hint
    that ``attn_mask`` is causal and needs it). ``backward(grad_output)`` takes dL/d(attn_output),
    or a pair (dL/d(attn_output), dL/d(attn_weights) or None), and returns
    ``(d_query, d_key, d_value)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} "
                f"and num_heads={num_heads} instead"
            )
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise AssertionError(
                f"embed_dim must be divisible by num_heads, got embed_dim={embed_dim} and "
                f"num_heads={num_heads}"
            )

        def parameter(*shape: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.empty(shape, **factory), requires_grad=False)

        self.in_proj_weight: torch.nn.Parameter | None
        self.q_proj_weight: torch.nn.Parameter | None
        self.k_proj_weight: torch.nn.Parameter | None
        self.v_proj_weight: torch.nn.Parameter | None
        if self._qkv_same_embed_dim:
            self.in_proj_weight = parameter(3 * embed_dim, embed_dim)
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = parameter(embed_dim, embed_dim)
            self.k_proj_weight = parameter(embed_dim, self.kdim)
            self.v_proj_weight = parameter(embed_dim, self.vdim)
            self.register_parameter("in_proj_weight", None)
        self.in_proj_bias: torch.nn.Parameter | None
        if bias:
            self.in_proj_bias = parameter(3 * embed_dim)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.bias_k: torch.nn.Parameter | None
        self.bias_v: torch.nn.Parameter | None
        if add_bias_kv:
            self.bias_k = parameter(1, 1, embed_dim)
            self.bias_v = parameter(1, 1, embed_dim)
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """torch's order: Xavier-uniform in-projection, zero biases, Xavier-normal bias_k/v
        (out_proj drew its Linear initialisation when it was built, as in torch)."""
        init = torch.nn.init
        if self.in_proj_weight is not None:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(weight)  # type: ignore[arg-type]
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)  # type: ignore[arg-type]
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
        if self.bias_v is not None:
            init.xavier_normal_(self.bias_v)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"batch_first={self.batch_first}"
        )

    # ------------------------------------------------------------------ checks

    def _check_inputs(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
    ) -> bool:
        """Shapes as torch's _mha_shape_check (AssertionError); True if the input is batched."""
        for name, tensor in (("query", query), ("key", key), ("value", value)):
            self._check_tensor(tensor, name)
        for name, mask in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
            if mask is not None:
                self._check_tensor(mask, name)
        shapes = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        if query.dim() not in (2, 3):
            raise AssertionError(
                "MultiheadAttention: query should be unbatched 2D or batched 3D tensor but "
                f"received {query.dim()}-D query tensor ({shapes})"
            )
        batched = query.dim() == 3
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise AssertionError(
                f"MultiheadAttention: for {query.dim()}-D query, expected key and value to be "
                f"{query.dim()}-D, got {shapes}"
            )
        if isinstance(key_padding_mask, Tensor) and key_padding_mask.dim() != query.dim() - 1:
            raise AssertionError(
                f"MultiheadAttention: for {query.dim()}-D query, expected key_padding_mask to "
                f"be None or {query.dim() - 1}-D, got shape {tuple(key_padding_mask.shape)}"
            )
        if isinstance(attn_mask, Tensor) and attn_mask.dim() not in (2, 3):
            raise AssertionError(
                "MultiheadAttention: expected attn_mask to be None, 2-D or 3-D, got shape "
                f"{tuple(attn_mask.shape)}"
            )
        for name, tensor, width in (
            ("query", query, self.embed_dim),
            ("key", key, self.kdim),
            ("value", value, self.vdim),
        ):
            if tensor.shape[-1] != width:
                raise AssertionError(
                    f"MultiheadAttention: expected {name} with {width} features in its last "
                    f"dim, got {shapes}"
                )
            weight = self.out_proj.weight
            self._check_like(tensor, weight, name, "the weights")
        if key.shape[:-1] != value.shape[:-1]:
            raise AssertionError(
                "MultiheadAttention: key's sequence and batch dims must match value's, "
                f"got {shapes}"
            )
        if batched:
            batch_dim = 0 if self.batch_first else 1
            if key.shape[batch_dim] != query.shape[batch_dim]:
                raise AssertionError(
                    f"MultiheadAttention: query and key must have the same batch size, got {shapes}"
                )
        return batched

    # ------------------------------------------------------------------ forward

    def _in_projection(
        self, query: Tensor, key: Tensor, value: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """Q, K, V and the projection weight used for each (views into a packed weight)."""
        E = self.embed_dim
        weights: list[Tensor]
        if self.in_proj_weight is not None:
            weights = list(self.in_proj_weight.split(E))
        else:
            weights = [
                cast(Tensor, w)
                for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
            ]
        biases: list[Tensor | None] = (
            [None, None, None] if self.in_proj_bias is None else list(self.in_proj_bias.split(E))
        )
        linear = torch.nn.functional.linear
        if query is key and key is value and self.in_proj_weight is not None:
            # self-attention: one product with the packed (3E, E) weight
            q, k, v = linear(query, self.in_proj_weight, self.in_proj_bias).split(E, dim=-1)
        else:
            q, k, v = (
                linear(x, w, b)
                for x, w, b in zip((query, key, value), weights, biases, strict=True)
            )
        return q, k, v, weights

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        batched = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        if batched and self.batch_first:
            # (N, L, E) -> (L, N, E), keeping "query is key is value" for self-attention
            transposed = {id(x): x.transpose(0, 1) for x in (query, key, value)}
            query, key, value = (transposed[id(x)] for x in (query, key, value))
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        tgt_len, bsz, E = query.shape
        src_len = key.shape[0]
        heads, head_dim = self.num_heads, self.head_dim

        if (
            key_padding_mask is not None
            and attn_mask is not None
            and key_padding_mask.dtype != attn_mask.dtype
        ):
            warnings.warn(
                "Support for mismatched key_padding_mask and attn_mask is deprecated. "
                "Use same type for both instead.",
                stacklevel=2,
            )
        padding = _canonical_mask(key_padding_mask, "key_padding_mask", query.dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError(
                "MultiheadAttention: is_causal=True is a hint that attn_mask is the causal mask "
                "and needs attn_mask (see torch.nn.Transformer.generate_square_subsequent_mask)"
            )
        # As torch: with the hint, no padding mask and no weights wanted, attn_mask is taken to
        # be causal and the causal kernel runs; otherwise the mask itself is applied.
        causal = is_causal and padding is None and not need_weights
        mask = None if causal else _canonical_mask(attn_mask, "attn_mask", query.dtype)
        if mask is not None:
            if mask.dim() == 2:
                if mask.shape != (tgt_len, src_len):
                    raise RuntimeError(
                        f"MultiheadAttention: the shape of the 2D attn_mask is "
                        f"{tuple(mask.shape)}, but should be {(tgt_len, src_len)} "
                        "(target length, source length)"
                    )
                mask = mask.unsqueeze(0)
            elif mask.shape != (bsz * heads, tgt_len, src_len):
                raise RuntimeError(
                    f"MultiheadAttention: the shape of the 3D attn_mask is {tuple(mask.shape)}, "
                    f"but should be {(bsz * heads, tgt_len, src_len)} "
                    "(batch size * num_heads, target length, source length)"
                )
        if padding is not None and padding.shape != (bsz, src_len):
            raise AssertionError(
                f"MultiheadAttention: expected key_padding_mask of shape {(bsz, src_len)} "
                f"(batch size, source length), got {tuple(padding.shape)}"
            )

        q, k, v, weights = self._in_projection(query, key, value)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(1, bsz, E)])
            v = torch.cat([v, self.bias_v.expand(1, bsz, E)])
            mask = None if mask is None else torch.nn.functional.pad(mask, (0, 1))
            padding = None if padding is None else torch.nn.functional.pad(padding, (0, 1))
        # (L, N, E) -> (N·H, L, d): each (batch entry, head) pair is one attention problem
        q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = k.reshape(k.shape[0], bsz * heads, head_dim).transpose(0, 1)
        v = v.reshape(v.shape[0], bsz * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = torch.zeros((bsz * heads, 1, head_dim), dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            mask = None if mask is None else torch.nn.functional.pad(mask, (0, 1))
            padding = None if padding is None else torch.nn.functional.pad(padding, (0, 1))
        full_len = k.shape[1]
        if padding is not None:
            rows = padding.view(bsz, 1, 1, full_len).expand(-1, heads, -1, -1)
            rows = rows.reshape(bsz * heads, 1, full_len)
            mask = rows if mask is None else mask + rows

        dropout_p = self.dropout if self.training else 0.0
        attended, attention = F.scaled_dot_product_attention_forward(
            q, k, v, mask, dropout_p, causal
        )
        merged = attended.transpose(0, 1).reshape(tgt_len * bsz, E)
        # The attention backward needs O; out_proj keeps the same numbers (merged), so the
        # ctx holds a view of those instead of a second copy.
        attention = attention._replace(
            out=merged.view(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        )
        del attended
        out = self.out_proj(merged).view(tgt_len, bsz, E)

        attn_weights = None
        if need_weights:
            attn_weights = attention.weights.view(bsz, heads, tgt_len, full_len)  # type: ignore[union-attr]
            if average_attn_weights:
                attn_weights = attn_weights.mean(dim=1)
            if not batched:
                attn_weights = attn_weights.squeeze(0)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        inputs = (query, key, value)
        weights_shape = None if attn_weights is None else attn_weights.shape
        ctx = (attention, inputs, weights, batched, average_attn_weights, weights_shape)
        self._remember(ctx, out)
        return out, attn_weights

    # ------------------------------------------------------------------ backward

    # The in-projection's per-sample gradients exist only halfway through backward (after
    # the attention kernel's), and out_proj runs on the (L·N, E) rows: this module stores the
    # per-sample gradients of its parameters and of out_proj's itself (_store_per_sample).
    stores_own_per_sample = True

    def backward(
        self,
        grad_output: Tensor | tuple[Tensor, Tensor | None],
        input_grad: bool = True,
        per_sample: PerSample = False,
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """(d_query, d_key, d_value) from dL/d(attn_output) [and dL/d(attn_weights)].

        Accumulates the gradients of the in-projection, ``out_proj`` and ``bias_k``/``bias_v``.
        Returns None when ``input_grad`` is False (the projections' input products skipped).
        ``per_sample=True`` also stores every parameter's ``grad_sample`` (batched input only):
        for each projection W the factored Σ_t g_{i,t} x_{i,t}ᵀ over the example's positions,
        as a Linear on a sequence.
        """
        if per_sample:
            # (a pair (grad_output, grad_weights) passes through to this backward unchanged)
            return self._per_sample_backward(grad_output, input_grad, per_sample)  # type: ignore[arg-type]
        grad_weights = None
        if isinstance(grad_output, tuple):
            grad_output, grad_weights = grad_output
        ctx = self._recall(grad_output)
        attention, inputs, weights, batched, averaged, weights_shape = ctx
        query = inputs[0]  # (L, N, E)-shaped views of what forward was given
        tgt_len, bsz, E = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        storing = per_sample_active()
        if storing and not batched:
            raise ValueError(
                f"{self._get_name()}: per-sample gradients need a batch dimension; the input "
                f"was unbatched (query of shape {(tgt_len, E)})"
            )

        g = grad_output
        if not batched:
            g = g.unsqueeze(1)
        elif self.batch_first:
            g = g.transpose(0, 1)
        if storing:  # out_proj's: Σ over the example's L positions of g (O_1 … O_H)ᵀ
            merged = attention.out.transpose(0, 1).reshape(tgt_len, bsz, E)
            out_grads: dict[str, GradSample] = {
                "weight": FactoredGradSample(g.transpose(0, 1), merged.transpose(0, 1))
            }
            if self.out_proj.bias is not None:
                out_grads["bias"] = linear_bias_grad_sample(g.transpose(0, 1))
            store_grad_samples(self.out_proj, out_grads)
            del merged
        with per_sample_paused():  # (its rows are (position, example) pairs: stored above)
            grad_merged = self.out_proj.backward(g.reshape(tgt_len * bsz, E))
        assert grad_merged is not None
        grad_attended = grad_merged.view(tgt_len, bsz * heads, head_dim).transpose(0, 1)

        grad_p = None
        if grad_weights is not None:
            if weights_shape is None:
                raise ValueError(
                    "MultiheadAttention.backward: got a gradient for attn_weights, but forward "
                    "ran with need_weights=False"
                )
            if grad_weights.shape != weights_shape:
                raise ValueError(
                    "MultiheadAttention.backward: expected a gradient for attn_weights of shape "
                    f"{tuple(weights_shape)}, got {tuple(grad_weights.shape)}"
                )
            full_len = attention.key.shape[-2]
            per_head = grad_weights.unsqueeze(0) if not batched else grad_weights
            if averaged:  # the mean over heads spreads g/H to each head
                per_head = (per_head / heads).unsqueeze(1).expand(bsz, heads, tgt_len, full_len)
            grad_p = per_head.reshape(bsz * heads, tgt_len, full_len)

        grad_q, grad_k, grad_v = F.scaled_dot_product_attention_backward(
            grad_attended, attention, grad_p
        )
        if self.add_zero_attn:  # the appended zero key/value is a constant
            grad_k, grad_v = grad_k[:, :-1], grad_v[:, :-1]
        # (N·H, S, d) -> (S, N, E)
        grad_q = grad_q.transpose(0, 1).reshape(tgt_len, bsz, E)
        grad_k = grad_k.transpose(0, 1).reshape(-1, bsz, E)
        grad_v = grad_v.transpose(0, 1).reshape(-1, bsz, E)
        bias_kv_grads = None
        if self.bias_k is not None and self.bias_v is not None:
            # the appended bias key/value is one row repeated over the batch: its gradients sum
            bias_kv_grads = (grad_k[-1], grad_v[-1])  # (N, E): each example's own
            accumulate(self.bias_k, grad_k[-1:].sum(1, keepdim=True))
            accumulate(self.bias_v, grad_v[-1:].sum(1, keepdim=True))
            grad_k, grad_v = grad_k[:-1], grad_v[:-1]

        projected = (grad_q, grad_k, grad_v)
        if storing:
            self._store_per_sample(projected, inputs, bias_kv_grads)
        rows = [grad.reshape(-1, E) for grad in projected]
        flat_inputs = [x.reshape(-1, x.shape[-1]) for x in inputs]
        weight_grads = [g2.t().mm(x2) for g2, x2 in zip(rows, flat_inputs, strict=True)]
        if self.in_proj_weight is not None:
            accumulate(self.in_proj_weight, torch.cat(weight_grads))
        else:
            for param, grad in zip(
                (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight),
                weight_grads,
                strict=True,
            ):
                accumulate(param, grad)  # type: ignore[arg-type]
        if self.in_proj_bias is not None:
            accumulate(self.in_proj_bias, torch.cat([g2.sum(0) for g2 in rows]))
        if not input_grad:
            return None
        grads = [g2.mm(w).view(x.shape) for g2, w, x in zip(rows, weights, inputs, strict=True)]
        if not batched:
            grads = [grad.squeeze(1) for grad in grads]
        elif self.batch_first:
            grads = [grad.transpose(0, 1) for grad in grads]
        return grads[0], grads[1], grads[2]

    def _store_per_sample(
        self,
        projected: tuple[Tensor, Tensor, Tensor],
        inputs: tuple[Tensor, Tensor, Tensor],
        bias_kv_grads: tuple[Tensor, Tensor] | None,
    ) -> None:
        """Per-sample gradients of the in-projection (and bias_k/bias_v) from dQ, dK, dV and
        the inputs, all (positions, N, features): example i's dW_q,i = Σ_t dQ_{t,i} q_{t,i}ᵀ
        (likewise K, V), db_i = Σ_t [dQ; dK; dV]_{t,i}. The packed (3E, E) weight's is the
        three stacked; in self-attention (one input x) it is Σ_t [dQ; dK; dV]_t x_tᵀ, a single
        factored pair, otherwise one pair per input with the other blocks' rows zero."""
        E = self.embed_dim
        lefts = [grad.transpose(0, 1) for grad in projected]  # (N, positions, E)
        rights = [x.transpose(0, 1) for x in inputs]
        grads: dict[str, GradSample] = {}
        if self.in_proj_weight is not None:
            if inputs[0] is inputs[1] and inputs[1] is inputs[2]:
                grads["in_proj_weight"] = FactoredGradSample(torch.cat(lefts, -1), rights[0])
            else:
                pairs = [
                    FactoredGradSample(
                        torch.nn.functional.pad(left, (E * block, E * (2 - block))), right
                    )
                    for block, (left, right) in enumerate(zip(lefts, rights, strict=True))
                ]
                grads["in_proj_weight"] = pairs[0].add(pairs[1]).add(pairs[2])
        else:
            for name, left, right in zip(("q", "k", "v"), lefts, rights, strict=True):
                grads[f"{name}_proj_weight"] = FactoredGradSample(left, right)
        if self.in_proj_bias is not None:
            grads["in_proj_bias"] = torch.cat([linear_bias_grad_sample(g) for g in lefts], -1)
        if bias_kv_grads is not None:
            grad_k, grad_v = bias_kv_grads
            grads["bias_k"] = grad_k.reshape(-1, 1, 1, E)
            grads["bias_v"] = grad_v.reshape(-1, 1, 1, E)
        store_grad_samples(self, grads)


def _attention_arguments(m: Any) -> dict[str, Any]:
    return {
        "embed_dim": m.embed_dim,
        "num_heads": m.num_heads,
        "dropout": m.dropout,
        "bias": m.in_proj_bias is not None,
        "add_bias_kv": m.bias_k is not None,
        "add_zero_attn": m.add_zero_attn,
        "kdim": m.kdim,
        "vdim": m.vdim,
        "batch_first": m.batch_first,
        "device": "meta",  # the source's tensors are copied in
        "dtype": m.out_proj.weight.dtype,
    }


def _attention_twin(kind: type[torch.nn.Module]) -> Any:
    """Build rule: the twin on the meta device, then the source's tensors (out_proj's too:
    torch's is a Linear subclass of its own, converted here rather than by the registry)."""

    def build(source: Any, convert: Any) -> torch.nn.Module:
        twin = kind(**_attention_arguments(source))
        copy_tensors(source, twin)
        copy_tensors(source.out_proj, cast(torch.nn.Module, twin.out_proj))
        return twin

    return build


register_conversion(
    torch.nn.MultiheadAttention,
    MultiheadAttention,
    to_handgrad=_attention_twin(MultiheadAttention),
    to_torch=_attention_twin(torch.nn.MultiheadAttention),
)
