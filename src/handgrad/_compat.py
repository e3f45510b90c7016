"""Every private torch name handgrad uses, each with a fallback: the one place to look.

handgrad mirrors torch's public behaviour, and a few speed-ups or compatibility details need
names torch does not promise to keep (hook registries, argparse's negative-number matcher,
...). Each such name is read here once, behind a small function with a documented fallback
for a torch (or Python) that moved it, and each has a test in ``tests/test_compat.py``
(the name still exists in the pinned torch; the fallback behaves). Nothing else in ``src/``
imports a private torch name. ``torch._foreach_*`` kernels are not listed: they are fair to
use anywhere, with a plain-loop fallback where they are absent.

The private names, one entry per thing read:

1. torch's module hook registries: a module's own (``_forward_pre_hooks``,
   ``_forward_hooks``, ``_backward_pre_hooks``, ``_backward_hooks``) and the global ones
   (``torch.nn.modules.module._global_*_hooks``) — :func:`forward_runs_alone` (and
   :func:`forward_runs_alone_each`, the same for several modules);
2. ``Module._compiled_call_impl`` (set by ``module.compile()``) — the same two;
3. ``torch._C._get_tracing_state`` (``torch.jit.trace`` recording) — the same two;
4. ``torch.distributed.distributed_c10d._get_default_store`` (the default process group's
   store) — :func:`default_process_group_store`;
5. torch's optimizer step hook registries: the global ones
   (``torch.optim.optimizer._global_optimizer_pre_hooks``/``_post_hooks``) —
   :func:`global_step_hooks_registered`, :func:`step_wrapper_needed` — and an optimizer's
   own (``_optimizer_step_pre_hooks``/``_post_hooks``) — :func:`share_step_hooks`;
6. ``torch.autograd._profiler_enabled`` (a profiler recording) — :func:`profiler_enabled`,
   :func:`step_wrapper_needed`;
7. ``torch._C._get_privateuse1_backend_name`` (where ``capturable=True`` is allowed) —
   :func:`privateuse1_backend_name`;
8. ``Tensor._use_count`` and ``torch._C._storage_Use_Count`` of ``UntypedStorage._cdata``
   (how many C++ references a tensor and its memory have) — :func:`sole_reference`;
9. ``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu`` (the CPU attention forward
   that ``scaled_dot_product_attention`` runs, which also returns each row's log-sum-exp) —
   :func:`attention_with_logsumexp`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import optimizer as _torch_optimizer

# --------------------------------------------------------------- 1-3: Module.__call__'s checks


def _hook_registries() -> tuple[dict[Any, Any], ...] | None:
    """torch's four global module hook registries, or None where torch moved them."""
    try:
        from torch.nn.modules import module as torch_module

        return (
            torch_module._global_forward_pre_hooks,
            torch_module._global_forward_hooks,
            torch_module._global_backward_pre_hooks,
            torch_module._global_backward_hooks,
        )
    except AttributeError:
        return None


def _reads_module_state() -> bool:
    """Whether a torch module still keeps its hooks and compiled call where we read them."""
    probe = torch.nn.Module()
    names = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
    return all(isinstance(getattr(probe, name, None), dict) for name in names) and (
        getattr(probe, "_compiled_call_impl", False) is None
    )


_GLOBAL_HOOKS = _hook_registries()
_tracing_state: Callable[[], Any] | None = getattr(torch._C, "_get_tracing_state", None)


