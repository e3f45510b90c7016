"""Each private name in handgrad._compat: present in the pinned torch, and its fallback works."""

from __future__ import annotations

import importlib

import pytest
import torch

import handgrad._compat as compat


def test_compat_module_imports() -> None:
    assert compat.__doc__


# --------------------------------------------------------------------------- Module.__call__


def test_the_hook_registries_read_are_torchs() -> None:
    from torch.nn.modules import module as torch_module

    assert compat._GLOBAL_HOOKS is not None
    assert compat._GLOBAL_HOOKS[0] is torch_module._global_forward_pre_hooks
    assert compat._GLOBAL_HOOKS[1] is torch_module._global_forward_hooks
    assert compat._GLOBAL_HOOKS[2] is torch_module._global_backward_pre_hooks
    assert compat._GLOBAL_HOOKS[3] is torch_module._global_backward_hooks
    assert compat._tracing_state is torch._C._get_tracing_state
    assert compat._reads_module_state()
    assert compat.forward_runs_alone.__name__ == "forward_runs_alone"
    assert compat.forward_runs_alone(torch.nn.Linear(1, 1))


def test_forward_runs_alone_sees_each_thing_torchs_call_does() -> None:
    from torch.nn.modules import module as torch_module

    layer = torch.nn.Linear(1, 1)
    handle = layer.register_forward_pre_hook(lambda module, args: None)
    assert not compat.forward_runs_alone(layer)
    handle.remove()
    assert compat.forward_runs_alone(layer)
    handle = torch_module.register_module_full_backward_hook(lambda module, gi, go: None)
    try:
        assert not compat.forward_runs_alone(layer)
    finally:
        handle.remove()
    layer._compiled_call_impl = lambda *args: None  # what module.compile() sets
    assert not compat.forward_runs_alone(layer)


def test_forward_runs_alone_each_is_forward_runs_alone_of_every_module() -> None:
    from torch.nn.modules import module as torch_module

    layers = [torch.nn.Linear(1, 1), torch.nn.ReLU(), torch.nn.Linear(1, 1)]
    assert compat.forward_runs_alone_each(layers)
    assert compat.forward_runs_alone_each([])
    for register in ("register_forward_pre_hook", "register_forward_hook"):
        handle = getattr(layers[2], register)(lambda *args: None)
        assert not compat.forward_runs_alone_each(layers)
        handle.remove()
    assert compat.forward_runs_alone_each(layers)
    handle = torch_module.register_module_forward_hook(lambda *args: None)
    try:
        assert not compat.forward_runs_alone_each(layers)
    finally:
        handle.remove()
    layers[1]._compiled_call_impl = lambda *args: None  # what module.compile() sets
    assert not compat.forward_runs_alone_each(layers)


