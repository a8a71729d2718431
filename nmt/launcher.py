"""nmt's local launcher: N worker processes on this machine, stopped the way one process is;
and `Launch`, the where-and-how-many of a run's workers that every launcher path reads.

Each worker is a `spawn`ed process with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR and MASTER_PORT in its environment, so `torch.distributed`'s `env://` init joins
the workers of this machine and of the other nodes. A worker reports through a pipe: ("ok",
result), ("error", message, exit code) for nmt's one-line errors, or ("crash", traceback).

Signals: the launcher owns Ctrl-C. Workers start with SIGINT ignored (so the terminal's Ctrl-C,
which reaches the whole process group, reaches them through the launcher only); the first
SIGINT/SIGTERM to the launcher becomes one SIGTERM to each worker (they finish the step, write a
checkpoint and report), a second one SIGKILLs them and raises KeyboardInterrupt. A worker that
fails gets its peers terminated (SIGTERM, SIGKILL after a grace period), so none hangs in a
collective. Workers die with the launcher: a parent-death signal (Linux) and, everywhere, a
watchdog thread that exits once the parent is gone. Nothing is written to disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from nmt import host

GRACE = 5.0  # seconds a terminated worker gets before SIGKILL
WATCHDOG_INTERVAL = 0.5  # seconds between a worker's looks at its parent
PR_SET_PDEATHSIG = 1

_in_worker = False  # set in processes this launcher started
_report: Connection | None = None  # a worker's pipe to the launcher, until its report is sent
_report_lock = threading.Lock()


def in_worker() -> bool:
    """True inside a worker of `start`: the launcher decides what a repeated signal means."""
    return _in_worker


def fail_now(message: str, exit_code: int = 2) -> None:
    """From any thread of a worker: report `message` as its one-line error and end the
    process at once (its main thread may be stuck in a collective that never returns)."""
    _send(("error", message, exit_code))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def _send(report: tuple) -> tuple:
    """Send the worker's one report, whichever thread comes first; returns what was sent (a
    crash report in place of an unpicklable result)."""
    global _report
    with _report_lock:
        conn, _report = _report, None
        if conn is None:
            return report
        try:
            conn.send(report)
        except Exception:  # noqa: BLE001 - an unpicklable result
            report = ("crash", traceback.format_exc())
            conn.send(report)
        conn.close()
    return report


class WorkerFailed(Exception):
    """A worker failed; `message` is its own one-line error or a summary of its crash."""

    def __init__(self, rank: int, message: str, exit_code: int, details: str | None = None):
        super().__init__(message)
        self.rank, self.message, self.exit_code, self.details = rank, message, exit_code, details


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
    rendezvous_timeout: float = 600.0  # seconds for every node's workers to join (torchrun's)
    peer_timeout: float = 60.0  # seconds without a heartbeat before a worker counts as lost

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


@dataclass
class Worker:
    rank: int
    process: Any  # multiprocessing's SpawnProcess
    conn: Connection | None  # None once its report (or EOF) has arrived
    report: tuple | None = None
    signalled: set[int] = field(default_factory=set)

    @property
    def alive(self) -> bool:
        return self.process.exitcode is None

    def kill(self, sig: int) -> None:
        if sig in self.signalled or self.process.pid is None:
            return
        self.signalled.add(sig)
        with contextlib.suppress(OSError):
            os.kill(self.process.pid, sig)


@dataclass
class Outcome:
    results: dict[int, Any]  # global rank -> what fn returned
    stop_signal: str | None  # the signal that stopped the run, if any


def start(fn: Callable[..., Any], args: tuple, *, nproc: int, node_rank: int = 0, nnodes: int = 1,
          master_addr: str = "127.0.0.1", master_port: int) -> Outcome:
    """Run `fn(*args)` in `nproc` local workers and wait for all of them.

    Raises WorkerFailed for the first failure (a worker's own error preferred to a crash), and
    KeyboardInterrupt when a second signal stopped the run, or a signal stopped workers that had
    nothing to report.
    """
    payload = pickle.dumps((fn, args))
    ctx = multiprocessing.get_context("spawn")
    common = {"WORLD_SIZE": str(nproc * nnodes), "LOCAL_WORLD_SIZE": str(nproc),
              "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)}
    workers: list[Worker] = []
    stopping: list[str] = []  # the signals received

    def on_signal(signum, frame) -> None:
        stopping.append(signal.Signals(signum).name)
        if len(stopping) == 1:
            for w in workers:
                w.kill(signal.SIGTERM)
        else:
            for w in workers:
                w.kill(signal.SIGKILL)
            raise KeyboardInterrupt

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for local_rank in range(nproc):
            rank = node_rank * nproc + local_rank
            env = {**common, "RANK": str(rank), "LOCAL_RANK": str(local_rank)}
            ours, theirs = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_worker_main, name=f"nmt-worker-{rank}", daemon=False,
                                  args=(payload, env, theirs, os.getpid()))
            # workers inherit an ignored SIGINT from the start: Ctrl-C is the launcher's
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                process.start()
            finally:
                signal.signal(signal.SIGINT, on_signal)
            theirs.close()
            workers.append(Worker(rank, process, ours))
            if stopping:  # a signal came while starting
                workers[-1].kill(signal.SIGTERM)
        _supervise(workers)
    finally:
        for w in workers:  # only after an exception: SIGKILL whatever is left
            if w.alive:
                w.kill(signal.SIGKILL)
            w.process.join()
            if w.conn is not None:
                w.conn.close()
        for s, handler in old.items():
            signal.signal(s, handler)
    return _outcome(workers, stopping)


def _supervise(workers: list[Worker]) -> None:
    """Collect reports and exits; once one worker fails, terminate the others."""
    failed_at: float | None = None
    while any(w.alive or w.conn is not None for w in workers):
        waiting = {w.conn: w for w in workers if w.conn is not None}
        waiting.update({w.process.sentinel: w for w in workers if w.alive})
        for ready in wait(list(waiting), timeout=0.5):
            w = waiting[ready]
            if ready is w.conn:
                try:
                    w.report = w.conn.recv()
                except (EOFError, OSError):
                    pass
                w.conn.close()
                w.conn = None
            else:
                w.process.join(0)
        if failed_at is None and any(_failed(w) for w in workers):
            failed_at = time.monotonic()
            for w in workers:
                if w.alive:
                    w.kill(signal.SIGTERM)
        if failed_at is not None and time.monotonic() - failed_at > GRACE:
            for w in workers:
                if w.alive:
                    w.kill(signal.SIGKILL)


def _failed(w: Worker) -> bool:
    if w.report is not None:
        return w.report[0] != "ok"
    return w.process.exitcode not in (None, 0) and w.conn is None


def _outcome(workers: list[Worker], stopping: list[str]) -> Outcome:
    errors = [w for w in workers if w.report and w.report[0] == "error"]
    if errors:
        _, message, code = errors[0].report
        raise WorkerFailed(errors[0].rank, message, code)
    crashes = [w for w in workers if w.report and w.report[0] == "crash"]
    if crashes:
        rank, details = crashes[0].rank, crashes[0].report[1]
        last = details.strip().splitlines()[-1] if details.strip() else "crashed"
        raise WorkerFailed(rank, f"worker {rank} failed: {last}", 1, details)
    if len(stopping) > 1:
        raise KeyboardInterrupt
    silent = [w for w in workers if w.report is None]
    if silent and stopping:
        raise KeyboardInterrupt  # stopped before training: nothing to report
    if silent:
        w = silent[0]
        code = w.process.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0
               else f"exited with code {code}")
        raise WorkerFailed(w.rank, f"worker {w.rank} {how}; see its output above", 1)
    return Outcome({w.rank: w.report[1] for w in workers}, stopping[0] if stopping else None)


# --- in the worker ------------------------------------------------------------------------------
def _worker_main(payload: bytes, env: dict[str, str], conn: Connection, parent: int) -> None:
    global _in_worker, _report
    _in_worker = True
    _report = conn
    _die_with_parent(parent)
    host.keep_freed_memory()
    os.environ.update(env)
    try:
        fn, args = pickle.loads(payload)
        report: tuple = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 - every failure is reported
        report = _failure(exc)
    report = _send(report)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit({"ok": 0, "error": report[2] if report[0] == "error" else 1}.get(report[0], 1))


def _failure(exc: BaseException) -> tuple:
    from nmt.errors import NmtError

    if isinstance(exc, NmtError):
        return ("error", str(exc), exc.exit_code)
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return ("crash", f"{type(exc).__name__}")
    return ("crash", "".join(traceback.format_exception(exc)))


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the launcher dies: the kernel's parent-death signal on Linux,
    and a watchdog thread that notices a new parent anywhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCHDOG_INTERVAL)
        os._exit(1)

    if os.getppid() != parent:  # the launcher died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="nmt-parent-watchdog", daemon=True).start()
