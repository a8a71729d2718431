"""Data-parallel workers: the local launcher and the small collective helpers the trainer needs.

`nmt train --gpus N` starts N local workers itself (`nmt.launcher`: Ctrl-C and SIGTERM stop
them as they stop one process, and they die with it), on one node or, with
`--nnodes/--node-rank/--master-addr`, on several. Under an external `torchrun`,
RANK/WORLD_SIZE/LOCAL_RANK are already in the environment and the same command trains as one of
the workers; under `srun` with one task per GPU, SLURM's task ids stand in for them (with
MASTER_ADDR exported). On GPUs the workers talk through NCCL, on CPU through gloo
(`--device cpu --gpus 2` runs two CPU workers).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nmt.errors import ConfigError, NmtError
from nmt.launcher import Launch

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)  # covers rank 0 validating alone


class WorkerError(NmtError):
    """A worker process failed; the message is the worker's own one-line error."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
    local_size: int = 1  # workers on each machine
    hosts: dict[int, str] = dataclasses.field(default_factory=dict)  # rank -> its host name
    namespace: str = ""  # this attempt's keys in the rendezvous store (nmt.train.peers)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: str, threads: int | None = None,
          rendezvous_timeout: float = Launch.rendezvous_timeout) -> World:
    """Join the process group when launched as one of several workers (all of them must
    join within `rendezvous_timeout` seconds, see nmt.train.peers); pick the device."""
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
    hosts: dict[int, str] = {}
    namespace = ""
    if size > 1 and not torch.distributed.is_initialized():
        from nmt.train import peers

        store, namespace, hosts = peers.join(rank, size, local_size, rendezvous_timeout)
        store.set_timeout(COLLECTIVE_TIMEOUT)
        backend = "nccl" if kind == "cuda" else "gloo"
        torch.distributed.init_process_group(
            backend, store=torch.distributed.PrefixStore("pg/", store), rank=rank,
            world_size=size, timeout=COLLECTIVE_TIMEOUT,
            device_id=dev if kind == "cuda" else None)
    return World(rank=rank, size=size, local_rank=local_rank, device=dev,
                 local_size=local_size, hosts=hosts, namespace=namespace)


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


def launch(fn: Callable[..., Any], args: tuple, spec: Launch) -> Any:
    """Run `fn(*args)` in `spec.nproc` local workers (`nmt.launcher`); returns rank 0's result
    (None on the other nodes). A signal that stopped the run is the one the result names."""
    from nmt import launcher

    if spec.nnodes == 1:
        port = spec.master_port or _free_port()
    else:
        port = spec.master_port or 29500
    try:
        outcome = launcher.start(fn, args, nproc=spec.nproc, node_rank=spec.node_rank,
                                 nnodes=spec.nnodes, master_addr=spec.master_addr,
                                 master_port=port)
    except launcher.WorkerFailed as exc:
        if exc.details:
            print(exc.details, file=sys.stderr, end="" if exc.details.endswith("\n") else "\n")
        raise WorkerError(exc.message, exc.exit_code) from None
    result = outcome.results.get(0)
    if outcome.stop_signal and getattr(result, "signal", None):
        # workers ignore SIGINT and hear of any stop as SIGTERM; name what the user sent
        result = dataclasses.replace(result, signal=outcome.stop_signal)
    return result
