"""The ``handgrad`` command: a thin layer over the library.

Each subcommand lives in its own module ``handgrad.cli.<name>`` exposing
``register(subparsers) -> None`` (adds its parser and sets ``run`` as the default ``func``)
and ``run(args) -> int``. Every error is one line on stderr, ``handgrad COMMAND: error: ...``,
and an exit status that says which kind it was (:data:`EXIT_STATUS`): errors the user can
fix are raised as :class:`CLIError` (or ``ValueError``/``FileNotFoundError``); any
``OSError`` names the path and the reason (:func:`handgrad.files.describe_os_error`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from handgrad import __version__
from handgrad.files import OutputInUseError, WriteError, describe_os_error

# Order is the order shown in --help.
SUBCOMMANDS = ("demo", "check", "train", "generate", "trajectories", "roots")

# The exit statuses of every subcommand (74 and 75 are sysexits.h's EX_IOERR, EX_TEMPFAIL).
EXIT_OK = 0
EXIT_USAGE = 2  # bad input: an option, a value, an input file
EXIT_IO = 74  # a file could not be written or read (disk full, read-only, no permission, ...)
EXIT_IN_USE = 75  # the output folder or file is being written by another handgrad process
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_BROKEN_PIPE = 141  # stdout's reader went away
EXIT_TERMINATED = 143  # SIGTERM
EXIT_STATUS = {
    EXIT_OK: "success",
    1: "the command ran but its result is a failure (a check failed, a root not found, "
    "bad rows in a CSV)",
    EXIT_USAGE: "bad input: an option, a value or an input file",
    EXIT_IO: "a file could not be written (or read): disk full, read-only, no permission, "
    "a folder where a file should be; the outputs written before are intact",
    EXIT_IN_USE: "the output is being written by another handgrad process",
    EXIT_INTERRUPTED: "interrupted by SIGINT (Ctrl-C)",
    EXIT_BROKEN_PIPE: "the reader of the output went away",
    EXIT_TERMINATED: "stopped by SIGTERM",
}


class CLIError(Exception):
    """A problem reported as one line and a non-zero exit: ``status`` (default
    :data:`EXIT_USAGE`, the user's input; :data:`EXIT_IO` for a file that cannot be written)."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that the same
    clean-up runs (``train`` saves its last finished epoch)."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere,
    and outside the block, SIGTERM keeps its handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def numbers_as_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with every negative number in any notation Python reads (``-6``, ``-1e-3``,
    ``-.5``, ``-inf``, ``-1+2j``) marked as a value: a leading space, which ``float``,
    ``int`` and ``complex`` ignore and which stops argparse from taking it for an option.

    argparse itself only recognises ``-6`` and ``-.5`` as numbers; ``handgrad roots 1 -1e-3
    -inf`` needs the rest. None of handgrad's options looks like a number, so nothing is lost.
    """
    return [f" {arg}" if _is_negative_number(arg) else arg for arg in argv]


def _is_negative_number(arg: str) -> bool:
    if not arg.startswith("-") or arg.startswith("--"):
        return False
    for kind in (float, complex):
        try:
            kind(arg)
        except ValueError:
            continue
        return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``handgrad`` command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(numbers_as_values(sys.argv[1:] if argv is None else argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE

    def fail(message: object, status: int) -> int:
        print(f"handgrad {args.command}: error: {message}", file=sys.stderr)
        return status

    try:
        status: int = args.func(args)
    except OutputInUseError as error:
        return fail(error, EXIT_IN_USE)
    except WriteError as error:
        return fail(error, EXIT_IO)
    except CLIError as error:
        return fail(error, error.status)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        return fail(describe_os_error(error) if isinstance(error, OSError) else error, EXIT_USAGE)
    except KeyboardInterrupt as error:
        terminated = isinstance(error, Terminated)
        print(f"handgrad {args.command}: {'terminated' if terminated else 'interrupted'}",
              file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`handgrad check | head`): not our error. Point stdout at
        # devnull so the interpreter's final flush does not raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as error:  # an input that cannot be read, a write outside handgrad.files
        return fail(describe_os_error(error), EXIT_IO)
    return status
