"""The ``handgrad`` command: a thin layer over the library.

Each subcommand lives in its own module ``handgrad.cli.<name>`` exposing
``register(subparsers) -> None`` (adds its parser and sets ``run`` as the default ``func``)
and ``run(args) -> int``. Errors the user can fix are raised as :class:`CLIError` (or
``ValueError``/``FileNotFoundError``) and printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from handgrad import __version__

# Order is the order shown in --help.
SUBCOMMANDS = ("demo", "check", "train", "generate", "trajectories", "roots")


class CLIError(Exception):
    """A problem with the user's input, reported as one line and a non-zero exit."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="handgrad",
        description="Networks, optimizers and root finders with hand-written gradients.",
    )
    parser.add_argument("--version", action="version", version=f"handgrad {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module_name = f"handgrad.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``handgrad`` command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        status: int = args.func(args)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"handgrad {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"handgrad {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`handgrad check | head`): not our error. Point stdout at
        # devnull so the interpreter's final flush does not raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return status
