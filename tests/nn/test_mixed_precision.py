"""Mixed precision: the GPT under torch.autocast (bfloat16 compute, float32 master weights)
follows an autocast torch run's loss curve."""

from __future__ import annotations

import torch

import handgrad.nn as hn
import handgrad.optim

VOCAB, CONTEXT, STEPS = 32, 16, 30

# The two runs round differently (our softmax and GELU derivative run in bfloat16 where
# torch's fused kernels accumulate in float32), so they agree to bfloat16's precision, not
# bit for bit: measured ≤ 0.4% apart over 60 steps; the bar is 2% of the loss + 0.01.
RELATIVE, ABSOLUTE = 0.02, 0.01


def test_autocast_training_follows_torchs_autocast_loss_curve() -> None:
    torch.manual_seed(0)
    ours = hn.GPT(VOCAB, CONTEXT, n_layer=2, n_head=2, d_model=32)
    reference = hn.to_torch(ours)
    ours_opt = handgrad.optim.AdamW(ours.parameters(), lr=3e-3)
    theirs_opt = torch.optim.AdamW(reference.parameters(), lr=3e-3)
    loss_fn = hn.CrossEntropyLoss()
    text = torch.tensor([(7 * i + i // 5) % VOCAB for i in range(2000)])
    generator = torch.Generator().manual_seed(0)
    ours_losses, theirs_losses = [], []
    for _ in range(STEPS):
        starts = torch.randint(0, len(text) - CONTEXT - 1, (8,), generator=generator)
        tokens = torch.stack([text[s : s + CONTEXT] for s in starts])
        targets = torch.stack([text[s + 1 : s + CONTEXT + 1] for s in starts])

        ours_opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = ours(tokens)
            assert logits.dtype == torch.bfloat16
            loss = loss_fn(logits.float().view(-1, VOCAB), targets.view(-1))  # in float32
            ours.backward(loss_fn.backward().view(logits.shape).to(logits.dtype))
        ours_opt.step()

        theirs_opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = torch.nn.functional.cross_entropy(
                reference(tokens).view(-1, VOCAB), targets.view(-1)
            )
        expected.backward()
        theirs_opt.step()
        ours_losses.append(loss.item())
        theirs_losses.append(expected.item())

    for step, (mine, theirs) in enumerate(zip(ours_losses, theirs_losses, strict=True)):
        assert abs(mine - theirs) <= RELATIVE * theirs + ABSOLUTE, (step, mine, theirs)
    assert ours_losses[-1] < 0.5 * ours_losses[0]  # it learns
    # float32 master weights, float32 gradients
    for name, param in ours.named_parameters():
        assert param.dtype == torch.float32, name
        assert param.grad is not None, name
        assert param.grad.dtype == torch.float32, name
