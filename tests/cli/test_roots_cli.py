"""``handgrad roots``: the table, negative arguments, errors, --lr, --sweep-lr, --plot, --csv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from handgrad.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["roots", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_all_methods_side_by_side_with_negative_coefficients(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "1", "-6", "4")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "1·x² - 6·x + 4 = 0: two real roots"
    assert lines[1].split() == ["method", "kind", "x1", "x2", "iterations", "converged", "residual"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert set(rows) == {"gd", "newton", "closed"}
    for row in rows.values():
        assert row[1:4] == ["TWO_REAL", "0.7639320225002103", "5.23606797749979"]
    assert rows["closed"][4] == "0"
    assert 1 <= int(rows["gd"][4]) <= 10


@pytest.mark.parametrize(
    ("argv", "roots"),
    [
        (("-1", "3", "-2"), ["1.0", "2.0"]),
        (("1", "-1e-3", "-.5e-6"), None),
        (("1", "2", "5"), ["-1.0-2.0j", "-1.0+2.0j"]),
    ],
)
def test_negative_numbers_in_any_notation_are_coefficients(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], roots: list[str] | None
) -> None:
    status, out, err = run(capsys, *argv, "--method", "gd")
    assert status == 0, err
    row = out.splitlines()[3].split()
    assert row[0] == "gd"
    if roots is not None:
        assert row[2:4] == roots


def test_single_method_and_fixed_learning_rate(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "1", "-6", "4", "--method", "gd", "--lr", "0.01", "--x0", "-1", "6"
    )
    assert status == 0
    rows = out.splitlines()[3:]
    assert len(rows) == 1
    assert rows[0].startswith("gd lr=0.01")
    assert "yes" in rows[0]


def test_diverging_learning_rate_exits_1_and_says_no(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "1", "-6", "4", "--method", "gd", "--lr", "0.06")
    assert status == 1
    assert out.splitlines()[3].split()[-1] == "NO"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("1", "2"), "expected three coefficients A B C"),
        (("1", "nan", "1"), "b must be a finite number; got nan"),
        (("1", "-6", "4", "--x0", "0", "1"), "--x0 sets the starts of the fixed-step descent"),
        (("1", "-6", "4", "--lr", "0.1", "--method", "closed"), "--lr applies to --method gd"),
        (("1", "-6", "4", "--lr", "-0.1"), "lr must be a finite number > 0; got -0.1"),
        (("--csv", "in.csv"), "--csv IN needs --out OUT"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err.startswith("handgrad roots: error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_plot_writes_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "descent.png"
    status, out, _ = run(capsys, "1", "-6", "4", "--plot", str(target))
    assert status == 0
    assert target.read_bytes().startswith(b"\x89PNG")
    assert f"wrote {target}" in out


def test_sweep_lr_table_shows_divergence_beyond_one_over_d(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "sweep.png"
    status, out, _ = run(capsys, "1", "-6", "4", "--sweep-lr", "--plot", str(target))
    assert status == 0
    assert "diverges there for lr > 1/D = 0.05" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    by_multiple = {}
    for row in rows:
        if len(row) >= 5 and row[1].replace(".", "", 1).isdigit():
            by_multiple.setdefault(float(row[1]), []).append(row[4])
    assert set(by_multiple[0.1]) == {"converged"}
    for multiple in (1.01, 1.1, 1.5, 2.0):
        assert set(by_multiple[multiple]) == {"diverged"}
    assert "vs starting point, lr = 0.0125" in out
    assert target.read_bytes().startswith(b"\x89PNG")


def test_csv_solves_good_rows_and_reports_bad_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("a,b,c\n1,-6,4\n1,2,5\nx,1,2\n1,2\n0,2,-3\n1,inf,1\n0,0,1\n1,-2,1\n")
    status, out, err = run(capsys, "--csv", str(source), "--out", str(target))
    assert status == 1
    assert "solved 5 of 8 rows" in out
    assert "line 4: a is not a number: 'x'" in err
    assert "line 5: expected 3 columns a,b,c; got 2" in err
    assert "line 7: b must be finite; got 'inf'" in err
    with target.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["a", "b", "c", "kind", "x1", "x2", "iterations", "error"]
    assert [r["kind"] for r in rows] == [
        "TWO_REAL",
        "COMPLEX_PAIR",
        "",
        "",
        "LINEAR",
        "",
        "NO_SOLUTION",
        "DOUBLE",
    ]
    assert (rows[0]["x1"], rows[0]["x2"]) == ("0.7639320225002103", "5.23606797749979")
    assert (rows[1]["x1"], rows[1]["x2"]) == ("-1.0-2.0j", "-1.0+2.0j")
    assert (rows[4]["x1"], rows[4]["x2"]) == ("1.5", "")
    assert (rows[6]["x1"], rows[6]["x2"], rows[6]["iterations"]) == ("", "", "0")
    assert rows[7]["x1"] == rows[7]["x2"] == "1.0"
    assert rows[2]["error"] == "line 4: a is not a number: 'x'"
    assert all(r["error"] == "" for i, r in enumerate(rows) if i not in (2, 3, 5))
    assert int(rows[0]["iterations"]) >= 1


def test_csv_without_bad_rows_exits_0_and_needs_no_header(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("1,-3,2\n2,0,-8\n")
    status, _, err = run(capsys, "--csv", str(source), "--out", str(target), "--method", "closed")
    assert status == 0
    assert err == ""
    rows = list(csv.reader(target.open()))
    assert rows[1][3:6] == ["TWO_REAL", "1.0", "2.0"]
    assert rows[2][3:6] == ["TWO_REAL", "-2.0", "2.0"]


def test_csv_missing_input_is_a_user_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run(capsys, "--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o"))
    assert status == 2
    assert "cannot read --csv" in err
    assert not (tmp_path / "o").exists()
