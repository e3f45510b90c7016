"""``handgrad roots``: the table, honest per-start outcomes, option checks on every path,
--sweep-lr, --plot, --csv (progress, spreadsheet-safe cells, long fields, I/O errors, umask)."""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from handgrad.cli import main
from handgrad.cli import roots as roots_cli

X1, X2 = "0.7639320225002103", "5.23606797749979"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["roots", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def table(out: str) -> dict[str, list[str]]:
    """The method table's rows by method name (the first cell; 'gd lr=...' -> 'gd')."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line or line.startswith(" ") or ":" in line.split()[0]:
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0].split()[0]] = cells
    return rows


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_all_methods_side_by_side_with_honest_names(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "1", "-6", "4")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "1·x² - 6·x + 4 = 0: two real roots"
    assert lines[1].split() == ["method", "kind", "x1", "x2", "iterations", "converged", "residual"]
    rows = table(out)
    assert list(rows) == ["gauss-newton", "gd", "newton", "closed"]
    for name in ("gauss-newton", "newton", "closed"):
        assert rows[name][1:4] == ["TWO_REAL", X1, X2]
    assert rows["gd"][0] == "gd lr=0.0125"  # the default: a quarter of 1/|D|
    assert float(rows["gd"][2]) == pytest.approx(float(X1), rel=1e-11)
    assert float(rows["gd"][3]) == pytest.approx(float(X2), rel=1e-11)
    assert rows["closed"][4] == "0"
    assert 1 <= int(rows["gauss-newton"][4]) <= 10
    assert "gauss-newton: descent on f^2 with the step 1/(2 f'(x)^2), which is Newton's" in out
    assert (
        "near a root a fixed step on f^2 converges for 0 < lr < 1/f'(x*)^2 = 1/|b^2 - 4ac| = "
        "0.05 (fastest at half of that, 0.025)"
    ) in out
    assert "start 1: x0 = 0.2049150281 -> converged to x1" in out


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
    status, out, err = run(capsys, *argv, "--method", "gauss-newton")
    assert status == 0, err
    row = table(out)["gauss-newton"]
    if roots is not None:
        assert row[2:4] == roots


def test_a_fixed_step_reports_each_start_and_x1_x2_keep_their_meaning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's example: -10 diverges, 10 converges to the smaller root. It used to print
    x1 blank, 0.7639 under x2 and "NO" without a reason."""
    status, out, _ = run(capsys, "1", "-6", "4", "--lr", "0.01", "--x0", "-10", "10")
    assert status == 1
    row = table(out)["gd"]
    assert row[0] == "gd lr=0.01"
    assert float(row[2]) == pytest.approx(float(X1), rel=1e-11)  # x1 ...
    assert row[3] == "65"  # ... then no x2 (the iterations column follows)
    assert row[4] == "NO"
    assert re.search(r"start 1: x0 = -10 -> diverged at step \d+ \(x = -\d\.\d+e\+\d+\)", out)
    assert "start 2: x0 = 10 -> converged to x1 = 0.7639320225 in 65 steps" in out
    assert "(diverged: x or f(x)² overflowed: lr too large for this start)" in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--x0", "3", "3"), "stopped at the vertex x = 3 at step 0"),
        (("--x0", "-2", "8", "--lr", "0.0125"), "stopped at the vertex x = 3 at step 1"),
        (("--x0", "-2", "8", "--lr", "0.025"), "cycling with period 2"),
    ],
)
def test_the_vertex_and_cycles_are_named(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    status, out, _ = run(capsys, "1", "-6", "4", "--method", "gd", *argv)
    assert status == 1
    assert says in out


def test_a_double_root_explains_why_gd_is_slow(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "1", "-2", "1", "--lr", "0.01", "--max-iter", "300")
    assert status == 1
    assert "a double root: f'(x*) = 0, so every lr > 0 is stable near it and none is fast" in out
    assert "still descending after 300 steps (max_iter)" in out
    assert "newton: not within 4 ulp of the true roots" in out  # issue 16 item 7


def test_default_starts_are_not_the_roots(capsys: pytest.CaptureFixture[str]) -> None:
    """roots 1 0 1 --lr 0.001 used to 'converge in 1 iteration' from the roots ±i."""
    status, out, _ = run(capsys, "1", "0", "1", "--method", "gd", "--lr", "0.001")
    assert status == 0
    steps = int(table(out)["gd"][4])
    assert steps > 100
    assert "start 1: x0 = 0-1.25j -> converged to x1" in out or "x0 = -0-1.25j" in out


def test_complex_starts(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "1", "2", "5", "--method", "gd", "--x0", "-1-3j", "-1+3j")
    assert status == 0
    assert table(out)["gd"][2:4] != ["", ""]
    assert "x0 = -1-3j -> converged to x1" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("1", "2"), "expected three coefficients A B C"),
        (("1", "nan", "1"), "b must be a finite number; got nan"),
        (("1", "-6", "4", "--x0", "0", "1", "--method", "newton"), "--x0 sets the starts of gd"),
        (("1", "-6", "4", "--lr", "0.1", "--method", "closed"), "--lr applies to --method gd"),
        (("1", "-6", "4", "--lr", "-0.1"), "--lr must be a finite number > 0; got -0.1"),
        (("1", "-6", "4", "--lr", "-1"), "--lr must be a finite number > 0; got -1"),
        (("1", "-6", "4", "--lr", "inf"), "--lr must be a finite number > 0; got inf"),
        (("1", "-6", "4", "--tol", "-1"), "--tol must be a finite number > 0; got -1"),
        (("1", "-6", "4", "--max-iter", "-5"), "--max-iter must be an integer from 1"),
        (("1", "-6", "4", "--max-iter", str(10**30)), "--max-iter must be an integer from 1"),
        (("1", "-6", "4", "--lr", "0.01", "--x0", "nan", "0"), "--x0 must be two finite numbers"),
        (("1", "-6", "4", "--sweep-lr", "--max-iter", "-5"), "--max-iter must be an integer"),
        (("1", "-6", "4", "--sweep-lr", "--lr", "-1"), "--lr must be a finite number > 0"),
        (("1", "-6", "4", "--sweep-lr", "--tol", "-1"), "--tol must be a finite number > 0"),
        (("1", "-6", "4", "--sweep-lr", "--x0", "inf", "1"), "--x0 must be two finite numbers"),
        (("1", "-6", "4", "--sweep-lr", "--method", "newton"), "--sweep-lr runs gd"),
        (("0", "0", "1", "--sweep-lr"), "has no root for gd to descend to"),
        (("--csv", "in.csv"), "--csv IN needs --out OUT"),
        (("--csv", "i", "--out", "o", "--max-iter", "-5"), "--max-iter must be an integer"),
        (("--csv", "i", "--out", "o", "--lr", "-1"), "--lr must be a finite number > 0"),
        (("--csv", "i", "--out", "o", "--tol", "-1"), "--tol must be a finite number > 0"),
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


