"""The GPT: trained 20 steps with AdamW beside the same model in torch + autograd +
torch.optim.AdamW, gradients, finite differences, sampling and errors."""

from __future__ import annotations

import pytest
import torch

import handgrad.nn as hn
import handgrad.nn.gpt as gpt_module
import handgrad.optim
from handgrad.check import check_module
from tests.nn.helpers import assert_matches

DOUBLE = torch.float64
VOCAB, CONTEXT = 13, 8


def _model(**kwargs: object) -> hn.GPT:
    torch.manual_seed(0)
    config: dict[str, object] = {"n_layer": 2, "n_head": 2, "d_model": 8, "dtype": DOUBLE}
    config.update(kwargs)
    return hn.GPT(VOCAB, CONTEXT, **config)  # type: ignore[arg-type]


def _batch(
    generator: torch.Generator, batch: int = 3, length: int = CONTEXT
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens and a learnable next token: (3·token + 1) mod vocab."""
    tokens = torch.randint(0, VOCAB, (batch, length), generator=generator)
    return tokens, (3 * tokens + 1) % VOCAB


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"tie_weights": False}, {"bias": False, "n_layer": 1, "dim_feedforward": 20}],
    ids=["tied", "untied", "no-bias"],
)
def test_twenty_adamw_steps_give_torchs_losses(kwargs: dict[str, object]) -> None:
    ours = _model(**kwargs)
    reference = hn.to_torch(ours)
    assert isinstance(reference, hn.TorchGPT)
    assert (reference.head.weight is reference.token_embedding.weight) == ours.tie_weights
    ours_opt = handgrad.optim.AdamW(ours.parameters(), lr=3e-2, weight_decay=0.1)
    theirs_opt = torch.optim.AdamW(reference.parameters(), lr=3e-2, weight_decay=0.1)
    loss_fn = hn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(1)
    losses = []
    for step in range(20):
        tokens, targets = _batch(generator)
        ours_opt.zero_grad()
        logits = ours(tokens)
        loss = loss_fn(logits.view(-1, VOCAB), targets.reshape(-1))
        ours.backward(loss_fn.backward().view(logits.shape))
        ours_opt.step()
        theirs_opt.zero_grad()
        expected = torch.nn.functional.cross_entropy(
            reference(tokens).view(-1, VOCAB), targets.reshape(-1)
        )
        expected.backward()
        theirs_opt.step()
        relative = abs(loss.item() - expected.item()) / abs(expected.item())
        assert relative <= 1e-10, f"step {step}: loss {loss.item()!r} vs torch {expected.item()!r}"
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # it learns
    for (name, mine), theirs in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert_matches(mine.detach(), theirs.detach(), f"{name} after 20 steps")


def test_every_gradient_matches_autograd() -> None:
    ours = _model(dropout=0.0)
    reference = hn.to_torch(ours)
    tokens, _ = _batch(torch.Generator().manual_seed(2), length=CONTEXT - 2)
    expected = reference(tokens)
    upstream = torch.randn(expected.shape, dtype=DOUBLE)
    expected.backward(upstream)
    with torch.no_grad():
        out = ours(tokens)
        assert ours.backward(upstream) is None  # token ids have no gradient
    assert_matches(out, expected.detach(), "logits")
    for (name, mine), theirs in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert theirs.grad is not None
        assert_matches(mine.grad, theirs.grad, name)


@pytest.mark.parametrize(
    "kwargs", [{}, {"bias": False}, {"tie_weights": False}], ids=["tied", "no-bias", "untied"]
)
def test_layer_norms_folded_into_the_next_linear_get_autograds_gradients(
    kwargs: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every LayerNorm's γ and β move into the Linear after it (qkv, fc, head): with γ and β
    drawn away from 1 and 0, every gradient is autograd's, and the unfolded backward's."""
    grads = []
    for folded in (True, False):
        ours = _model(**kwargs)
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for module in ours.modules():
                if isinstance(module, hn.LayerNorm):
                    for param in module.parameters():
                        param.normal_(generator=generator)
        if not folded:
            monkeypatch.setattr(gpt_module, "_folds", lambda norm, x: False)
        assert gpt_module._folds(ours.ln_f, torch.zeros(1, dtype=DOUBLE)) == folded
        reference = hn.to_torch(ours)
        tokens, _ = _batch(torch.Generator().manual_seed(4))
        expected = reference(tokens)
        upstream = torch.randn(expected.shape, dtype=DOUBLE)
        expected.backward(upstream)
        out = ours(tokens)
        ours.backward(upstream)
        assert_matches(out, expected.detach(), "logits")
        named = list(ours.named_parameters())
        for (name, mine), theirs in zip(named, reference.parameters(), strict=True):
            assert theirs.grad is not None
            assert_matches(mine.grad, theirs.grad, name)
        grads.append([p.grad for _, p in named])
    for folded_grad, plain_grad in zip(*grads, strict=True):
        assert_matches(folded_grad, plain_grad)


def test_folding_is_left_to_float32_and_float64_outside_autocast() -> None:
    norm = hn.LayerNorm(4, dtype=DOUBLE)
    assert gpt_module._folds(norm, torch.zeros(2, 4, dtype=DOUBLE))
    assert not gpt_module._folds(norm, torch.zeros(2, 4, dtype=torch.bfloat16))
    assert not gpt_module._folds(hn.LayerNorm(4, elementwise_affine=False), torch.zeros(2, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not gpt_module._folds(hn.LayerNorm(4), torch.zeros(2, 4))


@pytest.mark.parametrize("chunk_elements", [32 * 5, 1])
def test_the_hidden_gradient_in_row_chunks_matches_one_block_and_autograd(
    monkeypatch: pytest.MonkeyPatch, chunk_elements: int
) -> None:
    """The MLP's (g W₂) ⊙ GELU′(h) runs in blocks of rows (5 rows of 32, a ragged last block;
    one row each): every gradient matches one block's (the product g W₂ in row blocks may
    round differently) and autograd's."""
    from handgrad.nn import gpt as gpt_module

    tokens, _ = _batch(torch.Generator().manual_seed(4))  # 3 × 8 = 24 rows of width 32
    upstream = torch.randn(3, CONTEXT, VOCAB, dtype=DOUBLE)
    grads = []
    for elements in (1 << 30, chunk_elements):
        monkeypatch.setattr(gpt_module, "_GELU_CHUNK_ELEMENTS", elements)
        model = _model()
        model.backward(upstream) if model(tokens) is not None else None
        grads.append([p.grad for p in model.parameters()])
    for whole, chunked in zip(*grads, strict=True):
        assert whole is not None
        assert chunked is not None
        assert_matches(chunked, whole, "chunked against one block")
    reference = hn.to_torch(_model())
    reference(tokens).backward(upstream)
    for mine, theirs in zip(grads[1], reference.parameters(), strict=True):
        assert_matches(mine, theirs.grad, "chunked GELU gradient")


def test_kept_activations_give_the_recomputed_bits() -> None:
    """Every block keeps GELU(h); with keep_activation=False it is recomputed: the same
    kernel on the same h, so every gradient has the same bits."""
    tokens, _ = _batch(torch.Generator().manual_seed(5))
    upstream = torch.randn(3, CONTEXT, VOCAB, dtype=DOUBLE)
    grads = []
    for keep in (True, False):
        model = _model()
        mlps = [block.mlp for block in model.blocks]
        assert [mlp.keep_activation for mlp in mlps] == [True] * len(mlps)
        for mlp in mlps:
            mlp.keep_activation = keep
        model.backward(upstream) if model(tokens) is not None else None
        grads.append([p.grad for p in model.parameters()])
    for kept, recomputed in zip(*grads, strict=True):
        assert kept is not None
        assert torch.equal(kept, recomputed)


def test_eval_mode_keeps_no_activation_and_backward_still_gives_the_same_bits() -> None:
    """In eval mode (evaluation's large forwards) GELU(h) is not kept; a backward there
    recomputes it, so the gradients are those of a train-mode step (dropout 0) bit for bit."""
    tokens, _ = _batch(torch.Generator().manual_seed(6))
    upstream = torch.randn(3, CONTEXT, VOCAB, dtype=DOUBLE)
    grads = []
    for training in (True, False):
        model = _model()
        model.train(training)
        model(tokens)
        kept = [block.mlp._saved[0][2] for block in model.blocks]
        assert all((k is not None) is training for k in kept)
        model.backward(upstream)
        grads.append([p.grad for p in model.parameters()])
    for train_grad, eval_grad in zip(*grads, strict=True):
        assert train_grad is not None
        assert torch.equal(train_grad, eval_grad)


def test_the_tied_matrix_collects_both_gradients() -> None:
    """dE = (head's gᵀh) + (the lookup's scatter of the embedding gradient): their sum."""
    tied = _model()
    untied = _model(tie_weights=False)
    untied.load_state_dict(tied.state_dict())  # the same matrix in both places
    tokens, _ = _batch(torch.Generator().manual_seed(3))
    upstream = torch.randn(3, CONTEXT, VOCAB, dtype=DOUBLE)
    for model in (tied, untied):
        model.backward(upstream) if model(tokens) is not None else None
    assert tied.token_embedding.weight.grad is not None
    assert untied.token_embedding.weight.grad is not None
    assert untied.head.weight.grad is not None
    assert_matches(
        tied.token_embedding.weight.grad,
        untied.token_embedding.weight.grad + untied.head.weight.grad,
        "tied gradient",
    )


def test_finite_differences_with_dropout() -> None:
    model = _model(n_layer=1, dropout=0.2)
    tokens, _ = _batch(torch.Generator().manual_seed(4), batch=2, length=5)
    result = check_module(model, tokens, fd_samples=4)
    assert result.passed, result.report()


def test_on_each_device_and_dtype(device: torch.device, dtype: torch.dtype) -> None:
    ours = _model(dtype=dtype).to(device)
    reference = hn.to_torch(ours)
    tokens, _ = _batch(torch.Generator().manual_seed(5))
    tokens = tokens.to(device)
    expected = reference(tokens)
    upstream = torch.randn_like(expected)
    expected.backward(upstream)
    out = ours(tokens)
    ours.backward(upstream)
    assert_matches(out, expected.detach(), "logits")
    for (name, mine), theirs in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert theirs.grad is not None
        assert_matches(mine.grad, theirs.grad, name, scale_floor=1e-3)


def test_generate_samples_reproducibly_and_restores_the_mode() -> None:
    model = _model(dropout=0.1)
    prompt = torch.tensor([1, 2, 3])
    first = model.generate(
        prompt, 12, temperature=0.8, top_k=4, generator=torch.Generator().manual_seed(0)
    )
    again = model.generate(
        prompt, 12, temperature=0.8, top_k=4, generator=torch.Generator().manual_seed(0)
    )
    assert first.shape == (15,)
    assert torch.equal(first[:3], prompt)
    assert torch.equal(first, again)
    assert model.training  # restored
    batch = model.generate(prompt.expand(2, 3), 4)
    assert batch.shape == (2, 7)
    assert int(batch.max()) < VOCAB


def test_greedy_and_top_1_sampling_pick_the_most_likely_token() -> None:
    model = _model().eval()
    prompt = torch.tensor([[4, 5]])
    greedy = model.generate(prompt, 10, temperature=0.0)  # longer than the context: cropped
    top_1 = model.generate(prompt, 10, top_k=1, generator=torch.Generator().manual_seed(9))
    assert torch.equal(greedy, top_1)
    with torch.no_grad():
        expected = int(model(greedy[:, -CONTEXT - 1 : -1])[0, -1].argmax())
    assert int(greedy[0, -1]) == expected


def test_bad_input_names_the_argument_and_shapes() -> None:
    model = _model()
    with pytest.raises(
        ValueError, match=r"input of shape \(1, 9\) has 9 positions.*context_length=8"
    ):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(IndexError, match=r"index 13 .*num_embeddings=13"):
        model(torch.tensor([[1, 13]]))
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="not divisible by n_head=3"):
        hn.GPT(10, 4, n_head=3, d_model=8)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.generate(torch.tensor([1]), 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        model.generate(torch.tensor([1]), 2, top_k=0)


def test_state_dict_round_trips_through_torch() -> None:
    ours = _model()
    twin = hn.from_torch(hn.to_torch(ours))
    assert isinstance(twin, hn.GPT)
    assert twin.head.weight is twin.token_embedding.weight
    assert list(twin.state_dict()) == list(ours.state_dict())
    for a, b in zip(twin.state_dict().values(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in twin.parameters())
