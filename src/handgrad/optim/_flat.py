"""Flat groups: a parameter group that is one FlatLayout runs its rule as one tensor.

:func:`handgrad.nn.flatten_parameters` lays a module's parameters end to end in one buffer
and their gradients in another (a :class:`handgrad.nn.FlatLayout`). An optimizer recognises
a group whose parameters are exactly one layout's, in order, when the group is added (see
:class:`handgrad.optim.Optimizer`) and keeps a :class:`FlatGroup` for it. At the group's
first flat step the optimizer's state for it is laid out the same way: one buffer per state
key, each parameter's entry a view of its range (``step``: one 0-d view per parameter into a
buffer of counts), so the rule runs once on the buffers instead of once per parameter. Every
element sees the operations it would see in the per-parameter update, so the results are the
same bits (tested against torch.optim).

The check before each flat step (:meth:`FlatGroup.ready`) reads identities and data pointers
the layout recorded, it infers nothing: the group still lists the layout's parameters; each
is where the layout put it and has a dense ``.grad`` (gathered into the layout's gradient
buffer with one ``torch._foreach_copy_``, unless it already is its slot); each state entry
is still the view the flat state gave it, with equal step counts. State that fails only the
last check (after ``load_state_dict``, or an entry replaced by hand) is copied into new
flat buffers once (:meth:`FlatGroup.adopt_state`); anything else runs the per-parameter path
for that step.
"""

from __future__ import annotations

from itertools import chain
from operator import attrgetter, is_, itemgetter
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from handgrad.nn.flat import FlatLayout, views_end_to_end
from handgrad.optim._common import real_view

if TYPE_CHECKING:
    from handgrad.optim._base import Optimizer

_data_ptr = Tensor.data_ptr
_grad_of = attrgetter("grad")


class FlatGroup:
    """A parameter group recognised as ``layout``, and its state laid out flat (once made)."""

    def __init__(self, group: dict[str, Any], layout: FlatLayout) -> None:
        self.group = group
        self.layout = layout
        self.param_pointers = layout.pointers
        self.slot_pointers = tuple(map(_data_ptr, layout.slots))
        # Where gradients are gathered: views of the layout's gradient buffer that, unlike
        # the layout's slots (which flatten_parameters may hand out as .grad), nothing
        # outside this object reaches, so they never move and need no check.
        self.targets = _views_of(layout.grad, layout.params)
        # The flat state (adopt_state): the keys, one buffer per key, each parameter's state
        # dict and every view handed out (parameter by parameter, keys in order).
        self.keys: tuple[str, ...] | None = None
        self.buffers: dict[str, Tensor] = {}
        self.steps: Tensor | None = None
        self.mapping: Any = None
        self.pick: Any = None  # a parameter's flat state entries, as a tuple
        self.tables: tuple[dict[str, Any], ...] = ()
        self.views: tuple[Tensor, ...] = ()
        self.snapshot: tuple[tuple[Any, ...], tuple[Any, ...]] = ((), ())
        self.lists: tuple[list[Tensor], list[Tensor], dict[str, list[Tensor]]] | None = None

    # -- the check before each step -----------------------------------------------------------

    def ready(self, mapping: Any, keys: tuple[str, ...]) -> bool | None:
        """True: the flat update may run. False: the layout does not hold (the group lists
        other parameters, one has moved, one has no ``.grad`` or a sparse one): the
        per-parameter path runs; otherwise the gradients are now in the layout's buffer.
        None: the layout holds but the state is not the flat state (yet, or any more, or the
        step counts differ): :meth:`adopt_state` may lay it out again.

        Runs before every flat step, so it reads identities and pointers only, with ``map``
        rather than Python loops; the per-parameter state dicts are found again (a lookup
        hashes each parameter in Python) only when the state mapping's contents changed.
        """
        layout = self.layout
        expected = layout.params
        params = self.group["params"]
        if len(params) != len(expected) or not all(map(is_, params, expected)):
            return False
        if tuple(map(_data_ptr, expected)) != self.param_pointers:
            return False
        grads = list(map(_grad_of, expected))
        if all(map(is_, grads, layout.slots)):
            # Every gradient is its slot (flatten_parameters moved existing ones there): the
            # buffer holds them unless a slot was given memory of its own (``set_``).
            if tuple(map(_data_ptr, layout.slots)) != self.slot_pointers:
                return False
        else:
            # The gradients a backward stored (tensors of their own), gathered into the
            # layout's gradient buffer with one call. torch's .grad setter has given each
            # one its parameter's shape, dtype and device; the copy refuses a missing one
            # (None: TypeError) or a sparse one (RuntimeError), which leaves the step to the
            # per-parameter path (one call instead of two passes over the gradients first).
            try:
                torch._foreach_copy_(self.targets, grads)
            except (TypeError, RuntimeError):
                return False
        if keys != self.keys or mapping is not self.mapping:
            return None
        if not keys:  # a rule without state (SGD without momentum)
            return True
        snapshot = (tuple(mapping), tuple(mapping.values()))
        if not _same_objects(snapshot, self.snapshot):
            if not all(map(is_, map(mapping.get, expected), self.tables)):
                return None
            self.snapshot = snapshot
        try:
            entries = tuple(chain.from_iterable(map(self.pick, self.tables)))
        except KeyError:
            return None
        if len(entries) != len(self.views) or not all(map(is_, entries, self.views)):
            return None
        steps = self.steps
        if steps is not None:
            counts = steps.tolist()
            if counts.count(counts[0]) != len(counts):
                return None
        return True

    # -- the flat state ----------------------------------------------------------------------

    def adopt_state(self, optimizer: Optimizer, keys: tuple[str, ...]) -> bool:
        """Lay the group's state out flat (made by ``init_state`` for parameters without
        any); False, changing nothing, where it cannot be: a key missing after that, a state
        tensor not shaped like its parameter, per-parameter 0-d state besides ``step``,
        unequal step counts."""
        if any(key != "step" and key in optimizer.scalar_state for key in keys):
            return False  # a 0-d state per parameter (NAdam's mu_product): not one tensor
        mapping = optimizer.state
        params = self.layout.params
        group = self.group
        if not keys:  # nothing to lay out, and no state entry to make (torch makes none)
            self.keys, self.buffers, self.steps, self.mapping = keys, {}, None, mapping
            self.tables, self.views, self.lists = (), (), None
            return True
        made = {
            i: optimizer.init_state(p, group) for i, p in enumerate(params) if not mapping.get(p)
        }
        tables = [made.get(i) or mapping[p] for i, p in enumerate(params)]
        columns: dict[str, list[Tensor]] = {}
        for key in keys:
            entries = [table.get(key) for table in tables]
            column = [t for t in entries if isinstance(t, Tensor)]
            if len(column) != len(entries) or not _fits(key, column, params):
                return False
            columns[key] = column
        buffers: dict[str, Tensor] = {}
        views: dict[str, list[Tensor]] = {}
        for key, column in columns.items():
            buffers[key], views[key] = _laid_flat(column, key == "step")
        for i, p in enumerate(params):
            if i in made:
                mapping[p].update(made[i])
            table = mapping[p]
            for key in keys:
                table[key] = views[key][i]
        self.keys = keys
        self.pick = _picker(keys)
        self.buffers = buffers
        self.steps = buffers.get("step")
        self.mapping = mapping
        self.tables = tuple(mapping[p] for p in params)
        self.views = tuple(views[key][i] for i in range(len(params)) for key in keys)
        self.snapshot = (tuple(mapping), tuple(mapping.values()))
        self.lists = None
        return True

    def arguments(
        self, complex_as_real: bool = True
    ) -> tuple[list[Tensor], list[Tensor], dict[str, list[Tensor]]]:
        """The rule's ``params, grads, state`` for the group: lists of one tensor (real
        views of complex buffers); ``state["step"]`` one 0-d count (all are equal).

        The same lists at every step (making them afresh measured ~8% of the 1-100-1 step):
        a rule reads them and may rebind its names, never modifies them.
        """
        if self.lists is None:
            layout = self.layout
            view = real_view if complex_as_real else _as_is
            state = {
                key: [buffer[0] if key == "step" else view(buffer)]
                for key, buffer in self.buffers.items()
            }
            self.lists = ([view(layout.data)], [view(layout.grad)], state)
        return self.lists


