"""Pooling layers: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d, with torch.nn's arguments.

Inputs are (N, C, H, W) or unbatched (C, H, W). The kernels and their gradients are in
:mod:`handgrad.nn.functional.pooling`: max pooling sends each window's gradient to the input
that was its maximum (the first, where several tie — where torch sends it), average pooling
spreads it evenly over the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from handgrad.nn.convert import register_conversion
from handgrad.nn.functional import pooling as F
from handgrad.nn.module import Module

IntOrPair = int | Sequence[int]


def _pair(value: IntOrPair, name: str, owner: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    values = tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{owner}: {name} must be an int or 2 ints, got {value!r}")
    return (values[0], values[1])


class _Pool2d(Module):
    """Shared by the 2-D pools: the window's settings, input checks and the unbatched case."""

    def _window(
        self, kernel_size: IntOrPair, stride: IntOrPair | None, padding: IntOrPair,
        dilation: IntOrPair | None = None,
    ) -> None:  # fmt: skip
        """Keep the window's settings as given (an int stays an int), as torch keeps them:
        extra_repr shows them so; stride defaults to kernel_size, dilation (max pooling's)
        is kept when given. Each must be an int or 2 ints (ValueError naming it)."""
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        names = ["kernel_size", "stride", "padding"]
        if dilation is not None:
            self.dilation = dilation
            names.append("dilation")
        self._pairs(*names)

    def _pairs(self, *names: str) -> list[tuple[int, int]]:
        """The named window settings as (height, width) pairs."""
        return [_pair(getattr(self, name), name, type(self).__name__) for name in names]

    def _planes(self, input: object) -> Tensor:
        """The input as (planes…, H, W), after checking it is 3-D or 4-D (RuntimeError, the
        type torch raises, naming this layer and the shape)."""
        x = self._check_tensor(input)
        if x.dim() not in (3, 4):
            raise RuntimeError(
                f"{self!r}: expected an input of shape (N, C, H, W) or unbatched (C, H, W), "
                f"got {x.dim()}-D input of shape {tuple(x.shape)}"
            )
        return x

    def _run(self, kernel: Any, x: Tensor, *args: Any) -> tuple[Tensor, Any]:
        """``kernel(x, *args)`` with torch's RuntimeErrors (input smaller than the window,
        padding larger than half the window) re-raised naming this layer and the shape."""
        try:
            return kernel(x, *args)
        except RuntimeError as error:
            raise RuntimeError(
                f"{self!r} on an input of shape {tuple(x.shape)}: {error}"
            ) from error


class MaxPool2d(_Pool2d):
    """y = the maximum of each (dilated) window, padding counting as −∞; as torch.nn.MaxPool2d.

    Backward: dx[u] = Σ of g over the windows whose maximum was x[u] (the first maximum of a
    window, where several tie, as torch's forward picks it). ``return_indices=True`` makes
    forward return (output, indices) as torch does; backward takes the output's gradient.
    """

    def __init__(
        self,
        kernel_size: IntOrPair,
        stride: IntOrPair | None = None,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self._window(kernel_size, stride, padding, dilation)
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )

    def forward(self, input: Tensor) -> Any:
        x = self._planes(input)
        out, ctx = self._run(
            F.max_pool2d_forward,
            x,
            *self._pairs("kernel_size", "stride", "padding", "dilation"),
            self.ceil_mode,
        )
        self._remember(ctx, out)
        return (out, ctx[0]) if self.return_indices else out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.max_pool2d_backward(grad_output, ctx) if input_grad else None


class AvgPool2d(_Pool2d):
    """y = the mean of each window, as torch.nn.AvgPool2d: the sum over the window divided by
    ``divisor_override``, or by the window's size counting the zero padding
    (``count_include_pad``, the default) or not.

    Backward: each window's g/D is spread evenly over its inputs (a transposed convolution
    with a kernel of ones).
    """

    def __init__(
        self,
        kernel_size: IntOrPair,
        stride: IntOrPair | None = None,
        padding: IntOrPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self._window(kernel_size, stride, padding)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, input: Tensor) -> Tensor:
        x = self._planes(input)
        out, ctx = self._run(
            F.avg_pool2d_forward,
            x,
            *self._pairs("kernel_size", "stride", "padding"),
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )
        self._remember(ctx, out)
        return out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.avg_pool2d_backward(grad_output, ctx) if input_grad else None


class AdaptiveAvgPool2d(_Pool2d):
    """Average pooling to a fixed output size (H_out, W_out), as torch.nn.AdaptiveAvgPool2d:
    window t of a dimension of length H is [⌊tH/T⌋, ⌈(t+1)H/T⌉). ``output_size`` is an int,
    or a pair in which None keeps that dimension's input size.

    Backward: dx = A_hᵀ g A_w, with A the (T, H) matrices that average each window.
    """

    def __init__(self, output_size: int | Sequence[int | None] | None) -> None:
        super().__init__()
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def _target(self, x: Tensor) -> tuple[int, int]:
        sizes: Sequence[int | None]
        if self.output_size is None or isinstance(self.output_size, int):
            sizes = (self.output_size, self.output_size)
        else:
            sizes = tuple(self.output_size)
        if len(sizes) != 2:
            raise ValueError(
                f"{self!r}: output_size must be an int or 2 values, got {self.output_size!r}"
            )
        height = x.shape[-2] if sizes[0] is None else sizes[0]
        width = x.shape[-1] if sizes[1] is None else sizes[1]
        return height, width

    def forward(self, input: Tensor) -> Tensor:
        x = self._planes(input)
        out, ctx = self._run(F.adaptive_avg_pool2d_forward, x, self._target(x))
        self._remember(ctx, out)
        return out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.adaptive_avg_pool2d_backward(grad_output, ctx) if input_grad else None


register_conversion(
    torch.nn.MaxPool2d,
    MaxPool2d,
    lambda m: {
        "kernel_size": m.kernel_size,
        "stride": m.stride,
        "padding": m.padding,
        "dilation": m.dilation,
        "return_indices": m.return_indices,
        "ceil_mode": m.ceil_mode,
    },
)
register_conversion(
    torch.nn.AvgPool2d,
    AvgPool2d,
    lambda m: {
        "kernel_size": m.kernel_size,
        "stride": m.stride,
        "padding": m.padding,
        "ceil_mode": m.ceil_mode,
        "count_include_pad": m.count_include_pad,
        "divisor_override": m.divisor_override,
    },
)
register_conversion(
    torch.nn.AdaptiveAvgPool2d, AdaptiveAvgPool2d, lambda m: {"output_size": m.output_size}
)
