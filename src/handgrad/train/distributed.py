"""Data-parallel training on torch.distributed: one replica per process, one shard per rank.

Every process holds the same model and sees the same global batch (the sampler is seeded);
rank ``r`` trains on its contiguous shard of ``n_r`` of the batch's ``N`` examples. The loss is
a mean over the shard, so its gradient ``g_r`` is a mean too; the global batch's gradient is

    g = Σ_r (n_r / N) · g_r

which is what :meth:`Replicas.all_reduce_gradients` forms: each rank scales its flattened,
bucketed gradients by ``n_r / N`` and all-reduces them by sum. Every rank then steps its own
optimizer on the same gradient, so the replicas stay identical without sending weights.
A ragged last batch (even one smaller than the world, leaving a rank an empty shard) gives
the gradient one process computes on it.

The process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); gloo on the CPU, nccl on CUDA. Its timeout bounds every
collective: a peer that dies or hangs makes the others raise :class:`DistributedError`
instead of waiting for ever. Each rank leaves its pid (and host) in the group's store on
joining and, when it fails, the reason; the error of a rank that loses a peer names which
rank that was and why (its recorded reason, or that its process is gone without one: a
crash or a signal). :func:`launch` starts the processes from Python instead.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from handgrad._compat import default_process_group_store
from handgrad.nn.global_dropout import GlobalBatchDropout, ShardWindow, TorchGlobalBatchDropout

DEFAULT_TIMEOUT = 120.0  # seconds a collective may wait for a peer
DEFAULT_BUCKET_BYTES = 4 * 2**20
STORE_WAIT = datetime.timedelta(seconds=5)  # for the notes on peers in the group's store

# The timeout of the group joined by process_group, for the messages of current_replicas.
_joined_timeout: float | None = None


class DistributedError(RuntimeError):
    """A collective failed or timed out: another process died or stopped responding."""


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands in the job, as the launcher (torchrun) describes it."""

    rank: int
    world_size: int
    local_rank: int


