"""Data-parallel training: the same result as one process, rank-0 outputs, dead peers, resume.

Multi-process tests spawn two gloo processes on the CPU (``compare_data_parallel`` /
``launch``, or torchrun for the command line); each launch costs a few seconds. Their nccl
twins run one process per GPU and need two CUDA devices (skipped, with the reason, on fewer);
the one-process group tests run on gloo and, with one GPU, on nccl.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import handgrad.nn as hnn
from handgrad.cli import main
from handgrad.nn.global_dropout import GlobalBatchDropout, ShardWindow, TorchGlobalBatchDropout
from handgrad.train import distributed
from handgrad.train.compare import (
    ComparisonResult,
    TrainConfig,
    compare_data_parallel,
    compare_optimizers,
)
from handgrad.train.distributed import DistributedError, Replicas, process_info
from handgrad.train.sampler import shard
from handgrad.train.tasks import Backend, Task, cubic_task
from handgrad.train.trainer import EpochRecord

DIGITS = TrainConfig(epochs=3, batch_size=100)  # 1438 training digits: a ragged last batch of 38
CUDA_DEVICES = torch.cuda.device_count() if torch.cuda.is_available() else 0
TWO_GPUS_REASON = f"nccl data-parallel runs need two CUDA devices; this machine has {CUDA_DEVICES}"
NEEDS_TWO_GPUS = [pytest.mark.cuda, pytest.mark.skipif(CUDA_DEVICES < 2, reason=TWO_GPUS_REASON)]
# torch.nn.Dropout on CUDA draws its mask in a fused kernel, not with bernoulli_ on the global
# batch: the torch backend's one-process and sharded masks differ there by design.
TORCH_CUDA_DROPOUT = "torch-dropout"


def float64_cubic_with_dropout() -> Task:
    """The cubic task in float64 with dropout; batches of 333 leave a last batch of 1, so
    the second of two ranks gets an empty shard."""
    task = cubic_task(dropout=0.3, num_train=1000)
    return dataclasses.replace(
        task,
        x_train=task.x_train.double(),
        y_train=task.y_train.double(),
        x_test=task.x_test.double(),
        y_test=task.y_test.double(),
    )


def assert_close_histories(one: ComparisonResult, many: ComparisonResult, rtol: float) -> None:
    assert [run.optimizer for run in one.runs] == [run.optimizer for run in many.runs]
    for single, parallel in zip(one.runs, many.runs, strict=True):
        assert len(single.history) == len(parallel.history)
        for a, b in zip(single.history, parallel.history, strict=True):
            assert b.epoch == a.epoch
            assert b.test_loss == pytest.approx(a.test_loss, rel=rtol), single.optimizer
            assert b.train_loss == pytest.approx(a.train_loss, rel=rtol), single.optimizer
        for p, q in zip(single.model.parameters(), parallel.model.parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=rtol * 10, atol=rtol * 10)


# ------------------------------------------------------------------ without processes


def test_process_info_reads_torchrun_variables() -> None:
    assert process_info({}) is None
    info = process_info({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank) == (1, 2, 1)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK must be an integer, got 'x'"),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, r"RANK must be in \[0, 2\), got 2"),
        ({"RANK": "0", "WORLD_SIZE": "0", "LOCAL_RANK": "0"}, "WORLD_SIZE must be at least 1"),
        ({"RANK": "0"}, "WORLD_SIZE is not set"),
    ],
)
def test_process_info_rejects_bad_variables(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        process_info(environ)


@pytest.mark.parametrize("size", [1, 2, 7, 64])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_replica_shards_are_the_sampler_shards_and_move_the_window(
    size: int, world_size: int
) -> None:
    batch = torch.randperm(100)[:size]
    parts = []
    for rank in range(world_size):
        replicas = Replicas(rank, world_size)
        part = replicas.shard(batch)
        assert torch.equal(part, shard(batch, rank, world_size))
        assert replicas.window.global_size == size
        assert torch.equal(batch[replicas.window.start : replicas.window.start + len(part)], part)
        parts.append(part)
    assert torch.equal(torch.cat(parts), batch)


def test_buckets_respect_the_byte_cap_and_keep_order() -> None:
    params = [torch.zeros(10), torch.zeros(30), torch.zeros(5), torch.zeros(5, dtype=torch.float64)]
    replicas = Replicas(0, 2, bucket_bytes=4 * 40)
    buckets = list(replicas._buckets(params))
    assert [[p.numel() for p in bucket] for bucket in buckets] == [[10, 30], [5], [5]]
    assert [p for bucket in buckets for p in bucket] == params


def test_shard_dropout_swaps_every_dropout_layer() -> None:
    task = cubic_task(dropout=0.2, num_train=10, num_test=5)
    window = ShardWindow()
    hand = distributed.shard_dropout(task.make_model(0), window)
    ref = distributed.shard_dropout(task.make_model(0, "torch"), window)
    assert [type(m) for m in hand.modules() if "Dropout" in type(m).__name__] == [
        GlobalBatchDropout
    ]
    assert [type(m) for m in ref.modules() if "Dropout" in type(m).__name__] == [
        TorchGlobalBatchDropout
    ]


@pytest.fixture
def one_rank_group(device: torch.device) -> Iterator[None]:
    """A group of this process alone (in-memory store), gloo on the CPU and nccl on CUDA:
    the collective is the identity, so what remains to check is the scaling, flattening and
    copying back, on the device's own backend."""
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    backend = distributed.backend_for(device)
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("one_rank_group")
def test_all_reduce_scales_by_the_share_of_examples_across_buckets_and_dtypes(
    device: torch.device,
) -> None:
    assert distributed.current_replicas() is None  # one process: the one-process path
    shapes = [(3, 4), (4,), (2, 2), (5,)]
    params = [torch.zeros(shape, device=device) for shape in shapes[:3]]
    params.append(torch.zeros(5, dtype=torch.float64, device=device))
    grads = [torch.randn(p.shape, dtype=p.dtype).to(device) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    without_grad = torch.zeros(2, device=device)
    replicas = Replicas(0, 1, bucket_bytes=4 * 12)  # buckets [12], [4, 4], [5 float64], [2]
    loss = replicas.all_reduce_gradients([*params, without_grad], 0.75, 3, 12)
    assert loss == 0.75 * 3 / 12
    for p, g in zip(params, grads, strict=True):
        assert p.grad is not None
        assert p.grad.device == p.device
        assert torch.equal(p.grad, g * (3 / 12))
    assert torch.equal(without_grad.grad, torch.zeros(2, device=device))  # type: ignore[arg-type]
    # No parameters at all: the loss alone travels, on a tensor the backend can reduce.
    assert replicas.all_reduce_gradients([], 0.5, 1, 2) == 0.25
    with pytest.raises(ValueError, match="got count=3, total=2"):
        replicas.all_reduce_gradients(params, 1.0, 3, 2)


@settings(max_examples=15)
@given(
    size=st.integers(1, 12),
    world_size=st.integers(1, 5),
    classification=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shard_gradients_weighted_by_examples_sum_to_the_batch_gradient(
    size: int, world_size: int, classification: bool, seed: int
) -> None:
    """Σ_r (n_r/N) · g_r = g for mean-reduced losses, ragged and empty shards included."""
    gen = torch.Generator().manual_seed(seed)
    model = hnn.from_torch(
        torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    ).double()
    loss_fn = hnn.CrossEntropyLoss() if classification else hnn.MSELoss()
    x = torch.randn(size, 3, generator=gen, dtype=torch.float64)
    y = (
        torch.randint(0, 4, (size,), generator=gen)
        if classification
        else torch.randn(size, 4, generator=gen, dtype=torch.float64)
    )

    def gradient(index: Tensor) -> tuple[float, list[Tensor]]:
        for p in model.parameters():
            p.grad = None
        loss = float(loss_fn(model(x[index]), y[index]))
        model.backward(loss_fn.backward(), input_grad=False)
        return loss, [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]

    expected_loss, expected = gradient(torch.arange(size))
    total_loss, total = 0.0, [torch.zeros_like(g) for g in expected]
    for rank in range(world_size):
        index = Replicas(rank, world_size).shard(torch.arange(size))
        if len(index) == 0:
            continue  # an empty shard sends zeros
        loss, grads = gradient(index)
        total_loss += loss * len(index) / size
        total = [t + g * (len(index) / size) for t, g in zip(total, grads, strict=True)]
    assert total_loss == pytest.approx(expected_loss, rel=1e-12)
    for t, g in zip(total, expected, strict=True):
        torch.testing.assert_close(t, g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (["--dist-timeout", "0"], {}, "--dist-timeout must be a positive number of seconds, got 0"),
        ([], {"RANK": "one", "WORLD_SIZE": "2"}, "RANK must be an integer, got 'one'"),
    ],
)
def test_cli_distributed_errors_are_one_line_and_exit_2(
    args: list[str],
    environ: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    status = main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), *args])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_dropout_with_its_own_generator_cannot_be_sharded() -> None:
    model = hnn.Sequential(hnn.Linear(2, 2), hnn.Dropout(0.5, generator=torch.Generator()))
    with pytest.raises(ValueError, match="dropout with its own generator cannot be sharded"):
        distributed.shard_dropout(model, ShardWindow())


