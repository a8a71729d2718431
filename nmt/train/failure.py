"""How a failing worker of a multi-worker run reaches the user: one line on the terminal, the
details in the run directory (`logs/worker-R.log`).

A worker's own error (an `NmtError`) is already one line. Anything else is either a lost peer
(a collective failed because a worker or node went away: the heartbeat says which) or a crash;
both become one line, and the traceback goes to the log. A lost peer's line says who was lost,
at which step, which checkpoint is intact and the command that resumes from it.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from nmt import launcher
from nmt.distributed import Launch, World
from nmt.errors import NmtError
from nmt.train import peers, rundir

log = logging.getLogger(__name__)


class WorkerCrash(NmtError):
    """A worker failed with an error nmt did not expect; its traceback is in the run's logs."""


class Watch:
    """The heartbeat of this worker (in a multi-worker run) and what it knows of the run's
    progress, for the one line a failure becomes."""

    def __init__(self, run: str | os.PathLike, world: World, launch: Launch) -> None:
        self.run = Path(run)
        self.world = world
        self.step: Callable[[], int | None] = lambda: None
        self.heartbeat = None
        if world.distributed:
            self.heartbeat = peers.Heartbeat(
                rank=world.rank, size=world.size, local_size=world.local_size,
                hosts=world.hosts, namespace=world.namespace, timeout=launch.peer_timeout,
                on_lost=self._end_now).start()

    def follow(self, state) -> None:
        """Report `state.step` from now on."""
        self.step = lambda: state.step

    def stop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def failure(self, exc: Exception) -> NmtError:
        """`exc`, which nmt did not raise itself, as the one-line error of this worker. A
        failed collective waits for the heartbeat to say who was lost; any other error only
        asks whether a loss is known already."""
        lost = None
        if self.heartbeat is not None:
            lost = self.heartbeat.verdict(None if collective_failure(exc) else 0.0)
        if lost is not None:
            message = self.lost_message(lost)
            self._log(message, exc)
            return peers.PeerLost(message)
        last = "".join(traceback.format_exception_only(exc)).strip().splitlines()
        what = last[-1] if last else type(exc).__name__
        where = self._log(what, exc)
        detail = f" (traceback in {where})" if where else ""
        return WorkerCrash(f"worker {self.world.rank} failed {self._at()}: {what}{detail}")

    def lost_message(self, lost: str) -> str:
        """'lost worker 1 (node 1, host b): ... at step 40; ... is intact: rerun ...'."""
        found = rundir.latest_resumable_step(self.run)
        if found is None:
            then = f"no checkpoint was written yet; to start again, {resume_command()}"
        else:
            step, path = found
            then = f"checkpoint {path} (step {step}) is intact; to resume, {resume_command()}"
        return f"{lost}, {self._at()}; {then}"

    def _at(self) -> str:
        step = self.step()
        return "before the first update" if step is None else f"at step {step}"

    def _end_now(self, lost: str) -> None:
        """The heartbeat found a lost worker while this one waits in a collective."""
        message = self.lost_message(lost)
        self._log(message, None)
        if launcher.in_worker():
            launcher.fail_now(message)
        if self.world.local_rank == 0:  # torchrun or srun: one line per node
            print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(2)

    def _log(self, message: str, exc: BaseException | None) -> Path | None:
        """Append the failure to this worker's log; its path, or None if it cannot be
        written (the line on the terminal says what matters)."""
        path = rundir.worker_log(self.run, self.world.rank)
        text = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}\n"
        if exc is not None:
            text += "".join(traceback.format_exception(exc))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
        except OSError as err:
            log.debug("cannot write %s: %s", path, err)
            return None
        return path


def collective_failure(exc: Exception) -> bool:
    """A collective that failed because a peer went away: torch's distributed errors, and
    gloo's transport errors, which it raises as plain RuntimeErrors."""
    import torch

    return isinstance(exc, torch.distributed.DistError) or "gloo" in str(exc)


def resume_command() -> str:
    """What resumes this run, as far as a worker can tell how it was started."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return "run the same torchrun command on every node"
    if os.environ.get("SLURM_JOB_ID") and not launcher.in_worker():
        return "run the same srun command again"
    return f"run every node's command again (this node's: {shlex.join(['nmt', *sys.argv[1:]])})"
