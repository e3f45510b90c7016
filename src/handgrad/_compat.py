"""Every private torch name handgrad uses, each with a fallback: the one place to look.

handgrad mirrors torch's public behaviour, and a few speed-ups or compatibility details need
names torch does not promise to keep (hook registries, argparse's negative-number matcher,
...). Each such name is read here once, behind a small function with a documented fallback
for a torch (or Python) that moved it, and each has a test in ``tests/test_compat.py``
(the name still exists in the pinned torch; the fallback behaves). Nothing else in ``src/``
imports a private torch name. ``torch._foreach_*`` kernels are not listed: they are fair to
use anywhere, with a plain-loop fallback where they are absent.
"""

from __future__ import annotations


def default_process_group_store() -> object | None:
    """The key-value store of torch.distributed's default process group (the rendezvous
    store every rank shares), or None when there is no group or this torch hides it.

    Private name: ``torch.distributed.distributed_c10d._get_default_store``. Fallback: None,
    and data-parallel training then reports a lost peer without naming which rank it was.
    Used by :mod:`handgrad.train.distributed` to leave each rank's pid and, on failure, its
    reason where the other ranks can read them.
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
