"""check_module catches planted mistakes in student-style modules, and passes correct ones."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import handgrad.nn as hn
from handgrad.check import check_module
from handgrad.check.module import ModuleCheckResult


class StudentSigmoid(hn.Module):
    """A student's sigmoid; ``mistake=True`` plants the classic wrong derivative σ(1 + σ)."""

    def __init__(self, mistake: bool = False) -> None:
        super().__init__()
        self.mistake = mistake

    def forward(self, x: Tensor) -> Tensor:
        self.out = 1 / (1 + torch.exp(-x))
        return self.out

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:
        s = self.out
        return grad_output * s * (1 + s) if self.mistake else grad_output * s * (1 - s)


class StudentMSE(hn.Module):
    """A student's mean squared error; ``mistake=True`` forgets the 1/batch of the mean."""

    def __init__(self, mistake: bool = False) -> None:
        super().__init__()
        self.mistake = mistake

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self.diff = prediction - target
        return (self.diff**2).sum() / prediction.shape[0]

    def backward(self, grad: float = 1.0) -> Tensor:
        local = 2 * self.diff
        return grad * (local if self.mistake else local / self.diff.shape[0])


class StudentLinear(hn.Module):
    """A student's affine layer; ``mistake=True`` returns the transposed weight gradient."""

    def __init__(self, n_in: int, n_out: int, mistake: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_out, n_in), requires_grad=False)
        self.bias = torch.nn.Parameter(torch.randn(n_out), requires_grad=False)
        self.mistake = mistake

    def forward(self, x: Tensor) -> Tensor:
        self.x = x
        return x @ self.weight.T + self.bias

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:
        grad_weight = grad_output.T @ self.x
        hn.accumulate_grad(self.weight, grad_weight.T if self.mistake else grad_weight)
        hn.accumulate_grad(self.bias, grad_output.sum(0))
        return grad_output @ self.weight


def test_correct_student_modules_pass() -> None:
    for module, x, target in [
        (StudentSigmoid(), torch.randn(4, 5), None),
        (StudentMSE(), torch.randn(6, 2), torch.randn(6, 2)),
        (StudentLinear(3, 3), torch.randn(5, 3), None),
    ]:
        result = check_module(module, x, target=target)
        assert result.passed, result.report()
        for tensor in result.tensors:
            assert tensor.autograd_rel <= 1e-12
            assert tensor.fd_rel <= 1e-6


def test_catches_a_wrong_sigmoid_derivative() -> None:
    result = check_module(StudentSigmoid(mistake=True), torch.randn(4, 5))
    assert not result.passed
    check = result.tensor("input")
    assert check.autograd_rel > 0.1
    assert check.fd_rel > 0.1
    assert "differs from autograd most at index" in check.detail
    assert "FAILED" in result.report()
    assert "input: differs from autograd" in str(result)


def test_catches_a_missing_one_over_batch_in_the_loss_gradient() -> None:
    batch = 8
    result = check_module(
        StudentMSE(mistake=True), torch.randn(batch, 2), target=torch.randn(batch, 2)
    )
    assert not result.passed
    check = result.tensor("input")
    # The gradient is exactly batch times too large: relative error batch − 1.
    assert check.autograd_rel == pytest.approx(batch - 1, rel=1e-9)


def test_catches_a_transposed_weight_gradient() -> None:
    result = check_module(StudentLinear(4, 4, mistake=True), torch.randn(6, 4))
    assert not result.passed
    assert result.tensor("input").passed
    assert result.tensor("bias").passed
    weight = result.tensor("weight")
    assert not weight.passed
    assert weight.autograd_rel > 0.1
    assert "weight: differs from autograd most at index (" in result.report()


def test_an_input_gradient_of_the_wrong_shape_is_reported() -> None:
    class TransposedInputGrad(StudentLinear):
        def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:
            super().backward(grad_output)
            return (grad_output @ self.weight).T  # (in, batch) instead of (batch, in)

    result = check_module(TransposedInputGrad(3, 5), torch.randn(4, 3))
    assert not result.passed
    assert result.tensor("input").detail == "backward() returned shape (3, 4), expected (4, 3)"
    assert result.tensor("weight").passed