if _GLOBAL_HOOKS is not None and _tracing_state is not None and _reads_module_state():
    _forward_pre, _forward, _backward_pre, _backward = _GLOBAL_HOOKS
    _tracing: Callable[[], Any] = _tracing_state

    def forward_runs_alone(module: torch.nn.Module) -> bool:
        """Whether torch's ``Module.__call__`` would run ``module.forward`` and nothing else:
        no hook on the module or registered globally (``register_module_forward_hook`` and
        friends), no compiled call (``module.compile()``), no trace being recorded
        (``torch.jit.trace``). The conditions are those of torch's ``_call_impl``.

        Fallback, for a torch that moved any of these: always False (every call goes through
        torch's ``__call__``: correct, only slower).
        """
        return not (
            module._compiled_call_impl is not None
            or module._forward_pre_hooks
            or module._forward_hooks
            or module._backward_pre_hooks
            or module._backward_hooks
            or _forward_pre
            or _forward
            or _backward_pre
            or _backward
            or _tracing()
        )

    def forward_runs_alone_each(modules: Iterable[torch.nn.Module]) -> bool:
        """:func:`forward_runs_alone` for every one of ``modules``, the global state read once
        (what ``Sequential``'s fast path asks of its children before every forward).

        Fallback: always False, as :func:`forward_runs_alone`.
        """
        if _forward_pre or _forward or _backward_pre or _backward or _tracing():
            return False
        for module in modules:
            if (
                module._compiled_call_impl is not None
                or module._forward_pre_hooks
                or module._forward_hooks
                or module._backward_pre_hooks
                or module._backward_hooks
            ):
                return False
        return True

else:  # pragma: no cover - exercised by tests/test_compat.py through a reload

    def forward_runs_alone(module: torch.nn.Module) -> bool:
        """The fallback: torch's ``Module.__call__`` always runs."""
        return False

    def forward_runs_alone_each(modules: Iterable[torch.nn.Module]) -> bool:
        """The fallback: torch's ``Module.__call__`` always runs."""
        return False


# --------------------------------------------------------------- 4: the process group's store


def default_process_group_store() -> object | None:
    """The key-value store of torch.distributed's default process group (the rendezvous
    store every rank shares), or None when there is no group or this torch hides it.

    Used by :mod:`handgrad.train.distributed` to leave each rank's pid and, on failure, its
    reason where the other ranks can read them. Fallback, for a torch without the name:
    None, and a rank that loses a peer says so without naming which rank it was.
    """
    import torch.distributed as dist

    getter = getattr(dist.distributed_c10d, "_get_default_store", None)
    if getter is None or not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        store: object = getter()
    except (RuntimeError, ValueError):
        return None
    return store


# --------------------------------------------------------------- 5-7: handgrad.optim's step


def profiler_enabled() -> bool:
    """Whether a torch profiler is recording (``torch.autograd._profiler_enabled``).

    handgrad's optimizers skip torch's profiler scopes around ``step()``/``zero_grad()`` when
    none records (a few µs a call, which a small network's step notices). Fallback: True, so
    the scopes are always entered, as torch does.
    """
    return True if _PROFILER_ENABLED is None else bool(_PROFILER_ENABLED())


def global_step_hooks_registered() -> bool:
    """Whether a global optimizer step hook is registered
    (``torch.optim.optimizer.register_optimizer_step_pre_hook``/``..._post_hook``).

    torch keeps them in the module's private ``_global_optimizer_pre_hooks`` and
    ``_global_optimizer_post_hooks``; registration is public, asking is not. Fallback: True,
    so torch's step wrapper (which runs them) is always used.
    """
    if _GLOBAL_PRE_HOOKS is None or _GLOBAL_POST_HOOKS is None:
        return True
    return bool(_GLOBAL_PRE_HOOKS) or bool(_GLOBAL_POST_HOOKS)


def step_wrapper_needed() -> bool:
    """:func:`global_step_hooks_registered` or :func:`profiler_enabled`: whether torch's
    ``step()`` wrapper has work to do for every optimizer (one call, on every step)."""
    return global_step_hooks_registered() or profiler_enabled()


# Read once: torch registers into (and removes from) these same dicts, and the profiler
# check is a function.
_GLOBAL_PRE_HOOKS = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
_GLOBAL_POST_HOOKS = getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
_PROFILER_ENABLED = getattr(torch.autograd, "_profiler_enabled", None)


def privateuse1_backend_name() -> str:
    """The name torch gives its out-of-tree device backend (``privateuseone`` unless renamed;
    ``torch._C._get_privateuse1_backend_name``), one of the devices torch allows
    ``capturable=True`` on. Fallback: ``"privateuseone"``."""
    name = getattr(torch._C, "_get_privateuse1_backend_name", None)
    return "privateuseone" if name is None else str(name())


