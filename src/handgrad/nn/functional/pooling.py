"""Pooling kernels: max, average and adaptive average pooling over 2-D windows, and gradients.

Each output value is a function of one window of its input plane (n, c): a maximum or a mean.
Every gradient below sends g[n, c, t] back to the inputs of window t, so it is a scatter: to
the arg-max for max pooling, spread evenly for the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as TF
from torch import Tensor

from handgrad.nn.functional._common import Ctx


def max_pool2d_forward(
    x: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool = False,
) -> tuple[Tensor, Ctx]:
    """y[n, c, t] = max over window t of x[n, c] (padding counts as −∞), x of shape (N, C, H, W).

    torch's kernel also returns where each maximum was found: the flat index h·W + w in the
    plane of the first maximum in the window (or of a NaN) — exactly the one input that
    receives the gradient, and all the backward needs.
    """
    out, indices = TF.max_pool2d(
        x, tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation),
        ceil_mode=ceil_mode, return_indices=True,
    )  # fmt: skip
    # A window can lie wholly in the padding (ceil_mode, dilation): its output is −∞, it
    # depends on no input, and torch's index for it points outside the plane.
    spans = [
        _windows_with_inputs(x.shape[-2 + i], out.shape[-2 + i], kernel_size[i], stride[i],
                             padding[i], dilation[i])
        for i in range(2)
    ]  # fmt: skip
    live = None
    if not all(all(rows) for rows in spans):
        rows, cols = (torch.tensor(span, device=x.device) for span in spans)
        live = rows[:, None] & cols
    return out, (indices, x.shape, live)


def _windows_with_inputs(
    size: int, outputs: int, kernel: int, stride: int, padding: int, dilation: int
) -> list[bool]:
    """For each window of one dimension: whether any of its k positions is an input."""
    return [
        any(0 <= t * stride - padding + i * dilation < size for i in range(kernel))
        for t in range(outputs)
    ]


def max_pool2d_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx[n, c, u] = Σ_{t: argmax(t) = u} g[n, c, t].

    y[t] = x[argmax(t)], so ∂y[t]/∂x[u] = [u = argmax(t)]: each window's gradient goes to
    the input that was its maximum (to the first one where several tie, as the forward chose
    it), and an input that is the maximum of several overlapping windows receives their sum
    (a scatter-add over the flattened planes). A window wholly in the padding has no input
    to send its gradient to: it is dropped.
    """
    indices, shape, live = ctx
    if live is not None:
        grad_out = grad_out.where(live, 0.0)
        indices = indices.where(live, 0)
    planes = grad_out.shape[:-2]
    grad_x = grad_out.new_zeros((*planes, shape[-2] * shape[-1]))
    grad_x.scatter_add_(-1, indices.flatten(-2), grad_out.flatten(-2))
    return grad_x.view(shape)


# ----------------------------------------------------------------------------- average


def _window_counts(
    size: int, outputs: int, kernel: int, stride: int, padding: int
) -> tuple[list[int], list[int]]:
    """For each window t of one dimension: (its length within the padded input, its length
    within the input itself), the two divisors torch's average pooling chooses between."""
    with_padding, without = [], []
    for t in range(outputs):
        start = t * stride - padding
        end = min(start + kernel, size + padding)  # a ceil_mode window may run past the pad
        with_padding.append(end - start)
        without.append(min(end, size) - max(start, 0))
    return with_padding, without


def avg_pool2d_forward(
    x: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> tuple[Tensor, Ctx]:
    """y[n, c, t] = Σ_{window t} x[n, c] / D_t, x of shape (N, C, H, W).

    D_t is ``divisor_override`` if given, else the window's size counting the zero padding
    (``count_include_pad``) or not; a ``ceil_mode`` window that runs past the padding counts
    only what it covers. Runs torch's kernel; D is computed here for the backward.
    """
    kernel, steps, pads = tuple(kernel_size), tuple(stride), tuple(padding)
    out = TF.avg_pool2d(x, kernel, steps, pads, ceil_mode, count_include_pad, divisor_override)
    if divisor_override is not None:
        divisor: Tensor | int = divisor_override
    else:
        counts = [
            _window_counts(x.shape[-2 + i], out.shape[-2 + i], kernel[i], steps[i], pads[i])
            for i in range(2)
        ]
        pick = 0 if count_include_pad else 1
        rows = torch.tensor(counts[0][pick], dtype=x.dtype, device=x.device)
        cols = torch.tensor(counts[1][pick], dtype=x.dtype, device=x.device)
        divisor = rows[:, None] * cols  # (H_out, W_out): window sizes are products
    return out, (x.shape, kernel, steps, pads, divisor)


def avg_pool2d_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx[n, c, u] = Σ_{t: u ∈ window t} g[n, c, t] / D_t.

    Each window spreads g/D evenly over its inputs: the transposed convolution of g/D with a
    kernel of ones (one per channel, ``groups=C``), which adds each g[t]/D_t to every input
    position of window t. That is the gradient over the padded input, window starts at t·s;
    dropping the padding (and any positions a ceil_mode window ran past) leaves dx.
    """
    shape, kernel, stride, padding, divisor = ctx
    scaled = grad_out / divisor
    planes = scaled.shape[:-2]
    channels = planes.numel()
    flat = scaled.reshape(1, channels, *scaled.shape[-2:])  # every plane a channel of its own
    ones = scaled.new_ones((channels, 1, *kernel))
    padded = TF.conv_transpose2d(flat, ones, stride=stride, groups=channels)
    # padded covers (H_out − 1)s + k positions from −p; dx is [0, H) of the same axis.
    height, width = shape[-2:]
    short_rows = max(padding[0] + height - padded.shape[2], 0)  # inputs after the last window
    short_cols = max(padding[1] + width - padded.shape[3], 0)
    if short_rows or short_cols:
        padded = TF.pad(padded, (0, short_cols, 0, short_rows))
    grad_x = padded[..., padding[0] : padding[0] + height, padding[1] : padding[1] + width]
    return grad_x.reshape(shape)


# ----------------------------------------------------------------------------- adaptive


def adaptive_pool_matrix(
    size: int, outputs: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """A (outputs, size) matrix whose row t averages window t = [⌊tH/T⌋, ⌈(t+1)H/T⌉)."""
    matrix = torch.zeros(outputs, size, dtype=dtype, device=device)
    for t in range(outputs):
        start = (t * size) // outputs
        end = -((-(t + 1) * size) // outputs)  # ceil((t + 1)·size / outputs)
        matrix[t, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool2d_forward(x: Tensor, output_size: Sequence[int]) -> tuple[Tensor, Ctx]:
    """y[n, c] = A_h x[n, c] A_wᵀ: window t of a dimension of length H is
    [⌊tH/T⌋, ⌈(t+1)H/T⌉), and A's row t averages it. Runs torch's kernel."""
    out = TF.adaptive_avg_pool2d(x, (output_size[0], output_size[1]))
    height, width = x.shape[-2:]
    rows = adaptive_pool_matrix(height, out.shape[-2], x.dtype, x.device)
    cols = adaptive_pool_matrix(width, out.shape[-1], x.dtype, x.device)
    return out, (rows, cols)


def adaptive_avg_pool2d_backward(grad_out: Tensor, ctx: Ctx) -> Tensor:
    """dx[n, c] = A_hᵀ g[n, c] A_w: y is linear in x through the two averaging matrices."""
    rows, cols = ctx
    return rows.t() @ grad_out @ cols
