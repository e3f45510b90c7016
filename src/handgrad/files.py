"""Writing output files safely: the one module every package may import for it.

:func:`write_atomically` replaces a file so that readers see the old file or the new one,
never half of either. It imports nothing from handgrad, so the library packages (train,
roots), the plots and the command line all share it without depending on one another.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
    leaves ``path`` either untouched or complete; on error the temporary file is removed.
    The file gets the mode an ordinary ``open(path, "w")`` gives, 0o666 less the umask
    (``mkstemp`` alone would leave it private, 0o600).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


__all__ = ["current_umask", "write_atomically"]
