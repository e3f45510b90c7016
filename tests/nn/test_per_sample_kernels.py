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


def test_factored_grad_sample_of_a_weight_shaped_otherwise(device: torch.device) -> None:
    """A (out, c, k) weight against inputs unfolded to c · k features (a convolution's
    layout): materialised and summed in the weight's own shape."""
    x, grad_out, weight, bias = operands((3, (4,), 6, 2), device)
    expected = reference(x, grad_out, weight, bias)[0].reshape(3, 2, 3, 2)
    factored = FactoredGradSample(grad_out, x, param_shape=(2, 3, 2))
    assert factored.shape == (3, 2, 3, 2)
    assert_matches(factored.materialize(), expected)
    buffer = torch.zeros_like(expected)
    assert factored.materialize(buffer).data_ptr() == buffer.data_ptr()
    assert_matches(buffer, expected)
    c = torch.rand(3, dtype=torch.float64, device=device)
    assert_matches(factored.weighted_sum(c), torch.einsum("i,i...->...", c, expected))
    assert_matches(factored.norms_squared(), expected.pow(2).sum((1, 2, 3)))


# ----------------------------------------------------------------------------- other layers
def per_example(function, params: tuple, batched: tuple) -> tuple:  # type: ignore[no-untyped-def]
    """vmap over examples of grad of Σ g_i ⊙ function(params, input_i) (g_i the last of
    ``batched``), for the parameters."""

    def contribution(*args: Tensor) -> Tensor:
        *p, x_i, g_i = args
        return (g_i * function(*p, x_i.unsqueeze(0)).squeeze(0)).sum()

    argnums = tuple(range(len(params)))
    in_dims = (None,) * len(params) + (0,) * len(batched)
    return torch.func.vmap(torch.func.grad(contribution, argnums), in_dims)(*params, *batched)


@pytest.mark.parametrize(
    ("spatial", "stride", "padding", "dilation", "groups"),
    [(1, 1, 0, 1, 1), (1, 2, 1, 2, 1), (2, 1, 1, 1, 1), (2, 2, 0, 1, 2), (2, 1, 2, 2, 1),
     (1, 1, 1, 1, 3)],
)  # fmt: skip
def test_conv_grad_sample(
    spatial: int, stride: int, padding: int, dilation: int, groups: int
) -> None:
    from handgrad.nn.functional.per_sample import conv_grad_sample_factors, grouped_grad_sample

    conv = torch.nn.functional.conv1d if spatial == 1 else torch.nn.functional.conv2d
    kernel = (3,) * spatial
    x = torch.randn(3, 6, *(7,) * spatial, dtype=torch.float64)
    weight = torch.randn(6, 6 // groups, *kernel, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    out = conv(x, weight, bias, stride, padding, dilation, groups)
    g = torch.randn_like(out)

    def layer(w: Tensor, b: Tensor, x_i: Tensor) -> Tensor:
        return conv(x_i, w, b, stride, padding, dilation, groups)

    expected_w, expected_b = per_example(layer, (weight, bias), (x, g))
    left, right = conv_grad_sample_factors(
        x, g, kernel, (stride,) * spatial, (padding,) * spatial, (dilation,) * spatial
    )
    if groups == 1:
        factored = FactoredGradSample(left, right, weight.shape)
        assert_matches(factored.materialize(), expected_w, "dW_i")
        assert_matches(factored.norms_squared(), expected_w.flatten(1).pow(2).sum(1), "‖dW_i‖²")
    else:
        got = grouped_grad_sample(left, right, groups).view(3, *weight.shape)
        assert_matches(got, expected_w, "dW_i (groups)")
    assert_matches(g.flatten(2).sum(2), expected_b, "db_i")


@pytest.mark.parametrize("kind", ["layer", "group", "batch_eval"])
def test_norm_affine_grad_sample(kind: str) -> None:
    from handgrad.nn.functional.per_sample import norm_affine_grad_sample

    TF = torch.nn.functional
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    if kind == "layer":  # γ, β over the last dim
        weight, bias = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
        xhat = TF.layer_norm(x, (5,))

        def layer(w: Tensor, b: Tensor, x_i: Tensor) -> Tensor:
            return TF.layer_norm(x_i, (5,), w, b)

        channel_dims: tuple[int, ...] = (2,)
    else:  # γ, β per channel (dim 1)
        weight, bias = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
        mean, var = torch.randn(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64) + 0.5
        if kind == "group":
            xhat = TF.group_norm(x, 3)

            def layer(w: Tensor, b: Tensor, x_i: Tensor) -> Tensor:
                return TF.group_norm(x_i, 3, w, b)
        else:  # BatchNorm in eval mode: fixed statistics, an affine map per example
            xhat = TF.batch_norm(x, mean, var, training=False)

            def layer(w: Tensor, b: Tensor, x_i: Tensor) -> Tensor:
                return TF.batch_norm(x_i, mean, var, w, b, training=False)

        channel_dims = (1,)
    g = torch.randn_like(x)
    expected_w, expected_b = per_example(layer, (weight, bias), (x, g))
    got_w, got_b = norm_affine_grad_sample(g, xhat, channel_dims)
    assert_matches(got_w, expected_w, "dγ_i")
    assert_matches(got_b, expected_b, "dβ_i")


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_grad_sample(padding_idx: int | None) -> None:
    from handgrad.nn.functional.per_sample import embedding_grad_sample_factors

    table = torch.randn(7, 3, dtype=torch.float64)
    indices = torch.tensor([[1, 2, 1, 4], [2, 2, 0, 6], [5, 5, 5, 5]])
    g = torch.randn(3, 4, 3, dtype=torch.float64)

    def contribution(e: Tensor, idx_i: Tensor, g_i: Tensor) -> Tensor:
        return (g_i * torch.nn.functional.embedding(idx_i, e, padding_idx)).sum()

    expected = torch.func.vmap(torch.func.grad(contribution), (None, 0, 0))(table, indices, g)
    left, right = embedding_grad_sample_factors(g, indices, 7, padding_idx)
    factored = FactoredGradSample(left, right)
    assert_matches(factored.materialize(), expected, "dE_i")
    assert_matches(factored.norms_squared(), expected.flatten(1).pow(2).sum(1), "‖dE_i‖²")
