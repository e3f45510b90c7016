"""benchmarks/bench_train.py compares like with like, and its quick run works."""

from __future__ import annotations

import math

import pytest
import torch

import handgrad.nn as hn
from benchmarks import bench_train


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
    assert "| handgrad's trainer (`train_epoch`: the fast epoch) |" in output
    assert "| handgrad, a hand-written loop (the four public calls per step) |" in output
    assert "| handgrad, parameters not flattened |" in output
    assert "handgrad with flat parameters" in output
    assert "handgrad's trainer over the classroom loop: **" in output


def test_the_trainer_loop_trains_as_the_hand_written_loop() -> None:
    """The per-sample part's two handgrad loops run the same steps: after the same samples
    their networks hold the same bits (the trainer's fast epoch is an exact fast path)."""
    x, y = bench_train.cubic_data(40)
    samples = [(x[i : i + 1], y[i : i + 1]) for i in range(40)]
    trainer_net, hand_net = bench_train.per_sample_net(), bench_train.per_sample_net()
    bench_train.per_sample_loop_trainer(trainer_net)(samples)
    bench_train.per_sample_loop_handgrad(net=hand_net)(samples)
    for mine, theirs in zip(trainer_net.parameters(), hand_net.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_benchmark_rejects_an_unknown_part() -> None:
    with pytest.raises(SystemExit):
        bench_train.main(["--parts", "nonsense"])
