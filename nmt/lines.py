"""Reading input lines as they arrive, in chunks, for `nmt translate`.

A file is read in chunks of `size` lines, for throughput. A pipe or a terminal may deliver
lines slowly (`tail -f log | nmt translate`, a person typing): there a chunk also ends as soon as
the input pauses for `pause` seconds with lines waiting, so each line is translated once it has
arrived instead of after `size` lines or the end of the input.
"""

from __future__ import annotations

import logging
import os
import select
import stat
from collections.abc import Iterator
from typing import BinaryIO

log = logging.getLogger(__name__)

PAUSE_SECONDS = 0.05  # a pipe that stays quiet this long with lines waiting: translate them
_READ_BYTES = 1 << 16


def is_stream(source: BinaryIO) -> bool:
    """True for a pipe, socket or terminal (input that can pause); False for a regular file."""
    try:
        mode = os.fstat(source.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # an in-memory stream
        return False
    return not stat.S_ISREG(mode)


def count_lines(source: BinaryIO) -> int | None:
    """Lines in a regular file from its current position (without moving it); None otherwise."""
    if is_stream(source):
        return None
    try:
        fd = source.fileno()
        offset = source.tell()
    except (AttributeError, OSError, ValueError):
        return None
    count, last = 0, b"\n"
    while True:
        block = os.pread(fd, 1 << 20, offset)
        if not block:
            break
        count += block.count(b"\n")
        last = block[-1:]
        offset += len(block)
    return count + (last != b"\n")


def raw_lines(source: BinaryIO, pause: float | None) -> Iterator[bytes | None]:
    """The input's lines without their line ends; None wherever the input paused with nothing
    left over (`pause` None: never, as for regular files)."""
    if pause is None or not is_stream(source):
        for raw in source:
            yield raw.rstrip(b"\r\n")
        return
    fd = source.fileno()
    pending = b""
    quiet = False  # True once a pause has been reported and no new line came since
    while True:
        ready, _, _ = select.select([fd], [], [], None if quiet else pause)
        if not ready:
            quiet = True
            yield None
            continue
        data = os.read(fd, _READ_BYTES)
        if not data:
            break
        pending += data
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            quiet = False
            yield raw.rstrip(b"\r")
    if pending:
        yield pending.rstrip(b"\r")


def read_chunks(source: BinaryIO, size: int, name: str, *, pause: float | None = PAUSE_SECONDS,
                on_replaced=None) -> Iterator[list[tuple[int, str]]]:
    """(line number, text) for up to `size` lines at a time; a stream's pause ends a chunk
    early. Undecodable bytes become U+FFFD (`on_replaced` is called for each such line)."""
    chunk: list[tuple[int, str]] = []
    number = 0
    for raw in raw_lines(source, pause):
        if raw is None:
            if chunk:
                yield chunk
                chunk = []
            continue
        number += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", errors="replace")
            if on_replaced is not None:
                on_replaced()
            log.warning("%s:%d: undecodable bytes replaced with U+FFFD (%s)", name, number,
                        exc.reason)
        if number == 1:
            text = text.removeprefix("\ufeff")
        chunk.append((number, text))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