def _views_of(buffer: Tensor, params: tuple[Tensor, ...]) -> list[Tensor]:
    """``buffer`` cut into views shaped as ``params``, end to end."""
    with torch.inference_mode(False):  # normal tensors even if the group is added under it
        return views_end_to_end(buffer, params)


def _picker(keys: tuple[str, ...]) -> Any:
    """A function from a state dict to its entries for ``keys``, always as a tuple."""
    if len(keys) == 1:
        key = keys[0]
        return lambda table: (table[key],)
    return itemgetter(*keys)


def _as_is(t: Tensor) -> Tensor:
    return t


def _fits(key: str, column: list[Tensor], params: tuple[Tensor, ...]) -> bool:
    """Whether a state column can be laid flat: steps 0-d on one device and dtype with equal
    counts; anything else shaped, typed and placed as its parameter."""
    if key == "step":
        first = column[0]
        if any(t.dim() != 0 or t.dtype != first.dtype or t.device != first.device for t in column):
            return False
        counts = [t.item() for t in column]
        return counts.count(counts[0]) == len(counts)
    return all(
        t.shape == p.shape and t.dtype == p.dtype and t.device == p.device
        for t, p in zip(column, params, strict=True)
    )


def _laid_flat(column: list[Tensor], counts: bool) -> tuple[Tensor, list[Tensor]]:
    """A new 1-D buffer holding ``column`` end to end (one entry per 0-d count) and a view
    per tensor."""
    first = column[0]
    if counts:
        buffer = torch.stack([t.detach() for t in column])
        return buffer, [buffer[i] for i in range(len(column))]
    with torch.inference_mode(False):
        buffer = torch.empty(sum(t.numel() for t in column), dtype=first.dtype, device=first.device)
    views = views_end_to_end(buffer, column)
    for view, t in zip(views, column, strict=True):
        view.copy_(t)
    return buffer, views


def _same_objects(
    now: tuple[tuple[Any, ...], tuple[Any, ...]], before: tuple[tuple[Any, ...], tuple[Any, ...]]
) -> bool:
    """Whether two (keys, values) snapshots of a mapping hold the very same objects."""
    return (
        len(now[0]) == len(before[0])
        and all(map(is_, now[0], before[0]))
        and all(map(is_, now[1], before[1]))
    )
