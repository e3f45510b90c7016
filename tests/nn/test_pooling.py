"""MaxPool2d, AvgPool2d and AdaptiveAvgPool2d against torch.nn + autograd.

Property tests draw kernels, strides, paddings, dilations, ceil_mode, count_include_pad,
divisor_override, odd sizes, batch 1 and unbatched inputs and three memory layouts. Max
pooling is also run on inputs full of ties (small integers), where the gradient must go
exactly where torch sends it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import handgrad.nn as hn
from handgrad.check import check_module
from tests.conftest import DEVICES
from tests.nn.conv_helpers import assert_same_error, compare_with_torch, layout

F64 = torch.float64


@st.composite
def window_configs(draw: st.DrawFn, dilation: bool) -> dict[str, Any]:
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # torch: at most half
    sizes = []
    for axis in range(2):
        extent = dilations[axis] * (kernel[axis] - 1) + 1
        smallest = max(1, extent - 2 * padding[axis])
        sizes.append(draw(st.integers(smallest, smallest + 4)))
    batch = draw(st.sampled_from([None, 1, 2]))
    return {
        "kernel_size": kernel if draw(st.booleans()) else kernel[0],
        "stride": None if draw(st.booleans()) else stride,
        "padding": padding,
        "dilation": dilations,
        "ceil_mode": draw(st.booleans()),
        "shape": ((batch,) if batch else ()) + (draw(st.integers(1, 3)), *sizes),
        "layout": draw(
            st.sampled_from(["contiguous", "strided", "channels_last"][: 2 + bool(batch)])
        ),
        "seed": draw(st.integers(0, 2**16)),
    }


def _square(config: dict[str, Any]) -> dict[str, Any]:
    """The config with kernel/padding consistent when the kernel is one int."""
    if isinstance(config["kernel_size"], int):
        k = config["kernel_size"]
        config["padding"] = tuple(min(p, k // 2) for p in config["padding"])
    return config


@pytest.mark.parametrize("device", DEVICES)
@given(window_configs(dilation=True), st.booleans())
def test_max_pool2d_matches_autograd(device: str, config: dict[str, Any], ties: bool) -> None:
    config = _square(config)
    torch.manual_seed(config["seed"])
    reference = torch.nn.MaxPool2d(
        config["kernel_size"], config["stride"], config["padding"], config["dilation"],
        ceil_mode=config["ceil_mode"],
    )  # fmt: skip
    x = torch.randn(config["shape"], dtype=F64, device=device)
    if ties:  # few distinct values: most windows hold their maximum more than once
        x = x.mul(1.5).round()
    x = layout(x, config["layout"])
    try:
        out = reference(x)
    except RuntimeError:
        assume(False)  # a ceil_mode/padding combination torch itself refuses
    # A window wholly in the padding (-inf) makes torch's kernel send its gradient outside
    # the plane (into a neighbouring one); test_empty_windows_get_no_gradient covers it.
    assume(not torch.isneginf(out).any())
    compare_with_torch(reference, x)


@pytest.mark.parametrize("device", DEVICES)
@given(window_configs(dilation=False), st.booleans(), st.sampled_from([None, 1, 3]))
def test_avg_pool2d_matches_autograd(
    device: str, config: dict[str, Any], count_include_pad: bool, divisor: int | None
) -> None:
    config = _square(config)
    reference = torch.nn.AvgPool2d(
        config["kernel_size"], config["stride"], config["padding"], config["ceil_mode"],
        count_include_pad, divisor,
    )  # fmt: skip
    x = layout(torch.randn(config["shape"], dtype=F64, device=device), config["layout"])
    try:
        reference(x)
    except RuntimeError:
        assume(False)
    compare_with_torch(reference, x)


@pytest.mark.parametrize("device", DEVICES)
@given(
    st.tuples(st.integers(1, 7), st.integers(1, 7)),
    st.one_of(
        st.integers(1, 5),
        st.tuples(st.integers(1, 5), st.integers(1, 5)),
        st.tuples(st.none(), st.integers(1, 5)),
    ),
    st.sampled_from([None, 1, 2]),
    st.sampled_from(["contiguous", "strided", "channels_last"]),
)
def test_adaptive_avg_pool2d_matches_autograd(
    device: str, size: tuple[int, int], output_size: Any, batch: int | None, kind: str
) -> None:
    shape = ((batch,) if batch else ()) + (2, *size)
    x = layout(torch.randn(shape, dtype=F64, device=device), kind if batch else "contiguous")
    compare_with_torch(torch.nn.AdaptiveAvgPool2d(output_size), x)


def test_max_pool_ties_go_to_the_first_maximum_as_torch() -> None:
    # Every window is all ones: the first element of each window gets its gradient, and an
    # element first in two overlapping windows gets both.
    x = torch.ones(1, 1, 4, 4, dtype=F64)
    hand = hn.MaxPool2d(2, stride=1)
    out = hand(x)
    grad = hand.backward(torch.arange(1.0, 10.0, dtype=F64).view(1, 1, 3, 3))
    leaf = x.clone().requires_grad_(True)
    torch.nn.functional.max_pool2d(leaf, 2, stride=1).backward(
        torch.arange(1.0, 10.0, dtype=F64).view(1, 1, 3, 3)
    )
    assert torch.equal(grad, leaf.grad)
    assert out.shape == (1, 1, 3, 3)
    expected = torch.zeros(4, 4, dtype=F64)
    expected[:3, :3] = torch.arange(1.0, 10.0).view(3, 3)
    assert torch.equal(grad[0, 0], expected)


def test_max_pool_nan_takes_the_gradient_as_in_torch() -> None:
    x = torch.tensor([[[[1.0, float("nan")], [3.0, 2.0]]]], dtype=F64)
    hand = hn.MaxPool2d(2)
    assert torch.isnan(hand(x)).all()
    leaf = x.clone().requires_grad_(True)
    torch.nn.functional.max_pool2d(leaf, 2).backward(torch.ones(1, 1, 1, 1, dtype=F64))
    assert torch.equal(hand.backward(torch.ones(1, 1, 1, 1, dtype=F64)), leaf.grad)


def test_empty_windows_get_no_gradient() -> None:
    # Height 1, dilation 2, padding 1: the one window's rows are -1 and 1, both outside.
    x = torch.randn(2, 2, 1, 4, dtype=F64)
    hand = hn.MaxPool2d(2, stride=(1, 2), padding=(1, 0), dilation=(2, 1), ceil_mode=True)
    out = hand(x)
    assert torch.isneginf(out).all()
    assert torch.equal(hand.backward(torch.ones_like(out)), torch.zeros_like(x))


def test_return_indices_gives_torchs_indices() -> None:
    x = torch.randn(2, 3, 5, 5, dtype=F64)
    out, indices = hn.MaxPool2d(3, 2, 1, return_indices=True)(x)
    expected, expected_indices = torch.nn.MaxPool2d(3, 2, 1, return_indices=True)(x)
    assert torch.equal(out, expected) and torch.equal(indices, expected_indices)  # noqa: PT018


@pytest.mark.parametrize(
    "reference",
    [
        torch.nn.MaxPool2d(2),
        torch.nn.MaxPool2d((3, 2), stride=1, padding=1, dilation=(1, 2), ceil_mode=True),
        torch.nn.AvgPool2d(3),
        torch.nn.AvgPool2d((2, 3), 2, 1, ceil_mode=True, count_include_pad=False),
        torch.nn.AvgPool2d(2, divisor_override=3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.AdaptiveAvgPool2d((None, 3)),
    ],
    ids=repr,
)
def test_arguments_and_repr_are_torchs_and_finite_differences_agree(
    reference: torch.nn.Module,
) -> None:
    hand = hn.from_torch(reference)
    assert repr(hand) == repr(reference)
    assert repr(hn.to_torch(hand)) == repr(reference)
    assert hand.state_dict() == {}
    result = check_module(hand, torch.randn(2, 2, 6, 7), fd_samples=12)
    assert result.passed, result.report()


@pytest.mark.parametrize(
    ("module", "shape", "fragments"),
    [
        (torch.nn.MaxPool2d(3), (1, 1, 2, 2), ["MaxPool2d(kernel_size=3", "(1, 1, 2, 2)"]),
        (torch.nn.MaxPool2d(2), (4, 4), ["MaxPool2d(kernel_size=2", "(4, 4)"]),
        (torch.nn.MaxPool2d(2, padding=2), (1, 1, 4, 4), ["MaxPool2d", "(1, 1, 4, 4)"]),
        (torch.nn.AvgPool2d(3), (1, 1, 2, 2), ["AvgPool2d(kernel_size=3", "(1, 1, 2, 2)"]),
        (torch.nn.AvgPool2d(2), (1, 1, 1, 4, 4), ["AvgPool2d", "(1, 1, 1, 4, 4)"]),
        (torch.nn.AdaptiveAvgPool2d(2), (4,), ["AdaptiveAvgPool2d", "(4,)"]),
    ],
)
def test_bad_input_raises_torchs_error_naming_layer_and_shape(
    module: torch.nn.Module, shape: tuple[int, ...], fragments: list[str]
) -> None:
    hand = hn.from_torch(module)
    x = torch.randn(shape)
    assert_same_error(lambda: module(x), lambda: hand(x), RuntimeError, *fragments)


def test_pools_run_under_inference_mode() -> None:
    for hand in (hn.MaxPool2d(2), hn.AvgPool2d(2, ceil_mode=True), hn.AdaptiveAvgPool2d(3)):
        with torch.inference_mode():
            out = hand(torch.randn(2, 3, 5, 5))
            grad = hand.backward(torch.ones_like(out))
        assert grad is not None
        assert grad.shape == (2, 3, 5, 5)
