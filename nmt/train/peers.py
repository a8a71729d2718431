"""The other workers of a run on several machines: joining them within a bounded time, and
noticing within a bounded time when one is lost.

`join` is the rendezvous. Every worker connects to the TCP store at MASTER_ADDR:MASTER_PORT
(hosted by rank 0, or by torchrun's agent on node 0), claims its rank and says which host it is
on. A worker that has not joined after `--rendezvous-timeout` seconds ends every other one with
a line naming it; two workers claiming one rank (the same `--node-rank` given twice) or nodes
that disagree on the number of workers are refused at once. The process group is then built on
that store, so its own joining cannot hang.

`Heartbeat` is a thread in every worker that counts up a key of its own in the store every few
seconds. Rank 0 watches every count; the others watch rank 0's, and read what rank 0 found. A
count that stands still for `--peer-timeout` seconds, or a store that no longer answers (node 0
gone), means a lost worker. The threads beat while their main thread computes, validates or
saves, so only a dead process, machine or network counts as lost. The main thread, if a
collective failed (gloo notices a closed connection), asks the heartbeat which worker was lost;
a collective that just waits (NCCL, or any backend behind a silent network) is ended by the
thread itself, which then ends the process.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
from collections.abc import Callable

import torch

from nmt.errors import NmtError

MAX_BEAT_INTERVAL = 2.0  # seconds between beats (a quarter of a short --peer-timeout)
HANDOVER = 5.0  # seconds the main thread gets to report a loss before the thread ends it
POLL = 0.2  # seconds between looks at who has joined


class RendezvousError(NmtError):
    """The workers could not all meet."""


class PeerLost(NmtError):
    """A worker of the run stopped answering."""


# --- who is where ----------------------------------------------------------------------------
def node_of(rank: int, local_size: int) -> int:
    """The node of global rank `rank`: every launcher (nmt's, torchrun, srun with block
    distribution) numbers one node's workers consecutively."""
    return rank // max(1, local_size)


def describe(ranks: list[int], local_size: int, hosts: dict[int, str] | None = None) -> str:
    """'worker 3 (node 1, host b)' / 'workers 2, 3 (node 1)', grouped by node."""
    by_node: dict[int, list[int]] = {}
    for rank in sorted(ranks):
        by_node.setdefault(node_of(rank, local_size), []).append(rank)
    parts = []
    for node, members in by_node.items():
        where = f"node {node}"
        host = (hosts or {}).get(members[0])
        if host:
            where += f", host {host}"
        noun = "worker" if len(members) == 1 else "workers"
        parts.append(f"{noun} {', '.join(map(str, members))} ({where})")
    return "; ".join(parts)