def test_plot_writes_a_png_without_warnings_and_follows_the_umask(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, umask: None
) -> None:
    target = tmp_path / "descent.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the numpy overflow warnings of a diverging start
        status, out, err = run(
            capsys, "1", "-6", "4", "--lr", "0.01", "--x0", "-10", "10", "--plot", str(target)
        )
    assert status == 1
    assert err == ""
    assert target.read_bytes().startswith(b"\x89PNG")
    assert f"wrote {target}" in out
    assert target.stat().st_mode & 0o777 == 0o644


def test_plot_into_a_directory_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run(capsys, "1", "-6", "4", "--plot", str(tmp_path))
    assert status == 74  # EXIT_IO, as every command that cannot write
    assert err.startswith(f"handgrad roots: error: cannot write --plot {tmp_path}: ")
    assert len(err.strip().splitlines()) == 1


def sweep_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("lr "))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


@pytest.mark.parametrize("x0", [(), ("--x0", "-2", "8")], ids=["default-starts", "classroom"])
def test_sweep_header_is_read_from_its_own_table(
    capsys: pytest.CaptureFixture[str], x0: tuple[str, ...]
) -> None:
    status, out, _ = run(capsys, "1", "-6", "4", "--sweep-lr", *x0)
    assert status == 0
    assert "stalled" not in out
    rows = sweep_rows(out)
    by_lr: dict[str, list[list[str]]] = {}
    for row in rows:
        by_lr.setdefault(row[0], []).append(row)
    converging = [lr for lr, group in by_lr.items() if all("converged" in r[4] for r in group)]
    fastest = min(converging, key=lambda lr: max(int(r[3]) for r in by_lr[lr]))
    steps = max(int(r[3]) for r in by_lr[fastest])
    assert f"fastest at lr = {fastest} ({steps} steps)" in out
    first_failure = next(lr for lr in by_lr if lr not in converging)
    assert f"the first failure is at lr = {first_failure}" in out
    assert "theory: near a root a fixed step on f^2 converges for 0 < lr < 1/f'(x*)^2" in out
    for multiple in ("1.01", "1.1", "1.5", "2"):
        assert not any("converged" in r[4] for r in rows if r[1] == multiple)
    if x0:  # the classroom starts: the vertex and a 2-cycle, named
        assert by_lr["0.0125"][0][4] == "at vertex"
        assert by_lr["0.025"][0][4] == "cycling (period 2)"
        assert "at vertex: f'(x) = 0 there" in out
    else:  # from the default starts, exactly the theory's range
        assert converging == ["0.0005", "0.005", "0.0125", "0.025", "0.0375", "0.045", "0.0495"]
        assert fastest == "0.025"