def test_reports_a_missing_gradient() -> None:
    class ForgetsBias(StudentLinear):
        def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:
            hn.accumulate_grad(self.weight, grad_output.T @ self.x)
            return grad_output @ self.weight

    result = check_module(ForgetsBias(3, 2), torch.randn(4, 3))
    assert not result.passed
    assert result.tensor("weight").passed
    assert result.tensor("bias").detail == "bias.grad is None"


def test_reports_a_backward_that_returns_nothing() -> None:
    class Silent(StudentSigmoid):
        def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:
            return None  # type: ignore[return-value]

    result = check_module(Silent(), torch.randn(3))
    assert not result.passed
    assert result.tensor("input").detail == "backward() returned None"


def test_refuses_a_forward_autograd_cannot_differentiate() -> None:
    class ViaNumpy(StudentSigmoid):
        def forward(self, x: Tensor) -> Tensor:
            self.out = torch.from_numpy(1 / (1 + (-x.detach()).exp().numpy()))
            return self.out

    with pytest.raises(ValueError, match=r"autograd cannot differentiate ViaNumpy\.forward"):
        check_module(ViaNumpy(), torch.randn(3))


@pytest.mark.parametrize(
    "module",
    [
        hn.Linear(4, 3),
        hn.Sequential(hn.Linear(4, 6), hn.GELU(), hn.Dropout(0.3), hn.Linear(6, 3), hn.Softplus()),
        hn.Dropout(0.5, generator=torch.Generator().manual_seed(1)),
        hn.ELU(),
        hn.LeakyReLU(0.2),
    ],
    ids=lambda m: type(m).__name__,
)
def test_handgrad_modules_pass_in_float32_too(module) -> None:
    # check_module works in float64 on a copy, whatever the module's dtype.
    result = check_module(module, torch.randn(5, 4))
    assert result.passed, result.report()
    assert next(iter(module.parameters()), torch.empty(0)).dtype == torch.float32


def test_leaves_the_module_and_input_untouched() -> None:
    module = hn.Linear(3, 2)
    weight = module.weight.clone()
    x = torch.randn(4, 3)
    x_before = x.clone()
    rng_before = torch.get_rng_state()
    check_module(hn.Sequential(module, hn.Dropout(0.5)), x)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(module.weight, weight)
    assert module.weight.grad is None
    assert torch.equal(x, x_before)
    with pytest.raises(ValueError, match="called before forward"):
        module.backward(torch.ones(4, 2))  # the original never ran


def test_losses_pass_with_their_targets() -> None:
    logits = torch.randn(5, 4)
    for module, target in [
        (hn.CrossEntropyLoss(label_smoothing=0.1), torch.randint(0, 4, (5,))),
        (hn.CrossEntropyLoss(reduction="none"), torch.softmax(torch.randn(5, 4), 1)),
        (hn.BCEWithLogitsLoss(pos_weight=torch.rand(4)), torch.rand(5, 4)),
        (hn.HuberLoss(reduction="sum", delta=0.5), torch.randn(5, 4)),
    ]:
        result = check_module(module, logits, target=target)
        assert result.passed, result.report()


