"""backward(..., per_sample=True) through the transformer layers — Embedding, LayerNorm,
RMSNorm, MultiheadAttention, TransformerEncoderLayer and the GPT (tied head) — against
torch.func's vmap(grad) on the torch twins, in float64, both loss reductions, batch 1 and
odd sizes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import handgrad.nn as hn
from handgrad.nn.per_sample import (
    FactoredGradSample,
    grad_sample_norms_squared,
    per_sample_gradients,
)
from tests.nn.helpers import assert_matches
from tests.nn.test_per_sample import check_against_vmap

f64 = {"dtype": torch.float64}
pytestmark = [
    # torch's twin, under vmap: a boolean padding mask beside a float attn_mask, and no
    # batching rule for its CPU attention kernel (the fallback is slower, not different).
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
    pytest.mark.filterwarnings("ignore:There is a performance drop"),
]


def materialized(sample: object) -> Tensor:
    if isinstance(sample, FactoredGradSample):
        return sample.materialize()
    assert isinstance(sample, Tensor)
    return sample


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("per_sample", [True, "factored"])
def test_embedding_and_norms(
    reduction: str, batch: int, per_sample: bool | str, device: torch.device
) -> None:
    """Embedding (padding row, a token used twice in a sequence), LayerNorm over two dims,
    LayerNorm without bias, RMSNorm; cross-entropy on the flattened features."""
    torch.manual_seed(batch)
    model = hn.Sequential(
        hn.Embedding(7, 4, padding_idx=2, **f64),
        hn.Unflatten(2, (2, 2)),
        hn.LayerNorm((2, 2), **f64),
        hn.Flatten(2),
        hn.LayerNorm(4, bias=False, **f64),
        hn.RMSNorm(4, eps=1e-6, **f64),
        hn.Flatten(),
        hn.Linear(20, 3, **f64),
    ).to(device)
    with torch.no_grad():  # affine parameters away from their initial ones and zeros
        for name, param in model.named_parameters():
            if "weight" in name and param.dim() < 3 and name[0] in "245":
                param.uniform_(0.5, 1.5)
            elif name.startswith("2.bias"):
                param.uniform_(-1, 1)
    tokens = torch.randint(0, 7, (batch, 5), device=device)
    tokens[:, 0] = 2  # the padding row: looked up, no gradient
    tokens[:, 1] = tokens[:, 3]  # one row twice in a sequence: both gradients add
    target = torch.randint(0, 3, (batch,), device=device)
    loss = hn.CrossEntropyLoss(reduction=reduction)
    check_against_vmap(model, tokens, loss, target, batch if reduction == "mean" else 1,
                       per_sample)  # fmt: skip
    assert torch.all(materialized(model[0].weight.grad_sample)[:, 2] == 0)


def test_embedding_norms_without_materialising() -> None:
    """The factored embedding gradient's norms (Gram matrices of one-hot rows) equal the
    materialised ones."""
    table = hn.Embedding(6, 3, padding_idx=0, **f64)
    tokens = torch.tensor([[1, 1, 0, 4], [5, 3, 3, 3], [0, 0, 0, 2]])
    table(tokens)
    with per_sample_gradients(factored=True):
        table.backward(torch.randn(3, 4, 3, **f64))
    factored = table.weight.grad_sample
    assert isinstance(factored, FactoredGradSample)
    dense = factored.materialize()
    assert_matches(grad_sample_norms_squared(factored), grad_sample_norms_squared(dense))


def test_embedding_refusals() -> None:
    for kwargs, words in (({"sparse": True}, "sparse=True"),
                          ({"scale_grad_by_freq": True}, "scale_grad_by_freq")):  # fmt: skip
        table = hn.Embedding(5, 2, **kwargs)  # type: ignore[arg-type]
        table(torch.tensor([[1, 2]]))
        with pytest.raises(ValueError, match=words):
            table.backward(torch.ones(1, 2, 2), per_sample=True)
    norm = hn.LayerNorm(3)
    norm(torch.randn(3))
    with pytest.raises(ValueError, match="batch dimension"):
        norm.backward(torch.ones(3), per_sample=True)


# ----------------------------------------------------------------------------- attention


def attention_grad_samples(
    attention: hn.MultiheadAttention, inputs: tuple[Tensor, Tensor, Tensor], padding: Tensor,
    attn_mask: Tensor | None, target: Tensor, denominator: int,
) -> dict[str, Tensor]:  # fmt: skip
    """vmap(grad) of each example's summed squared error / denominator on the torch twin."""
    twin = hn.to_torch(attention)
    params = {name: p.detach() for name, p in twin.named_parameters()}
    batch_dim = 0 if attention.batch_first else 1

    def example_loss(params: dict[str, Tensor], q: Tensor, k: Tensor, v: Tensor,
                     pad: Tensor, t: Tensor) -> Tensor:  # fmt: skip
        args = tuple(x.unsqueeze(batch_dim) for x in (q, k, v))
        out, _ = torch.func.functional_call(
            twin, params, args,
            {"key_padding_mask": pad.unsqueeze(0), "attn_mask": attn_mask},
        )  # fmt: skip
        return ((out - t.unsqueeze(batch_dim)) ** 2).sum() / denominator

    dims = (None, batch_dim, batch_dim, batch_dim, 0, batch_dim)
    grads = torch.func.vmap(torch.func.grad(example_loss), dims)
    return grads(params, *inputs, padding, target)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("self_attention", "kdim", "add_bias_kv", "bias", "batch_first", "batch", "reduction"),
    [
        (True, None, False, True, True, 3, "mean"),
        (True, None, True, True, False, 1, "sum"),
        (False, None, False, True, False, 3, "sum"),  # packed weight, three inputs
        (False, 5, True, True, True, 1, "mean"),  # q/k/v_proj_weight
        (False, 5, False, False, False, 5, "mean"),
    ],
)
@pytest.mark.parametrize("per_sample", [True, "factored"])
def test_multihead_attention(
    self_attention: bool, kdim: int | None, add_bias_kv: bool, bias: bool, batch_first: bool,
    batch: int, reduction: str, per_sample: bool | str, device: torch.device,
) -> None:  # fmt: skip
    torch.manual_seed(batch + 10 * add_bias_kv)
    embed, tgt, src = 6, 4, 3
    attention = hn.MultiheadAttention(
        embed, 2, bias=bias, add_bias_kv=add_bias_kv, kdim=kdim, vdim=kdim,
        batch_first=batch_first, **f64,
    ).to(device)  # fmt: skip
    with torch.no_grad():
        for param in attention.parameters():
            param.normal_(0, 0.5)  # every bias away from zero

    def sequence(length: int, width: int) -> Tensor:
        shape = (batch, length, width) if batch_first else (length, batch, width)
        return torch.randn(shape, **f64, device=device)

    query = sequence(tgt, embed)
    if self_attention:
        inputs = (query, query, query)
        src = tgt
    else:
        key = sequence(src, kdim or embed)
        inputs = (query, key, sequence(src, kdim or embed))
    padding = torch.zeros(batch, src, dtype=torch.bool, device=device)
    padding[0, -1] = True  # example 0 ignores its last key
    attn_mask = torch.randn(tgt, src, **f64, device=device) if not self_attention else None
    target = torch.randn_like(query)
    denominator = target.numel() if reduction == "mean" else 1
    expected = attention_grad_samples(attention, inputs, padding, attn_mask, target, denominator)

    loss = hn.MSELoss(reduction=reduction)
    out, _ = attention(*inputs, key_padding_mask=padding, attn_mask=attn_mask)
    loss(out, target)
    attention.backward(loss.backward(), per_sample=per_sample)
    for name, param in attention.named_parameters():
        sample = materialized(param.grad_sample)
        assert_matches(sample, expected[name], f"{name}.grad_sample")
        assert_matches(sample.sum(0), param.grad, f"Σ {name}.grad_sample", scale_floor=1e-3)
        if per_sample == "factored":
            assert_matches(grad_sample_norms_squared(param.grad_sample),
                           grad_sample_norms_squared(sample), f"‖{name}.grad_sample‖")  # fmt: skip


