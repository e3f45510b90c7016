"""DPOptimizer against Opacus's DPOptimizer on the same per-sample gradients, its noise, and
its errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from handgrad.nn.per_sample import FactoredGradSample
from handgrad.optim import SGD, Adam
from handgrad.privacy import DPOptimizer, clip_factors, clipped_sum, per_sample_norms
from tests.nn.helpers import assert_matches

opacus_optimizers = pytest.importorskip("opacus.optimizers")


def parameters_and_samples(batch: int, seed: int = 0) -> tuple[list[Tensor], list[Tensor]]:
    """Two float64 parameters with per-sample gradients (summing to .grad, as a mean loss
    leaves them: each the example's own gradient / batch)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (3,)]
    params = [torch.randn(s, dtype=torch.float64, generator=generator) for s in shapes]
    samples = [torch.randn(batch, *s, dtype=torch.float64, generator=generator) for s in shapes]
    return params, [sample / batch for sample in samples]


def opacus_step(params: list[Tensor], samples: list[Tensor], reduction: str, noise: float,
                seed: int) -> list[Tensor]:  # fmt: skip
    """One step of Opacus's DPOptimizer over SGD(lr=1); its grad_sample is the example's own
    gradient (its GradSampleModule multiplies a mean loss's by the batch size)."""
    leaves = [torch.nn.Parameter(p.clone()) for p in params]
    batch = len(samples[0])
    for leaf, sample in zip(leaves, samples, strict=True):
        leaf.grad_sample = sample * batch if reduction == "mean" else sample.clone()
        leaf.grad = sample.sum(0)
    optimizer = opacus_optimizers.DPOptimizer(
        torch.optim.SGD(leaves, lr=1.0), noise_multiplier=noise, max_grad_norm=0.7,
        expected_batch_size=4, loss_reduction=reduction,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    optimizer.step()
    return [leaf.detach() for leaf in leaves]


def handgrad_step(params: list[Tensor], samples: list, reduction: str, noise: float,
                  seed: int) -> list[Tensor]:  # fmt: skip
    params = [p.clone() for p in params]
    for param, sample in zip(params, samples, strict=True):
        param.grad_sample = sample
        param.grad = torch.zeros_like(param)
    optimizer = DPOptimizer(
        SGD(params, lr=1.0), noise_multiplier=noise, max_grad_norm=0.7, expected_batch_size=4,
        loss_reduction=reduction, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    optimizer.step()
    return params


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("noise", [0.0, 1.3])
@pytest.mark.parametrize("batch", [1, 5])
def test_step_matches_opacus(reduction: str, noise: float, batch: int) -> None:
    """Same per-sample gradients, same generator seed: the same update, noise included
    (drawn in the same order)."""
    params, samples = parameters_and_samples(batch)
    if reduction == "sum":
        samples = [sample * batch for sample in samples]
    expected = opacus_step(params, samples, reduction, noise, seed=3)
    got = handgrad_step(params, samples, reduction, noise, seed=3)
    for g, e in zip(got, expected, strict=True):
        assert_matches(g, e, "parameter after the step")


def test_factored_per_sample_gradients_give_the_same_step() -> None:
    """A weight's per-sample gradients factored (g_i, x_i) or formed: the same step."""
    generator = torch.Generator().manual_seed(1)
    g = torch.randn(6, 3, dtype=torch.float64, generator=generator)
    x = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    weight = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    factored = FactoredGradSample(g, x)
    dense = factored.materialize()
    expected = handgrad_step([weight], [dense], "mean", 0.0, 0)
    got = handgrad_step([weight], [factored], "mean", 0.0, 0)
    assert_matches(got[0], expected[0])


def test_clipping_pieces() -> None:
    """Norms over all parameters, c_i = min(1, C/(n_i + 1e-6)), Σ c_i g_i."""
    params, samples = parameters_and_samples(5)
    for param, sample in zip(params, samples, strict=True):
        param.grad_sample = sample
    flat = torch.cat([s.reshape(5, -1) for s in samples], 1)
    norms = per_sample_norms(params)
    assert_matches(norms, flat.norm(dim=1))
    assert_matches(per_sample_norms(params, scale=5.0), 5 * flat.norm(dim=1))
    factors = clip_factors(norms, 0.1)
    assert_matches(factors, (0.1 / (flat.norm(dim=1) + 1e-6)).clamp(max=1))
    assert (factors <= 1).all()
    assert_matches(clip_factors(torch.tensor([0.0, 0.05], dtype=torch.float64), 0.1),
                   torch.tensor([1.0, 1.0], dtype=torch.float64))  # fmt: skip
    for param, summed, sample in zip(params, clipped_sum(params, factors), samples, strict=True):
        assert_matches(summed, torch.einsum("i,i...->...", factors, sample))
        assert summed.shape == param.shape


def test_noise_has_the_right_distribution() -> None:
    """Zero per-sample gradients: the gradient handed to the optimizer is pure noise / b,
    N(0, (σC/b)²) element-wise, independent (Kolmogorov–Smirnov and moments, fixed seed)."""
    stats = pytest.importorskip("scipy.stats")
    sigma, clip, b = 1.1, 0.5, 8
    param = torch.zeros(200, 100, dtype=torch.float64)
    param.grad_sample = torch.zeros(3, 200, 100, dtype=torch.float64)
    optimizer = DPOptimizer(SGD([param], lr=1.0), sigma, clip, b,
                            generator=torch.Generator().manual_seed(11))  # fmt: skip
    optimizer.privatise_gradients()
    assert param.grad is not None
    noise = param.grad.flatten().numpy()
    std = sigma * clip / b
    assert stats.kstest(noise / std, "norm").pvalue > 0.01
    assert abs(noise.mean()) < 4 * std / len(noise) ** 0.5
    assert abs(noise.std() / std - 1) < 0.02
    # neighbouring entries are uncorrelated
    assert abs(torch.corrcoef(param.grad.reshape(2, -1))[0, 1]) < 0.03
    # and the check can fail: with another σ the distribution is rejected
    assert stats.kstest(noise / (1.2 * std), "norm").pvalue < 1e-6


def test_empty_batch_gives_noise_only() -> None:
    param = torch.zeros(5, dtype=torch.float64)
    param.grad_sample = torch.zeros(0, 5, dtype=torch.float64)
    optimizer = DPOptimizer(SGD([param], lr=1.0), 0.0, 1.0, 4)
    optimizer.privatise_gradients()
    assert param.grad is not None
    assert torch.equal(param.grad, torch.zeros(5, dtype=torch.float64))


def test_wraps_any_optimizer_and_zero_grad_clears_grad_samples() -> None:
    params, samples = parameters_and_samples(3)
    torch_opt = torch.optim.Adam([p.clone() for p in params], lr=0.1)
    for wrapped in (Adam([p.clone() for p in params], lr=0.1), torch_opt):
        optimizer = DPOptimizer(wrapped, 0.0, 1.0, 3)
        assert optimizer.param_groups is wrapped.param_groups
        for param, sample in zip(optimizer.params, samples, strict=True):
            param.grad_sample = sample
        optimizer.step()
        assert optimizer.steps == 1
        assert optimizer.last_norms is not None
        assert optimizer.last_norms.shape == (3,)
        assert optimizer.state_dict()["state"][0]["exp_avg"] is not None
        kept = optimizer.params[0].grad_sample
        optimizer.zero_grad(set_to_none=False)
        assert optimizer.params[0].grad_sample is kept
        assert not kept.any()
        optimizer.zero_grad()
        assert all(p.grad_sample is None and p.grad is None for p in optimizer.params)
    optimizer = DPOptimizer(torch_opt, 0.0, 1.0, 3)
    optimizer.add_param_group({"params": [torch.zeros(2, dtype=torch.float64)]})
    assert len(torch_opt.param_groups) == 2
    optimizer.param_groups.pop()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)
    for param, sample in zip(optimizer.params, samples, strict=True):
        param.grad_sample = sample
    optimizer.step()
    scheduler.step()
    assert torch_opt.param_groups[0]["lr"] == 0.05


def test_step_without_per_sample_gradients_says_what_to_do() -> None:
    param = torch.zeros(2)
    param.grad = torch.ones(2)
    with pytest.raises(ValueError, match="per_sample=True"):
        DPOptimizer(SGD([param], lr=1.0), 1.0, 1.0, 4).step()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_grad_norm": 0.0}, "max_grad_norm must be a number > 0, got 0.0"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"noise_multiplier": -0.1}, "noise_multiplier must be a number ≥ 0, got -0.1"),
        ({"noise_multiplier": float("nan")}, "noise_multiplier"),
        ({"expected_batch_size": 0}, "expected_batch_size must be a positive number"),
        ({"expected_batch_size": None}, "expected_batch_size is required"),
        ({"loss_reduction": "max"}, "loss_reduction must be 'mean' or 'sum', got 'max'"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict, match: str) -> None:
    arguments = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "expected_batch_size": 4}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DPOptimizer(SGD([torch.zeros(2)], lr=1.0), **arguments)


def test_sum_reduction_needs_no_expected_batch_size() -> None:
    param = torch.zeros(2, dtype=torch.float64)
    param.grad_sample = torch.ones(3, 2, dtype=torch.float64)
    DPOptimizer(SGD([param], lr=1.0), 0.0, 10.0, None, loss_reduction="sum").step()
    assert torch.equal(param, torch.full((2,), -3.0, dtype=torch.float64))


def test_not_an_optimizer() -> None:
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        DPOptimizer([torch.zeros(2)], 1.0, 1.0, 4)  # type: ignore[arg-type]
