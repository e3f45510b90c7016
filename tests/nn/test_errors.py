"""Every error path: the exception type and a message naming the layer, value and expectation."""

from __future__ import annotations

import re

import pytest
import torch

import handgrad.nn as hn
from handgrad.nn import functional as F

ALL_MODULES = [
    hn.Linear(3, 2),
    hn.ReLU(),
    hn.Sigmoid(),
    hn.Tanh(),
    hn.LeakyReLU(),
    hn.ELU(),
    hn.GELU(),
    hn.Softplus(),
    hn.Identity(),
    hn.Dropout(0.2),
    hn.Flatten(),
    hn.Sequential(hn.Linear(3, 2), hn.ReLU()),
]


@pytest.mark.parametrize("module", ALL_MODULES, ids=lambda m: type(m).__name__)
def test_backward_before_forward_is_a_value_error(module) -> None:
    with pytest.raises(ValueError, match=rf"{type(module).__name__}\.backward\(\) called before"):
        module.backward(torch.ones(4, 2))


@pytest.mark.parametrize(
    "loss_fn",
    [hn.MSELoss(), hn.L1Loss(), hn.HuberLoss(), hn.CrossEntropyLoss(), hn.BCEWithLogitsLoss()],
    ids=lambda m: type(m).__name__,
)
def test_loss_backward_before_forward_is_a_value_error(loss_fn) -> None:
    with pytest.raises(ValueError, match="called before forward"):
        loss_fn.backward()


@pytest.mark.parametrize("shape", [(4, 5), (5,), (2, 3, 4)])
def test_linear_wrong_input_shape_names_layer_expected_and_actual(shape) -> None:
    layer = hn.Linear(3, 2)
    expected = (
        r"Linear\(in_features=3, out_features=2, bias=True\): "
        rf"expected input of shape \(\.\.\., 3\), got {re.escape(str(tuple(shape)))}"
    )
    with pytest.raises(ValueError, match=expected):
        layer(torch.randn(shape))


def test_linear_scalar_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 3\), got \(\)"):
        hn.Linear(3, 2)(torch.tensor(1.0))


def test_linear_dtype_mismatch_names_both_dtypes() -> None:
    layer = hn.Linear(3, 2)  # float32
    with pytest.raises(ValueError, match=r"input has dtype torch\.float64 on cpu but weight has dtype torch\.float32"):  # noqa: E501
        layer(torch.randn(4, 3, dtype=torch.float64))


