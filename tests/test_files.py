"""nmt.files: atomic writes, directory swaps that survive kills, output locks."""

import os
import signal
import subprocess
import sys
import time

import pytest

from nmt import files
from nmt.checkpoint import load_checkpoint, save_checkpoint


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_puts_back_an_old_copy_and_clears_dead_leftovers(tmp_path):
    out, dead = tmp_path / "avg", _dead_pid()
    old = tmp_path / f".avg.old-{dead}"  # a kill fell between the two renames of a swap
    old.mkdir()
    (old / "x").write_text("old")
    half = tmp_path / f".avg.tmp-{dead}"  # and its half-written new copy
    half.mkdir()
    live = tmp_path / f".avg.tmp-{os.getpid()}"  # this process's own: not touched
    live.mkdir()
    files.recover(out)
    assert (out / "x").read_text() == "old"
    assert not old.exists() and not half.exists() and live.exists()


def test_publish_replaces_a_directory_whole(tmp_path):
    out = tmp_path / "d"
    for text in ("one", "two"):
        tmp = files.temp_name(out)
        tmp.mkdir()
        (tmp / "f").write_text(text)
        files.publish_directory(tmp, out)
        assert (out / "f").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_atomic_file_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    files.write_text(path, "old\n")
    with pytest.raises(RuntimeError), files.atomic_file(path) as f:
        f.write("new")
        raise RuntimeError
    assert path.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_a_lock_is_refused_while_held_and_leaves_nothing_when_nothing_was_made(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with files.output_lock(out, "the thing"):
        proc = subprocess.run([sys.executable, "-c", "import sys\nfrom nmt import files\n"
                               "with files.output_lock(sys.argv[1]): pass", str(out)],
                              capture_output=True, text=True)
        assert f"being written by process {os.getpid()}" in proc.stderr
    assert not (tmp_path / "a").exists()  # a failed first run changes nothing on disk


@pytest.mark.slow
def test_killing_average_at_any_moment_leaves_the_old_or_the_new_output(tmp_path, tiny_model,
                                                                        tiny_vocab):
    ckpts = [save_checkpoint(tmp_path / f"c{i}", tiny_model, tiny_vocab, {"step": i})
             for i in (1, 2)]
    out = tmp_path / "avg"
    save_checkpoint(out, tiny_model, tiny_vocab, {"step": 99})
    cmd = [sys.executable, "-m", "nmt", "average", *map(str, ckpts), "-o", str(out)]
    steps_seen = set()
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.2, 3.0):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with files.output_lock(out):  # what the next command does first: recover
            pass
        steps_seen.add(load_checkpoint(out).step)  # whole, old or new
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".avg.")
                    and not p.name.endswith(".lock")]
    assert steps_seen <= {99, 2}
