"""DPOptimizer: DP-SGD's clip, sum and noise around any optimizer (Abadi et al. 2016).

For a batch B of examples with per-sample gradients g_i (over all parameters):

    ḡ = (Σ_{i∈B} c_i g_i + N(0, σ² C² I)) / b,    c_i = min(1, C / (‖g_i‖ + 10⁻⁶)),

with C = ``max_grad_norm``, σ = ``noise_multiplier`` and b = ``expected_batch_size`` (not
|B|: under Poisson sampling the batch size itself is random, and dividing by it would leak
it). ḡ becomes ``p.grad`` and the wrapped optimizer — any handgrad or torch.optim one —
steps. These are Opacus's semantics, down to the 10⁻⁶ and the order in which the noise is
drawn (one ``torch.normal`` per parameter, in the optimizer's order, from ``generator``).

The per-sample gradients are the ``p.grad_sample`` left by
``model.backward(grad_output, per_sample=True)`` or ``per_sample="factored"`` (faster: the
fully connected layers' norms and sums then never form the (batch × parameters) tensor).
Those sum to ``.grad``, so with ``loss_reduction="mean"`` each holds the example's gradient
divided by the batch size N; it is multiplied back by N before clipping, as Opacus does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from handgrad import _compat
from handgrad.nn.per_sample import clear_grad_sample
from handgrad.privacy.clipping import (
    batch_size_of,
    clip_factors,
    clipped_sum,
    grad_samples,
    per_sample_norms,
)


def check_dp_arguments(
    noise_multiplier: float, max_grad_norm: float, expected_batch_size: int | None,
    loss_reduction: str,
) -> None:  # fmt: skip
    """ValueError naming the first argument of DP-SGD that is out of range."""
    if not isinstance(noise_multiplier, int | float) or not noise_multiplier >= 0:
        raise ValueError(f"noise_multiplier must be a number ≥ 0, got {noise_multiplier!r}")
    if not isinstance(max_grad_norm, int | float) or not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be a number > 0, got {max_grad_norm!r}")
    if loss_reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
    if expected_batch_size is None:
        if loss_reduction == "mean":
            raise ValueError(
                "expected_batch_size is required with loss_reduction='mean' "
                "(the gradient is divided by it), got None"
            )
    elif (
        isinstance(expected_batch_size, bool)
        or not isinstance(expected_batch_size, int | float)
        or not expected_batch_size > 0
    ):
        raise ValueError(
            f"expected_batch_size must be a positive number (sample rate × dataset size), "
            f"got {expected_batch_size!r}"
        )


class DPOptimizer(torch.optim.Optimizer):
    """Wrap ``optimizer`` so that ``step()`` takes a DP-SGD step (see the module docstring).

    ``param_groups``, ``state``, ``defaults``, ``state_dict`` and ``load_state_dict`` are the
    wrapped optimizer's, so learning-rate schedulers work. ``zero_grad`` also clears
    ``p.grad_sample`` as Opacus's does — with :func:`handgrad.nn.per_sample.clear_grad_sample`,
    which keeps a formed tensor's memory for the next ``per_sample=True`` backward to refill
    (never one a caller still holds; ``release_grad_sample_storage`` frees it);
    set_to_none=False zeroes them in place instead, for the next backward to add into, as
    it keeps ``.grad``. After a step,
    ``last_norms`` holds the examples' gradient norms before clipping and ``steps`` counts
    the steps taken (for the accountant).
    """

    per_sample = "factored"
    """What a trainer passes to ``backward(..., per_sample=...)`` for this optimizer (the
    factored form: the clipping never forms a fully connected layer's per-sample gradients)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int | None,
        loss_reduction: str = "mean",
        generator: torch.Generator | None = None,
    ) -> None:
        # Deliberately not torch.optim.Optimizer.__init__: the groups and state are the
        # wrapped optimizer's, reached through the properties below (Opacus does the same).
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"DPOptimizer: optimizer must be a torch.optim.Optimizer (handgrad's are), "
                f"got {type(optimizer).__name__}"
            )
        check_dp_arguments(noise_multiplier, max_grad_norm, expected_batch_size, loss_reduction)
        self.original_optimizer = optimizer
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.expected_batch_size = expected_batch_size
        self.loss_reduction = loss_reduction
        self.generator = generator
        self.last_norms: Tensor | None = None
        self.steps = 0
        _compat.share_step_hooks(self, optimizer)

    # --------------------------------------------------------------- the wrapped optimizer's
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.original_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.original_optimizer.param_groups = groups

    @property
    def state(self) -> Any:
        return self.original_optimizer.state

    @state.setter
    def state(self, state: Any) -> None:
        self.original_optimizer.state = state

    @property
    def defaults(self) -> dict[str, Any]:
        return self.original_optimizer.defaults

    @defaults.setter
    def defaults(self, defaults: dict[str, Any]) -> None:
        self.original_optimizer.defaults = defaults

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.original_optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return self.original_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.original_optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return (
            f"DPOptimizer(noise_multiplier={self.noise_multiplier}, "
            f"max_grad_norm={self.max_grad_norm}, expected_batch_size="
            f"{self.expected_batch_size}, loss_reduction={self.loss_reduction!r}, "
            f"optimizer={self.original_optimizer!r})"
        )

    @property
    def params(self) -> list[Tensor]:
        """Every parameter, in the wrapped optimizer's order (the order noise is drawn in)."""
        return [param for group in self.param_groups for param in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        clear_grad_sample(self.params, set_to_none)
        self.original_optimizer.zero_grad(set_to_none)

    # --------------------------------------------------------------- the DP-SGD step
    def privatise_gradients(self) -> None:
        """Replace each ``p.grad`` by ḡ = (clipped sum + noise) / b from the per-sample ones."""
        params = self.params
        batch = batch_size_of(grad_samples(params))
        # Per-sample gradients sum to .grad; undo a mean's 1/N so each is the example's own.
        scale = float(batch) if self.loss_reduction == "mean" else 1.0
        if batch == 0:  # an empty Poisson batch: only the noise
            factors = torch.zeros(0, dtype=params[0].dtype, device=params[0].device)
            self.last_norms = factors
        else:
            self.last_norms = per_sample_norms(params, scale)
            factors = clip_factors(self.last_norms, self.max_grad_norm)
            if scale != 1.0:
                factors = factors * scale
        std = self.noise_multiplier * self.max_grad_norm
        for param, summed in zip(params, clipped_sum(params, factors), strict=True):
            if std > 0:
                noise = torch.normal(
                    0.0, std, param.shape, generator=self.generator, dtype=param.dtype,
                    device=param.device,
                )  # fmt: skip
                summed.add_(noise)
            if self.loss_reduction == "mean" and self.expected_batch_size is not None:
                summed.div_(self.expected_batch_size)
            if param.grad is not None and param.grad.shape == param.shape:
                param.grad.copy_(summed)  # in place: a flat gradient buffer stays one buffer
            else:
                param.grad = summed

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Privatise the gradients, then step the wrapped optimizer (``closure`` is run
        first, to compute the per-sample gradients, when given)."""
        if closure is not None:
            closure()
        self.privatise_gradients()
        self.steps += 1
        return self.original_optimizer.step()