def store_address() -> tuple[str, int]:
    """MASTER_ADDR and MASTER_PORT, as every launcher exports them."""
    addr = os.environ.get("MASTER_ADDR") or "127.0.0.1"
    port = os.environ.get("MASTER_PORT", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RendezvousError(f"MASTER_PORT {port!r} is not a port number")
    return addr, int(port)


def _attempt(tcp: torch.distributed.Store, rank: int) -> str:
    """The key prefix of this attempt at the run. torchrun keeps its store across the restarts
    of a group, and the agents' restart counts differ (a node that restarts because another
    failed does not count it), but each rank joins once per attempt: the number of times this
    rank has joined is every rank's attempt number."""
    return f"nmt/{tcp.add(f'nmt/attempts/{rank}', 1)}/"


def _connect(timeout: float, *, host_it: bool) -> torch.distributed.Store:
    addr, port = store_address()
    return torch.distributed.TCPStore(addr, port, None, host_it,
                                      datetime.timedelta(seconds=timeout),
                                      wait_for_workers=False, multi_tenant=True)


def _await_listener(addr: str, port: int, deadline: float) -> None:
    """Return once something listens on addr:port; OSError at the deadline."""
    while True:
        try:
            with socket.create_connection((addr, port), timeout=max(0.1, min(
                    2.0, deadline - time.monotonic()))):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(POLL)


# --- the rendezvous --------------------------------------------------------------------------
def join(rank: int, size: int, local_size: int, timeout: float
         ) -> tuple[torch.distributed.Store, str, dict[int, str]]:
    """Meet the other `size - 1` workers within `timeout` seconds; returns the store to build
    the process group on, the key prefix of this attempt (for `Heartbeat`) and each rank's
    host name."""
    addr, port = store_address()
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun hosts it
    host_it = rank == 0 and not agent
    deadline = time.monotonic() + timeout
    try:
        if not host_it:  # wait for node 0 quietly: c10d logs every failed try of its own
            _await_listener(addr, port, deadline)
        tcp = _connect(max(1.0, deadline - time.monotonic()), host_it=host_it)
    except (RuntimeError, OSError) as exc:
        if host_it:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RendezvousError(f"cannot host the rendezvous on port {port}: {first}; "
                                  "choose another --master-port") from None
        raise RendezvousError(
            f"node 0's rendezvous at {addr}:{port} did not answer within {timeout:g} s "
            "(--rendezvous-timeout); start the same command on node 0, or check "
            "--master-addr/--master-port") from None
    lost_master = RendezvousError(f"node 0 ({addr}:{port}) went away during the rendezvous")
    try:
        # torchrun numbers its workers itself; nmt's launcher and srun take the node's rank
        # from the user, who may give one twice
        if not agent and tcp.add(f"nmt/claim/{rank}", 1) > 1:
            raise RendezvousError(
                f"another worker has joined as rank {rank} already: was the same --node-rank "
                f"given to two nodes? (node {node_of(rank, local_size)})")
        namespace = _attempt(tcp, rank)
        store = torch.distributed.PrefixStore(namespace, tcp)
        store.set(f"join/{rank}", json.dumps({"host": socket.gethostname(), "size": size}))
        store.add("joined", 1)
        while store.add("joined", 0) < size:
            if time.monotonic() > deadline:
                missing = [r for r in range(size) if not store.check([f"join/{r}"])]
                raise RendezvousError(
                    f"rendezvous at {addr}:{port}: {describe(missing, local_size)} did not "
                    f"join within {timeout:g} s (--rendezvous-timeout); start the same "
                    "command on every node, each with its own --node-rank")
            time.sleep(POLL)
        infos = [json.loads(value) for value in
                 store.multi_get([f"join/{r}" for r in range(size)])]
    except (RuntimeError, OSError):
        raise lost_master from None
    other = [r for r, info in enumerate(infos) if info.get("size") != size]
    if other:
        raise RendezvousError(
            f"{describe(other, local_size)} expects {infos[other[0]].get('size')} workers "
            f"and this one {size}: give every node the same --nnodes and --gpus")
    return store, namespace, {r: str(info.get("host", "")) for r, info in enumerate(infos)}


# --- the heartbeat ---------------------------------------------------------------------------
class Heartbeat:
    """A daemon thread that beats for this worker and watches the others (see the module's
    docstring). `verdict` tells the main thread who was lost; if the main thread does not ask
    within HANDOVER seconds of a loss (it waits in a collective), `on_lost` is called on the
    thread with the same message and must end the process."""

    def __init__(self, *, rank: int, size: int, local_size: int, hosts: dict[int, str],
                 namespace: str, timeout: float, on_lost: Callable[[str], None]) -> None:
        self.rank, self.size, self.local_size, self.hosts = rank, size, local_size, hosts
        self.namespace = namespace
        self.timeout = timeout
        self.interval = min(MAX_BEAT_INTERVAL, timeout / 4)
        self.on_lost = on_lost
        self._lost: str | None = None
        self._found = threading.Event()
        self._taken = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nmt-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and watching (the run is over, or ends with its own error)."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 1.0)

    def verdict(self, wait: float | None = None) -> str | None:
        """Who was lost, waiting up to `wait` seconds (default: long enough for the heartbeat
        to notice); None if every worker still answers."""
        self._found.wait(self.timeout + 2 * self.interval if wait is None else wait)
        if self._lost is not None:
            self._taken.set()
        return self._lost

    # -- the thread --
    def _run(self) -> None:
        try:
            store = torch.distributed.PrefixStore(self.namespace + "beat/", _connect(
                self.timeout, host_it=False))
        except (RuntimeError, OSError):
            if not self._stop.is_set():
                self._declare([0], "its rendezvous store stopped answering")
            return
        watched = range(1, self.size) if self.rank == 0 else [0]
        start = time.monotonic()
        seen = {r: (0, start) for r in watched}  # rank -> (count, when it last moved)
        while not self._stop.wait(self.interval):
            try:
                store.add(str(self.rank), 1)
                counts = {r: store.add(str(r), 0) for r in watched}
                reported = store.get("lost") if store.check(["lost"]) else None
            except (RuntimeError, OSError):
                if not self._stop.is_set():
                    self._declare([0], "node 0 stopped answering")
                return
            if reported is not None and self.rank != 0:
                found = json.loads(reported)
                self._declare(found["ranks"], found["why"])
                return
            now = time.monotonic()
            silent = []
            for r, count in counts.items():
                if count != seen[r][0]:
                    seen[r] = (count, now)
                elif now - seen[r][1] > self.timeout:
                    silent.append(r)
            if silent:
                why = f"no heartbeat for {self.timeout:g} s (--peer-timeout)"
                if self.rank == 0:
                    try:
                        store.set("lost", json.dumps({"ranks": silent, "why": why}))
                    except (RuntimeError, OSError):
                        pass
                self._declare(silent, why)
                return

    def _declare(self, ranks: list[int], why: str) -> None:
        if self._stop.is_set():  # the run ended first: what went away was its end
            return
        self._lost = f"lost {describe(ranks, self.local_size, self.hosts)}: {why}"
        self._found.set()
        if not self._taken.wait(HANDOVER) and not self._stop.is_set():
            self.on_lost(self._lost)