def test_sweep_plot_without_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "sweep.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status, out, err = run(capsys, "1", "-6", "4", "--sweep-lr", "--plot", str(target))
    assert status == 0
    assert err == ""
    assert "vs starting point, lr = 0.0125" in out
    assert target.read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------------------------------- CSV


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


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
    rows = read_csv(target)
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
    assert (rows[0]["x1"], rows[0]["x2"]) == (X1, X2)
    # Complex roots in parentheses: complex() reads them, a spreadsheet shows text.
    assert (rows[1]["x1"], rows[1]["x2"]) == ("(-1.0-2.0j)", "(-1.0+2.0j)")
    assert complex(rows[1]["x1"]) == complex(-1, -2)
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
    rows = read_rows(target)
    assert rows[1][3:6] == ["TWO_REAL", "1.0", "2.0"]
    assert rows[2][3:6] == ["TWO_REAL", "-2.0", "2.0"]


def test_csv_gd_rows_that_do_not_converge_say_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("1,-6,4\n1,-2,1\n0,0,1\n1e300,1e300,-1e300\n")
    status, out, _ = run(
        capsys, "--csv", str(source), "--out", str(target), "--method", "gd", "--max-iter", "200"
    )
    assert status == 1
    assert "2 did not converge" in out
    rows = read_csv(target)
    assert rows[0]["error"] == ""
    assert rows[1]["error"].startswith("did not converge: start 1: x0 = 0.75 -> still descending")
    assert (rows[2]["kind"], rows[2]["error"]) == ("NO_SOLUTION", "")
    # |D| = 5e600: its default rate underflows; the row still runs, and says how it ended.
    assert rows[3]["error"].startswith("did not converge: start 1: x0 = ")


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(
        '=1+2,2,3\n+cmd|calc,1,1\n@SUM(A1),1,1\n"\t=x",1,1\n-6,1,"-2"\n+5,-6,4\n1,2,5\n'
    )
    status, _, _ = run(capsys, "--csv", str(source), "--out", str(target))
    assert status == 1
    cells = read_rows(target)[1:]
    assert [row[0] for row in cells[:4]] == ["'=1+2", "'+cmd|calc", "'@SUM(A1)", "'\t=x"]
    assert cells[4][:3] == ["-6", "1", "-2"]  # plain numbers stay numbers
    assert cells[5][:3] == ["+5", "-6", "4"]
    for row in cells:
        for cell in row:
            assert not cell.startswith(("=", "@", "\t", "\r")), row
            if cell.startswith(("+", "-")):
                float(cell)  # only plain numbers may start with a sign


def test_spreadsheet_safe() -> None:
    safe = roots_cli.spreadsheet_safe
    assert safe("=HYPERLINK()") == "'=HYPERLINK()"
    assert safe("-1.5e-3") == "-1.5e-3"
    assert safe("-inf") == "'-inf"
    assert safe("\r1") == "'\r1"
    assert safe("") == ""
    assert safe("line 4: '=x'") == "line 4: '=x'"


