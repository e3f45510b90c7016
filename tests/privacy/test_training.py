"""DP-SGD training with handgrad against Opacus (GradSampleModule + DPOptimizer) on the same
torch model, the same Poisson batches and the same noise generator, in float64."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import Tensor

import handgrad.nn as hn
from handgrad.optim import Adam
from handgrad.privacy import DPOptimizer, PrivacyAccountant, poisson_batches
from tests.nn.helpers import assert_matches

opacus = pytest.importorskip("opacus")
# Opacus's hooks warn that the input needs no gradient (it does not: only the parameters).
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

STEPS = 20


def torch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 3),
    ).double()  # fmt: skip


@pytest.mark.parametrize("per_sample", [True, "factored"])
@pytest.mark.parametrize(("noise", "reduction"), [(0.0, "mean"), (0.0, "sum"), (0.8, "mean")])
def test_training_matches_opacus(
    per_sample: bool | str, noise: float, reduction: str, device: torch.device
) -> None:
    n, sample_rate, clip = 64, 0.2, 0.5
    data = torch.randn(n, 6, dtype=torch.float64).to(device)
    labels = torch.randint(0, 3, (n,)).to(device)
    batches = list(poisson_batches(n, sample_rate, STEPS, torch.Generator().manual_seed(5)))
    expected_batch = int(n * sample_rate)

    reference = opacus.GradSampleModule(torch_model().to(device), loss_reduction=reduction)
    reference_optimizer = opacus.optimizers.DPOptimizer(
        torch.optim.Adam(reference.parameters(), lr=0.05), noise_multiplier=noise,
        max_grad_norm=clip, expected_batch_size=expected_batch, loss_reduction=reduction,
        generator=torch.Generator(device).manual_seed(9),
    )  # fmt: skip
    reference_accountant = opacus.accountants.RDPAccountant()
    reference_optimizer.attach_step_hook(
        reference_accountant.get_optimizer_hook_fn(sample_rate=sample_rate)
    )
    model = hn.from_torch(torch_model().to(device))
    optimizer = DPOptimizer(
        Adam(model.parameters(), lr=0.05), noise_multiplier=noise, max_grad_norm=clip,
        expected_batch_size=expected_batch, loss_reduction=reduction,
        generator=torch.Generator(device).manual_seed(9),
    )  # fmt: skip
    accountant = PrivacyAccountant()
    loss_fn = hn.CrossEntropyLoss(reduction=reduction)
    clipped = 0

    for batch in (b.to(device) for b in batches):
        assert len(batch) > 0  # (Opacus's GradSampleModule needs a non-empty batch)
        reference_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(
            reference(data[batch]), labels[batch], reduction=reduction
        ).backward()
        reference_optimizer.step()

        optimizer.zero_grad()
        loss_fn(model(data[batch]), labels[batch])
        model.backward(loss_fn.backward(), input_grad=False, per_sample=per_sample)
        optimizer.step()
        accountant.step(noise, sample_rate)
        assert optimizer.last_norms is not None
        clipped += int((optimizer.last_norms > clip).sum())

        for (name, got), expected in zip(
            model.named_parameters(), reference.parameters(), strict=True
        ):
            assert_matches(got, expected.detach(), f"{name} after {optimizer.steps} steps")
    assert clipped > STEPS  # the clipping was at work
    if noise > 0:
        assert accountant.epsilon(1e-5) == pytest.approx(
            reference_accountant.get_epsilon(1e-5), rel=1e-12
        )


def test_training_with_refilled_storage_matches_opacus() -> None:
    """Fixed-size batches and per_sample=True: from the second step on, every backward
    writes the weights' per-sample gradients into the tensors zero_grad() kept (the same
    tensors: weak references to the last ones still reach them), and the run still equals
    Opacus's parameter for parameter over 20 steps."""
    n, batch, clip, noise = 48, 12, 0.5, 0.8
    data = torch.randn(n, 6, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,))
    order = torch.Generator().manual_seed(3)
    batches = [torch.randperm(n, generator=order)[:batch] for _ in range(STEPS)]
    reference = opacus.GradSampleModule(torch_model())
    reference_optimizer = opacus.optimizers.DPOptimizer(
        torch.optim.SGD(reference.parameters(), lr=0.1), noise_multiplier=noise,
        max_grad_norm=clip, expected_batch_size=batch,
        generator=torch.Generator().manual_seed(9),
    )  # fmt: skip
    model = hn.from_torch(torch_model())
    optimizer = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=noise,
        max_grad_norm=clip, expected_batch_size=batch,
        generator=torch.Generator().manual_seed(9),
    )  # fmt: skip
    loss_fn = hn.CrossEntropyLoss()
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    last: list[weakref.ref[Tensor]] = []
    for step, index in enumerate(batches):
        reference_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(reference(data[index]), labels[index]).backward()
        reference_optimizer.step()
        optimizer.zero_grad()
        loss_fn(model(data[index]), labels[index])
        model.backward(loss_fn.backward(), input_grad=False, per_sample=True)
        if step > 0:
            assert all(
                ref() is p.grad_sample for ref, p in zip(last, weights, strict=True)
            ), f"fresh memory at step {step + 1}"
        last = [weakref.ref(p.grad_sample) for p in weights]
        optimizer.step()
        for (name, got), expected in zip(
            model.named_parameters(), reference.parameters(), strict=True
        ):
            assert_matches(got, expected.detach(), f"{name} after {optimizer.steps} steps")
