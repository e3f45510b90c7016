"""TorchGPT: the network of :class:`handgrad.nn.GPT` in plain torch.nn, for torch's autograd.

The same modules under the same names (so the two share state_dicts), built from
torch.nn.Embedding, LayerNorm, Linear, GELU and Dropout and
``torch.nn.functional.scaled_dot_product_attention(is_causal=True)`` — what a torch user
would write. It is the reference the tests, the benchmarks and ``handgrad check`` hold the
hand-written GPT against, and what ``handgrad.nn.to_torch(gpt)`` returns.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class TorchCausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float, bias: bool, **factory: Any):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias, **factory)
        self.proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(batch, length, width)
        out: Tensor = self.resid_dropout(self.proj(y))
        return out


class TorchMLP(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float, bias: bool, **factory: Any):
        super().__init__()
        self.fc = nn.Linear(d_model, hidden, bias=bias, **factory)
        self.proj = nn.Linear(hidden, d_model, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout(self.proj(nn.functional.gelu(self.fc(x))))
        return out


class TorchBlock(nn.Module):
    def __init__(
        self, d_model: int, n_head: int, hidden: int, dropout: float, bias: bool, **factory: Any
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, bias=bias, **factory)
        self.attn = TorchCausalSelfAttention(d_model, n_head, dropout, bias, **factory)
        self.ln_2 = nn.LayerNorm(d_model, bias=bias, **factory)
        self.mlp = TorchMLP(d_model, hidden, dropout, bias, **factory)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """The torch.nn twin of :class:`handgrad.nn.GPT` (same arguments, same parameter names)."""

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
        self.token_embedding = nn.Embedding(vocab_size, d_model, **factory)
        self.position_embedding = nn.Embedding(context_length, d_model, **factory)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TorchBlock(d_model, n_head, self.dim_feedforward, dropout, bias, **factory)
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model, bias=bias, **factory)
        self.head = nn.Linear(d_model, vocab_size, bias=False, **factory)
        if tie_weights:
            self.head.weight = self.token_embedding.weight

    def forward(self, input: Tensor) -> Tensor:
        positions = torch.arange(input.shape[1], device=input.device)
        x = self.drop(self.token_embedding(input) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        logits: Tensor = self.head(self.ln_f(x))
        return logits


GPT_CONFIG = (
    "vocab_size",
    "context_length",
    "n_layer",
    "n_head",
    "d_model",
    "dim_feedforward",
    "dropout",
    "bias",
    "tie_weights",
)
"""The constructor arguments both classes share, read from an instance to build its twin."""


def convert_gpt(source: nn.Module, target_type: type[nn.Module]) -> Any:
    """``target_type`` (GPT or TorchGPT) with ``source``'s configuration and copied weights
    (the conversion rule ``from_torch``/``to_torch`` use). Parameters of a torch twin require
    grad; those of a handgrad twin do not."""
    config = {name: getattr(source, name) for name in GPT_CONFIG}
    reference = next(source.parameters())
    twin = target_type(**config, device="meta", dtype=reference.dtype)
    state = {name: tensor.detach().clone() for name, tensor in source.state_dict().items()}
    twin.load_state_dict(state, assign=True)
    if twin.tie_weights:
        twin.head.weight = twin.token_embedding.weight  # type: ignore[union-attr]
    requires_grad = target_type is TorchGPT
    for param in twin.parameters():
        param.requires_grad_(requires_grad)
    return twin.train(source.training)
