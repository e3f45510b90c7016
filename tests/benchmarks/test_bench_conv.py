"""benchmarks/bench_conv.py compares like with like, and its quick run works."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import handgrad.nn as hn
from benchmarks import bench_conv


@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_both_sides_train_the_same_network_alike(name: str) -> None:
    steps = 1 if name == "resnet" else 3  # one step of the real ResNet is enough
    ours, theirs = bench_conv.make_steps(name)
    for step in range(steps):
        got, expected = ours(), theirs()
        assert isinstance(got, torch.Tensor)
        assert isinstance(expected, torch.Tensor)
        torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-5)
        assert math.isfinite(float(got)), f"step {step}"


def test_the_networks_are_the_ones_described() -> None:
    resnet = hn.from_torch(bench_conv.resnet())
    convs = [m for m in resnet.modules() if isinstance(m, hn.Conv2d)]
    assert len(convs) == 1 + 4 * 2
    assert all(c.out_channels == 64 and c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, hn.Residual) for m in resnet.modules()) == 4
    lenet = bench_conv.lenet()
    assert lenet(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_probe_measures_a_step() -> None:
    """In a fresh process with the fixed mmap threshold (in this one, memory freed by other
    tests would be reused and the step might raise the resident set by nothing)."""
    peaks = bench_conv.peak_in_subprocess("lenet", "handgrad", threads=1)
    assert peaks is not None
    step, total = peaks
    assert 2**20 < step < total < 2**30  # the total adds the optimizer state, at least


def test_quick_run_prints_a_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_conv.main(["--quick", "--threads", "1", "--nets", "lenet", "--no-memory"]) == 0
    output = capsys.readouterr().out
    assert "### 1 torch thread(s)" in output
    assert "| LeNet-5, 1×28×28, batch 64 |" in output
