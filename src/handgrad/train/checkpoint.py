"""Training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is a plain dictionary (tensors, numbers, strings, lists, dicts) so that the safe
unpickler accepts it; :func:`save_checkpoint` adds a format marker that
:func:`load_checkpoint` checks, and never leaves a half-written file behind.
:class:`Checkpointer` decides when to write: on a time interval, at the end, and — from a
copy kept in memory — on an interruption.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from handgrad.files import WriteError, write_atomically

CHECKPOINT_FILE = "checkpoint.pt"  # its name in an output folder
CHECKPOINT_EVERY = 60.0  # seconds between checkpoints by default

# A checkpoint's payload on demand; the argument asks for a frozen copy (one that later
# training steps cannot change), as a Checkpointer keeps in memory.
Snapshot = Callable[[bool], dict[str, Any]]
FORMAT = "handgrad-train-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or made by another run."""


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format marker) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    write_atomically(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The payload saved at ``path``, on the CPU, loaded with ``weights_only=True``.

    Raises ``FileNotFoundError`` when there is no file and :class:`CheckpointError` (one
    line) when it is corrupt, truncated or not a handgrad training checkpoint. The file is
    only read.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {source}")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types for damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {source} is unreadable (corrupt, truncated, or holding objects that "
            f"weights_only=True refuses): {reason}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not a handgrad training checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {source} has format version {payload.get('version')!r}; "
            f"this handgrad reads version {VERSION}"
        )
    return payload


def detached_copy(value: Any) -> Any:
    """``value`` with every tensor cloned and every dict, list and tuple rebuilt: a snapshot
    that later training steps cannot change (state_dicts hold the live tensors)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: detached_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [detached_copy(item) for item in value]
    if isinstance(value, tuple):
        return tuple(detached_copy(item) for item in value)
    return value


def check_interval(every: float) -> float:
    """``every`` as seconds between checkpoints: a finite number ≥ 0, else ``ValueError``."""
    if isinstance(every, bool) or not isinstance(every, int | float) or not (
        0 <= every < math.inf
    ):
        raise ValueError(
            f"checkpoint_every must be a non-negative number of seconds, got {every!r}"
        )
    return float(every)


class Checkpointer:
    """When a training loop writes its checkpoint to ``path``.

    :meth:`write` writes at once (the loop does so before its first epoch: the check that
    the folder can take a checkpoint). After each epoch :meth:`epoch_done` writes when
    ``every`` seconds have passed since the last write, at the first epoch it is told of (the
    optimizers' state has its full size from then on, so a folder too small for it is found
    after one epoch, not at the end) and at the last; otherwise it keeps a copy of the
    epoch's state in memory, which :meth:`flush` writes when training is interrupted
    (Ctrl-C, SIGTERM, an error). A resume therefore always starts from the end of an epoch
    and ends bit for bit where an uninterrupted run ends. ``every=0`` writes after every
    epoch. ``clock`` is for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        every: float = CHECKPOINT_EVERY,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.every = check_interval(every)
        self.clock = clock
        self.written_epoch: int | None = None
        self._written_at = -math.inf
        self._pending: dict[str, Any] | None = None
        self._epochs_done = 0

    def write(self, payload: dict[str, Any]) -> None:
        """Write ``payload`` now (it is a plain dict with an ``"epoch"``)."""
        save_checkpoint(self.path, payload)
        self.written_epoch = int(payload["epoch"])
        self._written_at = self.clock()
        self._pending = None

    def epoch_done(self, snapshot: Snapshot, *, last: bool) -> bool:
        """An epoch is finished (``last``: the run's last): write ``snapshot(False)`` if due,
        else keep ``snapshot(True)``, a frozen copy. Returns whether it was written."""
        self._epochs_done += 1
        if last or self._epochs_done == 1 or self.clock() - self._written_at >= self.every:
            self.write(snapshot(False))
            return True
        self._pending = snapshot(True)
        return False

    def flush(self) -> bool:
        """Write the kept copy, if any (after an interruption); returns whether one was
        written. A failure to write it is swallowed: the earlier checkpoint is intact, and
        the caller is already handling the error that interrupted training."""
        if self._pending is None:
            return False
        with contextlib.suppress(WriteError):
            self.write(self._pending)
            return True
        return False


def rng_states(device: str | torch.device | None = None) -> dict[str, Any]:
    """The global torch RNG states a run on ``device`` draws from.

    The CPU's always; with a CUDA ``device`` also that device's (key ``"cuda_device"``), so
    that a data-parallel run, where rank 0 writes and every rank resumes on its own GPU,
    restores the stream of the GPU it trains on. With ``device=None``: the CPU's and every
    CUDA device's once CUDA is in use (key ``"cuda"``, as version-1 checkpoints hold it).
    """
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device is not None:
        target = torch.device(device)
        if target.type == "cuda":
            states["cuda_device"] = torch.cuda.get_rng_state(target)
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(
    states: dict[str, Any], device: str | torch.device | None = None
) -> None:
    """Put back what :func:`rng_states` saved, for a run on ``device``.

    The CPU's state always. A CUDA ``device`` gets the saved device state (or, from a
    checkpoint holding every device's, the entry of its index); a CPU run leaves CUDA's
    generators alone. ``device=None`` puts back every CUDA state saved.
    """
    torch.set_rng_state(states["cpu"])
    if device is None:
        if "cuda" in states:
            torch.cuda.set_rng_state_all(states["cuda"])
        return
    target = torch.device(device)
    if target.type != "cuda":
        return
    if "cuda_device" in states:
        torch.cuda.set_rng_state(states["cuda_device"], target)
    elif "cuda" in states:
        index = target.index if target.index is not None else torch.cuda.current_device()
        torch.cuda.set_rng_state(states["cuda"][index], target)