def test_launch_rejects_a_bad_world_size() -> None:
    with pytest.raises(ValueError, match="world_size must be a positive integer, got 0"):
        distributed.launch(print, 0)


def test_compare_data_parallel_refuses_cuda() -> None:
    with pytest.raises(ValueError, match="runs on the CPU, got device 'cuda'"):
        compare_data_parallel("cubic", "sgd", TrainConfig(device="cuda"), processes=2)


def test_a_single_process_group_takes_the_single_process_path() -> None:
    with distributed.process_group(environ={"RANK": "0", "WORLD_SIZE": "1"}) as replicas:
        assert replicas is None
    with (
        pytest.raises(ValueError, match="timeout must be a positive number"),
        distributed.process_group(timeout=0),
    ):
        pass


# ------------------------------------------------------------------ two processes


@pytest.fixture(scope="module")
def digits_one_process() -> ComparisonResult:
    return compare_optimizers("digits", "sgd,adam", DIGITS)


# Two-process runs in float64 on the cubic task: (backend, optimizers, dropout, lr).
FLOAT64_CASES: dict[str, tuple[Backend, str, float, float | None]] = {
    "handgrad-dropout": ("handgrad", "adam,sgd", 0.3, None),
    "torch-dropout": ("torch", "adam,sgd", 0.3, None),  # autograd replicas, torch.optim
    "handgrad-lbfgs": ("handgrad", "lbfgs", 0.0, 0.1),  # an all-reduce in every closure call
}


