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

# --------------------------------------------------------------------------------------------
# optimizers (handgrad.optim)
# --------------------------------------------------------------------------------------------
import torch
from torch.optim import optimizer as _torch_optimizer


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
