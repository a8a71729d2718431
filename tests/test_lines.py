"""nmt.lines: chunks end at a pipe's pause, files are read in full chunks."""

import os
import threading
import time

from nmt import lines


def test_a_pause_in_a_pipe_ends_the_chunk():
    r, w = os.pipe()
    source = os.fdopen(r, "rb")
    chunks = lines.read_chunks(source, 1000, "<pipe>", pause=0.05)
    os.write(w, b"one\ntwo\n")
    assert next(chunks) == [(1, "one"), (2, "two")]  # before EOF: the pipe paused
    later = threading.Timer(0.3, lambda: (os.write(w, b"three\nfour"), os.close(w)))
    later.start()
    started = time.monotonic()
    # the end of input follows at once: one chunk with the unterminated last line
    assert next(chunks) == [(3, "three"), (4, "four")]
    assert time.monotonic() - started >= 0.25  # it waited for input, not a busy loop
    assert list(chunks) == []
    later.join()
    source.close()


def test_a_file_is_read_in_full_chunks_and_counted(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbfa\r\nb\n\xff\nd")
    replaced = []
    with open(path, "rb") as f:
        assert lines.count_lines(f) == 4
        got = list(lines.read_chunks(f, 3, str(path), on_replaced=lambda: replaced.append(1)))
    assert got == [[(1, "a"), (2, "b"), (3, "\ufffd")], [(4, "d")]]
    assert replaced == [1]
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pipe:
        assert lines.count_lines(pipe) is None
    os.close(w)
