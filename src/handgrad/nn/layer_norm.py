"""LayerNorm and RMSNorm: normalise each sample over its trailing dimensions.

The formulas and the backward's derivation are in :mod:`handgrad.nn.functional.layer_norm`.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import Tensor

from handgrad.nn import functional as F
from handgrad.nn._saving import RELEASED, accumulate
from handgrad.nn.convert import register_conversion
from handgrad.nn.functional import per_sample as P
from handgrad.nn.module import Module
from handgrad.nn.per_sample import GradSample, PerSample, per_sample_active


def _as_shape(normalized_shape: int | tuple[int, ...] | list[int] | torch.Size) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(n) for n in cast(Iterable[int], normalized_shape))


class _Norm(Module):
    """What LayerNorm and RMSNorm share: the shape, its check, the affine parameters."""

    normalized_shape: tuple[int, ...]

    def _check_input(self, input: object) -> Tensor:
        input = self._check_tensor(input)
        shape = self.normalized_shape
        if input.dim() < len(shape) or tuple(input.shape[input.dim() - len(shape) :]) != shape:
            expected = "[*, " + ", ".join(str(n) for n in shape) + "]"
            raise RuntimeError(
                f"{self._get_name()}: given normalized_shape={list(shape)}, expected input with "
                f"shape {expected}, but got input of size {list(input.shape)}"
            )
        weight = getattr(self, "weight", None)
        if weight is not None:
            self._check_like(input, weight, "input", "weight")
        return input

    def _affine_grad_sample(
        self, grad_output: Tensor, xhat: Tensor, has_bias: bool, half: torch.dtype | None
    ) -> dict[str, GradSample]:
        """Per-sample dγ_i = Σ g_i ⊙ x̂_i and dβ_i = Σ g_i, summed over every position of
        example i (the dimensions between the batch's and the normalised ones). For a half
        input (``half``: its dtype; x̂ is float32) in float32, rounded once."""
        normalized = len(self.normalized_shape)
        if xhat.dim() <= normalized:
            raise ValueError(
                f"{self!r}: per-sample gradients need a batch dimension before the normalized "
                f"ones; got an input of shape {tuple(xhat.shape)}"
            )
        if half is not None:
            grad_output = grad_output.float()
        grad_weight, grad_bias = P.norm_affine_grad_sample(
            grad_output, xhat, range(xhat.dim() - normalized, xhat.dim())
        )
        if half is not None:
            grad_weight, grad_bias = grad_weight.to(half), grad_bias.to(half)
        return {"weight": grad_weight, "bias": grad_bias} if has_bias else {"weight": grad_weight}


class LayerNorm(_Norm):
    """y = γ ⊙ (x − μ)/√(σ² + ε) + β over the last ``len(normalized_shape)`` dims.

    Arguments, parameters (``weight`` = γ, ones; ``bias`` = β, zeros) and errors as
    torch.nn.LayerNorm. Backward: dx = r (h − mean(h) − x̂ mean(h ⊙ x̂)) with h = g ⊙ γ and
    r = 1/√(σ² + ε); dγ += Σ g ⊙ x̂, dβ += Σ g.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int] | torch.Size,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight: torch.nn.Parameter | None
        self.bias: torch.nn.Parameter | None
        if elementwise_affine:
            self.weight = torch.nn.Parameter(
                torch.ones(self.normalized_shape, device=device, dtype=dtype), requires_grad=False
            )
            if bias:
                self.bias = torch.nn.Parameter(
                    torch.zeros(self.normalized_shape, device=device, dtype=dtype),
                    requires_grad=False,
                )
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """γ = 1, β = 0."""
        with torch.no_grad():
            if self.weight is not None:
                self.weight.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )

    def forward(self, input: Tensor) -> Tensor:
        input = self._check_input(input)
        out, ctx = F.layer_norm_forward(
            input, len(self.normalized_shape), self.weight, self.bias, self.eps
        )
        self._remember(ctx, out)  # the next layer keeps out if it needs it
        return out

    def normalize(self, input: Tensor) -> Tensor:
        """x̂ = (x − μ)/√(σ² + ε): the forward without γ and β, for a following linear layer
        that takes them into its weights (:mod:`handgrad.nn.functional.layer_norm`). γ and β
        are still kept, so :meth:`recompute_output` and :meth:`backward` work as after
        ``forward``; :meth:`backward_normalized` starts from dL/dx̂ instead. float32/float64."""
        input = self._check_input(input)
        xhat, ctx = F.layer_norm_normalize(
            input, len(self.normalized_shape), self.weight, self.bias, self.eps
        )
        self._remember(ctx, xhat)
        return xhat

    def normalized(self) -> Tensor:
        """The last forward's x̂, kept for the backward (after :meth:`normalize` or forward of
        a float32/float64 input)."""
        if self._saved is None or self._saved[0] is RELEASED:
            raise ValueError(
                f"{self._get_name()}.normalized() called before forward(), or after "
                "backward() freed what forward kept"
            )
        ctx, _ = F.unwrap_float32_ctx(self._saved[0])
        return cast(Tensor, ctx[0])

    def backward_normalized(
        self, grad_normalized: Tensor, *, centred: bool = False, residual: Tensor | None = None
    ) -> Tensor:
        """dL/d(input) from dL/dx̂ (the layer that took γ and β has accumulated their
        gradients); overwrites ``grad_normalized``. ``centred``: dL/dx̂ comes with its row
        means removed; ``residual``: returns residual + dL/d(input)
        (:func:`~handgrad.nn.functional.layer_norm_backward_normalized`). Not with
        per-sample gradients (the norm's own would be taken from dL/dx̂): there,
        :meth:`backward` from dL/dy."""
        if per_sample_active():
            raise ValueError(
                f"{self._get_name()}.backward_normalized(): per-sample gradients need "
                "backward(grad_output) with dL/dy"
            )
        ctx = self._recall(grad_normalized)
        return F.layer_norm_backward_normalized(
            grad_normalized, ctx, centred=centred, residual=residual
        )

    def recompute_output(self) -> Tensor:
        """The last forward's output y = γ ⊙ x̂ + β, rebuilt from the x̂ it keeps (one pass):
        a layer that reads y (a Linear's weight gradient) need not keep a copy of it."""
        if self._saved is None or self._saved[0] is RELEASED:
            raise ValueError(
                f"{self._get_name()}.recompute_output() called before forward(), or after "
                "backward() freed what forward kept"
            )
        ctx, half = F.unwrap_float32_ctx(self._saved[0])
        xhat, _, weight, bias, _ = ctx
        out = F.layer_norm_output(xhat, weight, bias)
        return out if half is None else out.to(half)  # a half input: x̂ in float32, y rounded

    def backward(
        self, grad_output: Tensor, input_grad: bool = True, per_sample: PerSample = False
    ) -> Tensor | None:
        if per_sample:  # also store p.grad_sample (per_sample_grads)
            return self._per_sample_backward(grad_output, input_grad, per_sample)
        ctx = self._recall(grad_output)
        grad_input, grad_weight, grad_bias = F.layer_norm_backward(grad_output, ctx, input_grad)
        if self.weight is not None and grad_weight is not None:
            accumulate(self.weight, grad_weight)
        if self.bias is not None and grad_bias is not None:
            accumulate(self.bias, grad_bias)
        return grad_input

    def per_sample_grads(self, grad_output: Tensor, ctx: Any) -> dict[str, GradSample]:
        """Each example is normalised by its own statistics, so its gradients are its own:
        dγ_i = Σ g_i ⊙ x̂_i, dβ_i = Σ g_i over the example's positions (a sequence's)."""
        kernel_ctx, half = F.unwrap_float32_ctx(ctx)
        xhat, _, _, bias, _ = kernel_ctx
        return self._affine_grad_sample(grad_output, xhat, bias is not None, half)


