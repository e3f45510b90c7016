"""The step loop that the element-wise optimizers share; each keeps its own update rule.

An element-wise optimizer (Adam, RMSprop, Adadelta, ...) updates every parameter from its
gradient and a few per-parameter state tensors of the same shape. What differs between them
is only the update rule; this base owns the rest: the closure, the loop over groups, lazy
state creation, the choice between the multi-tensor and the tensor-at-a-time body, and the
group flags that older pickles lack. Still a plain :class:`torch.optim.Optimizer` subclass,
never a torch optimizer.

Flat groups (``_flat.py``). A group is flat at a step when every parameter has a dense
gradient, the parameters are contiguous tensors of one dtype and device that tile one memory
range in order (each starts where the previous ends, in one storage), the gradients tile a
range the same way, and each state key's tensors do too, with equal ``step`` counts.
``handgrad.nn.flatten_parameters`` lays a module out like that; torch.nn users can build it by
hand. A class with ``flat_updates`` (Adam, AdamW, Adamax, RMSprop, Adadelta) then runs its
tensor-at-a-time body once, on 1-D views spanning the whole group: a handful of kernel calls
per step instead of a handful per parameter, which is most of a small network's step
(1-100-1: 4 tensors, 301 elements). Every element sees the same operations and scalars as
in the per-parameter update, so the results are the same bits (tested against torch.optim).
State created at a flat group's first step lives in flat buffers (each ``state[p][key]`` a
view; ``step`` a 0-d view), so later steps stay flat; state that does not tile (after
``load_state_dict``) is copied into flat buffers once. The layout is re-checked at every step
against a cached record (identities and data pointers: a replaced ``.grad``, re-homed or
moved parameters, new state or a new param group fail it) and any mismatch takes the
per-parameter path, never a different answer. ``_flat.flat_cache(opt).updates`` counts the
flat group updates.

Per-call overhead matters at that size (a 1-100-1 network's step is ~20 µs of kernels), so
``step()`` calls torch's profiling/hook wrapper only while a profiler runs or a step hook is
registered, and ``zero_grad()`` skips torch's profiler scope when no profiler runs; both
behave as torch's otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from ._common import (
    fast_path,
    new_step,
    params_with_grads,
    restore_tensor_steps,
    route,
    scratch_of,
    squeeze_scalar,
)
from ._flat import FlatGroup, build_flat_group, flat_cache


class ElementwiseOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose ``step()`` hands per-parameter lists to two bodies.

    A subclass declares:

    - ``body_lists``: the lists its bodies take, in argument order: ``"params"``, ``"grads"``,
      then state keys. A state key the group does not keep (see :meth:`_state_keys`) arrives
      as an empty list.
    - ``hyperparameters``: the group entries handed to the bodies as keywords (``"betas"``
      is handed over as ``beta1`` and ``beta2``); or it overrides :meth:`_settings`.
    - ``flag_defaults``: group flags an older pickle may lack (``__setstate__`` fills them).
    - ``sparse_error``: torch's RuntimeError message for a sparse gradient.
    - :meth:`_single_tensor` and :meth:`_multi_tensor`: the two bodies of its update rule.

    With ``splits_large_tensors`` (the default) the fast path sends tensors of at least
    ``LARGE_TENSOR_ELEMENTS`` elements to the tensor-at-a-time body with scratch buffers
    (``scratch=`` keyword) and the others to the multi-tensor body; without it a group runs
    one body or the other as a whole.

    With ``flat_updates`` a flat group (see the module docstring) hands its bodies one 1-D
    tensor per list; its steps arrive as one 1-D tensor of equal counts (read them with
    :func:`step_value`).

    Hooks a subclass may override where torch's bookkeeping differs: :meth:`_state_keys`
    (optional state), :meth:`_init_state` (state that does not start at zeros),
    :meth:`_check_params` (step-time refusals), :meth:`_fast` and :meth:`_settings`.
    """

    body_lists: ClassVar[tuple[str, ...]]
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    flag_defaults: ClassVar[dict[str, Any]] = {}
    sparse_error: ClassVar[str | None] = None
    # 0-d state that old pickles stored as Python numbers.
    scalar_state: ClassVar[tuple[str, ...]] = ("step",)
    splits_large_tensors: ClassVar[bool] = True
    flat_updates: ClassVar[bool] = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for name, default in self.flag_defaults.items():
                group.setdefault(name, default)
        restore_tensor_steps(self, keys=self.scalar_state)

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state tensors this group keeps (default: every state key in ``body_lists``)."""
        return tuple(key for key in self.body_lists if key not in ("params", "grads"))

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        """First step of ``p``: a zero ``step`` and zeros shaped as ``p`` for the other keys."""
        state["step"] = new_step(
            p, on_param_device=bool(group.get("capturable")), fused=group.get("fused")
        )
        for key in self._state_keys(group):
            if key != "step":
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _check_params(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Refusals torch makes at step time for a group's parameters (default: none)."""

    def _fast(self, group: dict[str, Any], lists: dict[str, list[Tensor]]) -> bool:
        """Whether the group takes the fast path (default: :func:`fast_path`)."""
        return fast_path(group)

    def _settings(self, group: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the bodies, read from the group (a tensor lr as 0-d)."""
        settings = {name: group[name] for name in self.hyperparameters if name != "betas"}
        if "betas" in self.hyperparameters:
            settings["beta1"], settings["beta2"] = group["betas"]
        if "lr" in settings:
            settings["lr"] = squeeze_scalar(settings["lr"])
        return settings

    def _single_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        """The update rule one tensor at a time (the readable reference body)."""
        raise NotImplementedError

    def _multi_tensor(self, *lists: list[Tensor], **settings: Any) -> None:
        """The update rule on whole lists of tensors (``torch._foreach_*``)."""
        raise NotImplementedError

    def _group_tensors(self, group: dict[str, Any]) -> dict[str, list[Tensor]]:
        """Parameters with gradients and their state, created lazily on the first step."""
        params, grads = params_with_grads(group, self.sparse_error)
        lists: dict[str, list[Tensor]] = {key: [] for key in self.body_lists}
        lists["params"], lists["grads"] = params, grads
        kept = self._state_keys(group)
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                self._init_state(p, group, state)
            for key in kept:
                lists[key].append(state[key])
        return lists

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step for every parameter that has a gradient; returns ``closure()``."""
        if type(self).step is ElementwiseOptimizer.step and (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks
            or torch.autograd._profiler_enabled()
        ):
            return self._hooked_step() if closure is None else self._hooked_step(closure)
        return self._step(closure)

    # torch wraps every optimizer's step() in a profiler scope that runs the step hooks; that
    # costs ~8 µs per call, so ours is marked as wrapped and calls the wrapper when needed.
    step.hooked = True  # type: ignore[attr-defined]

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # torch.no_grad() as a decorator costs a few µs per call; the switch itself does not.
        grad_was_enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            for index, group in enumerate(self.param_groups):
                if not (self.flat_updates and self._flat_step(index, group)):
                    self._group_step(group)
        finally:
            torch._C._set_grad_enabled(grad_was_enabled)
        return loss

    _hooked_step = torch.optim.Optimizer.profile_hook_step(_step)

    def _flat_step(self, index: int, group: dict[str, Any]) -> bool:
        """The update of a flat group as one tensor; False (nothing done) if it is not flat.

        While the group's entries are the same objects as at the last step (no scheduler
        assigned ``lr``, no flag flipped), the flags, state keys and body keywords read then
        are used again; any change reads them afresh.
        """
        cache = self.__dict__.get("_handgrad_flat") or flat_cache(self)
        flat = cache.groups.get(index)
        if flat is not None and flat.same_settings(group):
            keys, settings = flat.keys, flat.settings
        else:
            if not fast_path(group) or group.get("capturable"):
                return False
            keys, settings = self._state_keys(group), None
        if flat is None or not flat.current(group, self.state, keys):
            flat = build_flat_group(
                group, self.state, keys, lambda p, state: self._init_state(p, group, state)
            )
            cache.groups[index] = flat
            if flat is None:
                return False
            if settings is not None:  # still the group's: only the layout was rebuilt
                flat.remember_settings(group, settings)
        if settings is None:
            settings = self._settings(group)
            flat.remember_settings(group, settings)
        if type(self)._check_params is not ElementwiseOptimizer._check_params:
            self._check_params(group, [flat.param])
        self._flat_update(flat, settings)
        cache.updates += 1
        return True

    def _flat_update(self, flat: FlatGroup, settings: dict[str, Any]) -> None:
        """The update rule on a flat group: the tensor-at-a-time body on the 1-D views.

        One tensor at a time, i.e. once (with reused scratch temporaries where the body takes
        them): cheaper than a multi-tensor call on one-tensor lists, and the same operations
        (the same bits). A subclass may run a leaner equivalent (Adam does).
        """
        lists = flat.lists
        if lists is None:
            lists = flat.lists = _flat_lists(flat, self.body_lists)
        if self.splits_large_tensors:
            self._single_tensor(*lists, scratch=scratch_of(self), **settings)
        else:
            self._single_tensor(*lists, **settings)

    def _group_step(self, group: dict[str, Any]) -> None:
        """The per-parameter update of one group (multi-tensor lists, large tensors alone)."""
        lists = self._group_tensors(group)
        if not lists["params"]:
            return
        self._check_params(group, lists["params"])
        settings = self._settings(group)
        fast = self._fast(group, lists)
        if not self.splits_large_tensors:
            body = self._multi_tensor if fast else self._single_tensor
            body(*(lists[key] for key in self.body_lists), **settings)
            return
        multi, single = route(lists, fast)
        if multi["params"]:
            self._multi_tensor(*(multi[key] for key in self.body_lists), **settings)
        if single["params"]:
            scratch = scratch_of(self) if fast else None
            self._single_tensor(
                *(single[key] for key in self.body_lists), scratch=scratch, **settings
            )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``; with ``set_to_none`` and no profiler running, without its
        profiler scope (a few µs per call that a small network's step notices)."""
        if not set_to_none or torch.autograd._profiler_enabled():
            super().zero_grad(set_to_none)
            return
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = None


def _flat_lists(flat: FlatGroup, body_lists: tuple[str, ...]) -> list[list[Tensor]]:
    """A flat group's arguments for a body: one tensor per list (none for state not kept)."""
    lists: list[list[Tensor]] = []
    for key in body_lists:
        if key == "params":
            lists.append([flat.param])
        elif key == "grads":
            lists.append([flat.grad])
        elif key in flat.buffers:
            lists.append([flat.buffers[key]])
        else:
            lists.append([])
    return lists
