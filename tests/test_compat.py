"""Each private name in handgrad._compat: present in the pinned torch, and its fallback works."""

from __future__ import annotations

import pytest

import handgrad._compat as compat


def test_compat_module_imports() -> None:
    assert compat.__doc__


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
