"""Convolution layers: Conv1d, Conv2d and ConvTranspose2d, with torch.nn's arguments and names.

The arithmetic and its derivation are in :mod:`handgrad.nn.functional.conv`: the input gradient
of a convolution is the transposed convolution of the output gradient, the weight gradient
the correlation of the input with the output gradient. These classes check their input, keep
what the backward needs and hand the parameter gradients to ``accumulate_grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from handgrad.nn.convert import register_conversion
from handgrad.nn.functional import conv as F
from handgrad.nn.functional import per_sample as P
from handgrad.nn.gradients import accumulate_grad
from handgrad.nn.module import Module
from handgrad.nn.per_sample import FactoredGradSample, GradSample


def _tuple(value: int | Sequence[int], n: int, name: str, owner: str) -> tuple[int, ...]:
    """``value`` repeated n times, or ``value`` itself as a tuple of n ints (torch's _pair)."""
    if isinstance(value, int):
        return (value,) * n
    values = tuple(value)
    if len(values) != n or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{owner}: {name} must be an int or {n} ints, got {value!r}")
    return values


def kaiming_uniform_bound(fan_in: int) -> float:
    """The bound of torch's default weight draw, ``kaiming_uniform_(w, a=√5)``: U(−b, b) with
    b = √3 · gain/√fan_in and gain = √(2/(1 + a²)) — that is, b = 1/√fan_in — written as
    torch computes it so that the same seed gives the same bits."""
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    return math.sqrt(3.0) * (gain / math.sqrt(fan_in))


class _ConvNd(Module):
    """What Conv1d, Conv2d and ConvTranspose2d share: arguments, parameters, initialisation."""

    _spatial = 2  # spatial dimensions: 1 or 2
    _transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        padding: str | int | Sequence[int],
        dilation: int | Sequence[int],
        output_padding: int | Sequence[int],
        groups: int,
        bias: bool,
        padding_mode: str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        name, n = type(self).__name__, self._spatial
        for what, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: {what} must be a non-negative int, got {value!r}")
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        self.kernel_size = _tuple(kernel_size, n, "kernel_size", name)
        self.stride = _tuple(stride, n, "stride", name)
        self.dilation = _tuple(dilation, n, "dilation", name)
        self.output_padding = _tuple(output_padding, n, "output_padding", name)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}"
                )
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding: str | tuple[int, ...] = padding
        else:
            self.padding = _tuple(padding, n, "padding", name)
        if padding_mode not in F.PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {set(F.PADDING_MODES)}, "
                f"but got padding_mode='{padding_mode}'"
            )
        if self._transposed and padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {name}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.transposed = self._transposed
        self.groups = groups
        self.padding_mode = padding_mode
        if self._transposed:
            shape = (in_channels, out_channels // groups, *self.kernel_size)
        else:
            shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = torch.nn.Parameter(
            torch.empty(shape, device=device, dtype=dtype), requires_grad=False
        )
        self.bias: torch.nn.Parameter | None
        if bias:
            self.bias = torch.nn.Parameter(
                torch.empty(out_channels, device=device, dtype=dtype), requires_grad=False
            )
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def _padding_pairs(self) -> tuple[tuple[int, int], ...]:
        """(before, after) per spatial dimension: "same" puts the odd one after, as torch."""
        if self.padding == "valid":
            return ((0, 0),) * self._spatial
        if self.padding == "same":
            totals = (d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True))
            return tuple((total // 2, total - total // 2) for total in totals)
        assert not isinstance(self.padding, str)
        return tuple((p, p) for p in self.padding)

    def reset_parameters(self) -> None:
        """Draw the weight, then the bias, as torch.nn's convolutions do (same seed, same bits):
        w ~ U(±1/√fan_in) by ``kaiming_uniform_(a=√5)``, b ~ U(±1/√fan_in), with
        fan_in = weight.shape[1] · Π kernel_size."""
        fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
        with torch.no_grad():
            if self.weight.numel() > 0:  # torch skips an empty weight without drawing
                bound = kaiming_uniform_bound(fan_in)
                self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                bias_bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                self.bias.uniform_(-bias_bound, bias_bound)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        text += f", stride={self.stride}"
        if self.padding != (0,) * len(self.padding):
            text += f", padding={self.padding}"
        if self.dilation != (1,) * self._spatial:
            text += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self._spatial:
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text

    # ------------------------------------------------------------------ input checks

    def _batched(self, input: object) -> tuple[Tensor, bool]:
        """(input with a batch axis, whether one was added): checks it as torch's kernel
        would, raising its exception types with messages that name this layer and shapes."""
        x = self._check_tensor(input)
        n = self._spatial
        if x.dim() not in (n + 1, n + 2):
            axes = "L" if n == 1 else "H, W"
            raise RuntimeError(
                f"{self!r}: expected an input of shape (N, C, {axes}) or unbatched "
                f"(C, {axes}), got {x.dim()}-D input of shape {tuple(x.shape)}"
            )
        unbatched = x.dim() == n + 1
        channels = x.shape[0 if unbatched else 1]
        if channels != self.in_channels:
            raise RuntimeError(
                f"{self!r}: expected an input with {self.in_channels} channels, got "
                f"{channels} channels in an input of shape {tuple(x.shape)}"
            )
        if unbatched:
            x = x.unsqueeze(0)
        return x, unbatched

    def _run(self, kernel: Any, x: Tensor, *args: Any) -> tuple[Tensor, Any]:
        """``kernel(x, *args)``, with torch's RuntimeErrors re-raised naming this layer."""
        try:
            return kernel(x, *args)
        except RuntimeError as error:
            raise RuntimeError(
                f"{self!r} on an input of shape {tuple(x.shape)}: {error}"
            ) from error

    def _check_batched_for_per_sample(self, unbatched: bool) -> None:
        if unbatched:
            raise ValueError(
                f"{self!r}: per-sample gradients need a batch dimension; the input was unbatched"
            )

    @staticmethod
    def _per_sample_dict(
        left: Tensor, right: Tensor, groups: int, shape: torch.Size, grad_output: Tensor,
        has_bias: bool,
    ) -> dict[str, GradSample]:  # fmt: skip
        """{weight: Σ_l left_l right_lᵀ per example (factored for one group), bias: Σ g}."""
        grads: dict[str, GradSample]
        if groups == 1:
            grads = {"weight": FactoredGradSample(left, right, shape)}
        else:
            grouped = P.grouped_grad_sample(left, right, groups)
            grads = {"weight": grouped.view(len(left), *shape)}
        if has_bias:
            grads["bias"] = grad_output.flatten(2).sum(2)
        return grads

    def _accumulate(self, ctx_params: tuple[Tensor, Tensor | None], grads: tuple[Any, ...]) -> None:
        weight, bias = ctx_params
        _, grad_weight, grad_bias = grads
        accumulate_grad(weight, grad_weight)
        if bias is not None and grad_bias is not None:
            accumulate_grad(bias, grad_bias)

    # ------------------------------------------------------------------ forward and backward

    # The kernel's backward: (grad_x, grad_w, grad_b) from (grad_output, ctx, input_grad).
    _kernel_backward: Callable[[Tensor, Any, bool], tuple[Any, ...]]

    def _finish_forward(self, out: Tensor, ctx: Any, unbatched: bool) -> Tensor:
        """Remember what backward needs; the output without its batch axis where the input
        had none."""
        if unbatched:
            out = out.squeeze(0)
        self._remember((ctx, (self.weight, self.bias), unbatched), out)
        return out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx, params, unbatched = self._recall(grad_output)
        grad = grad_output.unsqueeze(0) if unbatched else grad_output
        grads = self._kernel_backward(grad, ctx, input_grad)
        self._accumulate(params, grads)
        grad_x = grads[0]
        return grad_x.squeeze(0) if unbatched and grad_x is not None else grad_x


class _Conv(_ConvNd):
    """y = conv(x, w) + b (see :mod:`handgrad.nn.functional.conv` for the gradients).

    Conv1d and Conv2d share torch's constructor signature (no ``output_padding``).
    """

    _kernel_backward = staticmethod(F.conv_backward)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, 0, groups,
            bias, padding_mode, device, dtype,
        )  # fmt: skip

    def _check_size(self, x: Tensor) -> None:
        """RuntimeError when the padded input is smaller than the (dilated) kernel."""
        pairs = self._padding_pairs
        for axis in range(self._spatial):
            size = x.shape[2 + axis] + sum(pairs[axis])
            extent = self.dilation[axis] * (self.kernel_size[axis] - 1) + 1
            if size < extent:
                raise RuntimeError(
                    f"{self!r}: input of shape {tuple(x.shape)} is smaller than the kernel: "
                    f"padded size {size} along axis {2 + axis}, dilated kernel size {extent}"
                )

    def forward(self, input: Tensor) -> Tensor:
        x, unbatched = self._batched(input)
        self._check_size(x)
        out, ctx = self._run(
            F.conv_forward,
            x,
            self.weight,
            self.bias,
            self.stride,
            self._padding_pairs,
            self.dilation,
            self.groups,
            self.padding_mode,
        )
        return self._finish_forward(out, ctx, unbatched)

    def per_sample_grads(self, grad_output: Tensor, ctx: Any) -> dict[str, GradSample]:
        """dW_i = Σ_l g_{i,l} u_{i,l}ᵀ over output positions l, u_{i,l} the input window
        that position sees (factored; per group when groups > 1), db_i = Σ_l g_{i,l}."""
        (x_conv, weight, has_bias, geometry, _), _, unbatched = ctx
        self._check_batched_for_per_sample(unbatched)
        stride, padding, dilation, groups = geometry
        left, right = P.conv_grad_sample_factors(
            x_conv, grad_output, weight.shape[2:], stride, padding, dilation
        )
        return self._per_sample_dict(left, right, groups, weight.shape, grad_output, has_bias)


class Conv1d(_Conv):
    """1-D convolution over (N, C_in, L) or (C_in, L), as torch.nn.Conv1d:
    y[n, o, t] = b[o] + Σ_c Σ_i w[o, c, i] · x_pad[n, c, t·s + i·d] (c over o's group)."""

    _spatial = 1


class Conv2d(_Conv):
    """2-D convolution over (N, C_in, H, W) or (C_in, H, W), as torch.nn.Conv2d:
    y[n, o, t, u] = b[o] + Σ_c Σ_{i,j} w[o, c, i, j] · x_pad[n, c, t·s₀ + i·d₀, u·s₁ + j·d₁]
    (c over o's group). ``groups=in_channels`` is a depthwise convolution."""

    _spatial = 2


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution, as torch.nn.ConvTranspose2d: the adjoint of Conv2d with the
    same weight, stride, padding, dilation and groups (each input value scatters x · w over a
    window of the output). Output size (H − 1)s − 2p + d(k − 1) + 1 + output_padding, or the
    ``output_size`` given to forward. The weight has shape (C_in, C_out/groups, kH, kW)."""

    _spatial = 2
    _transposed = True
    _kernel_backward = staticmethod(F.conv_transpose_backward)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        output_padding: int | Sequence[int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | Sequence[int] = 1,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be ints, got {padding!r}")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding,
            groups, bias, padding_mode, device, dtype,
        )  # fmt: skip

    def _output_padding(self, x: Tensor, output_size: Sequence[int] | None) -> tuple[int, ...]:
        """``output_padding``, or the one that gives ``output_size`` (torch's rule: any size
        from the smallest, with no extra, up to stride − 1 more)."""
        if output_size is None:
            return self.output_padding
        sizes = list(output_size)
        if len(sizes) == 4 or (len(sizes) == 3 and x.dim() == 3):
            sizes = sizes[-2:]
        if len(sizes) != 2:
            raise ValueError(
                f"{self!r}: output_size must have 2 (or {x.dim()}) elements, got {output_size}"
            )
        assert isinstance(self.padding, tuple)
        smallest = [
            (x.shape[-2 + i] - 1) * self.stride[i]
            - 2 * self.padding[i]
            + self.dilation[i] * (self.kernel_size[i] - 1)
            + 1
            for i in range(2)
        ]
        largest = [smallest[i] + self.stride[i] - 1 for i in range(2)]
        if any(not smallest[i] <= sizes[i] <= largest[i] for i in range(2)):
            raise ValueError(
                f"requested an output size of {sizes}, but valid sizes range "
                f"from {smallest} to {largest} (for an input of {tuple(x.shape[-2:])})"
            )
        return tuple(sizes[i] - smallest[i] for i in range(2))

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        x, unbatched = self._batched(input)
        assert isinstance(self.padding, tuple)
        out, ctx = self._run(
            F.conv_transpose_forward,
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self._output_padding(x, output_size),
            self.groups,
            self.dilation,
        )
        return self._finish_forward(out, ctx, unbatched)

    def per_sample_grads(self, grad_output: Tensor, ctx: Any) -> dict[str, GradSample]:
        """The transposed convolution's weight gradient is the convolution's with input and
        output exchanged: dW_i = Σ_t x_{i,t} v_{i,t}ᵀ over input positions t, v_{i,t} the
        window of g_i that x_{i,t} was scattered to (factored; per group when groups > 1);
        db_i = Σ g_i."""
        (x, weight, has_bias, geometry), _, unbatched = ctx
        self._check_batched_for_per_sample(unbatched)
        stride, padding, dilation, groups = geometry
        # As the convolution of g (input) with x (output): (N, L, C_in) of x and
        # (N, L, C_out·k) of g's windows, over the input's L positions.
        inputs, windows = P.conv_grad_sample_factors(
            grad_output, x, weight.shape[2:], stride, padding, dilation
        )
        return self._per_sample_dict(inputs, windows, groups, weight.shape, grad_output, has_bias)


def _conv_arguments(module: Any) -> dict[str, Any]:
    """Constructor arguments read from a convolution of either library (same attributes)."""
    arguments = {
        "in_channels": module.in_channels,
        "out_channels": module.out_channels,
        "kernel_size": module.kernel_size,
        "stride": module.stride,
        "padding": module.padding,
        "dilation": module.dilation,
        "groups": module.groups,
        "bias": module.bias is not None,
        "padding_mode": module.padding_mode,
        "device": "meta",  # no initial weights drawn: the source's are copied in
        "dtype": module.weight.dtype,
    }
    if module.transposed:
        arguments["output_padding"] = module.output_padding
    return arguments


register_conversion(torch.nn.Conv1d, Conv1d, _conv_arguments)
register_conversion(torch.nn.Conv2d, Conv2d, _conv_arguments)
register_conversion(torch.nn.ConvTranspose2d, ConvTranspose2d, _conv_arguments)
