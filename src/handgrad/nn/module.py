"""Module: a torch.nn.Module whose backward is written by hand.

A handgrad module is an ordinary ``torch.nn.Module`` (so ``parameters()``, ``state_dict()``,
``.to(device)``, ``train()``/``eval()`` all work) with three differences:

- its parameters are ``torch.nn.Parameter(..., requires_grad=False)``: autograd records nothing;
- calling it runs ``forward`` and keeps what the backward needs (the kernel's ``ctx``);
- ``backward(grad_output, input_grad=True)`` returns dL/d(input) — or ``None`` when
  ``input_grad`` is False, skipping that work — and *accumulates* dL/dθ into each parameter's
  ``.grad`` exactly as autograd does, so ``optimizer.zero_grad()`` and every torch.optim
  optimizer work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from handgrad.nn.functional import Ctx

try:  # torch's registries of hooks on every module (private; read as torch reads them)
    from torch.nn.modules.module import (
        _global_backward_hooks,
        _global_backward_pre_hooks,
        _global_forward_hooks,
        _global_forward_pre_hooks,
    )
except ImportError:  # a torch that moved them: every call goes through torch's __call__

    def _unknown_hook(*args: Any) -> None:
        """Stands for hooks that cannot be seen: a registry that is never empty."""

    _global_backward_hooks = {0: _unknown_hook}
    _global_backward_pre_hooks = _global_forward_hooks = _global_forward_pre_hooks = (
        _global_backward_hooks
    )

# torch.jit.trace records through torch's __call__ only; a torch without it never traces.
_get_tracing_state: Callable[[], Any] = getattr(torch._C, "_get_tracing_state", lambda: None)


def direct_calls_allowed() -> bool:
    """Whether torch's ``Module.__call__`` would run a hook-free module's ``forward`` alone.

    It does unless a hook is registered globally (``register_module_forward_hook`` and
    friends) or a trace is being recorded (``torch.jit.trace``); False as well when torch's
    global hook registries cannot be read (a torch that moved them).
    """
    return not (
        _global_forward_pre_hooks
        or _global_forward_hooks
        or _global_backward_pre_hooks
        or _global_backward_hooks
        or _get_tracing_state()
    )


class Module(torch.nn.Module):
    """Base class of every handgrad layer, loss and container.

    Subclasses implement ``forward(x)`` (ending with ``return self._remember(ctx, out)``)
    and ``backward(grad_output, input_grad=True)`` (starting with
    ``ctx = self._recall(grad_output)``); the two helpers give every module the same
    errors for backward-before-forward and for a gradient of the wrong shape.
    """

    def __init__(self) -> None:
        super().__init__()
        # (ctx, output) of the last forward; None before the first. The output itself is kept
        # (not its shape, dtype and device) because reading those three costs more per call
        # than the check that uses them.
        self._saved: tuple[Ctx, Tensor] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``forward(*args, **kwargs)``, through torch's ``Module.__call__`` when it matters.

        torch's wrapper runs ``forward`` alone unless the module has hooks, is compiled
        (``module.compile()``) or a global hook or trace is active; in those cases it runs
        here too, and otherwise ``forward`` is called directly: a small layer spends as long
        in torch's wrapper as in its own kernel.
        """
        # The conditions of direct_calls_allowed() written out: this runs at every call.
        if not (
            self._compiled_call_impl is not None
            or self._forward_pre_hooks
            or self._forward_hooks
            or self._backward_pre_hooks
            or self._backward_hooks
            or _global_forward_pre_hooks
            or _global_forward_hooks
            or _global_backward_pre_hooks
            or _global_backward_hooks
            or _get_tracing_state()
        ):
            return self.forward(*args, **kwargs)
        return torch.nn.Module.__call__(self, *args, **kwargs)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        """dL/d(input) from dL/d(output); accumulates dL/dθ into each parameter's ``.grad``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    # ------------------------------------------------------------------ the chain protocol
    #
    # A module whose forward is a pure function of one input may let a container run it
    # without its own bookkeeping: Sequential then calls ``_forward_ctx`` and, in backward,
    # ``_backward_ctx`` with the ctx it kept, skipping per-layer hook checks and the
    # grad_output checks it can vouch for (a small layer spends as long in those as in its
    # kernel). ``forward``/``backward`` of such a module must be exactly the two wrapped in
    # ``_remember``/``_recall``; a subclass that overrides either without redefining
    # ``_forward_ctx`` is not chained (see ``__init_subclass__``), nor is a module with hooks
    # of its own or a compiled call (``Sequential.forward`` checks, with the global hooks).

    _chainable = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if ("forward" in cls.__dict__ or "backward" in cls.__dict__) and (
            "_forward_ctx" not in cls.__dict__
        ):
            cls._chainable = False

    def _forward_ctx(self, x: Tensor) -> tuple[Tensor, Ctx]:
        """(output, ctx) of the forward, without remembering them (chainable modules)."""
        raise NotImplementedError(f"{type(self).__name__} is not chainable")

    def _backward_ctx(self, grad_output: Tensor, ctx: Ctx, input_grad: bool) -> Tensor | None:
        """``backward`` with the forward's ``ctx`` given and ``grad_output`` already checked."""
        raise NotImplementedError(f"{type(self).__name__} is not chainable")

    # ------------------------------------------------------------------ helpers for subclasses

    def _remember(self, ctx: Ctx, out: Tensor) -> Tensor:
        """Keep the forward's ctx and output (to check grad_output) for backward; return out."""
        # object.__setattr__ skips torch.nn.Module's parameter/buffer bookkeeping, a
        # noticeable cost per call for small layers; _saved is never a parameter or buffer.
        object.__setattr__(self, "_saved", (ctx, out))
        return out

    def _recall(self, grad_output: Tensor) -> Ctx:
        """The ctx of the last forward, after checking that ``grad_output`` fits its output.

        ValueError before any forward or for a gradient of another shape, dtype or device
        than the output; TypeError for anything but a tensor.
        """
        if self._saved is None:
            raise ValueError(
                f"{self._get_name()}.backward() called before forward(): "
                "run the module on an input first"
            )
        ctx, out = self._saved
        if not isinstance(grad_output, Tensor):
            raise TypeError(
                f"{self._get_name()}.backward(): grad_output must be a torch.Tensor "
                f"(dL/d(output), of the output's shape {tuple(out.shape)}), "
                f"got {type(grad_output).__name__}"
            )
        if grad_output.shape != out.shape:
            raise ValueError(
                f"{self._get_name()}.backward(): expected grad_output of shape "
                f"{tuple(out.shape)} (the output's), got {tuple(grad_output.shape)}"
            )
        # dtypes are singletons: `is` is exact and cheaper than a device comparison
        if grad_output.dtype is not out.dtype or grad_output.device != out.device:
            raise ValueError(
                f"{self._get_name()}.backward(): expected grad_output of dtype {out.dtype} on "
                f"{out.device} (the output's), got {grad_output.dtype} on {grad_output.device}"
            )
        return ctx

    def _check_tensor(self, x: object, what: str = "input") -> Tensor:
        """``x`` itself if it is a tensor, else a TypeError naming this layer."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{self._get_name()}: {what} must be a torch.Tensor, got {type(x)}")
        return x

    def _check_like(self, x: Tensor, reference: Tensor, what: str, reference_name: str) -> None:
        """ValueError unless ``x`` has the dtype and device of ``reference``."""
        if x.dtype != reference.dtype or x.device != reference.device:
            raise ValueError(
                f"{self._get_name()}: {what} has dtype {x.dtype} on {x.device} but "
                f"{reference_name} has dtype {reference.dtype} on {reference.device}; "
                "move one with .to()"
            )
