"""Layers with structure: Linear (the only one with parameters), Dropout, Flatten."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from handgrad.nn import functional as F
from handgrad.nn.functional.per_sample import linear_bias_grad_sample
from handgrad.nn.gradients import accumulate_grad
from handgrad.nn.module import Module
from handgrad.nn.per_sample import FactoredGradSample, GradSample, PerSample


class Linear(Module):
    """y = x Wᵀ + b for x of shape (..., in_features); W is (out_features, in_features).

    Backward: dx = g W, dW += Σ gᵀx, db += Σ g (sums over every leading index).
    Initialisation is torch.nn.Linear's, drawn in the same order from the same RNG, so the
    same seed gives the same weights: W, b ~ U(−1/√in, 1/√in).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"Linear: {name} must be a non-negative int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = torch.nn.Parameter(
            torch.empty((out_features, in_features), device=device, dtype=dtype),
            requires_grad=False,
        )
        self.bias: torch.nn.Parameter | None
        if bias:
            self.bias = torch.nn.Parameter(
                torch.empty(out_features, device=device, dtype=dtype), requires_grad=False
            )
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw W then b from U(−1/√in, 1/√in), exactly as torch.nn.Linear does.

        torch writes W's bound as kaiming_uniform(a=√5): √3 · √(2/(1+a²)) / √in; computing it
        the same way keeps the weights bit-identical, not merely close.
        """
        fan_in = self.in_features
        with torch.no_grad():
            if self.weight.numel() > 0:  # torch skips empty weights without drawing
                gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
                bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
                self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                bias_bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                self.bias.uniform_(-bias_bound, bias_bound)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

    def forward(self, input: Tensor) -> Tensor:
        # Read from _parameters: attribute access to a parameter costs as much as this layer's
        # own work on a small input.
        parameters = self._parameters
        try:
            out, ctx = F.linear_forward(input, parameters["weight"], parameters["bias"])  # type: ignore[arg-type]
        except (AttributeError, TypeError, RuntimeError):
            # torch refuses every input the checks below refuse, so they run only then: on
            # small layers they would cost as much as the matrix multiply itself.
            self._check_input(input)
            raise
        return self._remember(ctx, out)

    def _check_input(self, x: object) -> None:
        """TypeError/ValueError naming the problem with an input the kernel refused."""
        x = self._check_tensor(x)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{self!r}: expected input of shape (..., {self.in_features}), got {tuple(x.shape)}"
            )
        self._check_like(x, self.weight, "input", "weight")

    def backward(
        self, grad_output: Tensor, input_grad: bool = True, per_sample: PerSample = False
    ) -> Tensor | None:
        if per_sample:  # also store p.grad_sample (handgrad.nn.per_sample)
            return self._per_sample_backward(grad_output, input_grad, per_sample)
        ctx = self._recall(grad_output)
        _, weight, bias = ctx  # the parameters the forward used
        grad_x, grad_weight, grad_bias = F.linear_backward(grad_output, ctx, input_grad)
        accumulate_grad(weight, grad_weight)
        if bias is not None:
            accumulate_grad(bias, grad_bias)  # type: ignore[arg-type]
        return grad_x

    def per_sample_grads(self, grad_output: Tensor, ctx: F.Ctx) -> dict[str, GradSample]:
        """Example i's dW_i = Σ_t g_{i,t} x_{i,t}ᵀ (factored: never formed here) and
        db_i = Σ_t g_{i,t}, t running over the input's middle dimensions
        (:mod:`handgrad.nn.functional.per_sample`)."""
        x, _, bias = ctx
        if x.dim() < 2:
            raise ValueError(
                f"{self!r}: per-sample gradients need a batch dimension; "
                f"got an input of shape {tuple(x.shape)}"
            )
        grads: dict[str, GradSample] = {"weight": FactoredGradSample(grad_output, x)}
        if bias is not None:
            grads["bias"] = linear_bias_grad_sample(grad_output)
        return grads


class Dropout(Module):
    """Inverted dropout: in training y = x · m/(1 − p), m ~ Bernoulli(1 − p); in eval y = x.

    dx = g · m/(1 − p) with the forward's mask. The mask comes from ``generator`` if given,
    else from torch's global RNG, drawn as torch.nn.Dropout draws it (same seed, same mask).
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)
        self.generator = generator

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, input: Tensor) -> Tensor:
        x = self._check_tensor(input)
        if self.training and 0.0 < self.p < 1.0 and not (x.is_floating_point() or x.is_complex()):
            raise RuntimeError(  # torch's type: the scaled result cannot be cast back
                f"{self!r}: an input of dtype {x.dtype} cannot hold x·m/(1 − p); "
                "give a floating-point tensor"
            )
        out, ctx = F.dropout_forward(x, self.p, self.training, self.generator)
        return self._remember(ctx, out)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.dropout_backward(grad_output, ctx) if input_grad else None


class Flatten(Module):
    """Merge dims start_dim..end_dim: (N, C, H, W) -> (N, C·H·W); dx = g reshaped back."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, input: Tensor) -> Tensor:
        x = self._check_tensor(input)
        try:
            out, ctx = F.flatten_forward(x, self.start_dim, self.end_dim)
        except (IndexError, RuntimeError) as error:
            raise ValueError(
                f"{self!r}: cannot flatten an input of shape {tuple(x.shape)}: {error}"
            ) from error
        return self._remember(ctx, out)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.flatten_backward(grad_output, ctx) if input_grad else None
