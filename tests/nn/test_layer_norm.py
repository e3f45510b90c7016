"""LayerNorm and RMSNorm against torch.nn + autograd (float64), and their errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import handgrad.nn as hn
from handgrad.check import check_module
from handgrad.nn.per_sample import per_sample_gradients
from tests.nn.helpers import assert_matches, hand_grads, torch_grads

DOUBLE = torch.float64


def _randomise(module: torch.nn.Module) -> None:
    """γ and β away from their initial 1 and 0, so that the parameters matter."""
    with torch.no_grad():
        for param in module.parameters():
            param.normal_()


def _compare(reference: torch.nn.Module, x: torch.Tensor) -> None:
    _randomise(reference)
    ours = hn.from_torch(reference)
    upstream = torch.randn(x.shape, dtype=x.dtype, device=x.device)
    expected_out, expected_grad, expected_params = torch_grads(reference, x, upstream)
    out, grad, params = hand_grads(ours, x, upstream)
    # Measured against the data's scale (1): a row of one entry normalises to x̂ = 0, and
    # the gradients that vanish by cancellation there are compared in absolute terms.
    assert_matches(out, expected_out, "output", scale_floor=1.0)
    assert_matches(grad, expected_grad, "input gradient", scale_floor=1.0)
    assert len(params) == len(expected_params)
    for got, want in zip(params, expected_params, strict=True):
        assert_matches(got, want, "parameter gradient", scale_floor=1.0)


@st.composite
def norm_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], int]:
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    normalized = draw(st.integers(1, len(shape)))
    return shape, normalized


@given(norm_cases(), st.booleans(), st.booleans(), st.sampled_from([1e-5, 0.1]), st.booleans())
def test_layer_norm_matches_torch(
    case: tuple[tuple[int, ...], int], affine: bool, bias: bool, eps: float, as_int: bool
) -> None:
    shape, normalized = case
    normalized_shape: int | tuple[int, ...] = shape[-normalized:]
    if as_int and normalized == 1:
        normalized_shape = shape[-1]
    reference = torch.nn.LayerNorm(normalized_shape, eps, affine, bias, dtype=DOUBLE)
    _compare(reference, torch.randn(shape, dtype=DOUBLE) * 3 + 1)


@given(norm_cases(), st.booleans(), st.sampled_from([None, 1e-6, 0.1]))
def test_rms_norm_matches_torch(
    case: tuple[tuple[int, ...], int], affine: bool, eps: float | None
) -> None:
    shape, normalized = case
    reference = torch.nn.RMSNorm(shape[-normalized:], eps, affine, dtype=DOUBLE)
    _compare(reference, torch.randn(shape, dtype=DOUBLE) * 3 + 1)


def test_on_each_device_and_dtype(device: torch.device, dtype: torch.dtype) -> None:
    x = torch.randn(4, 3, 6, dtype=dtype, device=device)
    _compare(torch.nn.LayerNorm(6, dtype=dtype, device=device), x)
    _compare(torch.nn.RMSNorm([3, 6], dtype=dtype, device=device), x)


@pytest.mark.parametrize(
    "module",
    [
        hn.LayerNorm(5),
        hn.LayerNorm((2, 5), bias=False),
        hn.RMSNorm(5),
        hn.LayerNorm(5, elementwise_affine=False),
    ],
    ids=["layer", "layer-no-bias", "rms", "layer-no-affine"],
)
def test_finite_differences(module: hn.Module) -> None:
    _randomise(module)
    result = check_module(module, torch.randn(3, 2, 5))
    assert result.passed, result.report()


def test_parameters_state_dict_and_repr_mirror_torch() -> None:
    for ours, theirs in (
        (hn.LayerNorm((2, 3), bias=False), torch.nn.LayerNorm((2, 3), bias=False)),
        (hn.RMSNorm(4, eps=1e-3), torch.nn.RMSNorm(4, eps=1e-3)),
    ):
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        assert repr(ours) == repr(theirs)
        assert not any(p.requires_grad for p in ours.parameters())


def test_wrong_shape_is_torchs_runtime_error_naming_the_shapes() -> None:
    with pytest.raises(RuntimeError, match=r"normalized_shape=\[4\].*\[\*, 4\].*\[2, 3\]"):
        hn.LayerNorm(4)(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match=r"normalized_shape=\[2, 3\]"):
        hn.RMSNorm((2, 3))(
            torch.randn(
                3,
            )
        )


def test_backward_frees_what_forward_kept() -> None:
    norm = hn.LayerNorm(3)
    out = norm(torch.randn(2, 3))
    torch.testing.assert_close(norm.recompute_output(), out)
    norm.backward(torch.ones_like(out))
    with pytest.raises(ValueError, match="called twice for one forward"):
        norm.backward(torch.ones_like(out))
    with pytest.raises(ValueError, match="after backward"):
        norm.recompute_output()


def test_the_fused_normalization_equals_the_plain_formulas_and_falls_back(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """x̂ and r from torch.native_layer_norm equal the plain formulas' to float64 round-off;
    without the name the plain formulas run (normalize_fused gives None)."""
    from handgrad.nn.functional import layer_norm as kernels

    assert kernels._NATIVE_LAYER_NORM is torch.native_layer_norm
    x = torch.randn(3, 4, 5, dtype=torch.float64) * 3 + 1
    fused = kernels.normalize_fused(x, (4, 5), 1e-5)
    assert fused is not None
    plain = kernels.normalize_plain(x, 2, 1e-5)
    for mine, reference in zip(fused, plain, strict=True):
        assert mine.shape == reference.shape
        torch.testing.assert_close(mine, reference, rtol=1e-13, atol=1e-13)
    monkeypatch.setattr(kernels, "_NATIVE_LAYER_NORM", None)  # a torch without it
    assert kernels.normalize_fused(x, (4, 5), 1e-5) is None
    weight, bias = torch.rand(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    out, ctx = kernels.layer_norm_forward(x, 2, weight, bias, 1e-5)
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x, (4, 5), weight, bias))
    assert torch.equal(ctx[0], plain[0])
    assert torch.equal(ctx[1], plain[1])


def test_normalize_and_its_backward_match_autograd_without_gamma_and_beta() -> None:
    """normalize() gives x̂ = (x − μ)/√(σ² + ε) (γ, β left to the next layer) and
    backward_normalized(dL/dx̂) autograd's dL/dx; forward and backward as usual still work."""
    norm = hn.LayerNorm((3, 4), dtype=DOUBLE)
    _randomise(norm)
    x = torch.randn(2, 5, 3, 4, dtype=DOUBLE)
    upstream = torch.randn(x.shape, dtype=DOUBLE)
    leaf = x.clone().requires_grad_()
    expected = torch.nn.functional.layer_norm(leaf, (3, 4), eps=norm.eps)
    (expected_grad,) = torch.autograd.grad(expected, leaf, upstream)
    xhat = norm.normalize(x)
    assert_matches(xhat, expected.detach(), "x̂")
    assert norm.normalized() is xhat
    assert_matches(norm.recompute_output(), norm.weight * xhat + norm.bias, "y")
    assert_matches(norm.backward_normalized(upstream.clone()), expected_grad, "dx")
    assert norm.weight.grad is None  # γ's and β's gradients are the next layer's to give
    with pytest.raises(ValueError, match="normalized"):
        norm.normalized()


