"""Per-sample gradients: a backward that also leaves each example's own parameter gradient.

``model.backward(grad_output, per_sample=True)`` runs the usual backward (``.grad`` is
accumulated as always) and also stores, for every parameter, ``p.grad_sample`` of shape
(batch, *p.shape): example i's contribution to ``p.grad`` (Opacus's attribute). They sum to
what ``.grad`` receives; for a mean-reduced loss each is the example's own gradient divided by
the batch size, since the loss's backward already carries the 1/N.

``per_sample="factored"`` stores, where a layer can, a :class:`FactoredGradSample` instead:
the per-sample gradients kept as the two factors the backward holds (for a fully connected
layer, dW_i = Σ_t g_{i,t} x_{i,t}ᵀ), whose norms and weighted sums — all that DP-SGD needs —
are computed without ever forming the (batch × parameters) tensor
(:mod:`handgrad.nn.functional.per_sample`).

How a layer takes part — the one place a layer author writes anything: a module with
parameters defines ::

    def per_sample_grads(self, grad_output, ctx) -> dict[str, Tensor | FactoredGradSample]

returning, for each of its own parameters by name, the per-sample gradients of shape
(batch, *param.shape) (or their factored form), from the same ``grad_output`` and ``ctx``
its ``backward`` receives. Nothing else changes: the mode is switched on for the whole
backward by :func:`per_sample_gradients` (which ``backward(..., per_sample=...)`` of the
containers uses), and ``Module._recall`` — the first line of every backward — calls
:func:`store_per_sample` while it is on. Containers and modules without parameters need
nothing. A module with parameters and no ``per_sample_grads`` refuses with a ValueError, as
do layers whose per-sample gradients are not defined (BatchNorm in training mixes the
examples through the batch statistics). A composite module whose parameters' per-sample
gradients only exist inside its own backward (MultiheadAttention's in-projection) sets
``stores_own_per_sample = True`` and calls :func:`store_grad_samples` there instead.

**Storage kept between batches.** A per-sample gradient is large (256 examples of a
784-512-512-10 network: 685 MB), and memory that large is fresh from the operating system
each time it is allocated (glibc maps it and unmaps it on free): its page faults cost several
times the arithmetic that fills it. So :func:`clear_grad_sample` with ``set_to_none=True``
(the default, and what ``DPOptimizer.zero_grad()`` does) sets ``p.grad_sample`` to None but
keeps the tensor's memory for the parameter, as a *spare*; the next backward that forms a
factored gradient of that shape for it (``per_sample=True`` on a fully connected or
convolution layer) writes it into the spare instead of into fresh memory. A spare is used
only if nothing outside handgrad reaches its memory at that moment
(:func:`handgrad._compat.sole_reference`: no reference to the old ``grad_sample``, no view,
NumPy array or storage of it), so a ``grad_sample`` someone kept is never overwritten; it
is then dropped and fresh memory used. The cost: that memory stays held from one batch
to the next, as ``zero_grad`` keeps ``.grad`` buffers (Opacus holds its ``grad_sample``
from a step to the next ``zero_grad``; this holds it past that too);
:func:`release_grad_sample_storage` frees it, :func:`held_grad_sample_storage` tells how
much it is. ``per_sample="factored"`` keeps nothing: a factored ``grad_sample`` holds the
layer's factors, not a (batch × parameters) tensor.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from handgrad import _compat
from handgrad.nn.functional import per_sample as F

PerSample = bool | Literal["factored"]
"""What ``backward(..., per_sample=...)`` takes: False, True (tensors) or "factored"."""

_mode: Literal["tensors", "factored"] | None = None
"""The per-sample mode of the backward running now (None: off). Read by Module._recall."""

_spares: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""parameter → the memory of its last cleared ``grad_sample`` tensor, kept for the next
backward (see "Storage kept between batches" above); an entry goes with its parameter."""

