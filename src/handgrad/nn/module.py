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

from typing import Any

import torch
from torch import Tensor

from handgrad import _compat
from handgrad.nn import per_sample as _per_sample
from handgrad.nn.functional import Ctx


class _Released:
    """The context of a module whose backward has already run (a marker)."""

    def __repr__(self) -> str:
        return "<released>"


RELEASED: Any = _Released()


class Module(torch.nn.Module):
    """Base class of every handgrad layer, loss and container.

    Subclasses implement ``forward(input)`` (ending with ``return self._remember(ctx, out)``)
    and ``backward(grad_output, input_grad=True)`` (starting with
    ``ctx = self._recall(grad_output)``); the two helpers give every module the same
    errors for backward-before-forward and for a gradient of the wrong shape. A module of
    several tensor inputs returns one gradient per input from backward, as a tuple in
    argument order (None for an input without one, such as integer indices).
    """

    def __init__(self) -> None:
        super().__init__()
        # (ctx, (shape, dtype, device) of the output) of the last forward; None before the
        # first; ctx is RELEASED once backward has taken it. Not the output itself: most
        # layers' backward never reads it, and keeping it would keep a second activation
        # alive per layer (reading the three costs no more than the check reading them).
        self._saved: tuple[Ctx, tuple[torch.Size, torch.dtype, torch.device]] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``forward(*args, **kwargs)``, through torch's ``Module.__call__`` when it has work.

        This is handgrad's one bypass of torch's wrapper: when it would only call
        ``forward`` — no hooks on the module or global, no ``module.compile()``, no
        ``torch.jit.trace`` recording (:func:`handgrad._compat.forward_runs_alone`) —
        ``forward`` is called directly, saving the wrapper's frames (~0.4 µs a call,
        measured; a small layer's whole forward is a few µs). Otherwise torch's
        ``__call__`` runs, with every hook, as for any torch module.
        """
        if _compat.forward_runs_alone(self):
            return self.forward(*args, **kwargs)
        return torch.nn.Module.__call__(self, *args, **kwargs)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Any:
        """dL/d(input) from dL/d(output) (None when ``input_grad`` is False; a tuple, one
        per input, for a module of several inputs); accumulates dL/dθ into each
        parameter's ``.grad`` with :func:`handgrad.nn.accumulate_grad`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def _per_sample_backward(
        self, grad_output: Tensor, input_grad: bool, per_sample: _per_sample.PerSample
    ) -> Any:
        """``backward(grad_output, input_grad)`` storing per-sample gradients on the way.

        What ``backward(..., per_sample=True)`` of a container (or of a layer with
        parameters) does: ``if per_sample: return self._per_sample_backward(...)``. Every
        module whose backward runs inside then stores ``p.grad_sample`` for its own
        parameters (see :mod:`handgrad.nn.per_sample`: ``_recall`` does it, from the
        layer's ``per_sample_grads``).
        """
        factored = _per_sample.check_per_sample(per_sample) and per_sample == "factored"
        with _per_sample.per_sample_gradients(factored):
            return self.backward(grad_output, input_grad)

    # ------------------------------------------------------------------ helpers for subclasses

    def _remember(self, ctx: Ctx, out: Tensor) -> Tensor:
        """Keep the forward's ctx for backward, and the output's shape, dtype and device (to
        check grad_output); return out.

        What the module keeps is ctx alone: put in it only what the backward formula reads
        (an input, a mask, a statistic), and the activations of a network are freed as soon
        as no layer's backward needs them, as autograd frees what no backward node saved.
        """
        # Stored in the instance dict directly: torch.nn.Module.__setattr__'s parameter/buffer
        # bookkeeping (and even object.__setattr__'s call) is a noticeable cost per call for
        # small layers (measured: ~0.9k instructions of ~6k here); _saved is never a
        # parameter or buffer.
        self.__dict__["_saved"] = (ctx, (out.shape, out.dtype, out.device))
        return out

    def _recall(self, grad_output: Tensor) -> Ctx:
        """The ctx of the last forward, after checking that ``grad_output`` fits its output;
        the module lets go of it (as autograd frees its graph in backward), so what it holds
        is freed as soon as the backward that called this is done with it.

        ValueError before any forward, for a second backward of one forward, or for a
        gradient of another shape, dtype or device than the output; TypeError for anything
        but a tensor.
        """
        saved = self._saved
        if saved is None or saved[0] is RELEASED:
            self._take()  # raises the ValueError that says which
        assert saved is not None
        ctx, meta = saved
        # The usual case in one comparison (a tuple compares identical dtypes by identity);
        # anything else goes through the checks one by one, which raise the error naming it.
        if (
            isinstance(grad_output, Tensor)
            and (grad_output.shape, grad_output.dtype, grad_output.device) == meta
        ):
            self.__dict__["_saved"] = (RELEASED, meta)  # (_take, inline: per call)
            if _per_sample._mode is not None:  # a backward(..., per_sample=True) is running
                _per_sample.store_per_sample(self, grad_output, ctx)
            return ctx
        shape, dtype, device = meta
        if not isinstance(grad_output, Tensor):
            raise TypeError(
                f"{self._get_name()}.backward(): grad_output must be a torch.Tensor "
                f"(dL/d(output), of the output's shape {tuple(shape)}), "
                f"got {type(grad_output).__name__}"
            )
        if grad_output.shape != shape:
            raise ValueError(
                f"{self._get_name()}.backward(): expected grad_output of shape "
                f"{tuple(shape)} (the output's), got {tuple(grad_output.shape)}"
            )
        # dtypes are singletons: `is` is exact and cheaper than a device comparison
        if grad_output.dtype is not dtype or grad_output.device != device:
            raise ValueError(
                f"{self._get_name()}.backward(): expected grad_output of dtype {dtype} on "
                f"{device} (the output's), got {grad_output.dtype} on {grad_output.device}"
            )
        raise AssertionError(f"unreachable: {meta} == {grad_output.shape}")  # pragma: no cover

    def _take(self) -> Ctx:
        """The ctx of the last forward, which the module lets go of (``_recall`` without
        the checks of grad_output: for a backward whose upstream gradient is not a tensor)."""
        saved = self._saved
        if saved is None:
            raise ValueError(
                f"{self._get_name()}.backward() called before forward(): "
                "run the module on an input first"
            )
        ctx = saved[0]
        if ctx is RELEASED:
            raise ValueError(
                f"{self._get_name()}.backward() called twice for one forward: the first "
                "backward released what the forward saved (as autograd frees its graph); "
                "run forward again"
            )
        self.__dict__["_saved"] = (RELEASED, saved[1])
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