def test_csv_field_over_the_csv_modules_limit_is_a_bad_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A 200,000-character field used to end the run with _csv.Error and no output."""
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("1,-3,2\n1," + "7" * 200_000 + ",3\n1,-6,4\n")
    status, out, err = run(capsys, "--csv", str(source), "--out", str(target))
    assert status == 1
    assert "solved 2 of 3 rows" in out
    assert "line 2: unreadable CSV: field larger than field limit (131072)" in err
    rows = read_csv(target)
    assert [r["kind"] for r in rows] == ["TWO_REAL", "", "TWO_REAL"]
    assert rows[2]["x1"] == X1
    assert rows[1]["error"].startswith("line 2: unreadable CSV")


def test_csv_lines_are_counted_across_quoted_newlines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text('1,-3,2\n"1\n2",1,1\nq,1,1\n')
    status, _, err = run(capsys, "--csv", str(source), "--out", str(target))
    assert status == 1
    assert "line 2: a is not a number: '1\\n2'" in err
    assert "line 4: a is not a number: 'q'" in err


def test_csv_output_follows_the_umask(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, umask: None
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("1,-3,2\n")
    run(capsys, "--csv", str(source), "--out", str(tmp_path / "a.csv"))
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644
    os.umask(0o077)
    run(capsys, "--csv", str(source), "--out", str(tmp_path / "b.csv"))
    assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("where", ["directory", "below-a-file", "disk-full"])
def test_csv_write_errors_are_one_line_and_keep_the_old_file(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("1,-3,2\n")
    target = tmp_path / "out.csv"
    target.write_text("earlier results\n")
    out = target
    if where == "directory":
        out = tmp_path / "folder"
        out.mkdir()
    elif where == "below-a-file":
        out = target / "out.csv"
    else:

        def full(path: object, data: bytes) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr("handgrad.cli.roots.write_atomically", full)
    status, _, err = run(capsys, "--csv", str(source), "--out", str(out))
    assert status == 74
    assert err.startswith(f"handgrad roots: error: cannot write --out {out}: ")
    assert len(err.strip().splitlines()) == 1
    if where == "disk-full":
        assert err.strip().endswith("No space left on device")
    assert target.read_text() == "earlier results\n"


@pytest.mark.parametrize("what", ["missing", "directory", "binary"])
def test_csv_unreadable_input_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, what: str
) -> None:
    source = tmp_path / "in.csv"
    if what == "directory":
        source.mkdir()
    elif what == "binary":
        source.write_bytes(b"1,2,3\n\xff\xfe,1,1\n")
    status, _, err = run(capsys, "--csv", str(source), "--out", str(tmp_path / "o"))
    assert status == 2
    assert err.startswith(f"handgrad roots: error: cannot read --csv {source}: ")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def long_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A CSV solved in 10 pieces, on a clock that makes every call a second later."""
    source = tmp_path / "in.csv"
    source.write_text("a,b,c\n" + "1,-3,2\n" * 100)
    monkeypatch.setattr(roots_cli, "CSV_CHUNK", 10)
    monkeypatch.setattr(roots_cli, "_clock", FakeClock(1.0))
    return source, tmp_path / "out.csv"


def test_csv_progress_lines_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], long_csv: tuple[Path, Path]
) -> None:
    source, target = long_csv
    status, out, err = run(capsys, "--csv", str(source), "--out", str(target))
    assert status == 0
    lines = [line for line in err.splitlines() if "solving" in line]
    assert lines[-1] == "handgrad roots: solving 100% (100 of 100 rows)"
    assert 5 <= len(lines) <= 10  # one line per 10 %, not one per row
    assert "\r" not in err
    assert "solved 100 of 100 rows" in out


def test_csv_quiet_means_no_progress(
    capsys: pytest.CaptureFixture[str], long_csv: tuple[Path, Path]
) -> None:
    source, target = long_csv
    status, _, err = run(capsys, "--csv", str(source), "--out", str(target), "--quiet")
    assert status == 0
    assert err == ""


def test_progress_on_a_terminal_rewrites_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(roots_cli, "_clock", FakeClock(1.0))
    stream = Terminal()
    progress = roots_cli.Progress(quiet=False, stream=stream)
    for done in range(1, 6):
        progress.update("solving", done / 5)
    progress.close()
    text = stream.getvalue()
    assert "\n" not in text
    assert text.count("\r\x1b[K") >= 4
    assert "handgrad roots: solving 100%" in text
    # Short runs print nothing: the first DELAY seconds are quiet.
    monkeypatch.setattr(roots_cli, "_clock", FakeClock(0.001))
    quiet = io.StringIO()
    early = roots_cli.Progress(quiet=False, stream=quiet)
    early.update("solving", 1.0)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["roots", "1", "-inf", "-1e-3"], ["roots", "1", " -inf", " -1e-3"]),
        (["roots", "--x0", "-1+2j", "-.5"], ["roots", "--x0", " -1+2j", " -.5"]),
        (["train", "--lr", "-1", "--csv", "-name"], ["train", "--lr", " -1", "--csv", "-name"]),
    ],
)
def test_negative_numbers_are_marked_as_values_and_nothing_else(
    argv: list[str], expected: list[str]
) -> None:
    from handgrad.cli import numbers_as_values

    assert numbers_as_values(argv) == expected


def test_an_option_value_may_be_a_negative_number_in_any_notation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, argparse took "-1e-2" for an unknown option: "expected one argument"."""
    status, _, err = run(capsys, "1", "-6", "4", "--lr", "-1e-2", "--x0", "-1e1", "1e1")
    assert status == 2
    assert "--lr must be a finite number > 0; got -0.01" in err
