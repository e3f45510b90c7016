"""Convolution kernels: convolution and transposed convolution, 1-D and 2-D, and their gradients.

Notation for one spatial dimension (each spatial dimension works the same way, independently):
input x of length H, kernel w of length k, stride s, padding p, dilation d. The convolution
(a cross-correlation, as in every deep-learning library) is

    y[n, o, t] = b[o] + Σ_c Σ_i w[o, c, i] · x_pad[n, c, t·s + i·d],    t = 0 … H_out − 1,

with H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1 and x_pad the input with p zeros on each
side; with groups G, output channel o only sees the input channels of its group.

Its gradients, from L = Σ g ⊙ y (g = dL/dy):

- **bias**: db[o] = Σ_{n,t} g[n, o, t].
- **input**: x_pad[n, c, u] meets g[n, o, t] through w[o, c, i] wherever u = t·s + i·d, so

      dx_pad[n, c, u] = Σ_o Σ_{t, i: t·s + i·d = u} g[n, o, t] · w[o, c, i],

  which is, by definition, the *transposed* convolution of g with the same weight, stride,
  dilation and groups (it scatters each g[t] back through the kernel). Dropping the p padded
  positions on each side is the transposed convolution's own ``padding=p``; its
  ``output_padding`` restores the (H + 2p − d(k − 1) − 1) mod s input positions at the end that
  no window reached (their gradient is 0).
- **weight**: dw[o, c, i] = Σ_{n,t} g[n, o, t] · x_pad[n, c, t·s + i·d]: for each kernel tap i,
  the correlation of the output gradient with the input. Read as a function of i it is itself
  a convolution in which x plays the input and g the kernel — with the roles of stride and
  dilation swapped (t, the kernel index now, moves in steps of s; i, the output index now, in
  steps of d) and the batch index n summed like a channel (:func:`conv_weight_grad`).

The transposed convolution z = convᵀ(x, w) is the adjoint of the convolution: ⟨conv(u, w), x⟩ =
⟨u, convᵀ(x, w)⟩ for every u, so its gradients are the same three formulas with the roles of
input and output exchanged (:func:`conv_transpose_backward`).

Padding modes other than zeros pad first (``reflect``, ``replicate``, ``circular``): the
gradient of the padded copy is folded back onto the input positions each copy came from
(:func:`pad_backward`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as TF
from torch import Tensor

from handgrad.nn.functional._common import Ctx

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# torch's kernels by number of spatial dimensions.
_CONV: dict[int, Callable[..., Tensor]] = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}
_CONV_TRANSPOSE: dict[int, Callable[..., Tensor]] = {
    1: TF.conv_transpose1d,
    2: TF.conv_transpose2d,
    3: TF.conv_transpose3d,
}


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1: the number of windows that fit."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ----------------------------------------------------------------------------- padding


def pad_forward(x: Tensor, pads: Sequence[tuple[int, int]], mode: str) -> Tensor:
    """x padded by (before, after) on each spatial dimension, as ``torch.nn.functional.pad``.

    ``mode`` is a convolution padding mode: ``zeros`` pads with zeros, ``reflect`` mirrors
    without repeating the edge, ``replicate`` repeats the edge, ``circular`` wraps around.
    """
    flat = [amount for pair in reversed(pads) for amount in pair]  # F.pad: last dim first
    return TF.pad(x, flat, mode="constant" if mode == "zeros" else mode)


def pad_source_positions(size: int, before: int, after: int, mode: str) -> Tensor:
    """For each position u = −before … size + after − 1 of a padded dimension, the input
    position its value is copied from (``zeros``: −1 where it is a zero)."""
    positions = torch.arange(-before, size + after)
    if mode == "reflect":  # … 2 1 | 0 1 2 … H−1 | H−2 H−3 …
        positions = positions.abs()
        return torch.where(positions >= size, 2 * (size - 1) - positions, positions)
    if mode == "replicate":  # … 0 0 | 0 1 2 … H−1 | H−1 H−1 …
        return positions.clamp(0, size - 1)
    if mode == "circular":  # … H−2 H−1 | 0 1 … H−1 | 0 1 …
        return positions.remainder(size)
    return torch.where((positions >= 0) & (positions < size), positions, -1)


def pad_backward(
    grad: Tensor, shape: Sequence[int], pads: Sequence[tuple[int, int]], mode: str
) -> Tensor:
    """dx from the gradient of the padded copy: each padded position's gradient is added to
    the input position it was copied from (``zeros``: the padding is cut off).

    x_pad[u] = x[src(u)] ⇒ dx[v] = Σ_{u: src(u) = v} g[u], one spatial dimension at a time
    (the padding of one dimension copies whole slices of the others).
    """
    first = len(shape) - len(pads)  # index of the first spatial dimension
    for axis, (before, after) in enumerate(pads):
        if before == after == 0:
            continue
        dim = first + axis
        size = shape[dim]
        if mode == "zeros":
            grad = grad.narrow(dim, before, size)
            continue
        source = pad_source_positions(size, before, after, mode).to(grad.device)
        folded_shape = list(grad.shape)
        folded_shape[dim] = size
        grad = grad.new_zeros(folded_shape).index_add_(dim, source, grad)
    return grad


# ----------------------------------------------------------------------------- convolution


def conv_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int = 1,
    padding_mode: str = "zeros",
) -> tuple[Tensor, Ctx]:
    """y = conv(x, w) + b for x of shape (N, C, *spatial), w of shape (O, C/G, *kernel).

    ``padding`` is one (before, after) pair per spatial dimension (torch's ``"same"`` is
    (⌊d(k−1)/2⌋, ⌈d(k−1)/2⌉)); symmetric zero padding is left to the convolution itself,
    anything else pads a copy first, as torch.nn.Conv2d does. Runs torch's convolution.
    """
    spatial = weight.dim() - 2
    symmetric = all(before == after for before, after in padding)
    if padding_mode == "zeros" and symmetric:
        conv_padding = tuple(before for before, _ in padding)
        source_pads = None
        x_conv = x
    else:
        conv_padding = (0,) * spatial
        source_pads = (tuple(padding), padding_mode, tuple(x.shape))
        x_conv = pad_forward(x, padding, padding_mode)
    stride, dilation = tuple(stride), tuple(dilation)
    out = _CONV[spatial](x_conv, weight, bias, stride, conv_padding, dilation, groups)
    geometry = (stride, conv_padding, dilation, groups)
    return out, (x_conv, weight, bias is not None, geometry, source_pads)


def conv_backward(
    grad_out: Tensor, ctx: Ctx, input_grad: bool = True
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """(dx, dw, db) of y = conv(x, w) + b (module docstring):

    dx = convᵀ(g, w) (padding folded back), dw = x ⋆ g (:func:`conv_weight_grad`),
    db = Σ_{n, spatial} g. dx is None when ``input_grad`` is False; db when there is no bias.
    """
    x_conv, weight, has_bias, geometry, source_pads = ctx
    stride, padding, dilation, groups = geometry
    grad_weight = conv_weight_grad(
        x_conv, grad_out, weight.shape, stride, padding, dilation, groups
    )
    grad_bias = _bias_grad(grad_out) if has_bias else None
    grad_x = None
    if input_grad:
        grad_x = conv_input_grad(grad_out, weight, x_conv.shape, stride, padding, dilation, groups)
        if source_pads is not None:
            pads, mode, shape = source_pads
            grad_x = pad_backward(grad_x, shape, pads, mode)
    return grad_x, grad_weight, grad_bias


def conv_input_grad(
    grad_out: Tensor,
    weight: Tensor,
    input_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """dx = convᵀ(g, w): the transposed convolution of the output gradient with the weight.

    Its ``output_padding`` (H + 2p − d(k − 1) − 1) mod s gives back the input positions past
    the last window, which receive no gradient.
    """
    spatial = weight.dim() - 2
    kernel = weight.shape[2:]
    extra = tuple(
        (input_shape[2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) % stride[i]
        for i in range(spatial)
    )
    return _CONV_TRANSPOSE[spatial](
        grad_out, weight, None, tuple(stride), tuple(padding), extra, groups, tuple(dilation)
    )


def conv_weight_grad(
    x: Tensor,
    grad_out: Tensor,
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """dw[o, c, i] = Σ_{n,t} g[n, o, t] · x_pad[n, c, t·s + i·d], as one convolution.

    Read i as the output position and t as the kernel position: dw is the convolution of x
    (stride d, dilation s — swapped — and the same padding) with g as the kernel, in which
    the batch index n is summed over like an input channel. So x becomes the input of shape
    (C/G, G·N, *spatial) (its channels are the "batch"), g the weight of shape
    (O, N, *spatial_out), with ``groups=G`` keeping each group's channels apart; the result,
    (C/G, O, *k′), is cut to the kernel size k (k′ ≥ k when the last window left input
    positions unused) and its first two axes swapped.

    Wide 2-D layers with stride 1 take :func:`conv_weight_grad_by_taps` instead (the same
    sums as matrix products, faster there: see its docstring).
    """
    if _taps_are_faster(x, grad_out, weight_shape, stride, groups):
        return conv_weight_grad_by_taps(x, grad_out, weight_shape, padding, dilation)
    spatial = len(weight_shape) - 2
    channels_per_group = weight_shape[1]
    if groups == 1:
        x_t = x.transpose(0, 1)  # (C, N, *sp)
    else:  # (N, G, Cg, *sp) -> (Cg, G, N, *sp) -> (Cg, G·N, *sp)
        x_t = x.unflatten(1, (groups, channels_per_group))
        x_t = x_t.permute(2, 1, 0, *range(3, x_t.dim())).flatten(1, 2)
    g_t = grad_out.transpose(0, 1)  # (O, N, *sp_out): group j's output channels see j's images
    correlation = _CONV[spatial](
        x_t, g_t, None, tuple(dilation), tuple(padding), tuple(stride), groups
    )
    cut = correlation[(slice(None), slice(None), *(slice(0, k) for k in weight_shape[2:]))]
    return cut.transpose(0, 1)


# Where the taps' matrix products beat the correlation as one convolution (measured: see
# conv_weight_grad_by_taps): both channel counts and the output's area at least these.
_TAPS_MIN_CHANNELS = 32
_TAPS_MIN_AREA = 1024
# Images per batched product in conv_weight_grad_by_taps (one at a time measured the same on
# one thread; a batch of them gives several threads work to share).
_TAPS_IMAGES = 8


def _taps_are_faster(
    x: Tensor, grad_out: Tensor, weight_shape: Sequence[int], stride: Sequence[int], groups: int
) -> bool:
    """Whether :func:`conv_weight_grad_by_taps` applies (2-D, stride 1, no groups) and is the
    faster of the two: wide layers (≥ 32 channels in and out) on large images (an output of
    at least 32 × 32 positions)."""
    return (
        len(weight_shape) == 4
        and groups == 1
        and all(s == 1 for s in stride)
        and min(weight_shape[0], weight_shape[1]) >= _TAPS_MIN_CHANNELS
        and grad_out.shape[2] * grad_out.shape[3] >= _TAPS_MIN_AREA
    )


def conv_weight_grad_by_taps(
    x: Tensor,
    grad_out: Tensor,
    weight_shape: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """dw of a 2-D convolution with stride 1 and no groups, one image and kernel tap at a time:

        dw[:, :, i, j] = Σ_n g[n] · x_pad[n, :, i·d₀ + t, j·d₁ + u]ᵀ   (a sum over t, u),

    a matrix product (O × H_out·W_out) · (H_out·W_out × C) per image and tap, accumulated in
    place (``addmm_``). The shifted window of x_pad needs no copy: with both images flattened
    row by row on x_pad's row length W_p (g padded with W_p − W_out zero columns, which
    multiply the values between rows), window (i, j) is the flat slice starting at
    i·d₀·W_p + j·d₁, a strided view the matrix product reads directly. The padded columns
    add (W_p − W_out)/W_out to the arithmetic (6% for 32 × 32 images, 3 × 3 kernels). Eight
    images at a time, copied into two small buffers: they stay in cache across the taps, the
    extra memory is eight images' rather than the batch's, and each batched product has
    enough images to share among threads.

    The same numbers as :func:`conv_weight_grad`, summed in another order. Measured on one
    core against torch's backward-weight kernel (thread time, minimum of 9, float32, 3 × 3,
    padding 1; taps / correlation as one convolution), (batch, C_in, C_out, size):
    (32, 64, 64, 32) 1.02 / 1.48, (8, 64, 64, 56) 0.99 / 1.08, (32, 128, 128, 16) 1.14 / 1.11,
    (32, 256, 256, 8) 1.10 / 0.85, (32, 16, 16, 32) 2.4 / 2.1: the taps for wide layers on
    large images, the convolution elsewhere (:func:`_taps_are_faster`).
    """
    out_channels, channels, kernel_h, kernel_w = weight_shape
    batch, _, height, width = x.shape
    out_h, out_w = grad_out.shape[2:]
    rows, row = height + 2 * padding[0], width + 2 * padding[1]  # x_pad's shape: H_p × W_p
    span = out_h * row  # an image of g laid on x_pad's rows
    # A few images at a time in two buffers, reused: x_pad flattened (with room after it for
    # the last tap's window) and g widened to W_p; their zeros are written once.
    chunk = min(batch, _TAPS_IMAGES)
    flat_x = x.new_zeros((chunk, channels, rows * row + (kernel_w - 1) * dilation[1]))
    inside_x = flat_x[:, :, : rows * row].view(chunk, channels, rows, row)
    inside_x = inside_x[:, :, padding[0] : padding[0] + height, padding[1] : padding[1] + width]
    flat_g = grad_out.new_zeros((chunk, out_channels, out_h, row))
    inside_g = flat_g[..., :out_w]
    flat_g = flat_g.view(chunk, out_channels, span)
    taps = x.new_zeros((kernel_h, kernel_w, out_channels, channels))
    for first in range(0, batch, chunk):
        count = min(chunk, batch - first)
        inside_x[:count].copy_(x[first : first + count])
        inside_g[:count].copy_(grad_out[first : first + count])
        for i in range(kernel_h):
            for j in range(kernel_w):
                start = i * dilation[0] * row + j * dilation[1]
                window = flat_x[:count, :, start : start + span]  # (n, C, span), a view
                taps[i, j] += torch.bmm(flat_g[:count], window.transpose(1, 2)).sum(0)
    return taps.permute(2, 3, 0, 1)


def _bias_grad(grad_out: Tensor) -> Tensor:
    """db[o] = Σ_{n, spatial} g[n, o, …]."""
    dims = [0, *range(2, grad_out.dim())]
    return grad_out.sum(dims)


# ----------------------------------------------------------------------------- transposed


def conv_transpose_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    groups: int,
    dilation: Sequence[int],
) -> tuple[Tensor, Ctx]:
    """z = convᵀ(x, w) + b for x of shape (N, C_in, *spatial), w of shape (C_in, C_out/G, *k).

    Each input value x[n, c, u] adds x · w[c, o, i] to z_full[n, o, u·s + i·d]; z is z_full
    without p positions on each side, and with ``output_padding`` extra positions at the end
    (H_out = (H − 1)s − 2p + d(k − 1) + 1 + output_padding). Runs torch's kernel.
    """
    spatial = weight.dim() - 2
    geometry = (tuple(stride), tuple(padding), tuple(dilation), groups)
    out = _CONV_TRANSPOSE[spatial](
        x, weight, bias, geometry[0], geometry[1], tuple(output_padding), groups, geometry[2]
    )
    return out, (x, weight, bias is not None, geometry)


def conv_transpose_backward(
    grad_out: Tensor, ctx: Ctx, input_grad: bool = True
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """(dx, dw, db) of z = convᵀ(x, w) + b.

    convᵀ(·, w) is the adjoint of conv(·, w) with the same geometry, so with g = dL/dz,
    L = ⟨g, convᵀ(x, w)⟩ = ⟨conv(g, w), x⟩:

    - dx = conv(g, w): the *forward* convolution of the gradient (cut to x's length when
      output_padding ≥ s made conv(g) one window longer);
    - dw = g ⋆ x: the weight gradient of a convolution whose input is g and whose output
      gradient is x (:func:`conv_weight_grad` with the roles exchanged; w's shape
      (C_in, C_out/G, k) is exactly that convolution's weight shape);
    - db = Σ_{n, spatial} g.
    """
    x, weight, has_bias, geometry = ctx
    stride, padding, dilation, groups = geometry
    spatial = weight.dim() - 2
    grad_weight = conv_weight_grad(grad_out, x, weight.shape, stride, padding, dilation, groups)
    grad_bias = _bias_grad(grad_out) if has_bias else None
    grad_x = None
    if input_grad:
        grad_x = _CONV[spatial](grad_out, weight, None, stride, padding, dilation, groups)
        if grad_x.shape[2:] != x.shape[2:]:
            grad_x = grad_x[(slice(None), slice(None), *(slice(0, n) for n in x.shape[2:]))]
    return grad_x, grad_weight, grad_bias