def float64_case(name: str) -> tuple[Task, str, TrainConfig]:
    backend, optimizers, dropout, lr = FLOAT64_CASES[name]
    task = dataclasses.replace(float64_cubic_with_dropout(), dropout=dropout)
    # L-BFGS without its default line search: the strong-Wolfe search branches on comparisons
    # that rounding in the all-reduce can tip (torch's own LBFGS over autograd replicas: test
    # loss 0.0267 in one process, 0.0234 in two, after one epoch, the same as ours).
    options = {"lbfgs": {"line_search_fn": None}} if "lbfgs" in optimizers else {}
    return task, optimizers, TrainConfig(epochs=2, batch_size=333, backend=backend, lr=lr,
                                         options=options)


def _float64_cases_then_interrupted_digits(checkpoint: Path) -> dict[str, ComparisonResult]:
    # Several runs in one launch: starting processes costs more than these small runs.
    def stop(optimizer: str, record: EpochRecord) -> None:
        if record.epoch == 2 and optimizer == "adam":  # the checkpoint then holds epoch 1
            raise KeyboardInterrupt

    with distributed.process_group(timeout=60):
        results = {name: compare_optimizers(*float64_case(name)) for name in FLOAT64_CASES}
        with pytest.raises(KeyboardInterrupt):
            compare_optimizers("digits", "sgd,adam", DIGITS, checkpoint=checkpoint, on_epoch=stop)
        return results


