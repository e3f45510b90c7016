"""Conv1d, Conv2d and ConvTranspose2d against torch.nn + autograd.

Property tests draw random configurations (spatial rank, channels, groups and depthwise,
kernel, stride, padding as an int, a tuple, "same" or "valid", dilation, every padding mode,
bias, batch 1 and unbatched inputs, odd sizes, contiguous, channels_last and strided inputs);
the forward and every gradient must match autograd to 1e-10 relative in float64.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import handgrad.nn as hn
from handgrad.check import check_module
from handgrad.nn.conv import _conv_arguments
from handgrad.nn.functional.conv import (
    _taps_are_faster,
    conv_weight_grad,
    conv_weight_grad_by_taps,
)
from tests.conftest import DEVICES
from tests.nn.conv_helpers import assert_same_error, compare_with_torch, layout
from tests.nn.helpers import assert_matches

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")


@st.composite
def conv_configs(draw: st.DrawFn) -> dict[str, Any]:
    spatial = draw(st.sampled_from([1, 2]))
    if draw(st.booleans()):  # depthwise: one group per input channel
        groups = in_channels = draw(st.integers(1, 3))
        out_channels = in_channels * draw(st.integers(1, 2))
    else:
        groups = draw(st.integers(1, 2))
        in_channels = groups * draw(st.integers(1, 2))
        out_channels = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(spatial))
    square = spatial == 2 and draw(st.booleans())  # kernel_size given as one int
    if square:
        kernel = (kernel[0],) * spatial
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(spatial))
    padding_kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = (
        (1,) * spatial
        if padding_kind == "same"
        else tuple(draw(st.integers(1, 3)) for _ in range(spatial))
    )
    if padding_kind == "int":
        padding: Any = draw(st.integers(0, 2))
        pads = [(padding, padding)] * spatial
    elif padding_kind == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(spatial))
        pads = [(p, p) for p in padding]
    elif padding_kind == "same":
        padding = "same"
        totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        padding = "valid"
        pads = [(0, 0)] * spatial
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    sizes = []
    for axis in range(spatial):
        extent = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = max(1, extent - sum(pads[axis]), max(pads[axis]) + 1)
        sizes.append(draw(st.integers(smallest, smallest + 4)))
    batch = draw(st.sampled_from([None, 1, 2, 3]))  # None: an unbatched input
    kinds = ["contiguous", "strided"] + (["channels_last"] if spatial == 2 and batch else [])
    return {
        "spatial": spatial,
        "arguments": {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "kernel_size": kernel[0] if square else kernel,
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
            "bias": draw(st.booleans()),
            "padding_mode": mode,
        },
        "shape": ((batch,) if batch else ()) + (in_channels, *sizes),
        "layout": draw(st.sampled_from(kinds)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _conv(config: dict[str, Any]) -> torch.nn.Module:
    kind = torch.nn.Conv1d if config["spatial"] == 1 else torch.nn.Conv2d
    return kind(**config["arguments"], dtype=F64)


@pytest.mark.parametrize("device", DEVICES)
@given(conv_configs())
def test_conv_matches_autograd(device: str, config: dict[str, Any]) -> None:
    torch.manual_seed(config["seed"])
    reference = _conv(config).to(device)
    x = layout(torch.randn(config["shape"], dtype=F64, device=device), config["layout"])
    compare_with_torch(reference, x)


@st.composite
def transposed_configs(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.integers(1, 2))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    output_padding = tuple(
        draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
    )
    sizes = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    for axis in range(2):
        out = (
            (sizes[axis] - 1) * stride[axis]
            - 2 * padding[axis]
            + dilation[axis] * (kernel[axis] - 1)
            + 1
            + output_padding[axis]
        )
        assume(out > 0)
    batch = draw(st.sampled_from([None, 1, 2]))
    return {
        "arguments": {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "kernel_size": kernel,
            "stride": stride,
            "padding": padding,
            "output_padding": output_padding,
            "groups": groups,
            "bias": draw(st.booleans()),
            "dilation": dilation,
        },
        "shape": ((batch,) if batch else ()) + (in_channels, *sizes),
        "layout": draw(
            st.sampled_from(["contiguous", "strided", "channels_last"][: 2 + bool(batch)])
        ),
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.parametrize("device", DEVICES)
@given(transposed_configs())
def test_conv_transpose2d_matches_autograd(device: str, config: dict[str, Any]) -> None:
    torch.manual_seed(config["seed"])
    reference = torch.nn.ConvTranspose2d(**config["arguments"], dtype=F64).to(device)
    x = layout(torch.randn(config["shape"], dtype=F64, device=device), config["layout"])
    compare_with_torch(reference, x)


def test_conv_transpose2d_output_size_picks_the_output_padding(device: torch.device) -> None:
    reference = torch.nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1, dtype=F64).to(device)
    x = torch.randn(2, 2, 4, 5, dtype=F64, device=device)
    for size in ([10, 13], [11, 14], [2, 3, 12, 15]):
        twin = compare_with_torch(reference, x, forward=lambda m, inp, s=size: m(inp, s))
        assert twin(x, output_size=size).shape[-2:] == torch.Size(size[-2:])
    hand = hn.from_torch(reference)
    assert_same_error(
        lambda: reference(x, [13, 13]), lambda: hand(x, [13, 13]), ValueError, "valid sizes"
    )


@pytest.mark.parametrize(
    ("kind", "arguments", "shape"),
    [
        (torch.nn.Conv2d, {"in_channels": 2, "out_channels": 3, "kernel_size": 3}, (2, 2, 5, 6)),
        (torch.nn.Conv2d, {"in_channels": 4, "out_channels": 4, "kernel_size": (2, 3),
                           "stride": 2, "padding": 1, "dilation": (2, 1), "groups": 4,
                           "padding_mode": "reflect"}, (1, 4, 5, 6)),
        (torch.nn.Conv2d, {"in_channels": 2, "out_channels": 2, "kernel_size": 4,
                           "padding": "same", "padding_mode": "circular"}, (2, 2, 4, 5)),
        (torch.nn.Conv1d, {"in_channels": 3, "out_channels": 2, "kernel_size": 3, "stride": 2,
                           "padding": 2, "padding_mode": "replicate"}, (2, 3, 7)),
        (torch.nn.ConvTranspose2d, {"in_channels": 2, "out_channels": 4, "kernel_size": 3,
                                    "stride": 2, "padding": 1, "output_padding": 1,
                                    "groups": 2}, (2, 2, 3, 4)),
    ],
)  # fmt: skip
def test_conv_layers_pass_finite_differences(
    kind: type[torch.nn.Module], arguments: dict[str, Any], shape: tuple[int, ...]
) -> None:
    hand = hn.from_torch(kind(**arguments))
    result = check_module(hand, torch.randn(shape), fd_samples=12)
    assert result.passed, result.report()


@pytest.mark.parametrize(
    ("torch_type", "hand_type", "arguments"),
    [
        (torch.nn.Conv1d, hn.Conv1d, (3, 4, 5)),
        (torch.nn.Conv2d, hn.Conv2d, (3, 6, (3, 2))),
        (torch.nn.Conv2d, hn.Conv2d, (4, 8, 3, 1, 1, 1, 2)),
        (torch.nn.Conv2d, hn.Conv2d, (4, 4, 3, 1, 0, 1, 4, False)),
        (torch.nn.ConvTranspose2d, hn.ConvTranspose2d, (4, 6, 3, 2, 1, 1, 2)),
    ],
)
def test_same_seed_same_weights_as_torch(
    torch_type: type[torch.nn.Module], hand_type: type[hn.Module], arguments: tuple[Any, ...]
) -> None:
    torch.manual_seed(7)
    reference = torch_type(*arguments)
    after_torch = torch.rand(3)
    torch.manual_seed(7)
    hand = hand_type(*arguments)
    assert torch.equal(torch.rand(3), after_torch), "the same number of draws"
    assert list(hand.state_dict()) == list(reference.state_dict())
    for (name, expected), got in zip(
        reference.state_dict().items(), hand.state_dict().values(), strict=True
    ):
        assert torch.equal(got, expected), name
    assert all(not p.requires_grad for p in hand.parameters())


@pytest.mark.parametrize(
    "reference",
    [
        torch.nn.Conv1d(3, 4, 5),
        torch.nn.Conv1d(2, 4, 3, stride=2, padding="valid", dilation=2, groups=2, bias=False),
        torch.nn.Conv2d(3, 6, 5),
        torch.nn.Conv2d(4, 8, (3, 1), stride=(2, 1), padding=(1, 0), padding_mode="reflect"),
        torch.nn.Conv2d(4, 4, 3, padding="same", groups=4, padding_mode="circular"),
        torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        torch.nn.ConvTranspose2d(2, 2, 2, dilation=2, bias=False),
    ],
    ids=repr,
)
def test_repr_arguments_and_state_dict_are_torchs(reference: torch.nn.Module) -> None:
    hand = hn.from_torch(reference)
    assert repr(hand) == repr(reference)
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                 "output_padding", "groups", "padding_mode", "transposed"):  # fmt: skip
        assert getattr(hand, name) == getattr(reference, name), name
    assert list(hand.state_dict()) == list(reference.state_dict())
    arguments = _conv_arguments(reference)
    del arguments["device"], arguments["dtype"]
    fresh = type(hand)(**arguments)
    fresh.load_state_dict(reference.state_dict())
    for got, expected in zip(fresh.parameters(), reference.parameters(), strict=True):
        assert torch.equal(got, expected)
    assert repr(hn.to_torch(hand)) == repr(reference)


@pytest.mark.parametrize(
    ("arguments", "error", "fragment"),
    [
        ({"groups": 0}, ValueError, "groups must be a positive integer"),
        ({"in_channels": 3, "groups": 2}, ValueError, "in_channels must be divisible by groups"),
        ({"out_channels": 3, "groups": 2}, ValueError, "out_channels must be divisible"),
        ({"padding": "full"}, ValueError, "Invalid padding string 'full'"),
        ({"padding": "same", "stride": 2}, ValueError, "not supported for strided"),
        ({"padding_mode": "mirror"}, ValueError, "padding_mode must be one of"),
    ],
)
def test_bad_arguments_raise_torchs_errors(
    arguments: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    base = {"in_channels": 4, "out_channels": 4, "kernel_size": 3}
    assert_same_error(
        lambda: torch.nn.Conv2d(**{**base, **arguments}),
        lambda: hn.Conv2d(**{**base, **arguments}),
        error,
        fragment,
    )


def test_transposed_refuses_other_padding_modes() -> None:
    assert_same_error(
        lambda: torch.nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect"),
        lambda: hn.ConvTranspose2d(2, 2, 3, padding_mode="reflect"),
        ValueError,
        "zeros",
    )


@pytest.mark.parametrize(
    ("shape", "fragments"),
    [
        ((1, 4, 8, 8), ["Conv2d(3, 6", "3 channels", "4 channels", "(1, 4, 8, 8)"]),
        ((4, 8, 8), ["Conv2d(3, 6", "3 channels", "(4, 8, 8)"]),
        ((1, 3, 2, 2), ["Conv2d(3, 6", "(1, 3, 2, 2)", "smaller than the kernel"]),
        ((3, 8), ["Conv2d(3, 6", "(3, 8)", "(N, C, H, W)"]),
        ((1, 1, 3, 8, 8), ["Conv2d(3, 6", "(1, 1, 3, 8, 8)"]),
    ],
)
def test_bad_input_raises_torchs_error_naming_layer_and_shapes(
    shape: tuple[int, ...], fragments: list[str]
) -> None:
    reference = torch.nn.Conv2d(3, 6, 5)
    hand = hn.from_torch(reference)
    x = torch.randn(shape)
    assert_same_error(lambda: reference(x), lambda: hand(x), RuntimeError, *fragments)


def test_reflect_padding_larger_than_the_input_names_the_layer() -> None:
    reference = torch.nn.Conv2d(1, 1, 3, padding=3, padding_mode="reflect")
    hand = hn.from_torch(reference)
    x = torch.randn(1, 1, 3, 3)
    assert_same_error(lambda: reference(x), lambda: hand(x), RuntimeError, "Conv2d(1, 1")


def test_backward_skips_the_input_gradient_but_not_the_weights() -> None:
    hand = hn.Conv2d(2, 3, 3)
    hand(torch.randn(2, 2, 5, 5))
    assert hand.backward(torch.ones(2, 3, 3, 3), input_grad=False) is None
    assert hand.weight.grad is not None and hand.bias is not None and hand.bias.grad is not None  # noqa: PT018
    first = hand.weight.grad.clone()
    hand(torch.randn(2, 2, 5, 5))
    hand.backward(torch.ones(2, 3, 3, 3), input_grad=False)
    assert not torch.equal(hand.weight.grad, first), "gradients accumulate"


def test_works_under_inference_mode() -> None:
    hand = hn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
    with torch.inference_mode():
        out = hand(torch.randn(2, 2, 4, 4))
        grad = hand.backward(torch.ones_like(out))
    assert grad is not None and grad.shape == (2, 2, 4, 4)  # noqa: PT018
    assert hand.weight.grad is not None
    hand.weight.grad.add_(1)  # an ordinary tensor outside inference mode


@pytest.mark.parametrize(
    ("batch", "kernel", "padding", "dilation", "size"),
    [(1, (3, 3), (1, 1), (1, 1), (6, 7)), (11, (2, 3), (0, 2), (2, 1), (5, 4)),
     (9, (3, 1), (1, 0), (1, 2), (4, 6)), (3, (1, 1), (0, 0), (1, 1), (3, 3))],
)  # fmt: skip
def test_weight_gradient_by_taps_matches_autograd_and_the_convolution(
    batch: int,
    kernel: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    size: tuple[int, int],
) -> None:
    """The matrix-product path (wide layers) and the one-convolution path agree with autograd,
    over chunk boundaries (batch 9 and 11: eight images per product) and channels_last x."""
    x = torch.randn(batch, 3, *size, dtype=F64)
    weight = torch.randn(4, 3, *kernel, dtype=F64, requires_grad=True)
    y = torch.nn.functional.conv2d(x, weight, padding=padding, dilation=dilation)
    g = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, [weight], g)
    x_last = x.contiguous(memory_format=torch.channels_last)
    by_taps = conv_weight_grad_by_taps(x_last, g, weight.shape, padding, dilation)
    by_convolution = conv_weight_grad(x, g, weight.shape, (1, 1), padding, dilation, 1)
    assert_matches(by_taps, expected, "taps")
    assert_matches(by_convolution, expected, "convolution")


def test_wide_layers_take_the_taps_and_match_autograd() -> None:
    reference = torch.nn.Conv2d(32, 32, 3, padding=1, dtype=F64)
    x = torch.randn(2, 32, 32, 32, dtype=F64)
    g = torch.randn(2, 32, 32, 32, dtype=F64)
    assert _taps_are_faster(x, g, reference.weight.shape, (1, 1), 1)
    assert not _taps_are_faster(x, g, reference.weight.shape, (2, 2), 1)
    assert not _taps_are_faster(
        x[:, :, :16, :16], g[:, :, :16, :16], reference.weight.shape, (1, 1), 1
    )
    compare_with_torch(reference, x)