def test_multihead_attention_unbatched_refuses() -> None:
    attention = hn.MultiheadAttention(4, 2)
    x = torch.randn(3, 4)
    attention(x, x, x)
    with pytest.raises(ValueError, match="batch dimension"):
        attention.backward(torch.ones(3, 4), per_sample=True)


# ----------------------------------------------------------------------------- composites


@pytest.mark.parametrize(
    ("norm_first", "activation", "batch", "reduction"),
    [(False, "relu", 3, "mean"), (True, "gelu", 1, "sum")],
)
def test_transformer_encoder_layer(norm_first: bool, activation: str, batch: int,
                                   reduction: str, device: torch.device) -> None:  # fmt: skip
    torch.manual_seed(batch)
    model = hn.Sequential(
        hn.TransformerEncoderLayer(6, 2, dim_feedforward=8, dropout=0.0, activation=activation,
                                   batch_first=True, norm_first=norm_first, **f64),
        hn.Flatten(),
        hn.Linear(18, 2, **f64),
    ).to(device)  # fmt: skip
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "bias" in name:
                param.normal_(0.5 * ("bias" not in name), 0.3)
    x = torch.randn(batch, 3, 6, **f64, device=device)
    target = torch.randint(0, 2, (batch,), device=device)
    loss = hn.CrossEntropyLoss(reduction=reduction)
    check_against_vmap(model, x, loss, target, batch if reduction == "mean" else 1, "factored")


