"""Flat groups: a parameter group that lives in one buffer is updated as one tensor.

A group is *flat* when its parameters are contiguous tensors of one dtype and device that
tile one memory range in order (each starts where the previous one ends, in one storage),
every one has a dense gradient, the gradients tile a range the same way, and each state
key's tensors tile a range too, with all ``step`` counts equal. ``handgrad.nn``'s
``flatten_parameters`` builds exactly that layout (users of torch.nn can build it by hand).

An element-wise update rule then runs once on 1-D views spanning the ranges instead of once
per parameter: a few kernel calls per step whatever the number of tensors, which is what a
small network's step costs (1-100-1: four tensors, 301 elements). Every element sees the
same operations with the same scalars as in the per-parameter update, so the results are
the same bits.

:class:`FlatGroup` remembers the layout of one group; :meth:`FlatGroup.current` re-checks it
at each step (pointers, shapes and state identities: a replaced ``.grad``, moved parameters,
``load_state_dict`` or a new param group all fail it) and :func:`build_flat_group` rebuilds
it, or returns None (the per-parameter path runs) on any mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import is_, itemgetter
from typing import Any

import torch
from torch import Tensor

from handgrad.optim._common import attached


def tiled_view(tensors: Sequence[Tensor]) -> Tensor | None:
    """A 1-D view over ``tensors`` if they tile one memory range in order, else None.

    Each must be a dense contiguous tensor of the first one's dtype and device, in the
    first one's storage, starting where the previous one ends.
    """
    first = tensors[0]
    if first.layout != torch.strided:
        return None
    storage = first.untyped_storage().data_ptr()
    dtype, device = first.dtype, first.device
    size = first.element_size()
    expected = first.data_ptr()
    total = 0
    for t in tensors:
        if (
            t.layout != torch.strided
            or t.dtype != dtype
            or t.device != device
            or not t.is_contiguous()
            or t.data_ptr() != expected
            or t.untyped_storage().data_ptr() != storage
        ):
            return None
        expected += t.numel() * size
        total += t.numel()
    return first.detach().as_strided((total,), (1,), first.storage_offset())


def _flat_copy(tensors: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """A new 1-D buffer holding ``tensors`` one after another, and a view per tensor."""
    first = tensors[0]
    buffer = torch.empty(sum(t.numel() for t in tensors), dtype=first.dtype, device=first.device)
    views = []
    offset = 0
    for t in tensors:
        view = buffer[offset : offset + t.numel()].view(t.shape)
        view.copy_(t)
        views.append(view)
        offset += t.numel()
    return buffer, views


@dataclass
class FlatGroup:
    """The flat layout of one parameter group, as last verified."""

    group: dict[str, Any]
    state: Any  # the optimizer's state mapping it was built against
    keys: tuple[str, ...]  # the state keys, in body order
    params: tuple[Tensor, ...]
    pointers: tuple[int, ...]  # data pointers of the parameters, then of the gradients
    shapes: tuple[torch.Size, ...]
    states: tuple[tuple[Tensor, ...], ...]  # per parameter: its state tensors, keys order
    param: Tensor  # 1-D views spanning the whole group
    grad: Tensor
    buffers: dict[str, Tensor]  # per state key; "step" holds one entry per parameter
    grads: list[Tensor] = field(default_factory=list)  # the grads last verified
    lists: list[list[Tensor]] | None = None  # the bodies' arguments, kept by the optimizer
    # The group's entries (values, in order) when ``settings`` were read from it; None when
    # they cannot be trusted to stay put (a tensor entry may change in place).
    entries: tuple[Any, ...] | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the bodies' keywords
    plan: Any = None  # an optimizer's own precomputed update for these settings

    def __post_init__(self) -> None:
        self.pick = itemgetter(*self.keys)  # a parameter's state tensors, in keys order
        # Every state tensor, parameter by parameter in keys order: one identity pass.
        self.state_tensors = tuple(t for tensors in self.states for t in tensors)
        self.tables: tuple[dict[str, Any], ...] = ()  # each parameter's state dict
        self.state_snapshot: tuple[tuple[Any, ...], tuple[Any, ...]] = ((), ())

    def remember_settings(self, group: dict[str, Any], settings: dict[str, Any]) -> None:
        """Keep ``settings`` (read from ``group`` now) for the steps until an entry changes.

        Entries are compared by identity: a scheduler assigning ``group["lr"]`` puts a new
        object there, which counts as a change even when equal. A tensor entry (a tensor
        ``lr`` or betas) can change in place, so its settings are read again at every step.
        """
        self.settings = settings
        self.plan = None
        values = tuple(group.values())
        self.entries = None if any(map(_holds_tensor, values)) else values

    def same_settings(self, group: dict[str, Any]) -> bool:
        """Whether ``group``'s entries are the very objects ``settings`` were read from."""
        entries = self.entries
        return (
            entries is not None
            and group is self.group
            and len(group) == len(entries)
            and all(map(is_, group.values(), entries))
        )

    def current(self, group: dict[str, Any], state: Any, keys: tuple[str, ...]) -> bool:
        """Whether the layout still holds for ``group`` at this step.

        Runs at every step of a flat group, so it is written for speed: ``map`` over
        identities and pointers, and the full checks of a gradient only for a gradient
        object not verified before. State is checked by identity of every state tensor (one
        pass), so an entry replaced by hand, a state dict replaced or ``load_state_dict``
        (new state, new groups) all fail it; so do unequal step counts.
        """
        if group is not self.group or state is not self.state or keys != self.keys:
            return False
        params = group["params"]
        if len(params) != len(self.params) or not all(map(is_, params, self.params)):
            return False
        grads = [p.grad for p in params]
        if not all(map(is_, grads, self.grads)):
            for g, shape in zip(grads, self.shapes, strict=True):
                if (
                    g is None
                    or g.layout != torch.strided
                    or g.dtype != self.param.dtype
                    or g.device != self.param.device
                    or not g.is_contiguous()
                    or g.shape != shape
                ):
                    return False
            self.grads = grads  # none is None: checked above
        # Parameters and gradients where they were (moved by .data =, set_ or .to()) ...
        if tuple(map(_data_ptr, chain(params, grads))) != self.pointers:
            return False
        if not all(map(_is_contiguous, params)):  # ... and laid out as they were
            return False
        # Each parameter's state dict, found again only when the state mapping has changed:
        # looking a tensor up hashes it in Python, and iterating the mapping does not.
        snapshot = (tuple(state), tuple(state.values()))
        if not _same_objects(snapshot, self.state_snapshot):
            tables = tuple(map(state.get, params))
            if None in tables:
                return False
            self.tables, self.state_snapshot = tables, snapshot
        try:
            kept = (
                tuple(chain.from_iterable(map(self.pick, self.tables)))
                if len(keys) > 1
                else tuple(map(self.pick, self.tables))  # itemgetter of one key: the item
            )
        except KeyError:  # an entry removed
            return False
        if len(kept) != len(self.state_tensors) or not all(map(is_, kept, self.state_tensors)):
            return False
        steps = self.buffers.get("step")
        if steps is not None:
            counts = steps.tolist()
            if counts.count(counts[0]) != len(counts):
                return False
        return True


