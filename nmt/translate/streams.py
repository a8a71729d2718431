"""Input read in chunks of lines (file or stdin), output written to stdout or atomically."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from nmt import lines as line_input
from nmt.errors import DataError
from nmt.files import atomic_file
from nmt.translate.config import TranslateStats


def read_chunks(source: BinaryIO, size: int, name: str, stats: TranslateStats
                ) -> Iterator[list[tuple[int, str]]]:
    """(line number, text) for `size` lines at a time, or fewer once a pipe or terminal pauses
    (`nmt.lines`); undecodable bytes become U+FFFD."""

    def replaced() -> None:
        stats.replaced += 1

    return line_input.read_chunks(source, size, name, on_replaced=replaced)


@contextlib.contextmanager
def open_input(path: Path | None, stdin: BinaryIO | None) -> Iterator[BinaryIO]:
    if path is None:
        yield stdin if stdin is not None else sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read input ({exc.strerror})", where=str(path)) from None
    with handle:
        yield handle


@contextlib.contextmanager
def open_output(path: Path | None, stdout: TextIO | None) -> Iterator[TextIO]:
    """`stdout`, or a temporary file beside `path` renamed to `path` only on success."""
    if path is None:
        yield stdout if stdout is not None else sys.stdout
        return
    if path.is_dir():
        raise DataError("is a directory, not an output file", where=str(path))
    with atomic_file(path, "w") as handle:
        yield handle
