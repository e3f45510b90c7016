"""Training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is a plain dictionary (tensors, numbers, strings, lists, dicts) so that the safe
unpickler accepts it; :func:`save_checkpoint` adds a format marker that
:func:`load_checkpoint` checks, and never leaves a half-written file behind.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from handgrad.files import write_atomically

CHECKPOINT_FILE = "checkpoint.pt"  # its name in an output folder
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