_formed: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""parameter → a weak reference to the ``grad_sample`` handgrad formed from factors for it:
only those are kept as spares (a layer's own tensors, a bias's, would never be filled)."""


@contextmanager
def per_sample_gradients(factored: bool = False) -> Iterator[None]:
    """Every handgrad backward run inside stores per-sample gradients (``p.grad_sample``).

    ``model.backward(grad, per_sample=True)`` is this around ``model.backward(grad)``; use it
    directly for a module whose own ``backward`` does not take ``per_sample``. ``factored``
    keeps the factored form where a layer gives one (see the module docstring). Not
    thread-safe: one backward at a time per process.
    """
    global _mode
    previous = _mode
    _mode = "factored" if factored else "tensors"
    try:
        yield
    finally:
        _mode = previous


def check_per_sample(per_sample: object) -> bool:
    """True for ``per_sample`` True or "factored", False for False; ValueError otherwise."""
    if per_sample is False or per_sample is True or per_sample == "factored":
        return per_sample is not False
    raise ValueError(f"per_sample must be False, True or 'factored', got {per_sample!r}")


class FactoredGradSample:
    """Per-sample gradients G_i = Σ_t a_{i,t} b_{i,t}ᵀ of a (out × in) weight, kept as factors.

    ``left`` is (N, ..., out) — the layer's grad_output — and ``right`` (N, ..., in) — its
    input; t runs over the middle dimensions (none for 2-D factors). ``param_shape`` is the
    weight's own shape when it is not (out, in) but holds out · in numbers in that order (a
    convolution's (out, in, kh, kw) against its unfolded input); :meth:`materialize` and
    :meth:`weighted_sum` give that shape. A weight used twice in one backward gets both pairs
    (:meth:`add`): G_i is then the sum over all pairs, again of this form with the positions
    of the pairs laid end to end.
    """

    def __init__(
        self, left: Tensor, right: Tensor, param_shape: Sequence[int] | None = None
    ) -> None:
        self.pairs: list[tuple[Tensor, Tensor]] = [(left, right)]
        self.param_shape = torch.Size(
            (left.shape[-1], right.shape[-1]) if param_shape is None else param_shape
        )

    @property
    def shape(self) -> torch.Size:
        """(batch, *param_shape), the shape of the materialised per-sample gradients."""
        return torch.Size((self.pairs[0][0].shape[0], *self.param_shape))

    @property
    def dtype(self) -> torch.dtype:
        return self.pairs[0][0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def add(self, other: FactoredGradSample) -> FactoredGradSample:
        """G_i + G'_i, still factored (the pairs of both)."""
        combined = FactoredGradSample(*self.pairs[0], self.param_shape)
        combined.pairs = self.pairs + other.pairs
        return combined

    def _sequences(self) -> tuple[Tensor, Tensor]:
        """All pairs as one (N, T, out), (N, T, in) pair: the positions end to end."""
        batch = self.shape[0]
        lefts = [left.reshape(batch, -1, left.shape[-1]) for left, _ in self.pairs]
        rights = [right.reshape(batch, -1, right.shape[-1]) for _, right in self.pairs]
        return torch.cat(lefts, 1), torch.cat(rights, 1)

    def norms_squared(self) -> Tensor:
        """‖G_i‖²_F for each example, shape (N,), without forming G_i (where it is cheaper)."""
        if len(self.pairs) == 1:
            left, right = self.pairs[0]
        else:
            left, right = self._sequences()
        return F.linear_grad_sample_norms(left, right, bias=False)[0]

    def weighted_sum(self, weights: Tensor) -> Tensor:
        """Σ_i c_i G_i, of shape ``param_shape``, as one matrix product per pair."""
        total = None
        for left, right in self.pairs:
            part = F.linear_grad_sample_weighted_sum(left, right, weights, bias=False)[0]
            total = part if total is None else total.add_(part)
        assert total is not None
        return total.view(self.param_shape)

    def materialize(self, out: Tensor | None = None, accumulate: bool = False) -> Tensor:
        """G as a (N, *param_shape) tensor, written into ``out`` (or added to it) when given,
        else into new memory; returns that tensor itself (not a view of it: its memory can
        then be kept and reused whole, see :func:`clear_grad_sample`)."""
        left, right = self.pairs[0]
        if out is None:
            dtype = torch.promote_types(left.dtype, right.dtype)
            out, accumulate = left.new_empty(self.shape, dtype=dtype), False
        target = out.view(len(self), left.shape[-1], right.shape[-1])
        for left, right in self.pairs:
            F.linear_grad_sample(left, right, False, target, accumulate)
            accumulate = True
        return out


