"""The fully connected layer's per-sample kernels against torch.func.vmap(grad) in float64."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from handgrad.nn.functional.per_sample import (
    linear_grad_sample,
    linear_grad_sample_norms,
    linear_grad_sample_weighted_sum,
)
from handgrad.nn.per_sample import FactoredGradSample
from tests.nn.helpers import assert_matches

# (batch, middle dims, in, out): 2-D inputs, sequences, several middle dims, batch 1, odd sizes
SHAPES = [(1, (), 3, 2), (5, (), 4, 3), (7, (3,), 5, 2), (3, (2, 3), 4, 6), (1, (4,), 2, 3),
          (4, (6,), 2, 2)]  # fmt: skip


def reference(x: Tensor, grad_out: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample (dW, db) by torch.func: the gradient of Σ g_i ⊙ (x_i Wᵀ + b), example by
    example."""

    def contribution(w: Tensor, b: Tensor, x_i: Tensor, g_i: Tensor) -> Tensor:
        return (g_i * torch.nn.functional.linear(x_i, w, b)).sum()

    per_sample = torch.func.vmap(torch.func.grad(contribution, argnums=(0, 1)), (None, None, 0, 0))
    return per_sample(weight, bias, x, grad_out)


def operands(shape: tuple, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, middle, fan_in, fan_out = shape
    kw = {"dtype": torch.float64, "device": device}
    x = torch.randn(batch, *middle, fan_in, **kw)
    grad_out = torch.randn(batch, *middle, fan_out, **kw)
    return x, grad_out, torch.randn(fan_out, fan_in, **kw), torch.randn(fan_out, **kw)


@pytest.mark.parametrize("shape", SHAPES)
def test_grad_sample_matches_vmap_grad(shape: tuple, device: torch.device) -> None:
    x, grad_out, weight, bias = operands(shape, device)
    expected_w, expected_b = reference(x, grad_out, weight, bias)
    got_w, got_b = linear_grad_sample(grad_out, x)
    assert_matches(got_w, expected_w, "dW_i")
    assert_matches(got_b, expected_b, "db_i")
    # They sum to the batch gradient of linear_backward.
    assert_matches(got_w.sum(0), grad_out.reshape(-1, shape[3]).t() @ x.reshape(-1, shape[2]))


@pytest.mark.parametrize("shape", SHAPES)
def test_grad_sample_into_a_buffer_overwrites_or_adds(shape: tuple, device: torch.device) -> None:
    x, grad_out, _, _ = operands(shape, device)
    expected, _ = linear_grad_sample(grad_out, x)
    buffer = torch.full_like(expected, 7.0)
    got, _ = linear_grad_sample(grad_out, x, weight_out=buffer)
    assert got.data_ptr() == buffer.data_ptr()
    assert_matches(got, expected)
    linear_grad_sample(grad_out, x, weight_out=buffer, accumulate=True)
    assert_matches(buffer, 2 * expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_norms_without_materialising_equal_the_materialised(
    shape: tuple, device: torch.device
) -> None:
    x, grad_out, weight, bias = operands(shape, device)
    expected_w, expected_b = reference(x, grad_out, weight, bias)
    norms_w, norms_b = linear_grad_sample_norms(grad_out, x)
    batch = shape[0]
    assert_matches(norms_w, expected_w.reshape(batch, -1).pow(2).sum(1), "‖dW_i‖²")
    assert_matches(norms_b, expected_b.pow(2).sum(1), "‖db_i‖²")
    assert linear_grad_sample_norms(grad_out, x, bias=False)[1] is None


def test_norms_of_long_sequences_form_the_gradient_instead(device: torch.device) -> None:
    """T² > out · in: the Gram matrices would be larger than dW_i; the other branch agrees."""
    x, grad_out, weight, bias = operands((3, (5,), 2, 2), device)
    expected_w, _ = reference(x, grad_out, weight, bias)
    assert_matches(linear_grad_sample_norms(grad_out, x)[0], expected_w.pow(2).sum((1, 2)))


@pytest.mark.parametrize("shape", SHAPES)
def test_weighted_sum_is_the_sum_of_weighted_per_sample_gradients(
    shape: tuple, device: torch.device
) -> None:
    x, grad_out, weight, bias = operands(shape, device)
    expected_w, expected_b = reference(x, grad_out, weight, bias)
    c = torch.rand(shape[0], dtype=torch.float64, device=device)
    got_w, got_b = linear_grad_sample_weighted_sum(grad_out, x, c)
    assert_matches(got_w, torch.einsum("i,ijk->jk", c, expected_w), "Σ c_i dW_i")
    assert_matches(got_b, c @ expected_b, "Σ c_i db_i")


def test_factored_grad_sample_of_two_uses(device: torch.device) -> None:
    """A weight used twice: the factored sum of both pairs (2-D and sequence) is exact."""
    x1, g1, weight, bias = operands((4, (), 3, 2), device)
    x2, g2, _, _ = operands((4, (3,), 3, 2), device)
    expected = reference(x1, g1, weight, bias)[0] + reference(x2, g2, weight, bias)[0]
    both = FactoredGradSample(g1, x1).add(FactoredGradSample(g2, x2))
    assert both.shape == expected.shape
    assert len(both) == 4
    assert_matches(both.materialize(), expected)
    assert_matches(both.norms_squared(), expected.pow(2).sum((1, 2)))
    c = torch.rand(4, dtype=torch.float64, device=device)
    assert_matches(both.weighted_sum(c), torch.einsum("i,ijk->jk", c, expected))


def test_two_d_norms_allocate_nothing_of_batch_times_parameters() -> None:
    """The norm-only path on a (batch, in) input: no operator allocates anything near
    batch · out · in numbers (the profiler records every allocation of every operator)."""
    batch, fan_in, fan_out = 64, 300, 200
    x, grad_out = torch.randn(batch, fan_in), torch.randn(batch, fan_out)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:  # fmt: skip
        linear_grad_sample_norms(grad_out, x)
        FactoredGradSample(grad_out, x).norms_squared()
        FactoredGradSample(grad_out, x).weighted_sum(torch.rand(batch))
    largest = max(event.cpu_memory_usage for event in prof.events())
    full = batch * fan_out * fan_in * 4
    assert 0 < largest < full / 50, f"an operator allocated {largest} bytes (full: {full})"
    # and the check can fail: forming the per-sample gradients is seen
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:  # fmt: skip
        linear_grad_sample(grad_out, x)
    assert max(event.cpu_memory_usage for event in prof.events()) >= full
