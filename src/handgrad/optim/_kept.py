"""Kept lists: a group's step reuses the lists its last step ran on while they still hold.

Before a group's rule runs, :class:`handgrad.optim.Optimizer` gathers, in Python, which
parameters have a gradient, each one's state dict and state tensors, the device/dtype
buckets and which body updates which tensors. That is about a microsecond per parameter
and step, as much as a multi-tensor kernel spends on a small tensor, and it comes out the
same at almost every step. So the lists a step ran on are kept (:class:`KeptLists`), and
the next step of the group reuses them after a check that reads identities only, with
``map`` rather than Python loops (a few tens of nanoseconds per parameter):

- the group lists the very same parameter objects, and the same ones have a gradient
  (``.grad`` is read afresh at every step: a backward may store new tensors), none sparse;
- the rule keeps the same state keys, and ``optimizer.state`` is the same mapping holding
  the same state dicts, each holding the same state tensors (a ``load_state_dict``, a
  dict or a tensor replaced by hand fails this).

On any mismatch the step gathers everything afresh (the same answer, slower) and keeps the
new lists. Nothing is kept for sparse gradients, ``foreach=False``/``differentiable``
groups, complex parameters updated as real views (a view would not follow ``p.data = ...``)
or state a rule has still to make (SGD's first momentum buffer). A rule reads the lists and
never modifies them (:meth:`handgrad.optim.Optimizer.update` says so): the same lists are
handed to it at every step. ``tests/optim/test_kept_lists.py`` changes each of the above
between steps and checks the result against torch.optim.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain, compress, repeat
from operator import attrgetter, is_, is_not, itemgetter
from typing import TYPE_CHECKING, Any

from torch import Tensor

from handgrad.optim._common import group_by_device_and_dtype
from handgrad.optim._flat import _same_objects

if TYPE_CHECKING:
    from handgrad.optim._base import Optimizer

_grad_of = attrgetter("grad")
_is_sparse = attrgetter("is_sparse")

Body = Callable[..., None]
# (body, indices into the step's parameters or None for all of them, params, state lists)
Run = tuple[Body, list[int] | None, list[Tensor], dict[str, list[Any]]]


class KeptLists:
    """The lists one step of ``group`` ran on, and what must hold to run on them again."""

    __slots__ = ("entries", "group", "group_params", "keys", "mapping", "params", "pick",
                 "present", "runs", "snapshot", "steps", "tables")  # fmt: skip

    def __init__(self, group: dict[str, Any], params: list[Tensor], keys: tuple[str, ...],
                 mapping: Any, tables: list[dict[str, Any]], runs: list[Run]) -> None:  # fmt: skip
        self.group = group
        self.group_params = tuple(group["params"])
        self.present = tuple(map(is_not, map(_grad_of, self.group_params), repeat(None)))
        self.params = params  # those with a gradient, in group order
        self.keys = keys
        self.mapping = mapping
        self.snapshot = (tuple(mapping), tuple(mapping.values()))
        self.tables = tuple(tables)
        self.pick: Callable[[dict[str, Any]], Any] = itemgetter(*keys) if keys else dict.keys
        self.entries = self._entries() if keys else ()
        self.steps = [table["step"] for table in tables] if "step" in keys else []
        self.runs = runs

    @classmethod
    def of(cls, optimizer: Optimizer, group: dict[str, Any], params: list[Tensor],
           keys: tuple[str, ...], tables: list[dict[str, Any]],
           bodies: list[tuple[Body, list[int] | None]]) -> KeptLists | None:  # fmt: skip
        """The lists of a step just taken (``bodies``: which body ran on which indices of
        ``params``), or None where they are not kept (see the module docstring)."""
        if optimizer.complex_as_real and any(p.is_complex() for p in params):
            return None
        if any(table.get(key) is None for table in tables for key in keys):
            return None  # state the rule makes at a later step
        runs: list[Run] = []
        everything = list(range(len(params)))
        for body, chosen in bodies:
            indices = everything if chosen is None else chosen
            buckets = group_by_device_and_dtype([[params[i] for i in indices], indices])
            for b_params, b_indices in buckets:
                state = {key: [tables[i][key] for i in b_indices] for key in keys}
                runs.append((body, None if b_indices == everything else b_indices, b_params,
                             state))  # fmt: skip
        return cls(group, params, keys, optimizer.state, tables, runs)

    def grads(self, mapping: Any, keys: tuple[str, ...]) -> list[Tensor] | None:
        """The gradients of this step's parameters, in order, if the kept lists still
        describe the group (see the module docstring); else None."""
        params = self.group["params"]
        kept = self.group_params
        if len(params) != len(kept) or not all(map(is_, params, kept)):
            return None
        grads = list(map(_grad_of, kept))
        present = tuple(map(is_not, grads, repeat(None)))
        if present != self.present:
            return None
        if len(self.params) != len(grads):
            grads = list(compress(grads, present))
        if any(map(_is_sparse, grads)):
            return None
        if keys != self.keys or mapping is not self.mapping:
            return None
        if not keys:
            return grads
        snapshot = (tuple(mapping), tuple(mapping.values()))
        if not _same_objects(snapshot, self.snapshot):
            if not all(map(is_, map(mapping.get, self.params), self.tables)):
                return None
            self.snapshot = snapshot
        try:
            entries = self._entries()
        except KeyError:
            return None
        if len(entries) != len(self.entries) or not all(map(is_, entries, self.entries)):
            return None
        return grads

    def _entries(self) -> tuple[Any, ...]:
        """Every state entry the rule reads, parameter by parameter (KeyError if one is gone)."""
        entries = map(self.pick, self.tables)  # one key: the entry; several: a tuple of them
        return tuple(entries if len(self.keys) == 1 else chain.from_iterable(entries))
