"""Tables of text cells for people: the terminal, Markdown and HTML renderings.

Every table handgrad prints or writes (the CLI's results, ``handgrad check``'s report, the
demo's report) is a header and rows of strings rendered here, so they all look alike. This
module imports nothing from handgrad: any package may use it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Sequence

Row = Sequence[str]


def format_table(header: Row, rows: Sequence[Row], *, right: Collection[int] = ()) -> str:
    """An aligned table for the terminal: the header, a rule of dashes, then the rows.

    Columns are separated by two spaces and as wide as their widest cell; cells are
    left-aligned except in the columns whose indices are in ``right`` (numbers). Trailing
    blanks are dropped. Every row must have as many cells as the header (``ValueError``).
    """
    for row in rows:
        if len(row) != len(header):
            raise ValueError(
                f"every row must have {len(header)} cells like the header, got {len(row)}: "
                f"{list(row)!r}"
            )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Row) -> str:
        padded = (
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, rows)])


def markdown_table(header: Row, rows: Sequence[Row]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` inside a cell is escaped."""

    def line(cells: Row) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def html_table(header: Row, rows: Sequence[Row]) -> str:
    """An HTML ``<table>`` with a ``<thead>``; every cell is escaped."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# A cell that starts with one of these is a formula to a spreadsheet (OWASP, "CSV
# injection"): =, +, - and @ start formulas; a tab or carriage return is dropped by some
# importers, which then read the next character as the start. A full-width equals sign is
# read as "=" by some too.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d")


def _is_finite_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value)  # "-inf" is a name to a spreadsheet: =-inf


def spreadsheet_safe(cell: str) -> str:
    """``cell`` for a CSV file meant for spreadsheets: a cell a spreadsheet would run as a
    formula (``=HYPERLINK(...)``, ``+cmd``, ``@SUM(...)``, ``-2+3``) gets an apostrophe in
    front, which spreadsheets show as text; numbers (``-6``, ``+1e-3``, ``-inf``) and every
    other cell are kept as they are ("-inf" is not a number to a spreadsheet)."""
    if cell.startswith(_FORMULA_STARTS) and not _is_finite_number(cell):
        return "'" + cell
    return cell


__all__ = ["format_table", "html_table", "markdown_table", "spreadsheet_safe"]
