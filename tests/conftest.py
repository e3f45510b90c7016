"""Shared fixtures: devices and dtypes, and the Hypothesis profiles."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Property tests: a small CI profile by default, a thorough one on request
# (HYPOTHESIS_PROFILE=thorough pytest ...).
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,  # CI runs the same examples every time: no flaky reds
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CUDA_AVAILABLE = torch.cuda.is_available()


def pytest_configure(config: pytest.Config) -> None:
    """HANDGRAD_REQUIRE_CUDA=1 (set on GPU machines) turns "no CUDA here" from a skip into an
    error: a CPU-only torch build on a GPU runner would otherwise skip every CUDA case quietly."""
    if os.environ.get("HANDGRAD_REQUIRE_CUDA") == "1" and not CUDA_AVAILABLE:
        raise pytest.UsageError(
            "HANDGRAD_REQUIRE_CUDA=1 but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})"
        )


DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not CUDA_AVAILABLE, reason="no CUDA device on this machine"),
        ],
    ),
]
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every device the suite can run on; CUDA cases skip with a reason where there is none."""
    return torch.device(request.param)


@pytest.fixture(params=DTYPES)
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """float32 and float64."""
    dt: torch.dtype = request.param
    return dt


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)