def test_transformer_encoder_layer_needs_batch_first() -> None:
    layer = hn.TransformerEncoderLayer(4, 2, dim_feedforward=4, dropout=0.0)
    layer(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="batch_first=True"):
        layer.backward(torch.ones(3, 2, 4), per_sample=True)
    assert all(getattr(p, "grad_sample", None) is None for p in layer.parameters())


def gpt_grad_samples(model: hn.GPT, tokens: Tensor, targets: Tensor,
                     denominator: int) -> dict[str, Tensor]:  # fmt: skip
    twin = hn.to_torch(model)
    params = {name: p.detach() for name, p in twin.named_parameters()}

    def example_loss(params: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        logits = torch.func.functional_call(twin, params, (x.unsqueeze(0),))
        flat = logits.view(-1, model.vocab_size)
        return torch.nn.functional.cross_entropy(flat, t, reduction="sum") / denominator

    return torch.func.vmap(torch.func.grad(example_loss), (None, 0, 0))(params, tokens, targets)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("tie_weights", "batch", "reduction", "per_sample"),
    [(True, 3, "mean", "factored"), (True, 1, "sum", True), (False, 3, "sum", True),
     (False, 1, "mean", "factored")],
)  # fmt: skip
def test_gpt(tie_weights: bool, batch: int, reduction: str, per_sample: bool | str,
             device: torch.device) -> None:  # fmt: skip
    """Every parameter of a tiny GPT; with a tied head the token table's per-sample gradient
    holds both contributions (head and lookup)."""
    torch.manual_seed(batch)
    model = hn.GPT(7, 5, n_layer=1, n_head=2, d_model=4, tie_weights=tie_weights, **f64)
    model.to(device)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param), alpha=0.3)
    length = 4  # shorter than the position table: its last row gets nothing
    tokens = torch.randint(0, 7, (batch, length), device=device)
    targets = torch.randint(0, 7, (batch, length), device=device)
    denominator = batch * length if reduction == "mean" else 1
    expected = gpt_grad_samples(model, tokens, targets, denominator)

    loss = hn.CrossEntropyLoss(reduction=reduction)
    logits = model(tokens)
    loss(logits.view(-1, 7), targets.view(-1))
    model.backward(loss.backward().view(logits.shape), per_sample=per_sample)
    assert len(expected) == len(list(model.parameters()))
    for name, param in model.named_parameters():
        sample = materialized(param.grad_sample)
        assert_matches(sample, expected[name], f"{name}.grad_sample")
        assert_matches(sample.sum(0), param.grad, f"Σ {name}.grad_sample", scale_floor=1e-3)
        assert_matches(grad_sample_norms_squared(param.grad_sample),
                       grad_sample_norms_squared(sample), f"‖{name}.grad_sample‖")  # fmt: skip
    if tie_weights and per_sample == "factored":  # head and lookup, still factored
        assert isinstance(model.token_embedding.weight.grad_sample, FactoredGradSample)
        assert len(model.token_embedding.weight.grad_sample.pairs) == 2


@pytest.mark.parametrize("norm", [hn.LayerNorm, hn.RMSNorm])
def test_norms_in_half_precision_round_the_float32_result_once(norm: type) -> None:
    """A bfloat16 input is normalised in float32 (handgrad.nn.functional.half_in_float32);
    its per-sample gradients are the float32 ones of the same numbers, rounded once."""
    half = norm(4, eps=1e-5, dtype=torch.bfloat16)  # (RMSNorm eps=None: the dtype's eps)
    full = norm(4, eps=1e-5, dtype=torch.float32)
    x = torch.randn(3, 2, 4).to(torch.bfloat16)
    g = torch.randn(3, 2, 4).to(torch.bfloat16)
    half(x)
    full(x.float())
    half.backward(g, per_sample=True)
    full.backward(g.float(), per_sample=True)
    for (name, ours), reference in zip(half.named_parameters(), full.parameters(), strict=True):
        assert ours.grad_sample.dtype == torch.bfloat16, name
        assert torch.equal(ours.grad_sample, reference.grad_sample.to(torch.bfloat16)), name
