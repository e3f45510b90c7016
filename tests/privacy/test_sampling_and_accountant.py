"""Poisson batches against Opacus's sampler; ε against Opacus's accountant."""

from __future__ import annotations

import math

import pytest
import torch

from handgrad.privacy import PrivacyAccountant, epsilon, poisson_batches

uniform_sampler = pytest.importorskip("opacus.utils.uniform_sampler")
accountants = pytest.importorskip("opacus.accountants")


def test_batches_are_opacus_batches_for_the_same_generator() -> None:
    ours = list(poisson_batches(50, 0.1, generator=torch.Generator().manual_seed(4)))
    sampler = uniform_sampler.UniformWithReplacementSampler(
        num_samples=50, sample_rate=0.1, generator=torch.Generator().manual_seed(4)
    )
    theirs = list(sampler)
    assert len(ours) == len(theirs) == 10
    assert [batch.tolist() for batch in ours] == theirs


def test_each_example_joins_with_probability_q() -> None:
    """Sizes are Binomial(n, q): the mean over many batches within 4 standard errors."""
    n, q, steps = 1000, 0.03, 400
    batches = poisson_batches(n, q, steps, torch.Generator().manual_seed(0))
    sizes = torch.tensor([len(b) for b in batches], dtype=torch.float64)
    standard_error = math.sqrt(n * q * (1 - q) / steps)
    assert abs(sizes.mean().item() - n * q) < 4 * standard_error
    assert abs(sizes.var().item() / (n * q * (1 - q)) - 1) < 0.25
    counts = torch.zeros(n)
    for batch in poisson_batches(n, q, steps, torch.Generator().manual_seed(1)):
        assert torch.equal(batch, batch.unique())  # increasing, no repeats
        counts[batch] += 1
    assert abs(counts.mean().item() - q * steps) < 0.5


@pytest.mark.parametrize(
    ("args", "match"),
    [((10, 0.0), "sample_rate must be in"), ((10, 1.5), "sample_rate"),
     ((-1, 0.5), "num_samples must be a non-negative int, got -1"),
     ((10, 0.5, -2), "steps must be a non-negative int")],
)  # fmt: skip
def test_sampler_errors(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        next(poisson_batches(*args))


@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
def test_epsilon_is_opacus_epsilon(mechanism: str) -> None:
    reference = accountants.create_accountant(mechanism)
    for _ in range(200):
        reference.step(noise_multiplier=1.1, sample_rate=0.01)
    expected = reference.get_epsilon(delta=1e-5)
    assert epsilon(1.1, 0.01, 200, 1e-5, mechanism) == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < 10


def test_schedule_of_two_stretches() -> None:
    accountant = PrivacyAccountant()
    assert accountant.epsilon(1e-5) == 0.0
    accountant.step(1.0, 0.02, steps=50)
    accountant.step(2.0, 0.02, steps=30)
    reference = accountants.RDPAccountant()
    for sigma, steps in ((1.0, 50), (2.0, 30)):
        for _ in range(steps):
            reference.step(noise_multiplier=sigma, sample_rate=0.02)
    assert accountant.history == [(1.0, 0.02, 50), (2.0, 0.02, 30)]
    assert accountant.epsilon(1e-5) == pytest.approx(reference.get_epsilon(1e-5), rel=1e-12)
    # more noise, less ε; more steps, more ε
    assert epsilon(2.0, 0.02, 80, 1e-5) < accountant.epsilon(1e-5) < epsilon(1.0, 0.02, 80, 1e-5)


@pytest.mark.parametrize(
    ("call", "match"),
    [(lambda: PrivacyAccountant("moments"), "mechanism must be one of"),
     (lambda: PrivacyAccountant().epsilon(0.0), "delta must be in"),
     (lambda: PrivacyAccountant().step(-1.0, 0.1), "noise_multiplier must be a number ≥ 0"),
     (lambda: epsilon(1.0, 2.0, 10, 1e-5), "sample_rate")],
)  # fmt: skip
def test_accountant_errors(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
