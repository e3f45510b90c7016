"""Normalization layers: BatchNorm1d, BatchNorm2d and GroupNorm, with torch.nn's arguments,
parameters (``weight`` γ, ``bias`` β), buffers (``running_mean``, ``running_var``,
``num_batches_tracked``) and state_dict keys.

The kernels and the derivation of the three-term input gradient are in
:mod:`handgrad.nn.functional.normalization`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from handgrad.nn.convert import register_conversion
from handgrad.nn.functional import normalization as F
from handgrad.nn.functional import per_sample as P
from handgrad.nn.functional import unwrap_float32_ctx
from handgrad.nn.gradients import accumulate_grad
from handgrad.nn.module import Module
from handgrad.nn.per_sample import GradSample


def _accumulate(weight: Tensor | None, bias: Tensor | None, grads: tuple[Any, ...]) -> None:
    _, grad_weight, grad_bias = grads
    if weight is not None and grad_weight is not None:
        accumulate_grad(weight, grad_weight)
    if bias is not None and grad_bias is not None:
        accumulate_grad(bias, grad_bias)


def _register_affine(
    module: Module, size: int, affine: bool, bias: bool, factory: dict[str, Any]
) -> None:
    """``weight`` γ and ``bias`` β of ``size`` elements (uninitialised: reset_parameters sets
    them) when ``affine``, β only with ``bias``; None entries otherwise, as torch registers
    them."""
    weight = torch.nn.Parameter(torch.empty(size, **factory), False) if affine else None
    module.register_parameter("weight", weight)
    bias_ = torch.nn.Parameter(torch.empty(size, **factory), False) if affine and bias else None
    module.register_parameter("bias", bias_)


def _reset_affine(weight: Tensor | None, bias: Tensor | None) -> None:
    """γ = 1, β = 0 (those present)."""
    with torch.no_grad():
        if weight is not None:
            weight.fill_(1)
        if bias is not None:
            bias.zero_()


class _AffineNormalization(Module):
    """A normalisation with optional γ and β: forward remembers (ctx, γ, β); backward is its
    kernel's, the parameters' gradients accumulated."""

    # The kernel's backward: (grad_x, grad_γ, grad_β) from (grad_output, ctx, input_grad).
    _kernel_backward: Callable[[Tensor, Any, bool], tuple[Any, ...]]

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx, weight, bias = self._recall(grad_output)
        grads = self._kernel_backward(grad_output, ctx, input_grad)
        _accumulate(weight, bias, grads)
        return grads[0]


class _BatchNorm(_AffineNormalization):
    """y = γ (x − μ)/√(σ² + ε) + β per channel (axis 1), as torch.nn's batch norms.

    In training μ and σ² are the batch's (over every axis but the channels), and with
    ``track_running_stats`` the running statistics follow them: by the exponential average
    with ``momentum``, or with ``momentum=None`` by the cumulative average over the
    ``num_batches_tracked`` batches so far. In eval mode the running statistics normalise
    (the batch's when there are none).
    """

    _version = 2  # torch's: state_dicts of version < 2 lack num_batches_tracked
    _kernel_backward = staticmethod(F.batch_norm_backward)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 0:
            raise ValueError(
                f"{type(self).__name__}: num_features must be a non-negative int, "
                f"got {num_features!r}"
            )
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight: torch.nn.Parameter | None
        self.bias: torch.nn.Parameter | None
        _register_affine(self, num_features, affine, bias, factory)
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0."""
        if self.running_mean is not None and self.running_var is not None:
            self.running_mean.zero_()
            self.running_var.fill_(1)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """The running statistics reset, γ = 1, β = 0 (nothing is drawn)."""
        self.reset_running_stats()
        _reset_affine(self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # As torch: a state_dict from before num_batches_tracked existed loads with a count.
        version = local_metadata.get("version")
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = (
                self.num_batches_tracked
                if self.num_batches_tracked is not None
                and self.num_batches_tracked.device != torch.device("meta")
                else torch.tensor(0, dtype=torch.long)
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    _expected_dims: tuple[int, ...] = ()

    def _check_input(self, input: object) -> Tensor:
        x = self._check_tensor(input)
        if x.dim() not in self._expected_dims:
            wanted = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"expected {wanted} input (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise RuntimeError(
                f"{self!r}: expected an input with {self.num_features} channels (axis 1), "
                f"got shape {tuple(x.shape)}"
            )
        return x

    def forward(self, input: Tensor) -> Tensor:
        x = self._check_input(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # the cumulative average
                factor = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if batch_stats:
            if x.numel() // max(x.shape[1], 1) == 1:
                raise ValueError(
                    f"{self!r}: expected more than 1 value per channel when training, "
                    f"got input size {x.shape}"
                )
            if self.eps <= 0.0:
                raise ValueError(
                    f"batch_norm eps must be positive during training, but got {self.eps}"
                )
        elif self.eps < 0.0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {self.eps}")
        use_running = not self.training or self.track_running_stats
        out, ctx = F.batch_norm_forward(
            x,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            self.weight,
            self.bias,
            batch_stats,
            factor,
            self.eps,
        )
        self._remember((ctx, self.weight, self.bias), out)
        return out

    def per_sample_grads(self, grad_output: Tensor, ctx: Any) -> dict[str, GradSample]:
        """With the batch's statistics (training) there are none: μ and σ² mix the examples,
        so no example's gradient is its own (Opacus refuses BatchNorm too). With the running
        statistics (eval) y is an affine map of each example: dγ_i = Σ g_i ⊙ x̂_i,
        dβ_i = Σ g_i over the spatial positions."""
        kernel_ctx, dtype = unwrap_float32_ctx(ctx[0])
        x, mean, invstd, _, has_bias, batch_stats = kernel_ctx
        if batch_stats:
            raise ValueError(
                f"{self!r}: per-sample gradients are not defined with the batch's statistics "
                "(training mode): they mix the examples; use GroupNorm or LayerNorm, or eval()"
            )
        xhat = F.channel_affine(x, invstd, -mean * invstd)
        return _affine_per_sample(grad_output, xhat, has_bias, dtype)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs, as torch.nn.BatchNorm1d."""

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs, as torch.nn.BatchNorm2d."""

    _expected_dims = (4,)


class GroupNorm(_AffineNormalization):
    """Group normalisation, as torch.nn.GroupNorm: each sample's channels fall in
    ``num_groups`` consecutive groups, each normalised over its channels and every spatial
    position, then y = γ x̂ + β per channel. Same in training and eval (no running stats)."""

    _kernel_backward = staticmethod(F.group_norm_backward)

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(
                f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
            )
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight: torch.nn.Parameter | None
        self.bias: torch.nn.Parameter | None
        _register_affine(self, num_channels, affine, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0."""
        _reset_affine(self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )

    def _check_input(self, input: object) -> Tensor:
        x = self._check_tensor(input)
        if x.dim() < 2:
            raise RuntimeError(
                f"{self!r}: expected at least 2 dimensions (N, C, ...) for the input, "
                f"got shape {tuple(x.shape)}"
            )
        channels = x.shape[1]
        if self.weight is not None and channels != self.num_channels:
            raise RuntimeError(
                f"{self!r}: expected an input with {self.num_channels} channels (axis 1), "
                f"got shape {tuple(x.shape)}"
            )
        if channels % self.num_groups != 0:
            raise RuntimeError(
                f"{self!r}: expected the number of channels of the input to be divisible by "
                f"num_groups={self.num_groups}, got shape {tuple(x.shape)}"
            )
        if x.shape[0] * channels // self.num_groups * math.prod(x.shape[2:]) == 1:
            raise ValueError(
                f"{self!r}: expected more than 1 value per group, got input size {x.shape}"
            )
        return x

    def forward(self, input: Tensor) -> Tensor:
        x = self._check_input(input)
        out, ctx = F.group_norm_forward(x, self.num_groups, self.weight, self.bias, self.eps)
        self._remember((ctx, self.weight, self.bias), out)
        return out

    def per_sample_grads(self, grad_output: Tensor, ctx: Any) -> dict[str, GradSample]:
        """Each example is normalised by its own statistics: dγ_i = Σ g_i ⊙ x̂_i and
        dβ_i = Σ g_i over the spatial positions, per channel."""
        kernel_ctx, dtype = unwrap_float32_ctx(ctx[0])
        x, mean, rstd, _, has_bias, num_groups = kernel_ctx
        xhat = ((x.reshape(x.shape[0], num_groups, -1) - mean) * rstd).view(x.shape)
        return _affine_per_sample(grad_output, xhat, has_bias, dtype)


def _affine_per_sample(
    grad_output: Tensor, xhat: Tensor, has_bias: bool, half: torch.dtype | None = None
) -> dict[str, GradSample]:
    """Per-sample gradients of γ and β of y = γ x̂ + β, per channel (axis 1). For a half
    input (``half``: its dtype; x̂ is float32) in float32, rounded once."""
    if half is not None:
        grad_output = grad_output.float()
    grad_weight, grad_bias = P.norm_affine_grad_sample(grad_output, xhat, (1,))
    if half is not None:
        grad_weight, grad_bias = grad_weight.to(half), grad_bias.to(half)
    return {"weight": grad_weight, "bias": grad_bias} if has_bias else {"weight": grad_weight}


def _norm_dtype(module: Any) -> torch.dtype | None:
    tensor = module.weight if module.weight is not None else module.running_mean
    return None if tensor is None else tensor.dtype


def _batch_norm_arguments(module: Any) -> dict[str, Any]:
    return {
        "num_features": module.num_features,
        "eps": module.eps,
        "momentum": module.momentum,
        "affine": module.affine,
        "track_running_stats": module.track_running_stats,
        "bias": module.bias is not None,
        "device": "meta",  # the source's parameters and buffers are copied in
        "dtype": _norm_dtype(module),
    }


register_conversion(torch.nn.BatchNorm1d, BatchNorm1d, _batch_norm_arguments)
register_conversion(torch.nn.BatchNorm2d, BatchNorm2d, _batch_norm_arguments)
register_conversion(
    torch.nn.GroupNorm,
    GroupNorm,
    lambda m: {
        "num_groups": m.num_groups,
        "num_channels": m.num_channels,
        "eps": m.eps,
        "affine": m.affine,
        "bias": m.bias is not None,
        "device": "meta",
        "dtype": None if m.weight is None else m.weight.dtype,
    },
)
