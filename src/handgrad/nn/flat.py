"""flatten_parameters: the parameters of a module as views into one buffer, an explicit layout.

A small network has few, small parameters, and each optimizer operation costs one kernel
call per parameter. Laid end to end in one buffer (and their gradients in another), they can
be updated with one call per operation for the whole network. That is the one fast path of
handgrad's training step, and it is chosen explicitly: ``flatten_parameters(model)`` builds
a :class:`FlatLayout` (``handgrad train`` does it for you), and an optimizer built on
``model.parameters()`` afterwards recognises the layout when the group is added.

The parameters stay the same ``torch.nn.Parameter`` objects, so ``state_dict()``,
``load_state_dict()`` and ``deepcopy`` behave as before.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

FLAT_SLOT = "_handgrad_flat_slot"
"""Attribute (in a parameter's ``__dict__``) holding its :class:`FlatSlot`."""

_data_ptr = Tensor.data_ptr


class FlatLayout:
    """Parameters laid end to end in one buffer, their gradients in a matching one.

    ``params[i]`` is ``data[o_i : o_i + n_i].view(shape_i)`` (o_i = n_0 + … + n_(i−1)) and its
    gradient slot ``slots[i]`` is the same range of ``grad``. All parameters share one dtype
    and device. A backward stores gradients as without a layout (each ``p.grad`` a tensor of
    its own); an optimizer's flat step copies them into the slots with one call
    (``torch._foreach_copy_``) and runs its rule on ``grad``.

    The layout holds while every parameter is still where it was put (:meth:`holds`):
    ``module.to(dtype or device)``, ``p.data = ...`` or ``load_state_dict(..., assign=True)``
    move a parameter to memory of its own; its gradients are then stored as without
    flattening.
    """

    __slots__ = ("data", "grad", "params", "pointers", "slots")

    def __init__(self, params: list[Tensor], data: Tensor, grad: Tensor) -> None:
        self.params: tuple[Tensor, ...] = tuple(params)
        self.data = data
        self.grad = grad
        self.slots: tuple[Tensor, ...] = tuple(views_end_to_end(grad, params))
        self.pointers: tuple[int, ...] = tuple(p.data_ptr() for p in params)

    def holds(self) -> bool:
        """Whether every parameter still starts where the layout put it (``p.data = ...``,
        ``module.to(...)`` or ``set_`` give a parameter memory of its own)."""
        return tuple(map(_data_ptr, self.params)) == self.pointers

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        return (
            f"FlatLayout({len(self.params)} parameters, {self.data.numel()} elements, "
            f"{self.data.dtype}, {self.data.device})"
        )


class FlatSlot:
    """A parameter's place in a :class:`FlatLayout`: the layout and its gradient slot.

    ``pointer`` is where the parameter's data started when flattened; the slot is used only
    while it still starts there with its dtype and shape (``module.to(...)`` or
    ``p.data = ...`` moves it, and the slot is then forgotten).
    """

    __slots__ = ("grad", "layout", "pointer")

    def __init__(self, layout: FlatLayout, index: int) -> None:
        self.layout = layout
        self.grad = layout.slots[index]
        self.pointer = layout.pointers[index]

    def holds(self, param: Tensor) -> bool:
        """Whether ``param`` is still where the layout put it."""
        return (
            param.data_ptr() == self.pointer
            and param.dtype == self.grad.dtype
            and param.shape == self.grad.shape
        )


def views_end_to_end(buffer: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """``buffer`` cut into consecutive views shaped as ``tensors``: the i-th is
    ``buffer[o_i : o_i + n_i].view(tensors[i].shape)``, o_i = n_0 + … + n_(i−1)."""
    views, offset = [], 0
    for t in tensors:
        views.append(buffer[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    return views


def layout_of(params: list[Tensor]) -> FlatLayout | None:
    """The :class:`FlatLayout` whose parameters are exactly ``params``, in order, if it holds.

    Read from the parameters themselves (the slot ``flatten_parameters`` gave them), not from
    their memory addresses; None for anything else (a part of a layout, two layouts, a
    parameter never flattened, a layout that no longer holds).
    """
    if not params:
        return None
    slot = params[0].__dict__.get(FLAT_SLOT)
    if slot is None:
        return None
    layout: FlatLayout = slot.layout
    if len(params) != len(layout.params) or not all(map(_same, params, layout.params)):
        return None
    return layout if layout.holds() else None


def _same(a: object, b: object) -> bool:
    return a is b


def flatten_parameters(module: torch.nn.Module | Iterable[Tensor]) -> tuple[FlatLayout, ...]:
    """Re-home the parameters of ``module`` as views into one contiguous buffer; their layout.

    In ``module.parameters()`` order (or the given tensors' order), parameter i of n_i
    elements becomes ``data[o_i : o_i + n_i].view(p.shape)`` with o_i = n_0 + … + n_(i−1);
    values are unchanged. Parameters of several dtypes or devices get one layout each, in
    order of first appearance: the result is one :class:`FlatLayout` per (dtype, device)
    (``(layout,)`` for the usual module; ``()`` without parameters).

    Gradients are stored as without flattening (a layer's backward only accumulates into
    ``.grad``; an existing ``.grad`` is moved into the layout's gradient buffer now). At each
    flat step the optimizer gathers them into that buffer with one call, so the gather costs
    one kernel call per step instead of a copy and checks per parameter per backward
    (measured for issue 12: −44k of 564k instructions per step of the 1-100-1 per-sample
    loop). Gradients that autograd computes (a torch.nn module flattened and trained with
    ``loss.backward()``) are gathered the same way.

    An optimizer built afterwards on these parameters (one group holding exactly one
    layout's parameters, in order) updates the group as one tensor: see
    :class:`handgrad.optim.Optimizer`. Build the optimizer after flattening; an optimizer
    built before sees separate parameters (correct, not faster) until ``load_state_dict``.

    The layout lasts until a parameter is moved (:meth:`FlatLayout.holds`); call
    ``flatten_parameters`` again to restore it. ``load_state_dict`` (which copies in place)
    keeps it; a ``deepcopy`` or a network read back by ``torch.load`` is not flat.

    Raises TypeError for a parameter that is not a dense (strided) tensor, and ValueError for
    two parameters sharing memory (flattening would separate them).
    """
    named: list[tuple[str, Tensor]]
    if isinstance(module, torch.nn.Module):
        named = list(module.named_parameters())
    else:
        named = [(f"parameter {index}", p) for index, p in enumerate(module)]
    _check_flattenable(named)
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for _, param in named:
        groups.setdefault((param.dtype, param.device), []).append(param)
    return tuple(_flatten_group(params) for params in groups.values())


def _flatten_group(params: list[Tensor]) -> FlatLayout:
    """Lay ``params`` (one dtype and device) end to end in new buffers; their layout."""
    first = params[0]
    total = sum(p.numel() for p in params)
    # Normal tensors even if called under inference mode: optimizers update them in place.
    with torch.inference_mode(False), torch.no_grad():
        data = torch.empty(total, dtype=first.dtype, device=first.device)
        grad = torch.zeros(total, dtype=first.dtype, device=first.device)
        old_grads = [p.grad for p in params]
        for param, view in zip(params, views_end_to_end(data, params), strict=True):
            view.copy_(param)
            param.data = view
        layout = FlatLayout(params, data, grad)
        for index, (param, old_grad) in enumerate(zip(params, old_grads, strict=True)):
            slot = layout.slots[index]
            if old_grad is not None and _fits(old_grad, slot):
                slot.copy_(old_grad)
                param.grad = slot
            param.__dict__[FLAT_SLOT] = FlatSlot(layout, index)
    return layout


def _fits(grad: Tensor, slot: Tensor) -> bool:
    """Whether a gradient can live in ``slot`` unchanged (dense, same shape, dtype, device)."""
    return (
        grad.layout == torch.strided
        and grad.shape == slot.shape
        and grad.dtype == slot.dtype
        and grad.device == slot.device
    )


def _check_flattenable(named: list[tuple[str, Tensor]]) -> None:
    """TypeError for a non-dense parameter; ValueError for two parameters sharing memory."""
    spans: list[tuple[str, int, int, str]] = []
    for name, param in named:
        if param.layout != torch.strided:
            raise TypeError(
                f"flatten_parameters: parameter {name!r} has layout {param.layout}; only "
                "dense (torch.strided) parameters can live in a flat buffer"
            )
        if param.numel() == 0 or param.device.type == "meta":
            continue
        # The bytes the parameter can touch: from its first element to past its last.
        extent = sum(
            (size - 1) * stride for size, stride in zip(param.shape, param.stride(), strict=True)
        )
        start = param.data_ptr()
        end = start + (extent + 1) * param.element_size()
        spans.append((str(param.device), start, end, name))
    spans.sort()
    for before, after in itertools.pairwise(spans):
        if before[0] == after[0] and after[1] < before[2]:  # same device, overlapping bytes
            raise ValueError(
                f"flatten_parameters: parameters {before[3]!r} and {after[3]!r} share memory; "
                "flattening would give each a copy of its own and untie them"
            )
