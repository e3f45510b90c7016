"""Small pieces the handgrad optimizers share: argument checks, scalars, steps and buffers.

Nothing here is an update rule, and nothing here decides which body runs (``_base.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from handgrad import _compat

# Multi-tensor kernels are a private torch API; without them every optimizer falls back to
# its single-tensor body.
FOREACH_AVAILABLE = all(
    hasattr(torch, name)
    for name in ("_foreach_add_", "_foreach_mul_", "_foreach_addcdiv_", "_foreach_lerp_")
)


def resolve_foreach(foreach: bool | None) -> bool:
    """The body to run: the caller's choice, else the multi-tensor one.

    torch.optim defaults to the single-tensor body on CPU; our multi-tensor body is at least
    as fast on every device we measured (see benchmarks/RESULTS.md), so it is our default.
    Without torch's ``_foreach_*`` kernels every choice falls back to the single-tensor body.
    """
    if not FOREACH_AVAILABLE:
        return False
    return True if foreach is None else bool(foreach)


def as_float(value: float | Tensor) -> float:
    """A Python float from a hyperparameter that may be a 0-d tensor (tensor ``lr``)."""
    if isinstance(value, Tensor):
        return float(value.item())
    return float(value)


def squeeze_scalar(value: Any) -> Any:
    """A 1-element tensor as a 0-d tensor (torch's ``_to_scalar``); anything else unchanged."""
    if isinstance(value, Tensor) and value.dim() != 0:
        return value.squeeze()
    return value


def check_lr(lr: float | Tensor) -> None:
    """torch's learning-rate checks: a tensor lr has one element, and lr >= 0."""
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_at_least(name: str, value: Any, bound: float = 0.0) -> None:
    """``ValueError("Invalid <name> value: <value>")`` unless ``bound <= value``."""
    if not bound <= value:
        raise ValueError(f"Invalid {name} value: {value}")


def check_betas(betas: Sequence[Any]) -> None:
    """Each beta in [0, 1), torch's message naming the index and the value."""
    for index in (0, 1):
        if not 0.0 <= betas[index] < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {betas[index]}")


def check_fused_flags(fused: bool | None, foreach: bool | None, differentiable: bool) -> None:
    """torch's constructor checks for ``fused=True`` (we accept it and run our fast path)."""
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


_FUSED_DEVICES = ("mps", "cuda", "xpu", "hpu", "cpu", "mtia", "privateuseone")


def check_fused_param(p: Tensor) -> None:
    """torch refuses ``fused=True`` for non-floating parameters (complex included)."""
    if not (p.device.type in _FUSED_DEVICES and torch.is_floating_point(p)):
        raise RuntimeError(
            "`fused=True` requires all the params to be floating point Tensors of "
            f"supported devices: {list(_FUSED_DEVICES)} but {p.dtype} and {p.device.type}"
        )


def scalar_dtype(fused: bool | None = None) -> torch.dtype:
    """The dtype torch gives ``state['step']``: float32, float64 under a float64 default."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def new_step(p: Tensor, *, on_param_device: bool = False, fused: bool | None = None) -> Tensor:
    """A zero ``state['step']`` laid out as torch lays it out.

    On the CPU by default (reading it costs no device sync); on the parameter's device for
    ``capturable``/``fused`` groups.
    """
    if on_param_device or fused:
        return torch.zeros((), dtype=scalar_dtype(fused), device=p.device)
    return torch.tensor(0.0, dtype=scalar_dtype())


def restore_tensor_steps(optimizer: torch.optim.Optimizer, keys: Iterable[str] = ("step",)) -> None:
    """``__setstate__`` helper: old pickles stored ``step`` as a number; make it a tensor."""
    for group in optimizer.param_groups:
        on_device = bool(group.get("capturable")) or bool(group.get("fused"))
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key in keys:
                if key in state and not torch.is_tensor(state[key]):
                    value = float(state[key])
                    state[key] = (
                        torch.tensor(value, dtype=scalar_dtype(group.get("fused")), device=p.device)
                        if on_device
                        else torch.tensor(value, dtype=scalar_dtype())
                    )


def group_by_device_and_dtype(
    tensor_lists: Sequence[Sequence[Any]],
) -> list[list[list[Any]]]:
    """Split parallel lists into runs sharing the first list's (device, dtype) (the first
    list holds tensors; the others anything parallel to it).

    Multi-tensor kernels need one device and dtype per call. Lists shorter than the first
    (an absent optional state) come back empty.
    """
    first = tensor_lists[0]
    keys = [(t.device, t.dtype) for t in first]
    if len(set(keys)) <= 1:
        return [[list(each) for each in tensor_lists]] if first else []
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for index, key in enumerate(keys):
        buckets.setdefault(key, []).append(index)
    grouped = []
    for indices in buckets.values():
        grouped.append(
            [[each[i] for i in indices] if len(each) == len(first) else [] for each in tensor_lists]
        )
    return grouped


def real_view(t: Tensor) -> Tensor:
    """A complex tensor as its real view (``(..., 2)``); a real one unchanged."""
    # Tensor.is_complex is several times cheaper than torch.is_complex per call.
    return torch.view_as_real(t) if t.is_complex() else t


def real_views(tensors: Sequence[Tensor]) -> list[Tensor]:
    """:func:`real_view` of each tensor: updates on complex numbers act on (Re, Im) pairs.

    The tensors share one dtype (one parameter's tensors, or one device/dtype bucket of
    :func:`group_by_device_and_dtype`: gradients and state have their parameter's dtype), so
    the first one decides; a per-tensor check cost ~0.1 µs a tensor on every list.
    """
    if not tensors or not tensors[0].is_complex():
        return list(tensors)
    return [torch.view_as_real(t) for t in tensors]


_ONE = torch.tensor(1.0)


def increment_steps(steps: list[Tensor]) -> None:
    """``step += 1`` for every state step tensor (0-d counts, or a flat group's 1-D buffer)."""
    if not steps:
        return
    if not FOREACH_AVAILABLE:
        for step in steps:
            step += 1
    elif steps[0].is_cpu:
        # The tensor overload is several times faster than the scalar one on many 0-d CPU
        # tensors (measured: 200 steps, 0.2 ms vs 0.9 ms), and than ``+= 1`` on one.
        torch._foreach_add_(steps, _ONE, alpha=1.0)
    else:
        torch._foreach_add_(steps, 1.0)


def one_minus(beta: float | Tensor, dtype: torch.dtype) -> float:
    """``1 - β`` as torch computes an interpolation weight: a tensor β in the tensor's dtype."""
    if isinstance(beta, Tensor):
        return as_float(1 - beta.to(dtype))
    return 1 - beta


def step_value(step: Tensor) -> float:
    """A ``state['step']`` (or other 0-d state) as a Python float."""
    return float(step.item())


def step_values(steps: Sequence[Tensor]) -> list[float]:
    """:func:`step_value` of each step tensor."""
    return [step_value(s) for s in steps]


def same_or_list(values: list[float]) -> float | list[float]:
    """One scalar when all are equal (the common case: a cheaper kernel call), else the list."""
    first = values[0]
    return first if all(v == first for v in values) else values


class Scratch:
    """Reusable temporaries for tensor-at-a-time updates: flat buffers per (device, dtype).

    ``like(t, slot)`` is a buffer shaped as ``t`` whose contents are garbage; distinct slots
    never alias. Kept on the optimizer (``Optimizer.scratch``), outside ``state``, so
    state_dicts are unaffected.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.device, torch.dtype, int], Tensor] = {}
        # The last view handed out per slot and shape: a flat group asks for the same one
        # at every step, and slicing a fresh view costs more than the lookup.
        self._views: dict[tuple[torch.device, torch.dtype, int, torch.Size], Tensor] = {}

    def like(self, t: Tensor, slot: int = 0, dtype: torch.dtype | None = None) -> Tensor:
        """A buffer shaped as ``t``, of ``t``'s dtype or of ``dtype`` (e.g. a bool mask)."""
        shape = t.shape
        dtype = t.dtype if dtype is None else dtype
        view_key = (t.device, dtype, slot, shape)
        view = self._views.get(view_key)
        if view is not None:
            return view
        key = (t.device, dtype, slot)
        buffer = self._buffers.get(key)
        # Made as normal tensors even in a step under torch.inference_mode (the trainer's
        # fast epoch): kept across steps, they are written in place outside it too.
        with torch.inference_mode(False):
            if buffer is None or buffer.numel() < t.numel():
                buffer = torch.empty(t.numel(), dtype=dtype, device=t.device)
                self._buffers[key] = buffer
                self._views = {k: v for k, v in self._views.items() if k[:3] != key}
            view = buffer[: t.numel()].view(shape)
        self._views[view_key] = view
        return view


def add_sparse(
    dense: Tensor, indices: Tensor, values: Tensor, alpha: float | Tensor | None = None
) -> None:
    """dense += α·S for the sparse tensor S of ``indices`` (unique: a coalesced gradient's)
    and ``values`` (α = 1 when None).

    S is declared coalesced, so ``add_`` skips a coalescing pass (measured ~5x faster on
    1,000 elements; each value is added once either way). That path of torch 2.13's
    ``dense.add_(sparse)`` applies a view's storage offset twice: on a parameter that is a
    view into a flat buffer (``flatten_parameters``) it writes to the wrong elements or past
    the buffer's end. Such a view is updated by an accumulating ``index_put_`` instead, α·S's
    values added once each.
    """
    if dense.storage_offset() == 0:
        update = torch.sparse_coo_tensor(
            indices, values, dense.shape, check_invariants=False, is_coalesced=True
        )
        if alpha is None:
            dense.add_(update)
        else:
            dense.add_(update, alpha=alpha)  # type: ignore[arg-type]
    else:
        dense.index_put_(tuple(indices), values if alpha is None else values * alpha, True)


def fast_path(group: dict[str, Any]) -> bool:
    """Whether a group takes our fast path: ``foreach`` not False, not ``differentiable``."""
    return resolve_foreach(group.get("foreach")) and not group.get("differentiable", False)


def out_like(scratch: Scratch | None, t: Tensor, slot: int = 0) -> Tensor | None:
    """An ``out=`` buffer shaped as ``t`` from ``scratch``, or None (allocate) without one."""
    return None if scratch is None else scratch.like(t, slot)


# Where torch allows ``capturable=True``; elsewhere its step asserts.
_CAPTURABLE_DEVICES = ("cuda", "xpu", "hpu", "xla", _compat.privateuse1_backend_name())


def check_capturable(capturable: bool, tensors: Sequence[Tensor]) -> None:
    """torch's check that ``capturable=True`` is only used on graph-capturable devices."""
    if capturable and not all(t.device.type in _CAPTURABLE_DEVICES for t in tensors):
        raise AssertionError(
            "If capturable=True, params and state_steps must be on supported devices: "
            f"{list(_CAPTURABLE_DEVICES)}."
        )


def check_adam_arguments(
    lr: float | Tensor, eps: float, betas: Sequence[Any], weight_decay: float
) -> None:
    """torch's constructor checks of the Adam family (Adamax, NAdam, RAdam), in its order."""
    check_lr(lr)
    check_at_least("epsilon", eps)
    check_betas(betas)
    check_at_least("weight_decay", weight_decay)


def decayed_gradient(
    param: Tensor,
    grad: Tensor,
    *,
    lr: float | Tensor,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
    scratch: Scratch | None,
) -> Tensor:
    """One tensor's gradient after ``maximize`` and weight decay, in torch's order::

        g ← −g            if maximize
        θ ← θ(1 − γλ)     if decoupled, else  g ← g + λθ

    Never writes into ``grad`` (the caller's ``.grad``): a changed g lives in ``scratch``'s
    slots 1 and 2 (fresh tensors without scratch).
    """
    if maximize:
        grad = torch.neg(grad, out=out_like(scratch, grad, 1))
    if weight_decay != 0:
        if decoupled:
            param.mul_(as_float(1 - lr * weight_decay))
        else:
            grad = torch.add(grad, param, alpha=weight_decay, out=out_like(scratch, grad, 2))
    return grad


def decayed_gradients(
    params: list[Tensor],
    grads: list[Tensor],
    *,
    lr: float | Tensor,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
) -> list[Tensor]:
    """:func:`decayed_gradient` on lists (``torch._foreach_*``): a new list wherever g changes
    (the caller may then write into it), ``grads`` itself otherwise."""
    if maximize:
        grads = list(torch._foreach_neg(grads))
    if weight_decay != 0:
        if decoupled:
            torch._foreach_mul_(params, as_float(1 - lr * weight_decay))
        elif maximize:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        else:
            grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
    return grads


# Multi-tensor multiplications and divisions by a Python number wrap the number into a new
# 0-d tensor for every tensor of the list on the CPU; by a 0-d tensor of the list's dtype they
# do not (measured, one thread, float32: 4 tensors of the 1-100-1 network 11.0 µs a call,
# 5.8 µs with the operand made for the call; 200 tensors of 1,000 elements 481 µs vs 139 µs).
# A float64 operand on float32 tensors gains little (8.8 µs): it is cast at every call.
# Additions of a number wrap it the same way (4 tensors 10.6 µs; a list of one shared 0-d
# operand, :func:`add_number_`, 4.5 µs; 200 tensors 471 µs vs ~160 µs); additions of lists,
# with or without ``alpha``, and ``lerp``/``addcmul`` by a number do not.
_NUMBER_OPERAND_DTYPES = (torch.float32, torch.float64)


def number_operand(value: float, like: Tensor) -> float | Tensor:
    """``value`` as the operand of a multi-tensor ``mul``/``div`` on tensors like ``like``: a
    0-d tensor of their dtype for float32/float64 CPU tensors (see above), else the number.

    The same bits: the kernels compute in the tensors' dtype, to which a Python number is
    rounded the way the 0-d tensor is made. (float16/bfloat16 kernels compute a Python number
    in float32: those keep the number, as do other devices.)
    """
    dtype = like.dtype
    if dtype in _NUMBER_OPERAND_DTYPES and like.is_cpu:
        return torch.scalar_tensor(value, dtype=dtype)
    return value


def add_number_(tensors: list[Tensor] | tuple[Tensor, ...], value: float) -> None:
    """``torch._foreach_add_(tensors, value)``: the same bits, with one shared 0-d operand
    (:func:`number_operand`) in place of a new one per tensor where that applies."""
    operand = number_operand(value, tensors[0])
    if isinstance(operand, Tensor):
        torch._foreach_add_(tensors, [operand] * len(tensors))
    else:
        torch._foreach_add_(tensors, value)
