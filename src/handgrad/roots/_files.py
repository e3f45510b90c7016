"""Writing the roots command's output files: atomically, with the permissions the umask gives.

Interim, over :func:`handgrad.files.write_atomically`: that function creates its temporary
file with mode 0600 (mkstemp), which the rename keeps; a file written here gets 0666 minus
the umask instead, as ``open(path, "w")`` would give it. When the shared files module does
that itself (issue 15 item 8 for every command), ``write_file`` reduces to it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from handgrad.files import write_atomically

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (old file or new, never half) with mode
    0666 & ~umask; the folder is created if needed. OSError propagates (the caller names the
    option the path came from)."""
    target = Path(path)
    write_atomically(target, data)
    os.chmod(target, 0o666 & ~current_umask())
    return target


def os_error_text(error: OSError) -> str:
    """The reason of an OSError in a few words ('No space left on device')."""
    return error.strerror or str(error)