def test_result_lookup_and_argument_errors() -> None:
    result = check_module(hn.Linear(2, 2), torch.randn(3, 2), fd_samples=0)
    assert isinstance(result, ModuleCheckResult)
    assert [t.name for t in result.tensors] == ["input", "weight", "bias"]
    assert all(t.fd_abs == 0.0 for t in result.tensors)
    with pytest.raises(KeyError, match="no gradient named 'beta'"):
        result.tensor("beta")
    with pytest.raises(TypeError, match="example_input must be a Tensor"):
        check_module(hn.ReLU(), [1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Linear has no backward\(\) to check"):
        check_module(torch.nn.Linear(2, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="fd_samples >= 0 and fd_step > 0"):
        check_module(hn.ReLU(), torch.randn(2), fd_step=0)


@given(
    factor=st.one_of(st.floats(0.0, 1.0 - 1e-7), st.floats(1.0 + 1e-7, 10.0)),
    batch=st.integers(1, 5),
)
def test_any_scaled_gradient_is_caught(factor: float, batch: int) -> None:
    # A gradient off by any factor — even one part in ten million — fails the check.
    class Scaled(StudentLinear):
        def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:
            return factor * super().backward(grad_output)

    result = check_module(Scaled(3, 2), torch.randn(batch, 3), fd_samples=0)
    assert not result.tensor("input").passed
    assert result.tensor("weight").passed
    assert result.tensor("input").autograd_rel == pytest.approx(abs(factor - 1), rel=1e-3)


class Product(hn.Module):
    """y = scale · input ⊙ other, two inputs; ``mistake=True`` swaps the two gradients."""

    def __init__(self, mistake: bool = False) -> None:
        super().__init__()
        self.mistake = mistake

    def forward(self, input: Tensor, other: Tensor, scale: float = 1.0) -> Tensor:
        self.saved = (input, other, scale)
        return scale * input * other

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> tuple[Tensor, Tensor]:
        input, other, scale = self.saved
        d_input, d_other = scale * grad_output * other, scale * grad_output * input
        return (d_other, d_input) if self.mistake else (d_input, d_other)


def test_a_module_of_several_inputs_is_checked_input_by_input() -> None:
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    result = check_module(Product(), (a, b), forward_kwargs={"scale": 3.0})
    assert result.passed, result.report()
    assert [t.name for t in result.tensors] == ["input", "other"]
    wrong = check_module(Product(mistake=True), (a, b))
    assert not wrong.tensor("input").passed
    assert not wrong.tensor("other").passed


def test_several_inputs_need_a_tuple_of_gradients() -> None:
    class OneGradient(Product):
        def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:  # type: ignore[override]
            return super().backward(grad_output)[0]

    result = check_module(OneGradient(), (torch.randn(2), torch.randn(2)))
    assert not result.passed
    assert result.tensor("other").detail == (
        "backward() returned a Tensor, expected a tuple of 2 gradients "
        "(one per input, in argument order)"
    )


def test_an_integer_input_gets_no_gradient_checked() -> None:
    class Pick(hn.Module):
        def forward(self, input: Tensor, index: Tensor) -> Tensor:
            self.saved = (input.shape, index)
            return input[index]

        def backward(self, grad_output: Tensor, input_grad: bool = True) -> tuple[Tensor, None]:
            shape, index = self.saved
            grad = torch.zeros(shape, dtype=grad_output.dtype)
            return grad.index_add_(0, index, grad_output), None

    result = check_module(Pick(), (torch.randn(5, 2), torch.tensor([4, 0, 4])))
    assert result.passed, result.report()
    assert [t.name for t in result.tensors] == ["input"]


def test_catches_a_backward_that_assigns_grad_instead_of_adding() -> None:
    class Assigns(StudentLinear):
        def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:
            self.weight.grad = grad_output.T @ self.x  # the bug: overwrites what was there
            hn.accumulate_grad(self.bias, grad_output.sum(0))
            return grad_output @ self.weight

    result = check_module(Assigns(3, 2), torch.randn(4, 3))
    assert not result.passed
    assert result.tensor("bias").passed
    weight = result.tensor("weight")
    assert weight.autograd_rel < 1e-12  # the first gradient is right: only accumulating is not
    assert weight.detail.startswith("weight.grad was assigned, not added to")


def test_catches_a_backward_that_replaces_grad_with_a_new_tensor() -> None:
    class Replaces(StudentLinear):
        def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor:
            grad_weight = grad_output.T @ self.x
            current = self.weight.grad
            self.weight.grad = grad_weight if current is None else current + grad_weight
            hn.accumulate_grad(self.bias, grad_output.sum(0))
            return grad_output @ self.weight

    result = check_module(Replaces(3, 2), torch.randn(4, 3))
    assert not result.passed
    assert result.tensor("weight").detail.startswith(
        "weight.grad was replaced by another tensor: add into the one there"
    )
    assert "FAIL" in result.report()