@pytest.fixture(scope="module")
def two_process_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, ComparisonResult], Path]:
    checkpoint = tmp_path_factory.mktemp("two-processes") / "checkpoint.pt"
    results = distributed.launch(_float64_cases_then_interrupted_digits, 2, checkpoint)
    return results, checkpoint


@pytest.mark.parametrize("name", list(FLOAT64_CASES))
def test_two_processes_match_one_float64_dropout_empty_shard_torch_lbfgs(
    name: str, two_process_runs: tuple[dict[str, ComparisonResult], Path]
) -> None:
    """Batches of 333 of 1000 examples: the last batch of 1 leaves rank 1 an empty shard."""
    one = compare_optimizers(*float64_case(name))
    assert_close_histories(one, two_process_runs[0][name], rtol=1e-10)


def test_two_processes_resume_and_match_one_on_digits_float32(
    digits_one_process: ComparisonResult,
    two_process_runs: tuple[dict[str, ComparisonResult], Path],
) -> None:
    checkpoint = two_process_runs[1]
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == 1  # interrupted in epoch 2; rank 0 wrote after epoch 1
    assert saved["settings"]["world_size"] == 2
    # One process cannot resume a two-process run: the settings say so.
    with pytest.raises(ValueError, match="world_size=2 there, 1 here"):
        compare_optimizers("digits", "sgd,adam", DIGITS, checkpoint=checkpoint, resume=True)
    resumed = compare_data_parallel(
        "digits", "sgd,adam", DIGITS, processes=2, timeout=60, checkpoint=checkpoint, resume=True
    )
    # Epoch 1 from the interrupted run, epochs 2-3 from the resumed one: all as one process.
    assert_close_histories(digits_one_process, resumed, rtol=1e-4)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3


def _lose_a_peer(mode: str, timeout: float, meeting: Path, kind: str = "cpu") -> None:
    # Meet before joining, so that a slow start on a busy machine does not use up the short
    # timeout in the rendezvous.
    rank = int(os.environ["RANK"])
    (meeting / str(rank)).touch()
    while not (meeting / str(1 - rank)).exists():
        time.sleep(0.01)
    device = distributed.local_device(kind)  # cuda: this rank's GPU, nccl
    with distributed.process_group(device, timeout=timeout) as replicas:
        assert replicas is not None
        params = [torch.ones(3, device=device)]
        params[0].grad = torch.ones(3, device=device)
        assert replicas.all_reduce_gradients(params, 1.0, 1, 2) == 1.0  # both ranks alive
        if replicas.rank == 1:
            if mode == "dies":
                os._exit(3)
            if mode == "raises":
                raise ValueError("disk on fire")
            time.sleep(timeout + 2)  # hangs past the timeout, then leaves quietly
            return
        started = time.monotonic()
        try:
            replicas.all_reduce_gradients(params, 1.0, 1, 2)
        except DistributedError as error:
            raise DistributedError(f"{error} [after {time.monotonic() - started:.1f} s]") from None


