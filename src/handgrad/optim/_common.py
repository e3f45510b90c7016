"""Small pieces every handgrad optimizer shares: path selection, scalars, state and checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

Kept = TypeVar("Kept")

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


def is_tensor_hyperparameter(value: object) -> bool:
    """Whether a hyperparameter was given as a tensor (torch then keeps it on its device)."""
    return isinstance(value, torch.Tensor)


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
    tensor_lists: Sequence[Sequence[Tensor]],
) -> list[list[list[Tensor]]]:
    """Split parallel lists into runs sharing the first list's (device, dtype).

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


def increment_steps(steps: list[Tensor], foreach: bool) -> None:
    """``step += 1`` for every state step tensor."""
    if foreach and steps:
        if steps[0].is_cpu:
            # The tensor overload is several times faster than the scalar one on many
            # 0-d CPU tensors (measured: 200 steps, 0.2 ms vs 0.9 ms).
            torch._foreach_add_(steps, _ONE, alpha=1.0)
        else:
            torch._foreach_add_(steps, 1.0)
    else:
        for step in steps:
            step += 1


def params_with_grads(
    group: dict[str, Any], sparse_error: str | None
) -> tuple[list[Tensor], list[Tensor]]:
    """The group's parameters that have a gradient, and those gradients (others skipped).

    ``sparse_error`` is torch's RuntimeError message for a sparse gradient (None: allowed).
    """
    params: list[Tensor] = []
    grads: list[Tensor] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if sparse_error is not None and p.grad.is_sparse:
            raise RuntimeError(sparse_error)
        params.append(p)
        grads.append(p.grad)
    return params, grads


def one_minus(beta: float | Tensor, dtype: torch.dtype) -> float:
    """``1 - β`` as torch computes an interpolation weight: a tensor β in the tensor's dtype."""
    if isinstance(beta, Tensor):
        return as_float(1 - beta.to(dtype))
    return 1 - beta


def step_value(step: Tensor) -> float:
    """A ``state['step']`` (or other 0-d state) as a Python float.

    A flat group (``_flat.py``) hands its bodies all of its steps as one 1-D tensor, whose
    entries are equal: its first entry is the count.
    """
    return float(step.item()) if step.dim() == 0 else float(step.tolist()[0])


def step_values(steps: Sequence[Tensor]) -> list[float]:
    """:func:`step_value` of each step tensor."""
    return [step_value(s) for s in steps]


def same_or_list(values: list[float]) -> float | list[float]:
    """One scalar when all are equal (the common case: a cheaper kernel call), else the list."""
    first = values[0]
    return first if all(v == first for v in values) else values


# Above this many elements a tensor is updated on its own, all of its operations in a row
# while its data is still in cache, with temporaries in reused scratch buffers: faster than
# one multi-tensor kernel per operation, which streams every tensor through memory once per
# operation and allocates fresh temporaries (benchmarks/bench_optim.py, "4 params of 1M").
LARGE_TENSOR_ELEMENTS = 1 << 16


class Scratch:
    """Reusable temporaries for tensor-at-a-time updates: flat buffers per (device, dtype).

    ``like(t, slot)`` is a buffer shaped as ``t`` whose contents are garbage; distinct slots
    never alias. Kept on the optimizer, outside ``state``, so state_dicts are unaffected.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.device, torch.dtype, int], Tensor] = {}
        # The last view handed out per slot and shape: a flat group asks for the same one
        # at every step, and slicing a fresh view costs more than the lookup.
        self._views: dict[tuple[torch.device, torch.dtype, int, torch.Size], Tensor] = {}

    def like(self, t: Tensor, slot: int = 0) -> Tensor:
        shape = t.shape
        view_key = (t.device, t.dtype, slot, shape)
        view = self._views.get(view_key)
        if view is not None:
            return view
        key = (t.device, t.dtype, slot)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < t.numel():
            buffer = torch.empty(t.numel(), dtype=t.dtype, device=t.device)
            self._buffers[key] = buffer
            self._views = {k: v for k, v in self._views.items() if k[:3] != key}
        view = buffer[: t.numel()].view(shape)
        self._views[view_key] = view
        return view


def attached(optimizer: torch.optim.Optimizer, key: str, factory: Callable[[], Kept]) -> Kept:
    """The object kept in ``optimizer.__dict__[key]``, made by ``factory()`` on first use.

    Such objects (buffers, caches) are not optimizer state: torch's pickling and state dicts
    leave them out, and they are made again on first use afterwards.
    """
    kept = optimizer.__dict__.get(key)
    if kept is None:
        kept = optimizer.__dict__[key] = factory()
    return kept


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


def scratch_of(optimizer: torch.optim.Optimizer) -> Scratch:
    """The optimizer's :class:`Scratch`, created on first use (and after unpickling)."""
    return attached(optimizer, "_handgrad_scratch", Scratch)


def fast_path(group: dict[str, Any]) -> bool:
    """Whether a group takes our fast path: ``foreach`` not False, not ``differentiable``."""
    return resolve_foreach(group.get("foreach")) and not group.get("differentiable", False)


def route(
    lists: dict[str, list[Any]], fast: bool
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Split parallel per-parameter lists into (multi-tensor part, tensor-at-a-time part).

    Off the fast path everything goes tensor-at-a-time (the reference body). On it, small
    tensors go to the multi-tensor body and large ones (``LARGE_TENSOR_ELEMENTS``)
    tensor-at-a-time with scratch buffers. Lists shorter than ``lists["params"]`` (absent
    optional state) stay empty on both sides.
    """
    empty: dict[str, list[Any]] = {key: [] for key in lists}
    if not fast:
        return empty, lists
    params = lists["params"]
    large = [p.numel() >= LARGE_TENSOR_ELEMENTS for p in params]
    if not any(large):
        return lists, empty
    if all(large):
        return empty, lists
    count = len(params)
    small_part: dict[str, list[Any]] = {}
    large_part: dict[str, list[Any]] = {}
    for key, values in lists.items():
        if len(values) != count:
            small_part[key], large_part[key] = [], []
            continue
        small_part[key] = [v for v, big in zip(values, large, strict=True) if not big]
        large_part[key] = [v for v, big in zip(values, large, strict=True) if big]
    return small_part, large_part


def out_like(scratch: Scratch | None, t: Tensor, slot: int = 0) -> Tensor | None:
    """An ``out=`` buffer shaped as ``t`` from ``scratch``, or None (allocate) without one."""
    return None if scratch is None else scratch.like(t, slot)
