"""bench_gpt's statistics and table, on a tiny GPT (nothing here times the real one)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from benchmarks import bench_gpt


def test_median_interval_takes_the_binomial_order_statistics() -> None:
    values = [float(i) for i in range(1, 41)]  # x₍ᵢ₎ = i
    random.Random(0).shuffle(values)
    # n = 40: j = ⌊20 − 1.96·√40/2⌋ = 13, k = ⌈21 + 6.198⌉ = 28
    assert bench_gpt.median_interval(values) == (13.0, 28.0)
    # a wider confidence, a wider interval: z = 2.576 (99%) gives j = 11, k = 30
    assert bench_gpt.median_interval(values, z=2.576) == (11.0, 30.0)


def test_median_interval_covers_the_sample_when_it_is_small() -> None:
    assert bench_gpt.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert bench_gpt.median_interval([5.0]) == (5.0, 5.0)
    with pytest.raises(ValueError, match="at least one value"):
        bench_gpt.median_interval([])


def test_median_interval_covers_the_median_as_often_as_it_says() -> None:
    """Coverage over many samples of 60 from a skewed distribution (the true median of an
    exponential with mean 1 is ln 2): about 95%, not far above or below."""
    rng = random.Random(1)
    trials = 2000
    hits = 0
    for _ in range(trials):
        low, high = bench_gpt.median_interval([rng.expovariate(1.0) for _ in range(60)])
        hits += low <= 0.6931471805599453 <= high
    assert 0.93 <= hits / trials <= 0.98


@pytest.fixture
def tiny_gpt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's model shrunk to one block of 8 features over 4 positions, batch 2."""
    monkeypatch.setattr(bench_gpt, "CONTEXT", 4)
    monkeypatch.setattr(bench_gpt, "BATCH", 2)
    monkeypatch.setattr(bench_gpt, "CONFIG", {"n_layer": 1, "n_head": 2, "d_model": 8})


@pytest.mark.usefixtures("tiny_gpt")
def test_main_prints_the_interval_beside_the_median(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_gpt, "memory", lambda: "(memory not measured)")
    assert bench_gpt.main(["--quick", "--threads", "1", "--rounds", "4"]) == 0
    out = capsys.readouterr().out
    assert "| ratio to eager (median of rounds) | its 95% interval |" in out
    eager = next(line for line in out.splitlines() if line.startswith("| torch eager autograd"))
    cells = [cell.strip() for cell in eager.strip("|").split("|")]
    assert cells[2:5] == ["1.000", "1.000–1.000", "1.000–1.000"]  # eager against itself


def test_main_refuses_a_round_count_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_gpt.main(["--rounds", "0"])
    assert raised.value.code == 2
    assert "--rounds must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.usefixtures("tiny_gpt")
def test_each_side_is_timed_in_a_loop_of_its_own_with_eager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A third model's steps between a pair's blocks moved the pair's ratio (the module
    docstring): every loop holds one side and eager, and eager's row comes from handgrad's."""
    loops: list[list[str]] = []
    real_blocks = bench_gpt._blocks

    def recording(steps: Any, rounds: int, block: int, shuffler: Any) -> Any:
        loops.append(sorted(steps))
        seconds, first = real_blocks(steps, rounds, block, shuffler)
        if steps.keys() != {"handgrad", bench_gpt.EAGER}:  # eager elsewhere: 10x slower
            seconds[bench_gpt.EAGER] = [10.0 * t for t in seconds[bench_gpt.EAGER]]
        return seconds, first

    monkeypatch.setattr(bench_gpt, "_blocks", recording)
    table = bench_gpt.timing(rounds=2, compiled=False, block=2)
    eager = bench_gpt.EAGER
    assert loops == [sorted(["handgrad", eager]), sorted(["handgrad, plain", eager])]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    ratios = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in lines}
    assert ratios[eager] == "1.000"
    # each ratio is to the eager times of its own loop (made 10x slower in plain's)
    assert float(ratios["handgrad, plain"]) < 0.5
    assert float(ratios["handgrad"]) > 0.5


def test_timing_refuses_a_block_without_a_timed_step() -> None:
    """A block's first step is reported apart, so a block of one step has nothing to time."""
    with pytest.raises(ValueError, match=r"block must be at least 2 steps .* got 1"):
        bench_gpt.timing(rounds=1, compiled=False, block=1)
