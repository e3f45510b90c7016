"""The benchmark runner refreshes the sections it ran and keeps everything else."""

from __future__ import annotations

from benchmarks.__main__ import merge_results

PREVIOUS = """# Benchmark results

Summary written by hand: **keep me**.

## train

old train

## optim

old optim table
| a | b |

## retired

a benchmark that no longer exists
"""


def test_fresh_sections_replace_old_ones_and_the_rest_is_kept() -> None:
    merged = merge_results(PREVIOUS, {"optim": "new optim", "roots": "new roots"})
    assert merged.startswith("# Benchmark results\n\nSummary written by hand: **keep me**.\n")
    assert "## train\n\nold train\n" in merged
    assert "## optim\n\nnew optim\n" in merged
    assert "old optim table" not in merged
    assert "## roots\n\nnew roots\n" in merged
    # BENCHMARKS order first (train, optim, roots), unknown old sections after them.
    order = [line for line in merged.splitlines() if line.startswith("## ")]
    assert order == ["## train", "## optim", "## roots", "## retired"]


def test_a_first_run_writes_only_the_fresh_sections() -> None:
    merged = merge_results("", {"train": "t"})
    assert merged == "# Benchmark results\n\n## train\n\nt\n"


def test_merging_twice_changes_nothing() -> None:
    once = merge_results(PREVIOUS, {"optim": "new optim"})
    assert merge_results(once, {}) == once