def _same_objects(
    now: tuple[tuple[Any, ...], tuple[Any, ...]], before: tuple[tuple[Any, ...], tuple[Any, ...]]
) -> bool:
    """Whether two (keys, values) snapshots of a mapping hold the very same objects."""
    return (
        len(now[0]) == len(before[0])
        and all(map(is_, now[0], before[0]))
        and all(map(is_, now[1], before[1]))
    )


def _holds_tensor(value: Any) -> bool:
    """Whether a group entry is a tensor or a tuple holding one (tensor betas)."""
    if isinstance(value, Tensor):
        return True
    return isinstance(value, tuple) and any(isinstance(v, Tensor) for v in value)


_data_ptr = Tensor.data_ptr
_is_contiguous = Tensor.is_contiguous


# float16 and bfloat16 are left out: torch's CPU ``_foreach_mul_(tensors, scalar)`` rounds the
# scalar to the tensors' dtype first (β₂ = 0.99 becomes 0.98828125 in bfloat16) where
# ``Tensor.mul_`` keeps it in float32, so torch.optim's foreach update, our reference, differs
# in the last bit from the same update written with per-tensor kernels (measured). Such groups
# take the per-parameter path, whose multi-tensor body matches torch's.
_FLAT_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def build_flat_group(
    group: dict[str, Any],
    state: Any,
    keys: tuple[str, ...],
    init_state: Callable[[Tensor, dict[str, Any]], None],
) -> FlatGroup | None:
    """The flat layout of ``group`` (state created or re-tiled as needed), or None.

    ``state`` is the optimizer's state mapping and ``keys`` the state keys the group keeps.
    On the group's first step (no parameter has state) ``init_state(p, state[p])`` creates
    each parameter's state, which is then copied into flat buffers; state that does not tile
    (e.g. fresh from ``load_state_dict``) is copied the same way, once, and the state entries
    re-pointed at the views. Nothing is changed when None is returned.
    """
    params = list(group["params"])
    if not params or not keys:
        return None
    # Separately allocated parameters fail at the second one: cheap for groups never flat.
    param = tiled_view(params)
    if param is None or param.dtype not in _FLAT_DTYPES:
        return None
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        return None
    dense = [g for g in grads if g is not None]
    grad = tiled_view(dense)
    if grad is None:
        return None
    if any(g.shape != p.shape or g.dtype != p.dtype for p, g in zip(params, dense, strict=True)):
        return None
    kept = [state.get(p) for p in params]
    fresh = all(not each for each in kept)
    if not fresh and not all(each and all(key in each for key in keys) for each in kept):
        return None
    if fresh:
        news: list[dict[str, Any]] = [{} for _ in params]
        for p, new in zip(params, news, strict=True):
            init_state(p, new)
        tables = news
    else:
        tables = [each for each in kept if each is not None]
        if not _state_fits(params, tables, keys):
            return None
    buffers: dict[str, Tensor] = {}
    columns: dict[str, list[Tensor]] = {}
    for key in keys:
        tensors = [table[key] for table in tables]
        view = tiled_view(tensors)
        if view is None:
            view, tensors = _flat_copy(tensors)
        buffers[key], columns[key] = view, tensors
    for p, table, index in zip(params, tables, range(len(params)), strict=True):
        target = state[p]
        if fresh:
            target.update(table)
        for key in keys:
            target[key] = columns[key][index]
    return FlatGroup(
        group=group,
        state=state,
        keys=keys,
        params=tuple(params),
        pointers=tuple(t.data_ptr() for t in chain(params, dense)),
        shapes=tuple(p.shape for p in params),
        states=tuple(tuple(state[p][key] for key in keys) for p in params),
        param=param,
        grad=grad,
        buffers=buffers,
        grads=list(dense),
    )


