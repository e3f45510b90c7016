"""DP-SGD on a tiny GPT (tied head, embeddings, LayerNorm, attention) with handgrad against
Opacus (GradSampleModule + DPOptimizer) on the torch twin, the same Poisson batches, noise 0,
in float64: the parameters agree after every step."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import handgrad.nn as hn
from handgrad.nn.gpt_torch import TorchGPT
from handgrad.optim import Adam
from handgrad.privacy import DPOptimizer, poisson_batches
from tests.nn.helpers import assert_matches

opacus = pytest.importorskip("opacus")
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

STEPS = 20
VOCAB, LENGTH = 7, 4


class OpacusGPT(TorchGPT):
    """TorchGPT with the position ids given one row per sequence: Opacus takes an
    embedding's first input dimension for the batch (the same numbers as TorchGPT's)."""

    def forward(self, input: Tensor) -> Tensor:
        positions = torch.arange(input.shape[1], device=input.device).expand(input.shape)
        x = self.drop(self.token_embedding(input) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        logits: Tensor = self.head(self.ln_f(x))
        return logits


@pytest.fixture(autouse=True)
def backend_flags_settable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opacus's embedding sampler sets torch.backends.cudnn.deterministic; torch's own test
    helpers (imported by tests/optim) freeze those flags for the rest of the process."""
    flags = torch.backends.flags_frozen.__globals__  # (the module object is a wrapper)
    monkeypatch.setitem(flags, "__allow_nonbracketed_mutation_flag", True)


@pytest.mark.parametrize(("reduction", "per_sample"), [("mean", "factored"), ("sum", True)])
def test_dp_training_matches_opacus(reduction: str, per_sample: bool | str) -> None:
    n, sample_rate, clip = 24, 0.25, 0.1
    generator = torch.Generator().manual_seed(3)
    data = torch.randint(0, VOCAB, (n, LENGTH + 1), generator=generator)
    batches = list(poisson_batches(n, sample_rate, STEPS, torch.Generator().manual_seed(5)))
    expected_batch = int(n * sample_rate)
    config = {"n_layer": 1, "n_head": 2, "d_model": 4, "dtype": torch.float64}

    torch.manual_seed(0)
    torch_model = OpacusGPT(VOCAB, LENGTH + 1, **config)  # type: ignore[arg-type]
    model = hn.GPT(VOCAB, LENGTH + 1, **config)  # type: ignore[arg-type]
    model.load_state_dict(torch_model.state_dict())
    assert model.head.weight is model.token_embedding.weight
    reference = opacus.GradSampleModule(torch_model, loss_reduction=reduction)
    # Adam's eps at 1e-6, not 1e-8: the key bias's gradient is zero analytically (softmax
    # ignores a shift of every score in a row), so both sides hand Adam rounding noise of
    # ~1e-17 there, which m / (√v + eps) amplifies by 1/eps: at 1e-8 that alone moved the
    # key bias by ~1e-10 over 17 steps, whichever side's rounding came out which way.
    reference_optimizer = opacus.optimizers.DPOptimizer(
        torch.optim.Adam(reference.parameters(), lr=0.05, eps=1e-6), noise_multiplier=0.0,
        max_grad_norm=clip, expected_batch_size=expected_batch, loss_reduction=reduction,
    )  # fmt: skip
    optimizer = DPOptimizer(
        Adam(model.parameters(), lr=0.05, eps=1e-6), noise_multiplier=0.0, max_grad_norm=clip,
        expected_batch_size=expected_batch, loss_reduction=reduction,
    )  # fmt: skip
    loss_fn = hn.CrossEntropyLoss(reduction=reduction)
    clipped = 0
    for batch in batches:
        assert len(batch) > 0  # (Opacus's GradSampleModule needs a non-empty batch)
        tokens, targets = data[batch, :-1], data[batch, 1:]
        reference_optimizer.zero_grad()
        logits = reference(tokens).view(-1, VOCAB)
        loss = torch.nn.functional.cross_entropy(logits, targets.reshape(-1), reduction=reduction)
        loss.backward()
        reference_optimizer.step()

        optimizer.zero_grad()
        logits = model(tokens)
        loss_fn(logits.view(-1, VOCAB), targets.reshape(-1))
        model.backward(loss_fn.backward().view(logits.shape), per_sample=per_sample)
        optimizer.step()
        assert optimizer.last_norms is not None
        clipped += int((optimizer.last_norms > clip).sum())
        for (name, got), expected in zip(
            model.named_parameters(), torch_model.parameters(), strict=True
        ):
            assert_matches(got, expected.detach(), f"{name} after {optimizer.steps} steps")
    assert clipped > STEPS  # the clipping was at work