@pytest.mark.parametrize(
    ("kind", "timeout"),
    # nccl builds its communicator in the first collective: a longer timeout leaves it room.
    [
        pytest.param("cpu", 3.0, id="gloo"),
        pytest.param("cuda", 10.0, id="nccl", marks=NEEDS_TWO_GPUS),
    ],
)
@pytest.mark.parametrize("mode", ["dies", "raises", "hangs"])
def test_a_lost_peer_makes_the_other_rank_fail_in_bounded_time_naming_it(
    mode: str, kind: str, timeout: float, tmp_path: Path
) -> None:
    with pytest.raises(DistributedError) as caught:
        distributed.launch(_lose_a_peer, 2, mode, timeout, tmp_path, kind)
    message = str(caught.value)
    assert "rank 0 (exit code 1): DistributedError: rank 0 of 2: the gradient all-reduce" in message
    waited = float(message.split("[after ")[1].split(" s]")[0])
    assert waited < timeout + 5  # the timeout, and the grace for naming the peer
    lost = f"the gradient all-reduce failed (timeout {timeout:g} s): "
    peer = re.escape(lost) + r"rank 1 \(pid \d+\) "
    if mode == "dies":
        died = r"died without a word \(a crash, or killed by a signal\)"
        assert re.search(peer + died, message), message
        assert "rank 1 (exit code 3): it died without a report" in message
    elif mode == "raises":
        assert re.search(peer + r"failed: ValueError: disk on fire", message), message
        assert "rank 1 (exit code 1): ValueError: disk on fire" in message
    else:
        assert lost + "another process died or stopped responding" in message
        assert waited >= timeout - 0.5  # it did wait for the hung peer, up to the timeout


