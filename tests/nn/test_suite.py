"""run_checks: every case passes in both dtypes, the table renders, and a bug makes it fail."""

from __future__ import annotations

import pytest
import torch

from handgrad.check import run_checks
from handgrad.check.suite import CheckReport
from handgrad.nn import functional


@pytest.fixture(scope="module")
def float64_report() -> CheckReport:
    return run_checks()


def test_every_check_passes_in_float64(float64_report: CheckReport) -> None:
    report = float64_report
    assert report.passed, report.to_text()
    names = [row.name for row in report.rows]
    for expected in [
        "Linear(5, 4)", "ReLU", "Sigmoid", "Tanh", "LeakyReLU(0.1)", "ELU(0.7)", "GELU()",
        "GELU('tanh')", "Identity", "Dropout(0.3), training", "Flatten()", "MSELoss(mean)",
        "L1Loss(sum)", "CrossEntropyLoss(none), indices", "BCEWithLogitsLoss(mean)",
        "deep net, depth 6: ReLU/Tanh/Sigmoid/GELU/LeakyReLU",
        "classroom net 1-100-1, ReLU, Dropout(0.1)",
    ]:  # fmt: skip
        assert expected in names
    for reduction in ("mean", "sum", "none"):
        assert sum(f"({reduction}" in name for name in names) == 8  # every loss variant
    for row in report.rows:
        assert row.forward_rel <= 1e-10
        assert row.input_rel <= 1e-10
        assert row.fd_rel <= 1e-6
    linear = report.rows[names.index("Linear(5, 4)")]
    assert linear.param_rel is not None
    assert linear.param_rel <= 1e-10
    assert report.rows[names.index("ReLU")].param_abs is None


def test_every_check_passes_in_float32() -> None:
    report = run_checks(dtype=torch.float32, seed=1)
    assert report.passed, report.to_text()
    assert max(row.input_rel for row in report.rows) <= 1e-4
    assert report.dtype == torch.float32
    assert report.seed == 1


def test_text_table_is_aligned_and_summarised(float64_report: CheckReport) -> None:
    text = float64_report.to_text()
    lines = text.splitlines()
    header, rule = lines[0], lines[1]
    for column in ("module", "forward", "input grad", "param grads", "finite diff", "result"):
        assert column in header
    body = lines[2 : 2 + len(float64_report.rows)]
    assert all(len(line.rstrip()) <= len(rule) for line in body)
    result_column = header.index("result")
    assert all(line[result_column:].strip() == "pass" for line in body)
    assert lines[-2].startswith(f"{len(float64_report.rows)} checks on cpu, float64, seed 0")
    assert "all passed" in lines[-2]
    assert lines[-1].startswith("Errors: relative (absolute) vs torch.nn + autograd")


def test_markdown_table(float64_report: CheckReport) -> None:
    lines = float64_report.to_markdown().splitlines()
    assert lines[0] == "| module | forward | input grad | param grads | finite diff | result |"
    assert lines[1] == "|---|---|---|---|---|---|"
    rows = [line for line in lines if line.startswith("| ") and line != lines[0]]
    assert len(rows) == len(float64_report.rows)
    assert all(line.count(" | ") == 5 for line in rows)


def test_a_wrong_derivative_makes_its_rows_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong_sigmoid_backward(grad_out: torch.Tensor, ctx: tuple) -> torch.Tensor:
        (out,) = ctx
        return grad_out * out * (1 + out)

    monkeypatch.setattr(functional, "sigmoid_backward", wrong_sigmoid_backward)
    report = run_checks()
    failed = {row.name for row in report.rows if not row.passed}
    assert not report.passed
    assert failed == {
        "Sigmoid",
        "Sigmoid, |x| up to 800",
        "deep net, depth 6: ReLU/Tanh/Sigmoid/GELU/LeakyReLU",
    }
    assert "3 FAILED" in report.to_text()
    assert "FAIL |" in report.to_markdown()


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"dtype must be torch\.float32 or torch\.float64"):
        run_checks(dtype=torch.float16)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_checks(device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_every_check_passes_on_cuda() -> None:
    report = run_checks(device="cuda")
    assert report.passed, report.to_text()


def test_reproducible_from_the_seed_and_leaves_the_global_rng_alone() -> None:
    before = torch.get_rng_state()
    first = run_checks(dtype=torch.float32, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(1234)  # a different global state must not change the result
    second = run_checks(dtype=torch.float32, seed=5)
    assert first.rows == second.rows
