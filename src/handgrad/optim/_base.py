"""handgrad.optim.Optimizer: the step loop every handgrad optimizer shares; each keeps its rule.

An optimizer is its update rule. This base owns everything around it, once: the closure,
the loop over groups, each parameter's state (made at its first step), the step count,
lists per device and dtype, complex parameters as (Re, Im) pairs, the choice of body, the
group flags older state_dicts lack, and the flat fast path. It is a plain
:class:`torch.optim.Optimizer` subclass (never a torch optimizer), so schedulers, hooks,
``state_dict``/``load_state_dict`` and pickling behave as torch's.

A subclass declares (docs/writing-an-optimizer.md builds Lion this way)::

    class Lion(Optimizer):
        state_keys = ("exp_avg",)      # what each parameter keeps: zeros like it at first
        elementwise = True             # each element's update reads only that element

        def update(self, group, params, grads, state):
            ...                        # the rule, on lists (torch._foreach_* ops)

How a step runs, for each parameter group:

1. Parameters without a gradient are skipped (as torch.optim does). A sparse gradient is
   refused with RuntimeError unless the class sets ``sparse_gradients``.
2. ``capturable=True`` off the devices torch allows it on raises AssertionError, as torch;
   :meth:`Optimizer.check` refuses what else torch refuses at step time (default: nothing).
3. A parameter without state gets :meth:`Optimizer.init_state` (default: zeros like it for
   every key of :meth:`Optimizer.kept_state`; ``step`` a 0-d float tensor as torch makes it).
4. ``step``, if kept, is counted here: +1 for every parameter with a gradient, before the
   rule runs. The rule reads it (``t.item()``) and never increments it.
5. The rule runs on lists that share one device and dtype, complex tensors as real views
   (…, 2) unless ``complex_as_real`` is False: ``update(group, params, grads, state)``,
   ``state[key]`` a list parallel to ``params``. Which body runs:

   - ``update``: the rule on lists (multi-tensor). Required, and the only body a subclass
     needs: it runs on every layout (0-d to n-d, float16 to complex, any size, flat groups).
   - ``update_single`` (optional): the rule one tensor at a time, in torch's single-tensor
     order; run for ``foreach=False``, ``differentiable=True`` and sparse gradients.
   - ``update_large`` (optional, a fast path): tensors of at least
     :data:`LARGE_TENSOR_ELEMENTS` elements, each on its own: all of its operations in a
     row while it is in cache, temporaries in reused buffers (:attr:`Optimizer.scratch`).
   - ``update_flat`` (optional, a fast path): flat groups (below).

   A fast path is the same rule, measured at least 10% faster than ``update`` on a
   benchmark row (the figure beside it) and tested to give ``update``'s bits
   (tests/optim/test_against_torch.py, test_flat_groups.py).

The flat fast path (``_flat.py``). A group whose parameters are exactly one
:class:`handgrad.nn.FlatLayout`'s parameters, in order, is recognised when the group is
added (and after ``load_state_dict`` or unpickling). If the class is ``elementwise`` and the
layout float32, float64 or complex, the group runs as one tensor: the same rule on lists of
one (the layout's parameter and gradient buffers, and the state laid out the same way), a
few kernel calls per step for the whole network. Each step first checks, cheaply, that the
layout still holds (the parameters where the layout put them, each with a dense ``.grad``,
which one ``torch._foreach_copy_`` gathers into the layout's gradient buffer; the state the
flat state with equal step counts); on any mismatch that step runs the per-parameter path:
the same answer, slower. State that is not shaped like the parameters
(NAdam's ``mu_product``) keeps a group per-parameter.

Kept lists (``_kept.py``). Steps 1, 3 and 4 and the bucketing of step 5 come out the same
at almost every step and cost about a microsecond per parameter in Python, as much as a
kernel on a small tensor. A group's step therefore reuses the lists its last step ran on
while a check of identities (the same parameters with gradients, the same state mapping,
dicts and tensors) finds the group as it was; otherwise it gathers them afresh.

Per-call overhead matters at that size (a 1-100-1 network's step is ~20 µs of kernels), so
``step()`` calls torch's profiling/hook wrapper only while a profiler runs or a step hook is
registered, and ``zero_grad()`` skips torch's profiler scope when no profiler runs; both
behave as torch's otherwise (see :mod:`handgrad._compat`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from handgrad import _compat
from handgrad.nn.flat import layout_of
from handgrad.optim._common import (
    Scratch,
    check_capturable,
    fast_path,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
    real_view,
    restore_tensor_steps,
)
from handgrad.optim._flat import FlatGroup
from handgrad.optim._kept import KeptLists

Lists = dict[str, list[Any]]

# A kept operand for ``steps += 1`` on the CPU: a Python 1 becomes a new tensor per call.
_ONE = torch.tensor(1.0)

# float16 and bfloat16 layouts stay per-parameter: their CPU kernels compute in float32 and
# round differently in the vectorised part of a tensor than in its tail, so one flat tensor
# and separate tensors can differ in the last bit (measured: SGD in float16).
_FLAT_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)

# At least this many elements: a tensor goes to ``update_large`` where a class has one. All
# of its operations then run in a row while its data is still in cache, with temporaries in
# reused buffers: faster than one multi-tensor kernel per operation, which streams every
# tensor through memory once per operation and allocates fresh temporaries
# (benchmarks/bench_optim.py, "4 params of 1M": Adam 0.36x of torch foreach with it, 1.04x
# without, one thread; measured for issue 12).
LARGE_TENSOR_ELEMENTS = 1 << 16


class Optimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose ``step()`` is written once: a subclass writes its rule.

    Class attributes a subclass sets:

    - ``state_keys``: the state each parameter keeps, in the order the rule reads it;
      ``"step"`` is a 0-d count the base keeps. The state holds exactly these keys (see
      :meth:`kept_state` for keys a group keeps only with some options).
    - ``elementwise``: True when each element's new value depends only on that element's
      parameter, gradient and state (Adam, SGD, Lion): then a flat group may run as one
      tensor. False (the default) for rules that look at a whole tensor (norms, matrices).
    - ``flag_defaults``: group entries an older state_dict or pickle may lack, and their
      values (torch's defaults); filled in after ``load_state_dict`` and unpickling.
    - ``sparse_gradients``: True when ``update_single`` takes sparse gradients; else a
      sparse gradient raises RuntimeError(``sparse_error`` or "<Class> does not support
      sparse gradients").
    - ``scalar_state``: 0-d state keys older pickles stored as Python numbers (``step``).
    - ``complex_as_real``: complex tensors reach the rule as real views (…, 2) (default;
      torch's convention for rules that are not complex-linear). False: as they are (SGD,
      whose rule is linear, as torch's SGD runs it).

    Methods: :meth:`update` (required), ``update_single``/``update_large``/``update_flat``
    (optional bodies, see the module docstring), :meth:`kept_state`, :meth:`init_state`
    and :meth:`check`.
    """

    state_keys: ClassVar[tuple[str, ...]] = ()
    elementwise: ClassVar[bool] = False
    flag_defaults: ClassVar[dict[str, Any]] = {}
    sparse_gradients: ClassVar[bool] = False
    sparse_error: ClassVar[str | None] = None
    scalar_state: ClassVar[tuple[str, ...]] = ("step",)
    complex_as_real: ClassVar[bool] = True

    # Optional bodies (same signature as update); None: not provided.
    update_single: Callable[..., None] | None = None
    update_large: Callable[..., None] | None = None
    update_flat: Callable[..., None] | None = None

    # -- what a subclass writes --------------------------------------------------------------

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """The update rule on lists of one device and dtype (complex as real views).

        ``state[key]`` is the list of the parameters' state tensors for each key of
        :meth:`kept_state`, ``state["step"]`` already counts this step. Update ``params`` and
        the state in place; never write into ``grads`` (they are the caller's ``.grad``).
        Read the lists and the dict, rebind names freely (``grads = torch._foreach_neg(grads)``),
        but do not modify them: a flat group, and a group on its kept lists (``_kept.py``),
        hands the same ones to every step.
        """
        raise NotImplementedError(f"{type(self).__name__} must define update()")

    def kept_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state keys this group keeps (default: ``state_keys``); e.g. Adam keeps
        ``max_exp_avg_sq`` only with ``amsgrad``."""
        return self.state_keys

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """The state of ``p`` at its first step: for each kept key, zeros shaped like ``p``
        (``step``: a 0-d zero as torch makes it). Override for state that starts elsewhere;
        a key left out (SGD's momentum buffer, which starts as the first gradient) arrives in
        :meth:`update` as None, and the tensor the rule puts in its place is kept."""
        state: dict[str, Tensor] = {}
        for key in self.kept_state(group):
            if key == "step":
                state["step"] = new_step(
                    p, on_param_device=bool(group.get("capturable")), fused=group.get("fused")
                )
            else:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def check(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Refusals torch makes at step time for a group's parameters (default: none)."""

    @property
    def scratch(self) -> Scratch:
        """Reusable temporaries for tensor-at-a-time bodies (not state: never saved)."""
        scratch = self.__dict__.get("_handgrad_scratch")
        if scratch is None:
            scratch = self.__dict__["_handgrad_scratch"] = Scratch()
        return scratch

    # -- torch.optim.Optimizer's contract ----------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``; a group that is one flat layout is recognised here."""
        super().add_param_group(param_group)
        self._recognise(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        """torch's, then the group flags older state_dicts lack (``flag_defaults``), numbers
        saved for 0-d state made tensors again, and flat groups recognised afresh (torch's
        ``load_state_dict`` ends here too)."""
        super().__setstate__(state)
        for group in self.param_groups:
            for name, default in self.flag_defaults.items():
                group.setdefault(name, default)
        restore_tensor_steps(self, keys=self.scalar_state)
        self.__dict__["_handgrad_flat"] = {}
        self.__dict__["_handgrad_kept"] = {}
        for group in self.param_groups:
            self._recognise(group)

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> Any:
        """torch's; from now on ``step()`` runs through torch's hook wrapper."""
        self.__dict__["_handgrad_hooked"] = True
        return super().register_step_pre_hook(hook)

    def register_step_post_hook(self, hook: Callable[..., Any]) -> Any:
        """torch's; from now on ``step()`` runs through torch's hook wrapper."""
        self.__dict__["_handgrad_hooked"] = True
        return super().register_step_post_hook(hook)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step for every parameter that has a gradient; returns ``closure()``."""
        if type(self).step is Optimizer.step and (
            "_handgrad_hooked" in self.__dict__ or _compat.step_wrapper_needed()
        ):
            return self._hooked_step() if closure is None else self._hooked_step(closure)
        return self._step(closure)

    # torch wraps every optimizer's step() in a profiler scope that runs the step hooks; that
    # costs ~8 µs per call, so ours is marked as wrapped and calls the wrapper when needed.
    step.hooked = True  # type: ignore[attr-defined]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``; with ``set_to_none`` and no profiler running, without its
        profiler scope (a few µs per call that a small network's step notices)."""
        if not set_to_none or _compat.profiler_enabled():
            super().zero_grad(set_to_none)
            return
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = None

    # -- the step ------------------------------------------------------------------------------

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)  # the updates are not recorded (a leaf may require grad)
        try:
            flats: dict[int, FlatGroup] = self.__dict__.get("_handgrad_flat") or {}
            for group in self.param_groups:
                flat = flats.get(id(group))
                if flat is None or flat.group is not group or not self._flat_step(flat):
                    self._group_step(group)
        finally:
            torch.set_grad_enabled(grad_was_enabled)
        return loss

    _hooked_step = torch.optim.Optimizer.profile_hook_step(_step)

    def _group_step(self, group: dict[str, Any]) -> None:
        """The per-parameter update of one group (from its kept lists where they hold)."""
        kept: dict[int, KeptLists | None] = self.__dict__.setdefault("_handgrad_kept", {})
        last = kept.get(id(group))
        if last is not None and last.group is group and fast_path(group):
            grads = last.grads(self.state, self.kept_state(group))
            if grads is not None:
                self._replay(last, grads)
                return
        params, grads, sparse = self._params_with_grads(group)
        if not params:
            return
        if group.get("capturable"):
            check_capturable(True, params)
        self.check(group, params)
        keys = self.kept_state(group)
        tables = []
        if keys:  # a rule without state makes no state entries (torch makes none)
            states = self.state
            for p in params:
                table = states[p]
                if not table:
                    table.update(self.init_state(p, group))
                tables.append(table)
        lists: Lists = {key: [table.get(key) for table in tables] for key in keys}
        if "step" in lists:
            increment_steps(lists["step"])
        if sparse or not fast_path(group):
            self._run(self.update_single or self.update, group, params, grads, lists, tables)
            return
        runs = self._bodies(params)
        for body, chosen in runs:
            if chosen is None:
                self._run(body, group, params, grads, lists, tables)
            else:
                self._run(body, group, [params[i] for i in chosen], [grads[i] for i in chosen],
                          {k: [v[i] for i in chosen] for k, v in lists.items()},
                          [tables[i] for i in chosen] if tables else [])  # fmt: skip
        kept[id(group)] = KeptLists.of(self, group, params, keys, tables, runs)

    def _bodies(self, params: list[Tensor]) -> list[tuple[Callable[..., None], list[int] | None]]:
        """Which body updates which parameters (indices; None: all of them), in order:
        ``update``, and ``update_large`` for tensors of LARGE_TENSOR_ELEMENTS or more."""
        large = self.update_large
        if large is not None:
            big = [p.numel() >= LARGE_TENSOR_ELEMENTS for p in params]
            if any(big):
                small = [i for i, b in enumerate(big) if not b]
                return ([(self.update, small)] if small else []) + [
                    (large, [i for i, b in enumerate(big) if b])
                ]
        return [(self.update, None)]

    def _replay(self, lists: KeptLists, grads: list[Tensor]) -> None:
        """A step on kept lists: what :meth:`_group_step` does, with nothing looked up."""
        group = lists.group
        if group.get("capturable"):
            check_capturable(True, lists.params)
        if type(self).check is not Optimizer.check:
            self.check(group, lists.params)
        if lists.steps:
            increment_steps(lists.steps)
        for body, chosen, params, state in lists.runs:
            body(group, params, grads if chosen is None else [grads[i] for i in chosen], state)

    def _run(
        self,
        body: Callable[..., None],
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        lists: Lists,
        tables: list[dict[str, Any]],
    ) -> None:
        """``body`` on each (device, dtype) bucket, complex tensors as real views; state the
        body created (where it found None) is kept."""
        keys = list(lists)
        columns = [lists[key] for key in keys]
        # State a rule makes itself (a key init_state leaves out); the default makes all.
        # (``None in column`` would compare each tensor with None: slow.)
        created = (
            [i for i, column in enumerate(columns) if any(t is None for t in column)]
            if type(self).init_state is not Optimizer.init_state
            else []
        )
        indices = list(range(len(params)))
        for bucket in group_by_device_and_dtype([params, grads, indices, *columns]):
            b_params, b_grads, b_indices, *b_columns = bucket
            if self.complex_as_real and b_params[0].is_complex():
                b_params, b_grads = _real(b_params), _real(b_grads)
                b_columns = [_real(column) for column in b_columns]
            b_state = dict(zip(keys, b_columns, strict=True))
            body(group, b_params, b_grads, b_state)
            for column in created:
                for j, i in enumerate(b_indices):
                    made = b_columns[column][j]
                    if columns[column][i] is None and made is not None:
                        if params[i].is_complex() and not made.is_complex():
                            made = torch.view_as_complex(made)
                        tables[i][keys[column]] = made

    def _params_with_grads(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], bool]:
        """The group's parameters that have a gradient, those gradients, and whether any is
        sparse (RuntimeError unless ``sparse_gradients``)."""
        params, grads = [], []
        sparse = False
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                if not self.sparse_gradients:
                    message = self.sparse_error or (
                        f"{type(self).__name__} does not support sparse gradients"
                    )
                    raise RuntimeError(message)
                sparse = True
            params.append(p)
            grads.append(grad)
        return params, grads, sparse

    # -- flat groups -----------------------------------------------------------------------------

    def _recognise(self, group: dict[str, Any]) -> None:
        """Remember ``group`` as flat if it is exactly one layout and the rule is elementwise."""
        if not self.elementwise:
            return
        layout = layout_of(list(group["params"]))
        if layout is None or layout.data.dtype not in _FLAT_DTYPES:
            return
        flats = self.__dict__.setdefault("_handgrad_flat", {})
        flats[id(group)] = FlatGroup(group, layout)

    def _flat_step(self, flat: FlatGroup) -> bool:
        """The update of a recognised flat group as one tensor; False (nothing done) when the
        layout does not hold this step (the per-parameter path then runs)."""
        group = flat.group
        if not fast_path(group) or group.get("capturable"):
            return False
        keys = self.kept_state(group)
        ready = flat.ready(self.state, keys)
        if not ready and (ready is False or not flat.adopt_state(self, keys)):
            return False
        if type(self).check is not Optimizer.check:
            self.check(group, list(flat.layout.params))
        self._flat_update(flat)
        return True

    def _flat_update(self, flat: FlatGroup) -> None:
        """A flat group's update once :meth:`_flat_step` has found it ready: the step count,
        then the rule on the group as one tensor."""
        steps = flat.steps
        if steps is not None:  # step += 1 for every parameter of the group: one call
            steps.add_(_ONE if steps.is_cpu else 1)
        body = self.update_flat
        if body is None:
            body = self.update
            large = self.update_large
            if large is not None and flat.layout.data.numel() >= LARGE_TENSOR_ELEMENTS:
                body = large
        body(flat.group, *flat.arguments(self.complex_as_real))
        self.__dict__["_handgrad_flat_updates"] = self.__dict__.get("_handgrad_flat_updates", 0) + 1

    def flat_stepper(self) -> FlatStepper | None:
        """The next steps of this optimizer's one flat group, for a loop that owns the
        parameters, their gradients and this optimizer from now until its last step
        (:mod:`handgrad.train.fast_epoch`); None where there is none to hand out.

        ``step()`` checks before every flat step that the layout and the flat state still
        hold (:meth:`FlatGroup.ready`), because between two steps anyone may have moved a
        parameter, replaced a state entry or registered a hook. A loop that runs nothing of
        anyone else's between its steps can check once: this method runs that check now
        (after a step that took the flat path, it passes) and returns what the following
        steps need, the gradient buffers to fill and the update, with nothing re-checked.

        None unless: ``step`` is this base's (not overridden, no step hook on the optimizer
        or registered globally, no profiler recording), the optimizer has one parameter
        group, that group is flat and takes the fast path, and its layout and state are
        ready for a flat step now.
        """
        if type(self)._step is not Optimizer._step:  # more runs in a step than the update
            return None
        return self._flat_stepper()

    def _flat_stepper(self) -> FlatStepper | None:
        """:meth:`flat_stepper`'s checks but the first (a subclass that runs more in a step
        adds it to the stepper's update)."""
        if (
            type(self).step is not Optimizer.step
            or "_handgrad_hooked" in self.__dict__
            or _compat.step_wrapper_needed()
            or len(self.param_groups) != 1
        ):
            return None
        group = self.param_groups[0]
        flat = (self.__dict__.get("_handgrad_flat") or {}).get(id(group))
        if flat is None or flat.group is not group or not fast_path(group):
            return None
        if group.get("capturable") or flat.ready(self.state, self.kept_state(group)) is not True:
            return None
        if type(self).check is not Optimizer.check:
            self.check(group, list(flat.layout.params))
        return FlatStepper(self, flat)