def test_linear_device_mismatch_names_both_devices() -> None:
    layer = hn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"on meta but weight has dtype torch\.float32 on cpu"):
        layer(torch.empty(4, 3, device="meta"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_features": -1, "out_features": 2}, "in_features must be a non-negative int, got -1"),
        ({"in_features": 2, "out_features": 2.5}, "out_features must be a non-negative int"),
    ],
)
def test_linear_rejects_bad_sizes(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        hn.Linear(**kwargs)


def test_backward_rejects_grad_output_of_the_wrong_shape() -> None:
    layer = hn.Linear(3, 2)
    layer(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(4, 2\) \(the output's\), got \(4, 3\)"):  # noqa: E501
        layer.backward(torch.ones(4, 3))
    relu = hn.ReLU()
    relu(torch.randn(5))
    with pytest.raises(ValueError, match=r"ReLU\.backward\(\): expected grad_output of shape \(5"):
        relu.backward(torch.ones(6))


def test_backward_rejects_grad_output_of_the_wrong_dtype() -> None:
    layer = hn.Tanh()
    layer(torch.randn(3))
    with pytest.raises(ValueError, match=r"dtype torch\.float32 on cpu \(the output's\), got torch\.float64"):  # noqa: E501
        layer.backward(torch.ones(3, dtype=torch.float64))


def test_non_tensor_input_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"ReLU: input must be a torch\.Tensor, got <class 'list'>"):
        hn.ReLU()([1.0, 2.0])


def test_flatten_bad_dims_names_the_layer() -> None:
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=3, end_dim=-1\): cannot flatten an input of shape \(2, 3\)"):  # noqa: E501
        hn.Flatten(3)(torch.randn(2, 3))


def test_sequential_refuses_torch_layers() -> None:
    with pytest.raises(TypeError, match=r"module 1 is torch\.nn\.modules\.activation\.ReLU, not a handgrad Module"):  # noqa: E501
        hn.Sequential(hn.Linear(2, 2), torch.nn.ReLU())


def test_sequential_wrong_shape_in_the_middle_names_the_layer() -> None:
    net = hn.Sequential(hn.Linear(3, 4), hn.ReLU(), hn.Linear(5, 1))
    with pytest.raises(ValueError, match=r"Linear\(in_features=5, .*got \(2, 4\)"):
        net(torch.randn(2, 3))


def test_gelu_rejects_unknown_approximation() -> None:
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'fast'"):
        hn.GELU("fast")


def test_softplus_rejects_zero_beta() -> None:
    with pytest.raises(ValueError, match="beta must be non-zero"):
        hn.Softplus(beta=0)


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss_type", [hn.MSELoss, hn.L1Loss, hn.HuberLoss, hn.CrossEntropyLoss, hn.BCEWithLogitsLoss])  # noqa: E501
def test_losses_reject_an_unknown_reduction(loss_type) -> None:
    with pytest.raises(ValueError, match="'average' is not a valid value for reduction"):
        loss_type(reduction="average")


def test_functional_kernels_reject_an_unknown_reduction() -> None:
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        F.mse_forward(torch.ones(2), torch.ones(2), reduction="avg")


@pytest.mark.parametrize("loss_type", [hn.MSELoss, hn.L1Loss, hn.HuberLoss, hn.BCEWithLogitsLoss])
def test_elementwise_losses_need_the_predictions_shape(loss_type) -> None:
    with pytest.raises(ValueError, match=r"expected target of shape \(4, 1\) \(the prediction's\), got \(4,\)"):  # noqa: E501
        loss_type()(torch.randn(4, 1), torch.randn(4))


def test_loss_target_dtype_mismatch() -> None:
    with pytest.raises(ValueError, match=r"MSELoss: target has dtype torch\.float64 on cpu but prediction has dtype torch\.float32"):  # noqa: E501
        hn.MSELoss()(torch.randn(3), torch.randn(3, dtype=torch.float64))


def test_loss_of_integer_prediction_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"prediction must be a floating-point tensor, got dtype torch\.int64"):  # noqa: E501
        hn.L1Loss()(torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.long))


def test_mean_of_an_empty_prediction_is_refused_not_nan() -> None:
    with pytest.raises(ValueError, match="reduction='mean' of an empty prediction"):
        hn.MSELoss()(torch.ones(0), torch.ones(0))
    assert hn.MSELoss(reduction="sum")(torch.ones(0), torch.ones(0)) == 0


