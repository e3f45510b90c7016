"""Verification of hand-written gradients and optimizers against PyTorch.

- :func:`check_module` — a (user's) module's backward against autograd on its forward;
- :func:`run_checks` — every handgrad module, loss and deep network, as a table;
- :func:`check_optimizer` — a (user's) optimizer class beside a torch.optim reference.
"""

from __future__ import annotations

from handgrad._lazy import lazy_getattr

_MODULE_OF = {
    "check_module": "module",
    "ModuleCheckResult": "module",
    "TensorCheck": "module",
    "run_checks": "suite",
    "CheckReport": "suite",
    "CheckRow": "suite",
    "check_optimizer": "optimizer",
    "OptimizerCheckResult": "optimizer",
}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF)
