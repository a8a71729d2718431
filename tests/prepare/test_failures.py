"""`nmt prepare` when things go wrong: one writer per output, nothing left by a failed first run,
full disks, read-only file systems and output paths under files."""

import subprocess
import sys
import time

from test_failures import nmt, one_line, small_fs

from .helpers import toy_corpus


def _args(files, out):
    return ["prepare", "local", "--src", "en", "--tgt", "de", "--train", files["train"],
            "--valid", files["valid"], "--name", "toy", "--vocab-size", "300", "-j", "1",
            "--max-ratio", "3", "--out", out]


def test_a_failed_first_run_leaves_no_data_directory(tmp_path):
    proc = nmt("prepare", "wmt14-en-de", cwd=tmp_path)  # no hub here: fails at once
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_second_prepare_on_the_same_output_is_refused(tmp_path):
    files = toy_corpus(tmp_path)
    out = tmp_path / "data" / "toy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom nmt.files import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)",
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = one_line(nmt(*_args(files, out)))
        assert f"being written by process {holder.pid}" in line and str(out) in line
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert nmt(*_args(files, out)).returncode == 0  # the kernel freed the lock


def test_full_disk_read_only_and_under_a_file(tmp_path):
    files = toy_corpus(tmp_path)
    with small_fs(tmp_path, "24k") as fs:
        proc = nmt(*_args(files, fs / "toy"))
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(errors) == 1
        assert "no space left" in errors[0] and "needed at least" in errors[0]
        assert str(fs) in errors[0] and not (fs / "toy").exists()
    with small_fs(tmp_path, "1m", read_only=True) as fs:
        assert "read-only file system" in one_line(nmt(*_args(files, fs / "toy")))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    line = one_line(nmt(*_args(files, blocker / "toy")))
    assert "is a file, not a directory" in line
