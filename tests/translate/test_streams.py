"""Input read as it arrives; output replaced only when the run succeeds."""

import os
import subprocess
import sys
import threading

import pytest

from nmt import translate
from nmt.errors import DataError
from nmt.translate import runner

from .helpers import config_for


def test_output_file_is_replaced_only_on_success(tmp_path, ckpt, monkeypatch):
    target = tmp_path / "hyp.de"
    target.write_text("precious\n")
    src = tmp_path / "in.en"
    src.write_text("A man sits .\nThe dog plays .\n")
    with pytest.raises(DataError, match="missing.en"):
        translate.run(config_for(ckpt, input=tmp_path / "missing.en", output=target))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(runner, "format_line", interrupted)
        with pytest.raises(KeyboardInterrupt):
            translate.run(config_for(ckpt, input=src, output=target))
    assert target.read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["ck", "hyp.de", "in.en"]  # no temporary left
    stats = translate.run(config_for(ckpt, input=src, output=target))
    assert stats.lines == 2 and len(target.read_text().splitlines()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("buffer", [[], ["--buffer-lines", "1"]], ids=["default", "buffer-1"])
def test_streams_through_a_pipe(ckpt, buffer):
    """Each translation comes out before the next line goes in: with the default
    --buffer-lines 2000 too, since a pause in a pipe ends a chunk."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt", "translate", "-c", str(ckpt), *buffer,
         "--beam", "1", "--max-len-b", "4", "--threads", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = []
    for line in (b"A man sits .\n", b"\n", b"The dog plays in the park .\n"):
        proc.stdin.write(line)
        proc.stdin.flush()
        reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()))
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "no output while the input stays open"
    proc.stdin.close()
    assert proc.stdout.read() == b""
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    assert len(got) == 3 and got[1] == b"\n"
