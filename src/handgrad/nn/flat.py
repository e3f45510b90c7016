"""flatten_parameters: every parameter of a module as a view into one contiguous buffer.

A small network has few, small parameters, and each optimizer operation costs one kernel
call per parameter; with the parameters (and their gradients) laid end to end in one buffer,
an optimizer can do each operation once for the whole network. The parameters stay the same
``torch.nn.Parameter`` objects, so optimizers built before or after keep working, and
``state_dict()``, ``load_state_dict()`` and ``deepcopy`` behave as before.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from handgrad.nn.gradients import FLAT_SLOT, FlatSlot


def flatten_parameters(module: torch.nn.Module) -> Tensor:
    """Re-home the parameters of ``module`` as views into one contiguous 1-D buffer.

    In ``module.parameters()`` order, parameter i of n_i elements becomes
    ``flat[o_i : o_i + n_i].view(p.shape)`` with o_i = n_0 + … + n_(i−1); values are unchanged.
    Parameters of several dtypes or devices get one buffer per (dtype, device), in order of
    first appearance; the buffer holding the first parameter is returned (an empty tensor
    for a module without parameters).

    Gradients tile a matching flat gradient buffer (same order and offsets): an existing
    ``.grad`` is moved there now, and :func:`handgrad.nn.accumulate_grad` (every handgrad
    layer's backward) stores a parameter's first gradient after ``zero_grad()`` there too,
    re-using the buffer on every step (Linear writes its gradients there directly). So a
    gradient tensor kept from an earlier step is overwritten by the next backward, as with
    ``zero_grad(set_to_none=False)``. Gradients that autograd computes (a torch.nn module
    flattened and trained with ``loss.backward()``) are stored by autograd as usual.

    The layout lasts until a parameter is moved: ``module.to(dtype or device)``,
    ``p.data = ...`` or ``load_state_dict(..., assign=True)`` give it memory of its own, and
    its gradients are then stored as without flattening; call ``flatten_parameters`` again to
    restore the layout. ``load_state_dict`` (which copies in place) keeps it; a ``deepcopy``
    or a network read back by ``torch.load`` is not flat.

    Raises TypeError for a parameter that is not a dense (strided) tensor, and ValueError for
    two parameters sharing memory (flattening would separate them).
    """
    named = list(module.named_parameters())
    _check_flattenable(named)
    groups: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
    for _, param in named:
        groups.setdefault((param.dtype, param.device), []).append(param)
    buffers = [_flatten_group(params) for params in groups.values()]
    return buffers[0] if buffers else torch.empty(0)


def _flatten_group(params: list[torch.nn.Parameter]) -> Tensor:
    """Lay ``params`` (one dtype and device) end to end in a new buffer; return the buffer."""
    first = params[0]
    total = sum(p.numel() for p in params)
    # Normal tensors even if called under inference mode: optimizers update them in place.
    with torch.inference_mode(False), torch.no_grad():
        flat = torch.empty(total, dtype=first.dtype, device=first.device)
        flat_grad = torch.zeros(total, dtype=first.dtype, device=first.device)
        offset = 0
        for param in params:
            count = param.numel()
            view = flat[offset : offset + count].view(param.shape)
            grad_view = flat_grad[offset : offset + count].view(param.shape)
            view.copy_(param)
            old_grad = param.grad
            param.data = view
            if old_grad is not None and _fits(old_grad, grad_view):
                grad_view.copy_(old_grad)
                param.grad = grad_view
            param.__dict__[FLAT_SLOT] = FlatSlot(param, grad_view, flat)
            offset += count
    return flat


def _fits(grad: Tensor, slot: Tensor) -> bool:
    """Whether an existing gradient can move into its slot unchanged (dense, same kind)."""
    return (
        grad.layout == torch.strided
        and grad.shape == slot.shape
        and grad.dtype == slot.dtype
        and grad.device == slot.device
    )


def _check_flattenable(named: list[tuple[str, torch.nn.Parameter]]) -> None:
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