class RMSNorm(_Norm):
    """y = γ ⊙ x/√(mean(x²) + ε) over the last ``len(normalized_shape)`` dims.

    As torch.nn.RMSNorm: ``eps=None`` means ``torch.finfo(input.dtype).eps``; ``weight`` = γ
    starts at ones. Backward: dx = r (h − x̂ mean(h ⊙ x̂)), h = g ⊙ γ; dγ += Σ g ⊙ x̂.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int] | torch.Size,
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight: torch.nn.Parameter | None
        if elementwise_affine:
            self.weight = torch.nn.Parameter(
                torch.ones(self.normalized_shape, device=device, dtype=dtype), requires_grad=False
            )
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self) -> None:
        """γ = 1."""
        if self.weight is not None:
            with torch.no_grad():
                self.weight.fill_(1.0)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )

    def forward(self, x: Tensor) -> Tensor:  # (torch.nn.RMSNorm names its input x)
        x = self._check_input(x)
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        out, ctx = F.rms_norm_forward(x, len(self.normalized_shape), self.weight, eps)
        self._remember(ctx, out)
        return out

    def backward(
        self, grad_output: Tensor, input_grad: bool = True, per_sample: PerSample = False
    ) -> Tensor | None:
        if per_sample:  # also store weight.grad_sample (per_sample_grads)
            return self._per_sample_backward(grad_output, input_grad, per_sample)
        ctx = self._recall(grad_output)
        grad_input, grad_weight = F.rms_norm_backward(grad_output, ctx, input_grad)
        if self.weight is not None and grad_weight is not None:
            accumulate(self.weight, grad_weight)
        return grad_input

    def per_sample_grads(self, grad_output: Tensor, ctx: Any) -> dict[str, GradSample]:
        """dγ_i = Σ g_i ⊙ x̂_i over example i's positions (x̂ = x/√(mean(x²) + ε))."""
        kernel_ctx, half = F.unwrap_float32_ctx(ctx)
        return self._affine_grad_sample(grad_output, kernel_ctx[0], False, half)


def _norm_arguments(m: Any) -> dict[str, Any]:
    arguments = {
        "normalized_shape": tuple(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "device": "meta",  # the source's tensors are copied in
        "dtype": None if m.weight is None else m.weight.dtype,
    }
    if hasattr(m, "bias"):  # LayerNorm's; RMSNorm has none
        arguments["bias"] = m.bias is not None
    return arguments


register_conversion(torch.nn.LayerNorm, LayerNorm, _norm_arguments)
register_conversion(torch.nn.RMSNorm, RMSNorm, _norm_arguments)