def process_info(environ: Mapping[str, str] | None = None) -> ProcessInfo | None:
    """``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the environment; None outside a launcher.

    A malformed value is a ``ValueError`` naming the variable.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ and "RANK" not in environ:
        return None
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = environ.get(name, environ.get("RANK", "0") if name == "LOCAL_RANK" else None)
        if text is None:
            raise ValueError(
                f"{name} is not set although RANK or WORLD_SIZE is; "
                "launch with torchrun, which sets all of them"
            )
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {text!r}") from None
    rank, world_size, local_rank = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, {world_size}), got {rank}")
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK must be non-negative, got {local_rank}")
    return ProcessInfo(rank, world_size, local_rank)


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 1e7:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


class Replicas:
    """The replicas' process group as the training loop sees it: sharding and all-reduce.

    Built by :func:`process_group` (or :func:`current_replicas` inside an initialized group).
    """

    def __init__(
        self,
        rank: int,
        world_size: int,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        store: Any | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
        self.rank = rank
        self.world_size = world_size
        self.timeout = None if timeout is None else _check_timeout(timeout)  # None: unknown
        self.bucket_bytes = bucket_bytes
        self.window = ShardWindow()
        self.notes = PeerNotes(store)

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    def shard(self, batch: Tensor) -> Tensor:
        """This rank's contiguous share of the global ``batch`` (sizes differ by at most one);
        also moves :attr:`window` onto it."""
        sizes = [len(part) for part in batch.tensor_split(self.world_size)]
        self.window.global_size = len(batch)
        self.window.start = sum(sizes[: self.rank])
        return batch[self.window.start : self.window.start + sizes[self.rank]]

    def all_reduce_gradients(
        self, params: Sequence[Tensor], loss: float, count: int, total: int
    ) -> float:
        """Replace every ``p.grad`` with the global batch's gradient; return its loss.

        ``loss`` and the gradients are this rank's means over ``count`` of the batch's
        ``total`` examples; the result is ``Σ_r (n_r/N) · g_r`` (and the same sum of losses),
        identical on every rank. A parameter without a gradient takes zeros, so that every
        rank sends buffers of the same layout.
        """
        if not 0 <= count <= total or total < 1:
            raise ValueError(
                f"count must be in [0, total] and total positive, got count={count}, "
                f"total={total}"
            )
        weight = count / total
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        loss_sent = False
        for bucket in self._buckets(params):
            extra = (
                []
                if loss_sent
                else [torch.tensor([loss], dtype=bucket[0].dtype, device=bucket[0].device)]
            )
            flat = torch.cat([p.grad.reshape(-1) for p in bucket if p.grad is not None] + extra)
            flat.mul_(weight)
            self._all_reduce(flat, "the gradient all-reduce")
            offset = 0
            for p in bucket:
                assert p.grad is not None
                size = p.grad.numel()
                p.grad.copy_(flat[offset : offset + size].view_as(p.grad))
                offset += size
            if not loss_sent:
                loss, loss_sent = float(flat[-1]), True
        if not loss_sent:  # no parameters at all
            # nccl reduces CUDA tensors only: the loss goes where the group's backend works.
            where = (
                torch.device("cuda", torch.cuda.current_device())
                if dist.get_backend() == "nccl"
                else torch.device("cpu")
            )
            flat = torch.tensor([loss * weight], dtype=torch.float64, device=where)
            self._all_reduce(flat, "the loss all-reduce")
            loss = float(flat[0])
        return loss

    def _buckets(self, params: Sequence[Tensor]) -> Iterator[list[Tensor]]:
        # Consecutive parameters of one dtype and device, up to bucket_bytes each: fewer,
        # larger messages than one per tensor, without one giant copy of a big model.
        bucket: list[Tensor] = []
        size = 0
        for p in params:
            nbytes = p.numel() * p.element_size()
            same_kind = not bucket or (p.dtype, p.device) == (bucket[0].dtype, bucket[0].device)
            if bucket and (not same_kind or size + nbytes > self.bucket_bytes):
                yield bucket
                bucket, size = [], 0
            bucket.append(p)
            size += nbytes
        if bucket:
            yield bucket

    def leave_together(self) -> None:
        """Wait until every rank is here (bounded by the group's timeout): the last
        collective before the group is destroyed."""
        try:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()
        except RuntimeError as error:
            raise self._lost_peer("the closing barrier", error) from error

    def _all_reduce(self, flat: Tensor, what: str) -> None:
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        except RuntimeError as error:
            raise self._lost_peer(what, error) from error

    def _lost_peer(self, what: str, error: BaseException) -> DistributedError:
        reason = _first_line(error)
        limit = "" if self.timeout is None else f" (timeout {self.timeout:g} s)"
        lost = self.notes.lost_peers(self.rank, self.world_size)
        # The backend's own words only when there is nothing better: they name an address.
        who = "; ".join(lost) if lost else (
            f"another process died or stopped responding ({reason})"
        )
        return DistributedError(
            f"rank {self.rank} of {self.world_size}: {what} failed{limit}: {who}"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` on this machine has ended (a zombie has ended too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
    return False


class PeerNotes:
    """What the ranks leave for one another in the group's key-value store: each rank's host
    and pid on joining, and the reason when it fails. A rank that loses a peer reads them to
    say which rank is gone and why. Every store access is best effort, bounded by
    :data:`STORE_WAIT`: the notes must never turn a clear error into a hang. Without a store
    (``None``), nothing is noted and nothing is known."""

    def __init__(self, store: Any | None) -> None:
        # Keys of a restarted torchrun job must not be read as this attempt's.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.prefix = f"handgrad/{attempt}/"
        self.store = None
        if store is not None:
            with contextlib.suppress(Exception):
                self.store = store.clone()  # its own connection, with a short timeout
                self.store.set_timeout(STORE_WAIT)

    def _set(self, key: str, value: str) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.set(self.prefix + key, value)

    def _get(self, key: str) -> str | None:
        if self.store is None:
            return None
        with contextlib.suppress(Exception):
            if self.store.check([self.prefix + key]):
                return bytes(self.store.get(self.prefix + key)).decode("utf-8", "replace")
        return None

    def joined(self, rank: int) -> None:
        """Note this process (host and pid) as ``rank``."""
        self._set(f"process/{rank}", f"{socket.gethostname()} {os.getpid()}")

    def failed(self, rank: int, error: BaseException) -> None:
        """Note why ``rank`` is leaving the group early."""
        self._set(f"failure/{rank}", f"{type(error).__name__}: {_first_line(error)}")

    def lost_peers(self, rank: int, world_size: int, grace: float = 2.0) -> list[str]:
        """A phrase for every other rank that has failed or whose process is gone. A peer's
        sockets close a moment before its process ends: the question is asked again for up
        to ``grace`` seconds while no answer is found."""
        deadline = time.monotonic() + grace
        while True:
            phrases = self._lost_peers_now(rank, world_size)
            if phrases or self.store is None or time.monotonic() >= deadline:
                return phrases
            time.sleep(0.05)

    def _lost_peers_now(self, rank: int, world_size: int) -> list[str]:
        here = socket.gethostname()
        phrases = []
        for other in range(world_size):
            if other == rank:
                continue
            host, _, pid_text = (self._get(f"process/{other}") or "").partition(" ")
            pid = int(pid_text) if pid_text.isdigit() else None
            named = f"rank {other}"
            if pid is not None:
                named += f" (pid {pid})" if host == here else f" (pid {pid} on {host})"
            failure = self._get(f"failure/{other}")
            if failure is not None:
                phrases.append(f"{named} failed: {failure}")
            elif pid is not None and host == here and _process_gone(pid):
                phrases.append(f"{named} died without a word (a crash, or killed by a signal)")
        return phrases


def backend_for(device: torch.device) -> str:
    """``"nccl"`` for CUDA, ``"gloo"`` for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(
    device: str | torch.device = "cpu",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> Iterator[Replicas | None]:
    """Join the job described by the environment for the block; yields its :class:`Replicas`,
    or None when this is a single process (no launcher, or ``WORLD_SIZE=1``).

    ``timeout`` (seconds) bounds the rendezvous and every collective. On CUDA each process
    uses ``cuda:LOCAL_RANK``. A block that ends normally ends with a barrier, so that the
    ranks leave together (none tears its connections down while another still works in
    the group); one that raises notes its error for the others (:class:`PeerNotes`). The
    group is destroyed on leaving the block.
    """
    timeout = _check_timeout(timeout)
    info = process_info(environ)
    if info is None or info.world_size == 1:
        yield None
        return
    target = torch.device(device)
    if target.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        # Without blocking wait, an nccl collective that times out is aborted by a watchdog
        # thread that ends the process; with it, the wait raises here and a lost peer is the
        # same clear DistributedError as on gloo. Every step reads the loss back anyway, so
        # blocking adds no synchronisation. A value the user set is kept.
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
    try:
        dist.init_process_group(
            backend_for(target),
            init_method="env://",
            rank=info.rank,
            world_size=info.world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
    except (RuntimeError, ValueError) as error:
        raise DistributedError(
            f"rank {info.rank} of {info.world_size} could not join the process group within "
            f"{timeout:g} s: {str(error).strip().splitlines()[0] if str(error).strip() else error}"
        ) from error
    global _joined_timeout
    _joined_timeout = timeout
    replicas = Replicas(info.rank, info.world_size, timeout=timeout,
                        store=default_process_group_store())
    replicas.notes.joined(info.rank)
    try:
        yield replicas
    except BaseException as error:
        # Before this process leaves (and its peers' collectives fail), say why.
        replicas.notes.failed(info.rank, error)
        raise
    else:
        replicas.leave_together()
    finally:
        _joined_timeout = None
        with contextlib.suppress(RuntimeError, ValueError):
            dist.destroy_process_group()


def current_replicas() -> Replicas | None:
    """The :class:`Replicas` of the initialized default group, None when there is none or
    it has a single process (training then takes the one-process path, bit for bit)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return Replicas(dist.get_rank(), dist.get_world_size(), timeout=_joined_timeout,
                    store=default_process_group_store())


def local_device(device: str | torch.device) -> torch.device:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` in a launched job (one GPU per process)."""
    target = torch.device(device)
    info = process_info()
    if target.type == "cuda" and target.index is None and info is not None:
        return torch.device("cuda", info.local_rank)
    return target


# ---------------------------------------------------------------------- dropout on shards


def shard_dropout(model: torch.nn.Module, window: ShardWindow) -> torch.nn.Module:
    """Swap every dropout layer of ``model`` (in place) for its global-batch version
    (:mod:`handgrad.nn.global_dropout`), reading this rank's rows from ``window``."""
    from handgrad.nn import Dropout as HandDropout

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, HandDropout):
                if child.generator is not None:
                    raise ValueError(
                        f"{name}: dropout with its own generator cannot be sharded; "
                        "data-parallel training draws masks from the global RNG"
                    )
                setattr(parent, name, GlobalBatchDropout(child.p, window))
            elif isinstance(child, torch.nn.Dropout):
                setattr(parent, name, TorchGlobalBatchDropout(child.p, window))
    return model


# ---------------------------------------------------------------------- launching from Python


def free_port() -> int:
    """A TCP port free on this machine now (for a single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _worker(
    rank: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    world_size: int,
    port: int,
    results: Any,
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        value = fn(*args)
    except BaseException as error:
        results.put((rank, False, f"{type(error).__name__}: {error}"))
        raise SystemExit(1) from None
    # Plain pickle bytes: torch's queue pickler would share tensors through file
    # descriptors that vanish when this process exits.
    results.put((rank, True, pickle.dumps(value) if rank == 0 else None))


def launch(fn: Callable[..., Any], world_size: int, *args: Any) -> Any:
    """Run ``fn(*args)`` in ``world_size`` fresh processes on this machine; rank 0's result.

    Each process has torchrun's environment variables set (so ``fn`` joins with
    :func:`process_group`, or calls ``handgrad.cli.main(["train", ...])``); ``fn`` and its
    arguments must be picklable (a module-level function). A process that fails or dies
    is a :class:`DistributedError` naming every failed rank and why, raised once all have
    ended (the process group's timeout bounds how long the others wait for a dead peer).
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    processes = []
    port = free_port()
    for rank in range(world_size):
        process = context.Process(
            target=_worker,
            args=(rank, fn, args, world_size, port, results),
            daemon=False,
        )
        process.start()
        processes.append(process)
    reports: dict[int, tuple[bool, Any]] = {}
    # Drain the queue while waiting: a large result would otherwise block its sender.
    while any(process.is_alive() for process in processes) or not results.empty():
        while not results.empty():
            rank, ok, value = results.get()
            reports[rank] = (ok, value)
        time.sleep(0.02)
    for process in processes:
        process.join()
    failures = []
    for rank, process in enumerate(processes):
        ok, value = reports.get(rank, (False, None))
        if not ok:
            why = value if value is not None else "it died without a report"
            failures.append(f"rank {rank} (exit code {process.exitcode}): {why}")
    if failures:
        raise DistributedError("data-parallel job failed: " + "; ".join(failures))
    return pickle.loads(reports[0][1])  # from our own child process


__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "ProcessInfo",
    "Replicas",
    "current_replicas",
    "launch",
    "local_device",
    "process_group",
    "process_info",
    "shard_dropout",
]
