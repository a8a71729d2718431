"""Every failure is one line naming the file, exit 2, outputs intact: full disks, read-only
file systems and output paths under regular files, through the real commands."""

import contextlib
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nmt.checkpoint import load_checkpoint, save_checkpoint


@contextlib.contextmanager
def small_fs(tmp_path: Path, size: str, *, read_only: bool = False):
    """A tmpfs of `size` (read-only if asked) mounted in the test's folder."""
    mount = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({proc.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def nmt(*args, cwd=None, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nmt", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, input=stdin, timeout=300)


def one_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def ckpt(tmp_path, tiny_model, tiny_vocab):
    return save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, {"step": 5})


def test_average_on_a_full_disk(tmp_path, ckpt):
    with small_fs(tmp_path, "64k") as fs:
        line = one_line(nmt("average", ckpt, "-o", fs / "avg"))
        assert "no space left on the device" in line and "needed" in line
        assert str(fs / "avg") in line
        assert list(fs.iterdir()) == []  # no half-written copy, no lock file


def test_average_over_an_existing_output_on_a_full_disk_keeps_it(tmp_path, ckpt, tiny_model,
                                                                 tiny_vocab):
    size = sum(p.stat().st_size for p in ckpt.iterdir())
    with small_fs(tmp_path, str(size + size // 2)) as fs:
        shutil.copytree(ckpt, fs / "avg")
        one_line(nmt("average", ckpt, "-o", fs / "avg"))
        assert load_checkpoint(fs / "avg").step == 5  # the old output, whole


def test_read_only_and_under_a_file(tmp_path, ckpt):
    with small_fs(tmp_path, "1m", read_only=True) as fs:
        line = one_line(nmt("average", ckpt, "-o", fs / "avg"))
        assert "read-only file system" in line
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    line = one_line(nmt("average", ckpt, "-o", blocker / "avg"))
    assert "is a file, not a directory" in line and str(blocker) in line


def test_translate_output_on_a_full_disk(tmp_path, ckpt):
    lines = "".join(f"A man sits in the park number {i} .\n" for i in range(400))
    with small_fs(tmp_path, "8k") as fs:
        (fs / "out.de").write_text("old\n")
        line = one_line(nmt("translate", "-c", ckpt, "--beam", "1", "--max-len-b", "60",
                            "-o", fs / "out.de", "-q", stdin=lines))
        assert "no space left" in line and "out.de" in line
        assert (fs / "out.de").read_text() == "old\n"  # -o never truncates


def tiny_training(tmp_path: Path, vocab, max_steps: int) -> tuple[Path, Path]:
    """A prepared directory of 30 short pairs and a config that saves every 2 steps."""
    from train.support import SMALL_MODEL, write_prepared

    ids = vocab.encode_batch(["A man sits .", "The dog plays .", "A girl runs ."] * 10)
    data = write_prepared(tmp_path / "data", vocab,
                          {"train": (ids, ids), "valid": (ids[:3], ids[:3])})
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"preset": "tiny", "model": SMALL_MODEL, "batch_tokens": 200,
                                  "max_steps": max_steps, "save_every": 2,
                                  "valid_bleu_lines": 0}))
    return data, config


def test_train_on_a_full_disk_stops_in_one_line(tmp_path, tiny_vocab):
    data, config = tiny_training(tmp_path, tiny_vocab, max_steps=4)
    with small_fs(tmp_path, "48k") as fs:
        proc = nmt("train", data, "--config", config, "--run", fs / "run", "--threads", "1")
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(errors) == 1 and "no space left" in errors[0] and "needed" in errors[0]
        checkpoints = fs / "run" / "checkpoints"
        assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]


def test_export_read_only_and_under_a_file(tmp_path, ckpt):
    pytest.importorskip("ctranslate2")
    with small_fs(tmp_path, "1m", read_only=True) as fs:
        line = one_line(nmt("export", ckpt, fs / "ct2", "--to", "ctranslate2"))
        assert "read-only file system" in line
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    line = one_line(nmt("export", ckpt, blocker / "ct2", "--to", "ctranslate2"))
    assert "is a file, not a directory" in line


def test_a_full_disk_while_saving_the_training_state_keeps_the_last_checkpoint(tmp_path,
                                                                               tiny_vocab):
    """torch.save reports ENOSPC as its own RuntimeError ("unexpected pos"): still one line,
    the previous checkpoint intact, no partial copy left."""
    import torch

    data, config = tiny_training(tmp_path, tiny_vocab, max_steps=2)
    with small_fs(tmp_path, "8m") as fs:
        run = fs / "run"
        first = nmt("train", data, "--config", config, "--run", run, "--threads", "1")
        assert first.returncode == 0, first.stderr
        kept = run / "checkpoints" / "step-00000002"
        before = {p.name: p.read_bytes() for p in kept.iterdir()}
        state = (kept / "train_state.pt").stat().st_size
        # room for the next checkpoint's weights, config and vocabulary, not its training state
        room = sum(len(b) for name, b in before.items() if name != "train_state.pt")
        assert state > 64 * 1024
        free = shutil.disk_usage(fs).free
        (fs / "filler").write_bytes(b"\0" * (free - room - 32 * 1024))
        proc = nmt("train", data, "--config", config, "--run", run, "--threads", "1",
                   "--max-steps", "4")
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(errors) == 1 and "no space left" in errors[0], proc.stderr
        assert "step-00000004" in errors[0]
        checkpoints = run / "checkpoints"
        assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000002"]
        assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
        torch.load(kept / "train_state.pt", weights_only=True)
