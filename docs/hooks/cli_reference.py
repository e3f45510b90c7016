"""mkdocs hook: the command-line reference, read from the command itself.

A page holding the marker ``<!-- handgrad-cli-reference -->`` gets ``handgrad --help`` and
every subcommand's ``--help`` in its place, so the reference cannot drift from the code.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

MARKER = "<!-- handgrad-cli-reference -->"


def _help(*argv: str) -> str:
    """What ``handgrad *argv --help`` prints, at a fixed width (not the builder's terminal)."""
    from handgrad.cli import main

    os.environ["COLUMNS"] = "100"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return out.getvalue().rstrip()


def cli_reference() -> str:
    """Markdown: one section per subcommand, each its parser's help in a code block."""
    from handgrad.cli import SUBCOMMANDS

    sections = ["## handgrad", "", "```text", _help(), "```"]
    for name in SUBCOMMANDS:
        sections += ["", f"## handgrad {name}", "", "```text", _help(name), "```"]
    return "\n".join(sections)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Put the reference where the marker stands."""
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
