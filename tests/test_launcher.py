"""nmt's launcher with toy workers (no torch.distributed): results, errors, crashes."""

import os
import time

import pytest

from nmt import launcher
from nmt.errors import ConfigError


def rank_and_env():
    return int(os.environ["RANK"]), os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"], \
        launcher.in_worker()


def rank_1_fails():
    if os.environ["RANK"] == "1":
        raise ConfigError("bad value for worker 1")
    time.sleep(600)  # a peer waiting for it in a collective


def crash():
    if os.environ["RANK"] == "0":
        raise RuntimeError("boom")


def test_results_by_global_rank():
    outcome = launcher.start(rank_and_env, (), nproc=2, node_rank=1, nnodes=2, master_port=1)
    assert outcome.results == {2: (2, "4", "0", True), 3: (3, "4", "1", True)}
    assert outcome.stop_signal is None and not launcher.in_worker()


def test_one_failing_worker_ends_the_others_with_its_own_error():
    started = time.monotonic()
    with pytest.raises(launcher.WorkerFailed) as failed:
        launcher.start(rank_1_fails, (), nproc=2, master_port=1)
    assert (failed.value.rank, failed.value.message, failed.value.exit_code) == (
        1, "bad value for worker 1", 2)
    assert time.monotonic() - started < 30


def test_a_crash_carries_its_traceback():
    with pytest.raises(launcher.WorkerFailed) as failed:
        launcher.start(crash, (), nproc=2, master_port=1)
    assert failed.value.message == "worker 0 failed: RuntimeError: boom"
    assert "Traceback" in failed.value.details and "in crash" in failed.value.details