def share_step_hooks(wrapper: torch.optim.Optimizer, optimizer: torch.optim.Optimizer) -> None:
    """Make ``wrapper`` keep its step hooks in ``optimizer``'s registries (torch's
    ``_optimizer_step_pre_hooks``/``_optimizer_step_post_hooks``), so that a hook registered
    on either runs around either's ``step()`` (:class:`handgrad.privacy.DPOptimizer`, as
    Opacus's wrapper does).

    Fallback, for a torch that keeps them elsewhere: nothing is shared; the wrapper keeps
    hooks of its own, which run around its own ``step()``.
    """
    names = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
    if all(isinstance(getattr(optimizer, name, None), dict) for name in names):
        for name in names:
            setattr(wrapper, name, getattr(optimizer, name))


def sole_reference(tensor: torch.Tensor) -> bool:
    """Whether the caller's one local variable is the only thing that reaches ``tensor``'s
    memory: no other Python reference to the tensor, no other tensor on its storage (a view,
    ``detach()``, ``set_``), no NumPy array or DLPack capsule on it, no Python storage
    object held. Then writing into it can surprise nobody (handgrad reuses a cleared
    ``grad_sample``'s storage only then: :mod:`handgrad.nn.per_sample`).

    The counts are Python's ``sys.getrefcount`` and torch's private ``Tensor._use_count``
    and ``torch._C._storage_Use_Count`` (of the storage's ``_cdata`` handle), compared
    with those of a fresh tensor held the same way (measured once, so that the
    interpreter's own references cancel). Fallback, for a
    torch without the names: False — never reused, always fresh memory.
    """
    if _SOLE_HOLDERS is None:
        return False
    return _holders(tensor) == _SOLE_HOLDERS


def _holders(tensor: torch.Tensor) -> tuple[int, int, int, int]:
    """(Python references to the tensor, C++ references to it, C++ references to its
    storage, Python references to its storage object)."""
    assert _TENSOR_USE_COUNT is not None
    assert _STORAGE_USE_COUNT is not None
    storage = tensor.untyped_storage()
    return (
        sys.getrefcount(tensor),
        int(_TENSOR_USE_COUNT(tensor)),
        int(_STORAGE_USE_COUNT(storage._cdata)),
        sys.getrefcount(storage),
    )


def _holders_of_a_lone_local() -> tuple[int, int, int, int] | None:
    """:func:`_holders` of a fresh tensor that one local holds, reached through one call as
    :func:`sole_reference` reaches its argument; None where torch lacks the names."""
    if _TENSOR_USE_COUNT is None or _STORAGE_USE_COUNT is None:
        return None
    probe = torch.empty(1)
    return _holders_through_one_call(probe)


def _holders_through_one_call(tensor: torch.Tensor) -> tuple[int, int, int, int]:
    return _holders(tensor)


_TENSOR_USE_COUNT: Callable[[torch.Tensor], int] | None = getattr(torch.Tensor, "_use_count", None)
_STORAGE_USE_COUNT: Callable[[int], int] | None = getattr(torch._C, "_storage_Use_Count", None)
_SOLE_HOLDERS = _holders_of_a_lone_local()


# --------------------------------------------------------------- 9: attention's log-sum-exp


def attention_with_logsumexp(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, is_causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(O, L): scaled dot-product attention's output and each row's log-sum-exp of the scores,
    L_i = log Σ_j e^(S_ij), from the fused CPU kernel that ``F.scaled_dot_product_attention``
    runs on (B, H, T, d) CPU tensors (its public call returns O alone and drops L). The
    caller checks that the kernel takes its inputs (:mod:`handgrad.nn.functional.attention`).
    Fallback: None, and the caller runs the public function.
    """
    if _FLASH_ATTENTION_CPU is None:
        return None
    out, logsumexp = _FLASH_ATTENTION_CPU(query, key, value, 0.0, is_causal, scale=scale)
    return out, logsumexp


_FLASH_ATTENTION_CPU: Callable[..., Any] | None = getattr(
    torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None
)
