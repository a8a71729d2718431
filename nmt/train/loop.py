"""The training loop: forward, backward, clip, step, log, then whatever `decide` says this step
needs (validate, checkpoint, stop)."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from nmt import launcher
from nmt.train.checkpointing import save, validate_and_save
from nmt.train.config import TrainConfig
from nmt.train.report import Meter, report_step
from nmt.train.session import Session, TrainState
from nmt.train.step import StepOutput, train_step


class StopRequest:
    """SIGINT/SIGTERM: finish the current update, write a checkpoint, exit 0. A second signal
    stops at once (the last checkpoint is intact).

    In a worker of nmt's launcher, SIGINT stays ignored (the launcher owns Ctrl-C and passes a
    stop on as SIGTERM) and a repeated signal is ignored too (SIGTERM may come both from the
    launcher and, say, from systemd or Slurm signalling every process): the launcher kills
    the workers on a second signal of its own.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            if launcher.in_worker():
                return
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            signals = (signal.SIGTERM,) if launcher.in_worker() else (signal.SIGINT, signal.SIGTERM)
            self._old = {s: signal.signal(s, self._handle) for s in signals}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Action:
    """What to do after an update."""

    validate: bool = False  # validate, then write the step checkpoint and best/ (may early-stop)
    save: bool = False  # write the step checkpoint without validating (on a signal)
    stop: str | None = None  # why training ends after this update; None: go on


def decide(cfg: TrainConfig, state: TrainState, out: StepOutput, epoch_done: bool) -> Action:
    """The one place that decides when to validate, checkpoint and stop.

    A signal stops after this update with a checkpoint: validated if the update is a save step
    or an epoch end anyway (so best/ and patience match an uninterrupted run), else without
    validating. Otherwise the reached limit (max steps, max time, max epochs) is the reason to
    stop; a save step (`save_every`), an epoch end (`save_epochs`) or a stop validates and
    checkpoints, unless this position is saved already.
    """
    scheduled = ((out.updated and state.step % cfg.save_every == 0)
                 or (epoch_done and cfg.save_epochs))
    if out.signal:
        if scheduled and state.saved_at != state.position:
            return Action(validate=True, stop="signal")
        return Action(save=True, stop="signal")
    stop = None
    if state.step >= cfg.max_steps:
        stop = "max steps"
    elif out.time_up:
        stop = "max time"
    elif epoch_done and cfg.max_epochs is not None and state.epoch > cfg.max_epochs:
        stop = "max epochs"
    due = scheduled or stop is not None
    return Action(validate=due and state.saved_at != state.position, stop=stop)


def train_loop(sess: Session, state: TrainState, stop: StopRequest) -> str:
    """Train until a stop criterion; returns why it stopped."""
    meter = Meter()
    clock = time.perf_counter()
    epoch, batches = None, []
    while True:
        if epoch != state.epoch:
            epoch, batches = state.epoch, sess.epoch_batches(state.epoch)
        if state.batch_index >= len(batches):  # resumed with other --batch-tokens: a shorter
            state.advance_epoch()  # epoch already done
            continue
        started = time.perf_counter()
        out = train_step(sess, state, batches[state.batch_index], stop)
        state.batch_index += 1
        epoch_done = state.batch_index == len(batches)
        if epoch_done:
            state.advance_epoch()
        now = time.perf_counter()
        state.elapsed += now - clock  # wall clock, validation and checkpoints included
        clock = now
        meter.add(out, now - started)
        report_step(sess, state, out, meter)

        action = decide(sess.cfg, state, out, epoch_done)
        reason = action.stop
        if action.save:
            save(sess, state)
        if action.validate and validate_and_save(sess, state) and reason is None:
            reason = "early stopping"
        if reason is not None:
            return reason
