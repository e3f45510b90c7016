"""Writing output files safely: the one module every package may import for it.

- :func:`write_atomically` replaces a file so that readers see the old file or the new one,
  never half of either; any ``OSError`` becomes a :class:`WriteError` naming the file.
- :func:`lock_folder` / :func:`lock_file` make one process the only writer of an output
  folder (or file); a second one gets :class:`OutputInUseError` at once, naming the holder's
  pid. The lock is the kernel's (``flock``), so a killed holder leaves no lock behind.
- :func:`describe_os_error` puts any ``OSError`` in one line: the path and the reason.

It imports nothing from handgrad, so the library packages (train, roots), the plots and the
command line share it without depending on one another.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX (Windows): outputs are written without a lock
    fcntl = None  # type: ignore[assignment]

# The lock file in a locked folder; beside a locked file it is ".NAME.handgrad-lock".
FOLDER_LOCK = ".handgrad-lock"


class WriteError(OSError):
    """Writing an output failed. ``filename`` is the file or folder the caller wanted to
    write (not a temporary one), ``strerror`` the reason; ``str()`` is one line."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


class OutputInUseError(RuntimeError):
    """Another process holds the lock of an output folder or file; ``pid`` is its process
    id (None when it could not be read)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = "another process" if pid is None else f"process {pid}"
        super().__init__(
            f"{path} is being written by {holder} (another handgrad run); wait for it to "
            "finish or choose another output"
        )
        self.path = path
        self.pid = pid


def os_error_reason(error: OSError) -> str:
    """The reason of an ``OSError`` in a few words ("No space left on device"), for callers
    that name the path themselves (often by the option it came from)."""
    return error.strerror or str(error) or type(error).__name__


def describe_os_error(error: OSError) -> str:
    """One line for any ``OSError``: ``PATH: reason`` (just the reason when it names none)."""
    if isinstance(error, WriteError):
        return str(error)
    reason = os_error_reason(error)
    return f"{error.filename}: {reason}" if error.filename is not None else reason


def _write_error(error: OSError, path: Path) -> WriteError:
    code = error.errno if error.errno is not None else errno.EIO
    return WriteError(code, os_error_reason(error), str(path))


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` (and its parents) if needed; :class:`WriteError` naming it
    when it cannot be (below a regular file, no permission, read-only file system, ...)."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file of that name, or a link to one
        raise WriteError(errno.ENOTDIR, "it exists and is not a folder", str(folder)) from None
    except OSError as error:
        raise _write_error(error, folder) from error
    return folder


def current_umask() -> int:
    """The process's file-creation mask. Read from ``/proc/self/status`` where Linux has it;
    elsewhere by setting it and putting it back at once (``os.umask`` can only be read so)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and
    ``os.replace`` (atomic on POSIX and Windows).

    The temporary file is fsynced before the rename, so a crash or SIGKILL at any moment
    leaves ``path`` either untouched or complete; on error the temporary file is removed and
    the ``OSError`` is raised as a :class:`WriteError` naming ``path``. The file gets the
    mode an ordinary ``open(path, "w")`` gives, 0o666 less the umask (``mkstemp`` alone
    would leave it private, 0o600).
    """
    target = Path(path)
    make_folder(target.parent)
    try:
        fd, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
    except OSError as error:
        raise _write_error(error, target) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _write_error(error, target) from error
        raise


def _holder_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    return None


@contextlib.contextmanager
def _exclusive(lock_path: Path, guarded: Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``lock_path`` for the block, with our pid written in it.

    The file is removed on release (while still locked). A process that opened it just
    before, and locks it after, finds that the path no longer leads to the file it locked
    (or leads to a newer one) and starts again, so two holders never coexist.
    """
    if fcntl is None:
        yield guarded
        return
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise _write_error(error, guarded) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            os.close(fd)
            raise OutputInUseError(guarded, pid) from None
        except OSError as error:
            os.close(fd)
            raise _write_error(error, guarded) from error
        try:
            current = os.stat(lock_path)
            opened = os.fstat(fd)
            if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as error:  # e.g. no room for a few bytes: the folder is full
            raise _write_error(error, guarded) from error
        yield guarded
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


@contextlib.contextmanager
def lock_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Be the only writer of the output folder ``path`` for the block (it is created).

    Another process that asks for the same folder meanwhile gets :class:`OutputInUseError`
    at once, naming this process's pid. The lock is an ``flock`` on ``path/.handgrad-lock``,
    removed on release; the kernel drops it when a holder dies, even by SIGKILL, so a stale
    file is taken over by the next writer. Creating the folder and the lock file is the
    first check that the folder can be written (:class:`WriteError` otherwise). Not taken on
    systems without ``fcntl``. Yields the folder.
    """
    folder = make_folder(path)
    with _exclusive(folder / FOLDER_LOCK, folder) as guarded:
        yield guarded


@contextlib.contextmanager
def lock_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Be the only writer of the output file ``path`` for the block: as :func:`lock_folder`,
    with the lock file ``.NAME.handgrad-lock`` beside it (its folder is created)."""
    target = Path(path)
    make_folder(target.parent)
    with _exclusive(target.parent / f".{target.name}.handgrad-lock", target) as guarded:
        yield guarded


__all__ = [
    "FOLDER_LOCK",
    "OutputInUseError",
    "WriteError",
    "current_umask",
    "describe_os_error",
    "lock_file",
    "lock_folder",
    "make_folder",
    "os_error_reason",
    "write_atomically",
]
