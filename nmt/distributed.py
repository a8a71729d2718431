"""Data-parallel workers: the local launcher and the small collective helpers the trainer needs.

`nmt train --gpus N` starts N local workers itself through PyTorch's elastic launcher (the
machinery behind `torchrun`), on one node or, with `--nnodes/--node-rank/--master-addr`, on
several. Under an external `torchrun`, RANK/WORLD_SIZE/LOCAL_RANK are already in the environment
and the same command trains as one of the workers; under `srun` with one task per GPU, SLURM's
task ids stand in for them (with MASTER_ADDR exported). On GPUs the workers talk
through NCCL, on CPU through gloo (`--device cpu --gpus 2` runs two CPU workers).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import signal
import socket
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nmt.errors import ConfigError, NmtError

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)  # covers rank 0 validating alone


class WorkerError(NmtError):
    """A worker process failed; the message is the worker's own one-line error."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, kw_only=True)
class Launch:
    """Where and how many workers train; not part of the training recipe."""

    nproc: int = 1  # local worker processes: one per GPU (or CPU workers with --device cpu)
    device: str = "auto"  # auto (cuda when available) | cuda | cpu
    nnodes: int = 1  # machines taking part
    node_rank: int = 0  # this machine's index among them
    master_addr: str = "127.0.0.1"  # address of node 0, where the rendezvous store lives
    master_port: int | None = None  # its port; None: a free port (one node) or 29500
    threads: int | None = None  # CPU threads per worker; None: the cores shared among workers

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def device_kind(requested: str) -> str:
    """`cuda` or `cpu` for `--device auto|cuda|cpu`."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but PyTorch sees no CUDA GPU")
    if requested not in ("cuda", "cpu"):
        raise ConfigError(f"unknown --device {requested!r}; choose auto, cuda or cpu")
    return requested


def externally_launched() -> bool:
    """True inside a worker started by torchrun, SLURM or our own launcher."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def adopt_slurm_tasks() -> bool:
    """Under `srun` with several tasks (and no torchrun), each task is one worker: translate
    SLURM's task ids into RANK/WORLD_SIZE/LOCAL_RANK. MASTER_ADDR must name the first node."""
    env = os.environ
    if externally_launched() or int(env.get("SLURM_NTASKS", "1")) <= 1:
        return False
    if "MASTER_ADDR" not in env:
        raise ConfigError("under srun with several tasks, export MASTER_ADDR (the first node, e.g."
                          " $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1))")
    per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0] or env["SLURM_NTASKS"]
    env.update(RANK=env["SLURM_PROCID"], WORLD_SIZE=env["SLURM_NTASKS"],
               LOCAL_RANK=env.get("SLURM_LOCALID", "0"), LOCAL_WORLD_SIZE=per_node)
    env.setdefault("MASTER_PORT", "29500")
    return True


@dataclass(frozen=True)
class World:
    """This worker's place among all of them."""

    rank: int  # global rank; 0 writes checkpoints and logs
    size: int  # number of workers
    local_rank: int  # index on this machine (selects the GPU)
    device: torch.device  # where this worker's model lives

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: str, threads: int | None = None) -> World:
    """Join the process group when launched as one of several workers; pick the device."""
    kind = device_kind(device)
    rank = int(os.environ.get("RANK", 0))
    size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"worker {local_rank} has no GPU: only "
                              f"{torch.cuda.device_count()} visible")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if threads is not None:
        torch.set_num_threads(threads)
    elif kind == "cpu" and local_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    if size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if kind == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT,
                                             device_id=dev if kind == "cuda" else None)
    return World(rank=rank, size=size, local_rank=local_rank, device=dev)


def teardown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a small tensor over all workers (in place; a no-op for one worker)."""
    if world.distributed:
        torch.distributed.all_reduce(values)
    return values


def broadcast_from_main(values: torch.Tensor, world: World) -> torch.Tensor:
    """Rank 0's `values` on every worker; also a barrier."""
    if world.distributed:
        torch.distributed.broadcast(values, src=0)
    return values


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every worker's `obj`, in rank order."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    torch.distributed.all_gather_object(out, obj)
    return out


# --- the local launcher -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn: Callable[..., Any], args: tuple, error_dir: str) -> Any:
    """Runs in each worker: a user-facing error is written where the launcher will find it."""
    try:
        return fn(*args)
    except NmtError as exc:
        rank = os.environ.get("RANK", "0")
        record = {"message": str(exc), "exit_code": exc.exit_code}
        Path(error_dir, f"rank-{rank}.json").write_text(json.dumps(record), encoding="utf-8")
        raise
    except Exception:
        traceback.print_exc()
        raise


def _children() -> list[int]:
    """Direct child processes of this one (Linux), to pass a stop signal on to the workers."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in task.read_text().split()]
    return pids


@contextlib.contextmanager
def _forward_stop_signals():
    """While workers run, SIGINT/SIGTERM to the launcher become SIGTERM to the workers: each
    finishes its step and writes a checkpoint, and the launcher waits for them to exit."""
    def forward(signum, frame):
        for pid in _children():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def launch(fn: Callable[..., Any], args: tuple, spec: Launch) -> Any:
    """Run `fn(*args)` in `spec.nproc` local workers; returns rank 0's result (None elsewhere)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if spec.nnodes == 1:
        port = spec.master_port or _free_port()
    else:
        port = spec.master_port or 29500
    config = LaunchConfig(
        min_nodes=spec.nnodes, max_nodes=spec.nnodes, nproc_per_node=spec.nproc,
        run_id=f"nmt-{spec.master_addr}-{port}", rdzv_backend="static",
        rdzv_endpoint=f"{spec.master_addr}:{port}",
        rdzv_configs={"rank": spec.node_rank, "timeout": 900}, max_restarts=0,
        monitor_interval=0.2, start_method="spawn", signals_to_handle="SIGHUP,SIGQUIT",
    )
    elastic_log = logging.getLogger("torch.distributed.elastic")
    old_level = elastic_log.level
    elastic_log.setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="nmt-workers-") as error_dir:
        try:
            with _forward_stop_signals():
                results = elastic_launch(config, _entry)(fn, args, error_dir)
        except ChildFailedError as exc:
            raise _worker_error(exc, Path(error_dir)) from None
        finally:
            elastic_log.setLevel(old_level)
    return results.get(0) if results else None


def _worker_error(exc, error_dir: Path) -> WorkerError:
    records = sorted(error_dir.glob("rank-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if records:
        record = json.loads(records[0].read_text(encoding="utf-8"))
        return WorkerError(record["message"], record.get("exit_code", 2))
    rank, failure = exc.get_first_failure()
    return WorkerError(f"worker {rank} failed (exit code {failure.exitcode}); "
                       "see its output above")