class FlatStepper:
    """The steps of one flat group in a loop that owns it (:meth:`Optimizer.flat_stepper`).

    Each step: write the step's gradients into :attr:`gradients` (views of the layout's
    gradient buffer shaped as :attr:`params`, in the layout's order), then call
    :attr:`update` with gradient recording off (``torch.no_grad()``, as ``step()`` runs it).
    The update is the one ``step()`` runs on the group (:meth:`Optimizer._flat_update`), so
    the bits are those of ``optimizer.step()`` after storing the same ``.grad``.
    """

    __slots__ = ("gradients", "params", "update")

    def __init__(self, optimizer: Optimizer, flat: FlatGroup) -> None:
        self.params: tuple[Tensor, ...] = flat.layout.params
        self.gradients: list[Tensor] = flat.targets
        self.update: Callable[[], None] = functools.partial(optimizer._flat_update, flat)


def _real(tensors: Iterable[Any]) -> list[Any]:
    """Real views of complex tensors (None entries kept)."""
    return [t if t is None else real_view(t) for t in tensors]


def flat_updates(optimizer: torch.optim.Optimizer) -> int:
    """How many group updates of ``optimizer`` took the flat path (tests read it to make sure
    the path is taken where it should be)."""
    return int(optimizer.__dict__.get("_handgrad_flat_updates", 0))
