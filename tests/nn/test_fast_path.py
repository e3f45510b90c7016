"""The fast-path kernels give the same bits as the plain formulas they replace, and the
training-step benchmark compares like with like."""

from __future__ import annotations

import math

import pytest
import torch

import handgrad.nn as hn
from benchmarks import bench_train
from handgrad.nn import functional as F


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def float_dtype(request: pytest.FixtureRequest) -> torch.dtype:
    dtype: torch.dtype = request.param
    return dtype


def test_sigmoid_backward_is_bitwise_the_textbook_formula(float_dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(257, 33, generator=generator, dtype=float_dtype) * 8
    g = torch.randn(257, 33, generator=generator, dtype=float_dtype)
    out, ctx = F.sigmoid_forward(x)
    assert torch.equal(F.sigmoid_backward(g, ctx), g * (1.0 - out) * out)


def test_relu_backward_passes_the_gradient_where_the_output_is_positive(
    float_dtype: torch.dtype,
) -> None:
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0, -1.0], dtype=float_dtype)
    g = torch.tensor([5.0, math.inf, math.nan, 7.0, -4.0, math.nan], dtype=float_dtype)
    _, ctx = F.relu_forward(x)
    expected = torch.tensor([0.0, 0.0, 0.0, 7.0, -4.0, 0.0], dtype=float_dtype)
    # Exactly 0 where x <= 0, even for an infinite or NaN gradient (as autograd's ReLU).
    assert torch.equal(F.relu_backward(g, ctx), expected)


def test_relu_backward_matches_autograd(float_dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(300, 70, generator=generator, dtype=float_dtype)
    x[0, :10] = 0.0
    g = torch.randn(300, 70, generator=generator, dtype=float_dtype)
    leaf = x.clone().requires_grad_()
    torch.relu(leaf).backward(g)
    _, ctx = F.relu_forward(x)
    assert torch.equal(F.relu_backward(g, ctx), leaf.grad)


@pytest.mark.parametrize("shape", [(64, 100, 1), (2000, 7, 1), (5, 3, 2)])
def test_linear_backward_input_gradient_is_bitwise_the_matmul(
    shape: tuple[int, int, int], float_dtype: torch.dtype
) -> None:
    batch, fan_in, fan_out = shape
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(batch, fan_in, generator=generator, dtype=float_dtype)
    w = torch.randn(fan_out, fan_in, generator=generator, dtype=float_dtype)
    b = torch.randn(fan_out, generator=generator, dtype=float_dtype)
    g = torch.randn(batch, fan_out, generator=generator, dtype=float_dtype)
    _, ctx = F.linear_forward(x, w, b)
    grad_x, grad_w, grad_b = F.linear_backward(g, ctx)
    assert grad_x is not None
    assert grad_b is not None
    assert torch.equal(grad_x, g.matmul(w))
    assert torch.equal(grad_w, g.t().mm(x))
    assert torch.equal(grad_b, g.sum(0))


@pytest.mark.parametrize("grad", [1.0, 0.37])
def test_mse_backward_is_bitwise_the_textbook_formula(
    grad: float, float_dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(3)
    p = torch.randn(37, 3, generator=generator, dtype=float_dtype)
    t = torch.randn(37, 3, generator=generator, dtype=float_dtype)
    loss, ctx = F.mse_forward(p, t)
    assert torch.equal(loss, ((p - t) ** 2).sum() / p.numel())
    assert torch.equal(F.mse_backward(grad, ctx), 2.0 * (p - t) * (grad / p.numel()))


@pytest.mark.parametrize("config", bench_train.GRID[:4], ids=lambda c: f"{c.name}@{c.batch}")
def test_benchmark_steps_train_the_same_network_alike(config: bench_train.Config) -> None:
    """Ours and the reference start from the same weights and data and stay together."""
    ours, reference = bench_train.handgrad_step(config), bench_train.torch_step(config)
    for step in range(3):
        got, expected = ours(), reference()
        assert isinstance(got, torch.Tensor)
        assert isinstance(expected, torch.Tensor)
        torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-6)
        assert math.isfinite(float(got)), f"step {step}"


def test_benchmark_network_matches_the_configuration() -> None:
    config = bench_train.Config((784, 512, 512, 10), 256, "relu", "ce")
    net = bench_train.handgrad_net(config)
    linears = [m for m in net if isinstance(m, hn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 512), (512, 10)]
    assert sum(isinstance(m, hn.ReLU) for m in net) == 2
    assert config.flops == 6 * 256 * (784 * 512 + 512 * 512 + 512 * 10)


def test_benchmark_quick_run_prints_a_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_train.main(["--quick", "--threads", "1", "--parts", "persample"]) == 0
    output = capsys.readouterr().out
    assert "### 1 torch thread(s)" in output
    assert "| handgrad (hand-written backward, handgrad Adam) |" in output
    assert "| handgrad, parameters not flattened |" in output
    assert "handgrad with flat parameters" in output
    assert "Speed-up: **" in output


def test_benchmark_rejects_an_unknown_part() -> None:
    with pytest.raises(SystemExit):
        bench_train.main(["--parts", "nonsense"])


@pytest.mark.parametrize("shape", [(128, 10), (10,), (8, 5, 3)], ids=str)
def test_cross_entropy_of_labels_agrees_with_the_general_formula(
    shape: tuple[int, ...], float_dtype: torch.dtype
) -> None:
    """Plain labels take the one-gather path; an in-range ignore_index that no target uses
    forces the general path on the same problem: both give the same bits."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(shape, generator=generator, dtype=float_dtype) * 5
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    target_shape = shape[:0] if len(shape) == 1 else (shape[0], *shape[2:])
    target = torch.randint(1, n_classes, target_shape, generator=generator)
    fast, general = hn.CrossEntropyLoss(), hn.CrossEntropyLoss(ignore_index=0)
    assert torch.equal(fast(logits, target), general(logits, target))
    # softmax as e^s / Z rather than e^(log softmax): within an ulp or two of the general path
    got, expected = fast.backward(), general.backward()
    eps = torch.finfo(float_dtype).eps
    torch.testing.assert_close(got, expected, rtol=4 * eps, atol=4 * eps / got.numel())
    assert fast._saved is not None
    assert general._saved is not None
    assert fast._saved[0][2] is True  # the label path ran
    assert general._saved[0][2] is False


def test_cross_entropy_of_labels_matches_autograd() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(100, 7, generator=generator, dtype=torch.float64) * 10
    target = torch.randint(0, 7, (100,), generator=generator)
    leaf = logits.clone().requires_grad_()
    expected = torch.nn.functional.cross_entropy(leaf, target)
    expected.backward()
    loss_fn = hn.CrossEntropyLoss()
    torch.testing.assert_close(loss_fn(logits, target), expected.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(loss_fn.backward(), leaf.grad, rtol=1e-13, atol=1e-17)


def test_cross_entropy_still_names_an_out_of_range_label() -> None:
    with pytest.raises(ValueError, match=r"target 7 is out of range for 7 classes"):
        hn.CrossEntropyLoss()(torch.zeros(3, 7), torch.tensor([0, 7, 1]))


def test_cross_entropy_ignores_the_default_ignore_index_among_plain_labels() -> None:
    logits = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, -100, 2, 1])
    got = hn.CrossEntropyLoss()(logits, target)
    expected = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)
