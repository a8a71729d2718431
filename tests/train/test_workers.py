"""Two gloo CPU workers under `nmt train --gpus 2 --device cpu`, stopped the ways a user stops a
run: SIGTERM, Ctrl-C (SIGINT to the whole process group), two Ctrl-C, SIGKILL of the launcher.

Each run gets its own TMPDIR; every process of the run (launcher and workers) carries it in its
environment, which is how the tests find the workers without knowing their pids."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from nmt.checkpoint import list_checkpoints

from .support import SMALL_MODEL, cli, cli_env, small_run, wait_for_checkpoint

# long enough that no run ends by itself before the test stops it
LONG_RUN = small_run(model={**SMALL_MODEL, "dropout": 0.0}, max_steps=100_000, save_every=2,
                     batch_tokens=150, keep_last=1000, log_every=50, valid_bleu_lines=0)


def start(tmp_path: Path, toy_data: Path, run: Path, *extra: str) -> subprocess.Popen:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": "tiny", **LONG_RUN}))
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    command = cli(toy_data, "--config", config, "--run", run, "--gpus", "2", "--device", "cpu",
                  *extra)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**cli_env(), "TMPDIR": str(temp)}, start_new_session=True)


def run_processes(tmp_path: Path) -> list[int]:
    """Live (non-zombie) processes whose environment holds this test's TMPDIR."""
    marker = f"TMPDIR={tmp_path / 'tmp'}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if state not in ("Z", "X") and marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def wait_gone(tmp_path: Path, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := run_processes(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_workers(proc: subprocess.Popen, tmp_path: Path, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [pid for pid in run_processes(tmp_path) if pid != proc.pid]
        if len(workers) >= 2:
            return workers
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the workers did not start")


def stop(proc: subprocess.Popen, sig: signal.Signals, *, group: bool) -> float:
    """Send `sig` (to the launcher, or like a terminal to its whole process group); the
    seconds until the launcher exits."""
    sent = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, sig)
    proc.wait(timeout=60)
    took = time.monotonic() - sent
    print(f"{sig.name} to exit: {took:.2f} s")
    return took


@pytest.fixture(autouse=True)
def no_strays(tmp_path):
    """Whatever a failing test leaves running is killed."""
    yield
    for pid in run_processes(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "tmp").iterdir()
                  if p.name.startswith(("torchelastic_", "nmt-workers-")))


@pytest.mark.slow
def test_sigterm_checkpoints_exits_0_and_resumes(tmp_path, toy_data):
    run = tmp_path / "run"
    proc = start(tmp_path, toy_data, run)
    wait_for_checkpoint(proc, run)
    took = stop(proc, signal.SIGTERM, group=False)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert took < 20, took
    stopped_at = list_checkpoints(run)[-1][0]
    assert "stopped by SIGTERM" in out + err and f"step {stopped_at}" in out + err
    assert not wait_gone(tmp_path, 5)
    # resumes: the same run to a few steps further ends by itself
    proc = start(tmp_path, toy_data, run, "--max-steps", str(stopped_at + 2))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resuming from" in out + err
    assert list_checkpoints(run)[-1][0] == stopped_at + 2
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_exits_0(tmp_path, toy_data):
    run = tmp_path / "run"
    proc = start(tmp_path, toy_data, run)
    wait_for_checkpoint(proc, run)
    took = stop(proc, signal.SIGINT, group=True)  # a terminal's Ctrl-C reaches every process
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert took < 20, took
    assert "Traceback" not in err, err
    stopped_at = list_checkpoints(run)[-1][0]
    assert "stopped by SIGINT" in out + err and f"step {stopped_at}" in out + err
    assert not wait_gone(tmp_path, 5)
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once(tmp_path, toy_data):
    run = tmp_path / "run"
    proc = start(tmp_path, toy_data, run)
    wait_for_checkpoint(proc, run)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.02)  # two signals at once would be delivered as one
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    took = time.monotonic() - sent
    print(f"two SIGINT to exit: {took:.2f} s")
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert took < 5, took
    assert "interrupted" in err and "Traceback" not in err, err
    assert not wait_gone(tmp_path, 5)
    assert list_checkpoints(run)  # the last checkpoint is intact
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_workers_die_with_a_killed_launcher(tmp_path, toy_data):
    run = tmp_path / "run"
    proc = start(tmp_path, toy_data, run)
    workers = wait_workers(proc, tmp_path)
    wait_for_checkpoint(proc, run)
    proc.kill()
    proc.communicate()
    left = wait_gone(tmp_path, 5)
    assert not left, f"workers {workers}: {left} still alive"
