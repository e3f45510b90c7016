"""Element-wise activations: y = f(x), dx = g · f'(x). No parameters."""

from __future__ import annotations

from torch import Tensor

from handgrad.nn import functional as F
from handgrad.nn.functional import Ctx
from handgrad.nn.module import Module


class _Activation(Module):
    """y = f(x) element-wise; subclasses name the kernel pair."""

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        raise NotImplementedError

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        raise NotImplementedError

    def _floating(self, x: Tensor) -> Tensor:
        """``x`` if it is floating-point, else NotImplementedError as torch's kernel raises."""
        if not x.is_floating_point():
            raise NotImplementedError(
                f"{self._get_name()}: not implemented for input of dtype {x.dtype} (as in "
                f"torch.nn.{self._get_name()}); give a floating-point tensor"
            )
        return x

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            self._check_tensor(input)  # raises the TypeError
        out, ctx = self._kernel(input)
        return self._remember(ctx, out)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return self._kernel_backward(grad_output, ctx) if input_grad else None


class Identity(_Activation):
    """y = x; dx = g."""

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        return x, ()

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        return grad_output


class ReLU(_Activation):
    """y = max(x, 0); dx = g · [x > 0]."""

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        return F.relu_forward(x)

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        return F.relu_backward(grad_output, ctx)


class Sigmoid(_Activation):
    """y = σ(x) = 1/(1 + e^-x), overflow-free; dx = g · y(1 − y)."""

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        return F.sigmoid_forward(x)

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        return F.sigmoid_backward(grad_output, ctx)


class Tanh(_Activation):
    """y = tanh(x); dx = g · (1 − y²)."""

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        return F.tanh_forward(x)

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        return F.tanh_backward(grad_output, ctx)


class LeakyReLU(_Activation):
    """y = x for x > 0, else a·x (a = negative_slope); dx = g or a·g."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        return F.leaky_relu_forward(self._floating(x), self.negative_slope)

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        return F.leaky_relu_backward(grad_output, ctx)


class ELU(_Activation):
    """y = x for x > 0, else α(eˣ − 1); dx = g·α eˣ for x ≤ 0, else g (also for x = NaN:
    torch's scalar kernel gives that too, its vectorised one NaN)."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        return F.elu_forward(self._floating(x), self.alpha)

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        return F.elu_backward(grad_output, ctx)


class GELU(_Activation):
    """y = x Φ(x) (``approximate="none"``) or its tanh approximation (``"tanh"``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        return F.gelu_forward(self._floating(x), self.approximate)

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        return F.gelu_backward(grad_output, ctx)


class Softplus(_Activation):
    """y = log(1 + e^(βx))/β (y = x where βx > threshold); dx = g · σ(βx)."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        if beta == 0:
            raise ValueError("Softplus: beta must be non-zero, got 0")
        self.beta = float(beta)
        self.threshold = float(threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"

    def _kernel(self, x: Tensor) -> tuple[Tensor, Ctx]:
        return F.softplus_forward(self._floating(x), self.beta, self.threshold)

    def _kernel_backward(self, grad_output: Tensor, ctx: Ctx) -> Tensor:
        return F.softplus_backward(grad_output, ctx)


# ---------------------------------------------------------------- SiLU and the softmax family
# Plain modules (forward/backward); the kernels live in handgrad.nn.functional.softmax.


class SiLU(Module):
    """y = x σ(x) (swish); dx = g σ(x)(1 + x(1 − σ(x))). Keeps x only (σ is recomputed).

    ``inplace`` is accepted for torch.nn.SiLU's signature; the output is always a new tensor,
    since the backward needs the input.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""

    def forward(self, input: Tensor) -> Tensor:
        out, ctx = F.silu_forward(self._check_tensor(input))
        return self._remember(ctx, out)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.silu_backward(grad_output, ctx) if input_grad else None


def _softmax_dim(dim: int | None, input: Tensor, name: str) -> int:
    """``dim``, or torch's deprecated implicit choice (0 for 0-, 1- and 3-d inputs, else 1)."""
    if dim is not None:
        if not -max(input.dim(), 1) <= dim < max(input.dim(), 1):
            raise IndexError(
                f"{name}: dim {dim} is out of range for an input of shape {tuple(input.shape)} "
                f"(expected a dim in [{-max(input.dim(), 1)}, {max(input.dim(), 1) - 1}])"
            )
        return dim
    import warnings  # here, not at the top: this section is appended to a shared file

    warnings.warn(
        f"Implicit dimension choice for {name.lower()} has been deprecated. "
        "Change the call to include dim=X as an argument.",
        stacklevel=4,
    )
    return 0 if input.dim() in (0, 1, 3) else 1


class Softmax(Module):
    """y = softmax(x) along ``dim``; dx = y ⊙ (g − ⟨g, y⟩) (the Jacobian-vector product)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, input: Tensor) -> Tensor:
        input = self._check_tensor(input)
        out, ctx = F.softmax_forward(input, _softmax_dim(self.dim, input, "Softmax"))
        return self._remember(ctx, out)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.softmax_backward(grad_output, ctx) if input_grad else None


class LogSoftmax(Module):
    """y = log softmax(x) along ``dim``; dx = g − softmax(x) Σ g (softmax = e^y)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, input: Tensor) -> Tensor:
        input = self._check_tensor(input)
        out, ctx = F.log_softmax_forward(input, _softmax_dim(self.dim, input, "LogSoftmax"))
        return self._remember(ctx, out)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        ctx = self._recall(grad_output)
        return F.log_softmax_backward(grad_output, ctx) if input_grad else None