def _state_fits(params: list[Tensor], tables: list[dict[str, Any]], keys: tuple[str, ...]) -> bool:
    """Whether existing state can be laid flat: shaped as the parameters, steps all equal."""
    for key in keys:
        column = [table[key] for table in tables]
        if not all(isinstance(t, Tensor) for t in column):
            return False
        if key == "step":
            if any(t.dim() != 0 for t in column):
                return False
            first = column[0]
            if any(t.dtype != first.dtype or t.device != first.device for t in column):
                return False
            counts = [t.item() for t in column]
            if counts.count(counts[0]) != len(counts):
                return False
            continue
        for p, t in zip(params, column, strict=True):
            if t.shape != p.shape or t.dtype != p.dtype or t.device != p.device:
                return False
    return True


class FlatCache:
    """Per optimizer: the flat layout of each group (by position) and a count of flat updates.

    ``updates`` counts group updates that took the flat path; tests read it to make sure the
    path is taken where it should be.
    """

    def __init__(self) -> None:
        self.groups: dict[int, FlatGroup | None] = {}
        self.updates = 0


def flat_cache(optimizer: torch.optim.Optimizer) -> FlatCache:
    """The optimizer's :class:`FlatCache`, created on first use (and after unpickling)."""
    return attached(optimizer, "_handgrad_flat", FlatCache)