def test_backward_normalized_from_centred_rows_and_with_a_residual_matches_autograd() -> None:
    """centred=True: dL/dx̂ given with its row means removed (as a next layer with centred
    weight rows gives it) yields autograd's dL/dx; residual=r returns r + dL/dx."""
    norm = hn.LayerNorm((3, 4), dtype=DOUBLE)
    x = torch.randn(2, 5, 3, 4, dtype=DOUBLE) * 3 + 1
    upstream = torch.randn(x.shape, dtype=DOUBLE) + 2  # rows far from zero mean
    residual = torch.randn(x.shape, dtype=DOUBLE)
    leaf = x.clone().requires_grad_()
    expected = torch.nn.functional.layer_norm(leaf, (3, 4), eps=norm.eps)
    (expected_grad,) = torch.autograd.grad(expected, leaf, upstream)
    centred = upstream - upstream.mean((-2, -1), keepdim=True)
    norm.normalize(x)
    got = norm.backward_normalized(centred.clone(), centred=True)
    assert_matches(got, expected_grad, "dx from centred rows")
    norm.normalize(x)
    got = norm.backward_normalized(upstream.clone(), residual=residual)
    assert_matches(got, residual + expected_grad, "residual + dx")
    norm.normalize(x)
    got = norm.backward_normalized(centred.clone(), centred=True, residual=residual)
    assert_matches(got, residual + expected_grad, "residual + dx from centred rows")


@pytest.mark.parametrize(
    ("shape", "dtype"), [((2, 5, 4, 3), DOUBLE), ((10, 12), DOUBLE), ((2, 5, 3, 4), torch.float32)]
)
def test_backward_normalized_names_a_residual_that_does_not_fit(
    shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    """A residual of another shape (even with as many elements) or dtype is refused, naming
    both, instead of being viewed into dL/dx's shape or promoted."""
    norm = hn.LayerNorm((3, 4), dtype=DOUBLE)
    x = torch.randn(2, 5, 3, 4, dtype=DOUBLE)
    norm.normalize(x)
    residual = torch.zeros(shape, dtype=dtype)
    with pytest.raises(ValueError, match=r"residual must have .*\(2, 5, 3, 4\) torch.float64"):
        norm.backward_normalized(torch.ones_like(x), residual=residual)


def test_normalize_refuses_half_input_and_per_sample_backward() -> None:
    with pytest.raises(TypeError, match="bfloat16"):
        hn.LayerNorm(4, dtype=torch.bfloat16).normalize(torch.zeros(2, 4, dtype=torch.bfloat16))
    norm = hn.LayerNorm(4, dtype=DOUBLE)
    x = torch.randn(2, 3, 4, dtype=DOUBLE)
    norm.normalize(x)
    with per_sample_gradients(), pytest.raises(ValueError, match="per-sample"):
        norm.backward_normalized(torch.ones_like(x))
