"""Two "nodes" on localhost (gloo, one CPU worker each) sharing one run directory, as on a
cluster with a shared file system: nmt's own flags and torchrun; a node that never comes, a
node that dies or freezes mid-run, a restart of the group under torchrun."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from nmt.checkpoint import list_checkpoints

from .support import cli, cli_env, small_run

PEER_TIMEOUT = 3  # seconds: --peer-timeout of these tests
# long enough that a node can be stopped mid-run, short enough for CI
RUN = small_run(max_steps=240, save_every=20, batch_tokens=150, keep_last=1000, log_every=20,
                valid_bleu_lines=0)
ENDLESS = {**RUN, "max_steps": 100_000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, values: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"preset": "tiny", **values}))
    return path


def node(data: Path, config: Path, run: Path, rank: int, port: int, *extra: str,
         nnodes: int = 2) -> subprocess.Popen:
    """`nmt train` as node `rank` of `nnodes`, in a session of its own (so that a test can
    kill the node: its launcher and its worker)."""
    command = cli(data, "--config", config, "--run", run, "--gpus", "1", "--device", "cpu",
                  "--nnodes", str(nnodes), "--node-rank", str(rank), "--master-port",
                  str(port), "--peer-timeout", str(PEER_TIMEOUT), *extra)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def final_weights(run: Path) -> dict:
    return load_file(str(list_checkpoints(run)[-1][1] / "model.safetensors"))


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equal(b[name]), name


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def kill_node(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)


def trainers(marker: str) -> list[int]:
    """The pids of the `nmt train` workers (not the torchrun agents) whose command line holds
    `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args]
        if marker in words and "train" in words and not any(w.endswith("/torchrun")
                                                            for w in words):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def reference(toy_data, tmp_path_factory) -> Path:
    """The same training as one `--gpus 2` command on one machine."""
    tmp = tmp_path_factory.mktemp("reference")
    run = tmp / "run"
    command = cli(toy_data, "--config", write_config(tmp, RUN), "--run", run, "--gpus", "2",
                  "--device", "cpu")
    done = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return run


def test_both_nodes_share_one_run_directory_and_match_one_machine(tmp_path, toy_data,
                                                                  reference):
    config, run, port = write_config(tmp_path, RUN), tmp_path / "run", free_port()
    nodes = [node(toy_data, config, run, rank, port) for rank in (0, 1)]
    for proc in nodes:
        code, err = finish(proc)
        assert code == 0, err
    assert [s for s, _ in list_checkpoints(run)] == [s for s, _ in list_checkpoints(reference)]
    assert_identical(final_weights(run), final_weights(reference))
    assert not (run / "logs").exists()


def test_a_node_that_never_comes_is_named_within_the_rendezvous_timeout(tmp_path, toy_data):
    config, run = write_config(tmp_path, RUN), tmp_path / "run"
    started = time.monotonic()
    code, err = finish(node(toy_data, config, run, 0, free_port(), "--rendezvous-timeout", "2"))
    took = time.monotonic() - started
    assert code == 2 and "Traceback" not in err, err
    assert error_lines(err) == [line for line in err.splitlines() if line.strip()], err
    (line,) = error_lines(err)
    assert "worker 1 (node 1) did not join within 2 s (--rendezvous-timeout)" in line
    assert took < 60

    code, err = finish(node(toy_data, config, run, 1, free_port(), "--rendezvous-timeout", "2"))
    assert code == 2 and [line for line in err.splitlines() if line.strip()] == \
        error_lines(err), err
    assert "node 0's rendezvous at 127.0.0.1:" in err and "did not answer within 2 s" in err


def test_one_node_rank_given_twice_is_refused(tmp_path, toy_data):
    config, port = write_config(tmp_path, ENDLESS), free_port()
    first = [node(toy_data, config, tmp_path / "run", rank, port) for rank in (0, 1)]
    wait_for(tmp_path / "run" / "train_config.json", first[0])
    twin = node(toy_data, config, tmp_path / "run", 1, port)
    code, err = finish(twin)
    assert code == 2 and "another worker has joined as rank 1 already" in err, err
    wait_for(tmp_path / "run" / "checkpoints" / "step-00000020", first[0])
    for proc in first:  # the two that met train on, undisturbed
        assert proc.poll() is None
        kill_node(proc)
        proc.communicate()


def test_a_lost_node_ends_the_other_in_one_line_and_the_rerun_resumes_exactly(
        tmp_path, toy_data, reference):
    config, run, port = write_config(tmp_path, RUN), tmp_path / "run", free_port()
    nodes = [node(toy_data, config, run, rank, port) for rank in (0, 1)]
    wait_for(run / "checkpoints" / "step-00000020", nodes[0])
    kill_node(nodes[1])
    lost_at = time.monotonic()
    code, err = finish(nodes[0])
    took = time.monotonic() - lost_at
    nodes[1].communicate()
    print(f"node 1 killed: node 0 ended after {took:.1f} s")
    assert code == 2 and "Traceback" not in err, err
    (line,) = error_lines(err)
    assert line.startswith("error: lost worker 1 (node 1, host "), line
    assert " at step " in line and "is intact; to resume, run every node's command" in line
    resumable = list_checkpoints(run)[-1]
    assert f"checkpoint {resumable[1]} (step {resumable[0]}) is intact" in line
    assert took < PEER_TIMEOUT + 30
    log = (run / "logs" / "worker-0.log").read_text()
    assert "lost worker 1" in log and "Traceback" in log  # the details, off the terminal
    assert resumable[0] < RUN["max_steps"]

    port = free_port()
    again = [node(toy_data, config, run, rank, port) for rank in (0, 1)]
    for proc in again:
        code, err = finish(proc)
        assert code == 0, err
    assert_identical(final_weights(run), final_weights(reference))


@pytest.mark.parametrize("lost", [0, 1])
def test_a_frozen_or_dead_node_ends_the_other_within_the_peer_timeout(tmp_path, toy_data, lost):
    """Node 1 frozen (SIGSTOP: its connections stay open, so the collective just waits, as
    NCCL does for a dead peer), or node 0 killed (and the store with it)."""
    config, run, port = write_config(tmp_path, ENDLESS), tmp_path / "run", free_port()
    nodes = [node(toy_data, config, run, rank, port) for rank in (0, 1)]
    wait_for(run / "checkpoints" / "step-00000020", nodes[0])
    survivor = nodes[1 - lost]
    kill_node(nodes[lost], signal.SIGSTOP if lost == 1 else signal.SIGKILL)
    lost_at = time.monotonic()
    try:
        code, err = finish(survivor, timeout=120)
    finally:
        kill_node(nodes[lost], signal.SIGKILL)
        kill_node(nodes[lost], signal.SIGCONT)
        nodes[lost].communicate()
    took = time.monotonic() - lost_at
    print(f"node {lost} lost: the other ended after {took:.1f} s")
    assert code == 2 and "Traceback" not in err, err
    (line,) = error_lines(err)
    assert line.startswith(f"error: lost worker {lost} (node {lost}, host "), line
    assert "is intact; to resume" in line
    assert took < PEER_TIMEOUT + 30


def test_torchrun_restarts_the_group_from_the_last_checkpoint(tmp_path, toy_data, reference):
    """Two torchrun nodes with --max-restarts 1 and the same run directory: a killed worker
    restarts both from the newest checkpoint, and training ends where one machine's does."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    config, run, port = write_config(tmp_path, RUN), tmp_path / "run", free_port()
    agents = [subprocess.Popen(
        [torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "nodes", "--max-restarts", "1",
         "--monitor-interval", "0.2", "--no-python", sys.executable, "-m", "nmt", "train",
         str(toy_data),
         "--config", str(config), "--device", "cpu", "-r", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        start_new_session=True) for _ in range(2)]
    wait_for(run / "checkpoints" / "step-00000040", agents[0])
    workers = trainers(str(config))
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)
    for agent in agents:
        code, err = finish(agent, timeout=240)
        assert code == 0, err
    starts = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"kind": "start"' in line]
    assert len(starts) == 2 and starts[1]["resumed_from"] is not None
    assert_identical(final_weights(run), final_weights(reference))
