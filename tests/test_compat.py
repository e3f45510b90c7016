"""Each private name in handgrad._compat: present in the pinned torch, and its fallback works."""

from __future__ import annotations

import handgrad._compat as compat


def test_compat_module_imports() -> None:
    assert compat.__doc__


# --- optimizers ---------------------------------------------------------------------------


def test_profiler_enabled_follows_the_profiler() -> None:
    import torch

    assert compat.profiler_enabled() is False
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        assert compat.profiler_enabled() is True
    assert compat.profiler_enabled() is False


def test_profiler_enabled_falls_back_to_true(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    assert compat._PROFILER_ENABLED is torch.autograd._profiler_enabled
    monkeypatch.setattr(compat, "_PROFILER_ENABLED", None)  # a torch without it
    assert compat.profiler_enabled() is True
    assert compat.step_wrapper_needed() is True


def test_global_step_hooks_registered_follows_registration() -> None:
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    assert compat.global_step_hooks_registered() is False
    assert compat.step_wrapper_needed() is False
    for register in (register_optimizer_step_pre_hook, register_optimizer_step_post_hook):
        handle = register(lambda *args: None)
        assert compat.global_step_hooks_registered() is True
        assert compat.step_wrapper_needed() is True
        handle.remove()
        assert compat.global_step_hooks_registered() is False


def test_global_step_hooks_registered_falls_back_to_true(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from torch.optim import optimizer

    assert compat._GLOBAL_PRE_HOOKS is optimizer._global_optimizer_pre_hooks
    assert compat._GLOBAL_POST_HOOKS is optimizer._global_optimizer_post_hooks
    monkeypatch.setattr(compat, "_GLOBAL_PRE_HOOKS", None)  # a torch without the registry
    assert compat.global_step_hooks_registered() is True


def test_privateuse1_backend_name(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    assert compat.privateuse1_backend_name() == "privateuseone"
    monkeypatch.delattr(torch._C, "_get_privateuse1_backend_name")
    assert compat.privateuse1_backend_name() == "privateuseone"
