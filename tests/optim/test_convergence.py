"""The optimizers do their job: Rosenbrock's valley and a least-squares regression.

Agreement with torch is tested elsewhere; here each optimizer, on its own, must reach the
known minimum. Gradients are written by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import handgrad.optim as hg


def rosenbrock(p: torch.Tensor) -> torch.Tensor:
    """f(x, y) = (1 − x)² + 100 (y − x²)², minimum 0 at (1, 1)."""
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosenbrock_gradient(p: torch.Tensor) -> torch.Tensor:
    """∇f = (−2(1 − x) − 400 x (y − x²), 200 (y − x²))."""
    x, y = p[0], p[1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


ROSENBROCK: list[Any] = [
    pytest.param(hg.SGD, {"lr": 1e-3, "momentum": 0.9}, id="SGD"),
    pytest.param(hg.RMSprop, {"lr": 1e-3, "momentum": 0.9}, id="RMSprop"),
    pytest.param(hg.Adam, {"lr": 0.05}, id="Adam"),
    pytest.param(hg.AdamW, {"lr": 0.05, "weight_decay": 1e-4}, id="AdamW"),
    pytest.param(hg.Adamax, {"lr": 0.2, "betas": (0.95, 0.999)}, id="Adamax"),
    pytest.param(hg.NAdam, {"lr": 0.03, "betas": (0.95, 0.999)}, id="NAdam"),
    pytest.param(hg.RAdam, {"lr": 0.005, "betas": (0.9, 0.99)}, id="RAdam"),
]


@pytest.mark.parametrize(("cls", "hyperparams"), ROSENBROCK)
def test_rosenbrock_reaches_the_minimum(
    cls: Any, hyperparams: dict[str, Any], device: torch.device
) -> None:
    p = torch.tensor([-1.5, 2.0], dtype=torch.float64, device=device)
    start = rosenbrock(p).item()
    opt = cls([p], **hyperparams)
    for _ in range(2000):
        p.grad = rosenbrock_gradient(p)
        opt.step()
    assert torch.isfinite(p).all()
    assert (p - 1).abs().max().item() < 0.05, p
    assert rosenbrock(p).item() < 1e-3 * start


def test_rosenbrock_gradient_is_right() -> None:
    p = torch.tensor([-0.7, 1.3], dtype=torch.float64, requires_grad=True)
    rosenbrock(p).backward()
    assert p.grad is not None
    torch.testing.assert_close(rosenbrock_gradient(p.detach()), p.grad, rtol=1e-14, atol=0)


REGRESSION: list[Any] = [
    pytest.param(hg.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, id="SGD"),
    pytest.param(hg.RMSprop, {"lr": 0.05, "centered": True}, id="RMSprop"),
    pytest.param(hg.Adam, {"lr": 0.05, "amsgrad": True}, id="Adam"),
    pytest.param(hg.AdamW, {"lr": 0.05, "weight_decay": 0.0}, id="AdamW"),
    pytest.param(hg.Adamax, {"lr": 0.1}, id="Adamax"),
    pytest.param(hg.NAdam, {"lr": 0.05}, id="NAdam"),
    pytest.param(hg.RAdam, {"lr": 0.1}, id="RAdam"),
]


@pytest.mark.parametrize(("cls", "hyperparams"), REGRESSION)
def test_least_squares_regression(
    cls: Any, hyperparams: dict[str, Any], device: torch.device
) -> None:
    """y = X w + b + noise: the optimizer finds the least-squares (w, b) of np.linalg.lstsq.

    Data drawn and lstsq solved on the CPU, then moved: the same problem on every device."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 5, generator=generator, dtype=torch.float64)
    true_w = torch.tensor([1.5, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    y = x @ true_w + 0.7 + 0.1 * torch.randn(128, generator=generator, dtype=torch.float64)
    design = torch.cat([x, torch.ones(128, 1, dtype=torch.float64)], dim=1)
    best = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.squeeze(1).to(device)
    x, y = x.to(device), y.to(device)

    w = torch.zeros(5, dtype=torch.float64, device=device)
    b = torch.zeros((), dtype=torch.float64, device=device)
    opt = cls([w, b], **hyperparams)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=150, gamma=0.5)
    for _ in range(600):
        residual = x @ w + b - y  # d(mean r²)/dw = 2 Xᵀ r / n, d/db = 2 mean(r)
        w.grad = 2 * x.T @ residual / len(y)
        b.grad = 2 * residual.mean()
        opt.step()
        scheduler.step()
    torch.testing.assert_close(torch.cat([w, b.reshape(1)]), best, rtol=0, atol=1e-3)