GradSample = Tensor | FactoredGradSample
"""A parameter's per-sample gradients: a (batch, *shape) tensor or its factored form."""


def grad_sample_norms_squared(grad_sample: GradSample) -> Tensor:
    """‖per-sample gradient_i‖² for each example i, shape (batch,)."""
    if isinstance(grad_sample, FactoredGradSample):
        return grad_sample.norms_squared()
    # The norm reduces in one pass; pow(2) first would form a second (batch × parameters).
    return torch.linalg.vector_norm(grad_sample.reshape(len(grad_sample), -1), dim=1).square_()


def grad_sample_weighted_sum(grad_sample: GradSample, weights: Tensor) -> Tensor:
    """Σ_i c_i · per-sample gradient_i, of the parameter's shape."""
    if isinstance(grad_sample, FactoredGradSample):
        return grad_sample.weighted_sum(weights)
    weights = weights.to(grad_sample.dtype)
    return torch.tensordot(weights, grad_sample, dims=1)


def store_per_sample(module: torch.nn.Module, grad_output: Any, ctx: Any) -> None:
    """Add ``module``'s per-sample gradients into ``p.grad_sample`` of its own parameters.

    Called by ``Module._recall`` while :func:`per_sample_gradients` is on. A parameter's
    ``grad_sample`` accumulates like its ``.grad``: None → stored; an existing one of the
    same shape is added to (in place for tensors).
    """
    parameters = {name: p for name, p in module._parameters.items() if p is not None}
    if not parameters or getattr(module, "stores_own_per_sample", False):
        return
    compute = getattr(module, "per_sample_grads", None)
    if compute is None:
        raise ValueError(
            f"{module._get_name()} cannot give per-sample gradients (per_sample=True): it has "
            f"parameters ({', '.join(parameters)}) but no per_sample_grads(grad_output, ctx) "
            "method; see handgrad.nn.per_sample"
        )
    store_grad_samples(module, compute(grad_output, ctx))


def store_grad_samples(module: torch.nn.Module, grads: dict[str, GradSample]) -> None:
    """Add ``grads`` (per-sample gradients of ``module``'s own parameters, by name) into
    their ``p.grad_sample``; ValueError if one of the module's parameters has none.

    What :func:`store_per_sample` does with a layer's ``per_sample_grads``; called directly
    by a composite module that computes its parameters' per-sample gradients inside its own
    backward (it sets ``stores_own_per_sample = True`` so that ``_recall`` leaves it alone:
    MultiheadAttention, whose in-projection's gradients exist only halfway through), or that
    runs a child's backward itself (the GPT's head, its position table).
    """
    parameters = {name: p for name, p in module._parameters.items() if p is not None}
    missing = set(parameters) - set(grads)
    if missing:
        raise ValueError(
            f"{module._get_name()}: its per-sample gradients miss the parameters {sorted(missing)}"
        )
    for name, grad_sample in grads.items():
        _accumulate(parameters[name], grad_sample)


def _accumulate(param: Tensor, new: GradSample) -> None:
    """param.grad_sample += new: stored when there is none; factored + factored stays
    factored; anything with a tensor becomes a tensor (added in place into a kept one)."""
    current: GradSample | None = getattr(param, "grad_sample", None)
    if current is not None and tuple(current.shape) != tuple(new.shape):
        raise ValueError(
            f"a parameter of shape {tuple(param.shape)} already holds grad_sample of shape "
            f"{tuple(current.shape)} and this backward gives {tuple(new.shape)}: "
            "clear grad_sample between batches (DPOptimizer.zero_grad() does, or "
            "handgrad.nn.per_sample.clear_grad_sample)"
        )
    if _mode == "tensors" and isinstance(new, FactoredGradSample):
        if isinstance(current, Tensor):  # formed straight into the kept tensor
            new.materialize(current, accumulate=True)
            return
        spare = _spare_for(param, new)
        new = new.materialize(spare if current is None else None)
        _formed[param] = weakref.ref(new)
    else:
        _spares.pop(param, None)  # not formed here: a spare would only double the memory
    if current is None:
        param.grad_sample = new  # type: ignore[attr-defined]
    elif isinstance(current, FactoredGradSample) and isinstance(new, FactoredGradSample):
        param.grad_sample = current.add(new)  # type: ignore[attr-defined]
    else:
        total = current if isinstance(current, Tensor) else current.materialize()
        if isinstance(new, FactoredGradSample):
            new.materialize(total, accumulate=True)
        else:
            total.add_(new)
        param.grad_sample = total  # type: ignore[attr-defined]


