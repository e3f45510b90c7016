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