@pytest.mark.parametrize(
    "train_device",
    [pytest.param("cpu", id="gloo"), pytest.param("cuda", id="nccl", marks=NEEDS_TWO_GPUS)],
)
def test_torchrun_cli_trains_two_ranks_and_rank_0_alone_writes(
    train_device: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """gloo on the CPU; with two GPUs, nccl with one GPU per rank (``--device cuda``),
    compared with one process on the first GPU."""
    one: ComparisonResult = (
        request.getfixturevalue("digits_one_process")
        if train_device == "cpu"
        else compare_optimizers("digits", "sgd,adam", dataclasses.replace(DIGITS, device="cuda"))
    )
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(distributed.free_port()),
        "-m",
        "handgrad",
        "train",
        "--task",
        "digits",
        "--optimizers",
        "sgd,adam",
        "--epochs",
        "3",
        "--batch-size",
        "100",
        "--out",
        str(out),
        "--dist-timeout",
        "30",
        "--device",
        train_device,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("test accuracy") == 1  # one table, from rank 0
    assert done.stdout.count("wrote ") == 1
    assert sorted(path.name for path in out.iterdir()) == [
        "checkpoint.pt",
        "loss_curves.png",
        "metrics.json",
        "predictions.csv",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    for document, run in zip(metrics["runs"], one.runs, strict=True):
        assert document["optimizer"] == run.optimizer
        assert document["test_loss"] == pytest.approx(run.final.test_loss, rel=1e-4)


# ------------------------------------------------------------------ two GPUs (nccl)


def _portable(result: ComparisonResult) -> dict[str, tuple[list[dict[str, float]], list[Tensor]]]:
    """Each run's history and final parameters, on the CPU (to cross the process boundary)."""
    return {
        run.optimizer: (
            [record.as_dict() for record in run.history],
            [p.detach().cpu() for p in run.model.parameters()],
        )
        for run in result.runs
    }


def _assert_same_runs(
    one: ComparisonResult,
    many: dict[str, tuple[list[dict[str, float]], list[Tensor]]],
    rtol: float,
) -> None:
    assert [run.optimizer for run in one.runs] == list(many)
    for run in one.runs:
        history, params = many[run.optimizer]
        assert [record.epoch for record in run.history] == [row["epoch"] for row in history]
        for record, row in zip(run.history, history, strict=True):
            assert row["test_loss"] == pytest.approx(record.test_loss, rel=rtol), run.optimizer
            assert row["train_loss"] == pytest.approx(record.train_loss, rel=rtol), run.optimizer
        for p, q in zip(run.model.parameters(), params, strict=True):
            torch.testing.assert_close(q, p.detach().cpu(), rtol=rtol * 10, atol=rtol * 10)


def _on_two_gpus(checkpoint: Path, resume: bool) -> dict[str, Any]:
    # One GPU per rank (cuda:LOCAL_RANK), nccl. First launch: the float64 cases, then a
    # dropout run interrupted in epoch 2 (the checkpoint holds epoch 1, written by rank 0
    # with rank 0's CUDA generator state). Second launch: every rank resumes it on its GPU.
    device = distributed.local_device("cuda")
    task, optimizers, config = float64_case("handgrad-dropout")
    interrupted = dataclasses.replace(config, epochs=3, device=str(device))

    def stop(optimizer: str, record: EpochRecord) -> None:
        if record.epoch == 2 and optimizer == "sgd":
            raise KeyboardInterrupt

    with distributed.process_group(device, timeout=60):
        if resume:
            result = compare_optimizers(
                task, optimizers, interrupted, checkpoint=checkpoint, resume=True
            )
            return {"resumed": _portable(result)}
        runs: dict[str, Any] = {}
        for name in FLOAT64_CASES:
            if name == TORCH_CUDA_DROPOUT:
                continue
            case_task, case_optimizers, case_config = float64_case(name)
            on_gpu = dataclasses.replace(case_config, device=str(device))
            runs[name] = _portable(compare_optimizers(case_task, case_optimizers, on_gpu))
        with pytest.raises(KeyboardInterrupt):
            compare_optimizers(task, optimizers, interrupted, checkpoint=checkpoint, on_epoch=stop)
        return runs


@pytest.fixture(scope="module")
def two_gpu_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    checkpoint = tmp_path_factory.mktemp("two-gpus") / "checkpoint.pt"
    return distributed.launch(_on_two_gpus, 2, checkpoint, False), checkpoint


@pytest.mark.parametrize("name", [pytest.param(n, marks=NEEDS_TWO_GPUS) for n in FLOAT64_CASES])
def test_two_gpus_match_one_gpu_float64_dropout_empty_shard_torch_lbfgs(
    name: str, two_gpu_runs: tuple[dict[str, Any], Path]
) -> None:
    """nccl twin of the gloo test: two ranks on two GPUs, one process on the first GPU."""
    if name == TORCH_CUDA_DROPOUT:
        pytest.skip(
            "torch's CUDA dropout draws its mask in a fused kernel, not with bernoulli_ on the "
            "global batch: one process and two shards differ by design (CPU: tested with gloo)"
        )
    task, optimizers, config = float64_case(name)
    one = compare_optimizers(task, optimizers, dataclasses.replace(config, device="cuda"))
    _assert_same_runs(one, two_gpu_runs[0][name], rtol=1e-10)


@pytest.mark.cuda
@pytest.mark.skipif(CUDA_DEVICES < 2, reason=TWO_GPUS_REASON)
def test_two_gpus_resume_with_dropout_and_match_one_gpu(
    two_gpu_runs: tuple[dict[str, Any], Path],
) -> None:
    """Every rank restores its own GPU's generator from rank 0's checkpoint: the dropout
    masks after the resume are the global batch's, as in one process."""
    checkpoint = two_gpu_runs[1]
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == 1
    assert saved["settings"]["device"] == "cuda"  # the kind: each rank has its own index
    assert "cuda_device" in saved["rng"]
    resumed = distributed.launch(_on_two_gpus, 2, checkpoint, True)["resumed"]
    task, optimizers, config = float64_case("handgrad-dropout")
    one = compare_optimizers(task, optimizers, dataclasses.replace(config, epochs=3, device="cuda"))
    _assert_same_runs(one, resumed, rtol=1e-10)