def test_loss_backward_grad_must_have_the_loss_shape() -> None:
    loss_fn = hn.MSELoss(reduction="none")
    loss_fn(torch.randn(3, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(3, 2\)"):
        loss_fn.backward(torch.ones(3))


def test_cross_entropy_target_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"target 5 is out of range for 4 classes \(expected 0\.\.3 or ignore_index=-100\)"):  # noqa: E501
        hn.CrossEntropyLoss()(torch.randn(3, 4), torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="target -2 is out of range"):
        hn.CrossEntropyLoss()(torch.randn(3, 4), torch.tensor([0, -2, 1]))


def test_cross_entropy_target_shapes() -> None:
    loss_fn = hn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"expected class-index target of shape \(3,\) \(the logits' without the class dim 1\), got \(3, 1\)"):  # noqa: E501
        loss_fn(torch.randn(3, 4), torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected probability target of shape \(3, 4\)"):
        loss_fn(torch.randn(3, 4), torch.rand(3, 5))
    with pytest.raises(ValueError, match=r"expected logits of shape \(C,\), \(N, C\)"):
        loss_fn(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(ValueError, match=r"class indices .* or probabilities .*dtype torch\.bool"):
        loss_fn(torch.randn(3, 4), torch.zeros(3, dtype=torch.bool))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_every_target_ignored_is_torchs_nan_or_zero(
    label_smoothing: float, reduction: str
) -> None:
    logits = torch.randn(3, 4, dtype=torch.float64)
    target = torch.full((3,), -100)
    kwargs = {"label_smoothing": label_smoothing, "reduction": reduction}
    leaf = logits.clone().requires_grad_(True)
    expected = torch.nn.CrossEntropyLoss(**kwargs)(leaf, target)
    expected.sum().backward()
    loss_fn = hn.CrossEntropyLoss(**kwargs)
    got = loss_fn(logits, target)
    torch.testing.assert_close(got, expected.detach(), equal_nan=True, rtol=0, atol=0)
    assert torch.equal(loss_fn.backward(1.0), leaf.grad)  # zeros, as autograd's


def test_cross_entropy_argument_checks() -> None:
    with pytest.raises(ValueError, match=r"label_smoothing must be between 0\.0 and 1\.0, got 1\.5"):  # noqa: E501
        hn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight must be a 1-D floating tensor .* shape \(2, 2\)"):
        hn.CrossEntropyLoss(weight=torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"expected weight of shape \(4,\), one per class, got \(3,\)"):  # noqa: E501
        hn.CrossEntropyLoss(weight=torch.ones(3))(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="ignore_index is not supported for probability targets"):
        hn.CrossEntropyLoss(ignore_index=0)(torch.randn(2, 4), torch.rand(2, 4))


def test_bce_weight_must_broadcast_to_the_prediction() -> None:
    loss_fn = hn.BCEWithLogitsLoss(pos_weight=torch.ones(5))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(5,\) does not broadcast to the prediction's shape \(2, 3\)"):  # noqa: E501
        loss_fn(torch.randn(2, 3), torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"weight of shape \(2, 2, 3\) does not broadcast"):
        hn.BCEWithLogitsLoss(weight=torch.ones(2, 2, 3))(torch.randn(2, 3), torch.rand(2, 3))


def test_huber_delta_must_be_positive() -> None:
    with pytest.raises(ValueError, match="delta must be positive, got 0"):
        hn.HuberLoss(delta=0)


def test_sequential_refuses_one_instance_in_two_places() -> None:
    act = hn.ReLU()
    with pytest.raises(ValueError, match=r"module 3 is the same object as module 1 \(ReLU\)"):
        hn.Sequential(hn.Linear(2, 2), act, hn.Linear(2, 2), act)


@pytest.mark.parametrize("module", ALL_MODULES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("grad_output", [1.0, None, [1.0, 2.0]], ids=["float", "None", "list"])
def test_backward_of_a_non_tensor_is_a_type_error_naming_grad_output(module, grad_output) -> None:
    module(torch.randn(4, 3))
    with pytest.raises(TypeError, match=r"\.backward\(\): grad_output must be a torch\.Tensor"):
        module.backward(grad_output)


@pytest.mark.parametrize("grad", [None, 1, 1.0, torch.tensor(1.0)], ids=str)
def test_loss_backward_takes_a_number_none_or_a_tensor(grad) -> None:
    loss_fn = hn.MSELoss()
    prediction, target = torch.randn(3, 2), torch.randn(3, 2)
    loss_fn(prediction, target)
    expected = 2 * (prediction - target) / prediction.numel()
    torch.testing.assert_close(loss_fn.backward(grad), expected)


@pytest.mark.parametrize("grad", ["a", [1.0], True], ids=str)
def test_loss_backward_of_anything_else_is_a_type_error_naming_grad(grad) -> None:
    loss_fn = hn.MSELoss()
    loss_fn(torch.randn(3), torch.randn(3))
    with pytest.raises(TypeError, match=r"MSELoss\.backward\(\): grad must be a number"):
        loss_fn.backward(grad)


def test_loss_backward_with_a_number_before_forward_or_twice_is_a_value_error() -> None:
    loss_fn = hn.MSELoss()
    with pytest.raises(ValueError, match=r"MSELoss\.backward\(\) called before forward"):
        loss_fn.backward(1.0)
    loss_fn(torch.randn(3), torch.randn(3))
    loss_fn.backward(2)  # an int is a number too
    with pytest.raises(ValueError, match=r"MSELoss\.backward\(\) called twice"):
        loss_fn.backward()


def test_grad_output_of_another_dtype_is_a_value_error_naming_both() -> None:
    layer = hn.Linear(2, 3)
    layer(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"expected grad_output of dtype torch\.float32 on cpu"):
        layer.backward(torch.randn(4, 3, dtype=torch.float64))
    layer.backward(torch.randn(4, 3))  # the failed check released nothing
