"""What every kernel file shares: the ctx type, kept scalar operands, and the float32
arithmetic of float16/bfloat16 kernels."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

import torch
from torch import Tensor

Ctx = tuple[Any, ...]
"""What a forward hands to its backward."""

# dtypes in which a sum divided by a 0-d tensor of the same dtype holding the count is exactly
# torch's `sum / count` (the count is converted to the dtype once, either way).
_DIVIDE_BY_COUNT_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=256)
def _number(value: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """``value`` as a 0-d CPU tensor, made once and kept.

    torch turns a Python number operand into a 0-d float64 CPU tensor on every call, which
    costs as much as a small kernel. Multiplying a tensor of at least one dimension by this
    one gives the same bits (a 0-d operand changes neither the result's dtype nor how its
    value is converted); with a 0-d operand, pass that operand's dtype.
    """
    with torch.inference_mode(False):  # usable by autograd-recording callers too
        return torch.tensor(value, dtype=dtype)


def _operand(value: float, like: Tensor) -> Tensor:
    """:func:`_number` for a kernel on ``like`` (of at least one dimension): in ``like``'s dtype
    when that is float32 or float64 (kernels compute in it and round a number to it anyway,
    and an operand of another dtype measured ~1 µs slower per call), else float64."""
    dtype = like.dtype
    return _number(value, dtype if dtype in _DIVIDE_BY_COUNT_DTYPES else torch.float64)


# ----------------------------------------------------------------------------- half precision

HALF_DTYPES = (torch.float16, torch.bfloat16)
# The same, for the test every decorated kernel runs on every call: a dtype hashes by
# identity, so a set lookup skips the tuple's element-by-element comparisons.
_HALF_SET = frozenset(HALF_DTYPES)

_Forward = TypeVar("_Forward", bound=Callable[..., tuple[Tensor, Ctx]])
_Backward = TypeVar("_Backward", bound=Callable[..., Any])


class Float32Ctx(NamedTuple):
    """The ctx of a forward that ran in float32 for a float16/bfloat16 input: the float32
    kernel's own ctx, and the dtype its backward rounds the gradient to."""

    dtype: torch.dtype
    ctx: Ctx


def _to_float32(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dtype in HALF_DTYPES:
        return value.float()
    return value


def half_in_float32(forward: _Forward) -> _Forward:
    """A forward kernel ``(x, *args) -> (out, ctx)`` that computes a float16 or bfloat16 ``x``
    as torch's CPU kernels do: in float32, rounding the result once.

    A kernel of several steps run *in* the half dtype rounds after every step instead, and
    steps that cancel lose every digit (GELU's Φ(x) + xφ(x) near its root, where float16
    gave 965 ulps and bfloat16 the wrong sign; softplus's e^x overflows at x = 11.1 in
    float16). For a half ``x`` this runs the float32 kernel on float32 copies of ``x`` and of
    every half tensor argument (exact: every half value is a float32 value) and rounds its
    output to ``x``'s dtype; the float32 ctx is kept for the backward, wrapped in a
    :class:`Float32Ctx` that names the half dtype, and :func:`half_in_float32_backward` runs
    the backward in float32 too. (That ctx takes twice the memory of a half one: torch keeps
    the half input and recomputes.) Any other ``x`` calls the kernel itself: float32 and
    float64 give the same bits as without the decorator, at ~0.5 µs more per call (median
    of paired timings: a dtype check and a call frame; sigmoid of 64 floats takes ~1.6 µs).
    """

    return half_in_float32_updating()(forward)


def half_in_float32_updating(*positions: int) -> Callable[[_Forward], _Forward]:
    """:func:`half_in_float32` for a forward that also updates some of its arguments in place
    (batch norm's running statistics): ``positions`` index them among the arguments after
    ``x``. A half one is updated in its float32 copy and rounded back into place once, as
    torch updates a half running statistic from its float32 arithmetic."""

    def decorate(forward: _Forward) -> _Forward:
        @functools.wraps(forward)
        def kernel(x: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Ctx]:
            if x.dtype not in _HALF_SET:
                return forward(x, *args, **kwargs)
            args32 = tuple(_to_float32(a) for a in args)
            kwargs = {name: _to_float32(a) for name, a in kwargs.items()}
            out, ctx = forward(x.float(), *args32, **kwargs)
            for i in positions:
                if args32[i] is not args[i]:  # a half tensor: its float32 copy was updated
                    args[i].copy_(args32[i])
            return out.to(x.dtype), Float32Ctx(x.dtype, ctx)

        return cast(_Forward, kernel)

    return decorate


def unwrap_float32_ctx(ctx: Ctx) -> tuple[Ctx, torch.dtype | None]:
    """(the kernel's own ctx, the half dtype its results round to): for code other than the
    backward that reads a ctx (per-sample gradients, recomputed outputs); None for a ctx that
    is not a :class:`Float32Ctx`."""
    if type(ctx) is Float32Ctx:
        return ctx.ctx, ctx.dtype
    return ctx, None


def _to_dtype(result: Any, dtype: torch.dtype) -> Any:
    if isinstance(result, Tensor):
        return result.to(dtype)
    if isinstance(result, tuple):  # (dx, dγ, dβ) of a normalisation; None where not asked for
        return tuple(_to_dtype(r, dtype) for r in result)
    return result


def half_in_float32_backward(backward: _Backward) -> _Backward:
    """The backward ``(grad, ctx, *args) -> dx`` (or a tuple of gradients) of a
    :func:`half_in_float32` forward: given its :class:`Float32Ctx`, the upstream gradient (a
    half tensor, or a number for a loss) goes to float32, the float32 backward runs on the
    float32 ctx and every gradient it returns is rounded once to the half dtype. Any other
    ctx calls the kernel itself."""

    @functools.wraps(backward)
    def kernel(grad: Any, ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
        if type(ctx) is Float32Ctx:
            return _to_dtype(backward(_to_float32(grad), ctx.ctx, *args, **kwargs), ctx.dtype)
        return backward(grad, ctx, *args, **kwargs)

    return cast(_Backward, kernel)