def test_without_torchs_private_names_every_call_goes_through_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback: a torch without the hook registries or the tracing state."""
    import handgrad.nn as hnn

    with pytest.MonkeyPatch.context() as without:
        without.delattr(torch._C, "_get_tracing_state")
        fallback = importlib.reload(compat)  # torch's own __call__ needs it back afterwards
    try:
        assert fallback._tracing_state is None
        assert not fallback.forward_runs_alone(torch.nn.Linear(1, 1))
        assert not fallback.forward_runs_alone_each([torch.nn.Linear(1, 1)])
        seen: list[str] = []
        original = torch.nn.Module._call_impl
        monkeypatch.setattr(
            torch.nn.Module,
            "_call_impl",
            lambda self, *a, **k: seen.append(type(self).__name__) or original(self, *a, **k),
        )
        torch.manual_seed(0)
        net = hnn.Sequential(hnn.Linear(2, 3), hnn.ReLU())
        x = torch.randn(4, 2)
        assert net(x).shape == (4, 3)
        assert seen == ["Sequential", "Linear", "ReLU"]
    finally:
        monkeypatch.undo()
        importlib.reload(compat)
    assert compat.forward_runs_alone(torch.nn.Linear(1, 1))


# --------------------------------------------------------------------------- process group


def test_default_process_group_store_is_found_and_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch.distributed as dist

    assert hasattr(dist.distributed_c10d, "_get_default_store")  # the pinned torch has it
    assert compat.default_process_group_store() is None  # no group in this process
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        found = compat.default_process_group_store()
        assert found is not None
        found.set("k", "v")  # type: ignore[attr-defined]
        assert found.get("k") == b"v"  # type: ignore[attr-defined]
        assert store.num_keys() >= 1  # it is (a view of) the store the group was given
        monkeypatch.delattr(dist.distributed_c10d, "_get_default_store")
        assert compat.default_process_group_store() is None  # the fallback
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- handgrad.optim


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


# --------------------------------------------------------------------------- 5 and 8


def test_share_step_hooks_uses_the_optimizers_registries_and_falls_back() -> None:
    p = torch.zeros(2, requires_grad=True)
    inner = torch.optim.SGD([p], lr=0.1)
    wrapper = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    compat.share_step_hooks(wrapper, inner)
    assert wrapper._optimizer_step_pre_hooks is inner._optimizer_step_pre_hooks
    assert wrapper._optimizer_step_post_hooks is inner._optimizer_step_post_hooks
    calls: list[str] = []
    wrapper.register_step_pre_hook(lambda *_: calls.append("pre"))
    p.grad = torch.ones(2)
    inner.step()
    assert calls == ["pre"]
    # Fallback: an optimizer without the registries shares nothing.
    other = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    own = other._optimizer_step_pre_hooks
    compat.share_step_hooks(other, object())  # type: ignore[arg-type]
    assert other._optimizer_step_pre_hooks is own


# --------------------------------------------------------------------------- sole_reference


def test_sole_reference_sees_every_other_holder_and_falls_back(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert callable(getattr(torch.Tensor, "_use_count", None))  # the names still exist
    assert callable(getattr(torch._C, "_storage_Use_Count", None))
    tensor = torch.zeros(4, 3)
    assert compat.sole_reference(tensor)
    holders = {
        "alias": lambda t: t,
        "view": lambda t: t[1:],
        "detach": lambda t: t.detach(),
        "numpy": lambda t: t.numpy(),
        "storage": lambda t: t.untyped_storage(),
        "dlpack": lambda t: torch.utils.dlpack.to_dlpack(t),
        "set_": lambda t: torch.empty(0).set_(t.untyped_storage()),
        "container": lambda t: {"kept": t},
    }
    for name, hold in holders.items():
        held = hold(tensor)
        assert not compat.sole_reference(tensor), name
        del held
        assert compat.sole_reference(tensor), f"after letting go of the {name}"
    # Fallback: a torch without the counts never calls a tensor unshared.
    monkeypatch.setattr(compat, "_SOLE_HOLDERS", None)
    assert not compat.sole_reference(tensor)
    monkeypatch.setattr(compat, "_TENSOR_USE_COUNT", None)
    assert compat._holders_of_a_lone_local() is None


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_with_logsumexp_is_torchs_forward_and_falls_back(monkeypatch, dtype) -> None:  # type: ignore[no-untyped-def]
    assert compat._FLASH_ATTENTION_CPU is not None  # the name still exists
    qkv = torch.randn(2, 5, 3, 3, 4, dtype=dtype)  # (B, T, 3, H, d): heads side by side
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    fused = compat.attention_with_logsumexp(q, k, v, True, 0.3)
    assert fused is not None
    out, logsumexp = fused
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    assert torch.equal(out, expected)  # the public function's kernel: the same bits
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    scores = (0.3 * q @ k.transpose(-2, -1)).masked_fill(~causal, -torch.inf)
    torch.testing.assert_close(logsumexp, torch.logsumexp(scores, -1))
    monkeypatch.setattr(compat, "_FLASH_ATTENTION_CPU", None)
    assert compat.attention_with_logsumexp(q, k, v, True, 0.3) is None