def per_sample_active() -> bool:
    """True while a ``backward(..., per_sample=...)`` runs (:func:`per_sample_gradients`)."""
    return _mode is not None


@contextmanager
def per_sample_paused() -> Iterator[None]:
    """Per-sample gradients off inside, as they were afterwards: a composite module runs a
    child's backward on an input whose first dimension is not the batch's (flattened or
    shared rows) and stores that child's per-sample gradients itself."""
    global _mode
    previous = _mode
    _mode = None
    try:
        yield
    finally:
        _mode = previous


def _spare_for(param: Tensor, new: FactoredGradSample) -> Tensor | None:
    """The parameter's spare memory, if it fits ``new`` and nothing outside reaches it
    (then its values are overwritten); None otherwise. The spare leaves the store either way."""
    spare = _spares.pop(param, None)
    if spare is None:
        return None
    left, right = new.pairs[0]
    fits = (
        spare.shape == new.shape
        and spare.dtype == torch.promote_types(left.dtype, right.dtype)
        and spare.device == left.device
        and spare.is_contiguous()
        and not spare.requires_grad  # (someone made it a leaf: out= would refuse)
        and (not spare.is_inference() or torch.is_inference_mode_enabled())
    )
    if fits and _compat.sole_reference(spare):
        return spare
    return None


def clear_grad_sample(params: Iterable[Tensor], set_to_none: bool = True) -> None:
    """Set every ``p.grad_sample`` to None (or zero the tensors in place with
    ``set_to_none=False``, for the next backward to add into, as ``zero_grad`` keeps ``.grad``).

    With ``set_to_none=True`` a tensor's memory is kept as the parameter's spare, which the
    next ``backward(..., per_sample=True)`` fills instead of allocating fresh memory — only
    if no one else then holds the old ``grad_sample`` (or a view of it): a kept reference
    is never overwritten. :func:`release_grad_sample_storage` frees the spares (see "Storage
    kept between batches" in the module docstring).
    """
    for param in params:
        current = getattr(param, "grad_sample", None)
        if set_to_none or not isinstance(current, Tensor):
            param.grad_sample = None  # type: ignore[attr-defined]
            formed = _formed.pop(param, None)
            if current is not None and formed is not None and formed() is current:
                _spares[param] = current
            elif current is not None:  # nothing handgrad formed: nothing it would refill
                _spares.pop(param, None)
        else:
            current.zero_()


def release_grad_sample_storage(params: Iterable[Tensor] | None = None) -> None:
    """Free the memory :func:`clear_grad_sample` keeps for ``params``' next per-sample
    backward (every parameter's with None): after training, or before a different
    batch size or a ``per_sample="factored"`` phase, when that memory would sit idle."""
    if params is None:
        _spares.clear()
        return
    for param in params:
        _spares.pop(param, None)


def held_grad_sample_storage(params: Iterable[Tensor] | None = None) -> int:
    """Bytes of memory :func:`clear_grad_sample` keeps for ``params``' next per-sample
    backward (every parameter's with None)."""
    spares = _spares.values() if params is None else (_spares.get(p) for p in params)
    return sum(spare.numel() * spare.element_size() for spare in spares if spare is not None)


def empty_grad_sample(params: Iterable[Tensor]) -> None:
    """Per-sample gradients of an empty batch: ``p.grad_sample`` of shape (0, *p.shape)
    (DP-SGD's step on an empty Poisson batch is then the noise alone)."""
    for param in params:
        param.grad_sample = param.new_zeros((0, *param.shape))  # type: ignore[attr-defined]
