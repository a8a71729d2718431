"""Stage 1 of `nmt prepare`: clean the training pairs, copy validation and test text.

With `--lowercase` / `--moses-tokenize` the training text is also lowercased / tokenized
here; the raw validation and test text is kept as it is (for scoring) and given the same
treatment only when it is encoded.

Training pairs are streamed, every run of whitespace is collapsed into one space, and pairs with
an empty side (and undecodable or duplicate ones when asked) are dropped: `train.clean.{lang}`.
Validation and test text is never filtered: its lines are copied to `{split}.raw.{lang}` for
scoring, with line-break characters turned into spaces (one sentence a line).
"""

from __future__ import annotations

import logging
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmt import corpora, files
from nmt.errors import DataError
from nmt.vocab import LINE_BREAKS

if TYPE_CHECKING:
    from nmt.prepare.config import PrepareConfig
    from nmt.prepare.staging import Workspace
    from nmt.progress import ProgressSink

log = logging.getLogger(__name__)

WRITE_BATCH = 10_000  # cleaned lines buffered before a write (and progress steps)


def normalize(text: str) -> str:
    """Strip and collapse every run of whitespace (line breaks included) into one space."""
    return " ".join(text.split())


def clean_stage(ws: Workspace, source: corpora.Source, c: PrepareConfig,
                progress: ProgressSink) -> tuple[dict[str, Path], dict[str, Any], int]:
    """The stage: (files written, result recorded, pairs read)."""
    outputs: dict[str, Path] = {}
    result: dict[str, Any] = {}
    read = 0
    for split in source.splits:
        if split == "train":
            result[split] = _clean_train(ws, source, c, progress, outputs)
            read += result[split]["lines"]
        else:
            result[split] = _copy_eval(ws, source, split, c, progress, outputs)
    return outputs, result, read


def _clean_train(ws: Workspace, source: corpora.Source, c: PrepareConfig,
                 progress: ProgressSink, outputs: dict[str, Path]) -> dict[str, Any]:
    langs = (source.src, source.tgt)
    temps = [ws.temp(f"train.clean.{lang}") for lang in langs]
    counts = {"bad_utf8": 0, "empty": 0, "duplicate": 0}
    hashes = array("q")  # one 8-byte hash per kept pair, only with dedup
    lines = kept = 0
    style = c.text_style
    pairs = source.pairs("train", c.on_bad_utf8)  # loads a `datasets` corpus before the bar
    progress.start("clean train", None)
    with LineWriter(temps[0]) as out_src, LineWriter(temps[1]) as out_tgt:
        for s, t in pairs:
            lines += 1
            if lines % WRITE_BATCH == 0:
                progress.advance(WRITE_BATCH)
            if s is None or t is None:
                counts["bad_utf8"] += 1
                continue
            s, t = normalize(s), normalize(t)
            if not style.plain:
                s, t = style.apply(s, source.src), style.apply(t, source.tgt)
            if not s or not t:
                counts["empty"] += 1
                continue
            out_src.write(s)
            out_tgt.write(t)
            kept += 1
            if c.dedup:
                hashes.append(hash((s, t)))
    progress.advance(lines % WRITE_BATCH)
    progress.stop()
    if c.dedup and kept:
        keep = _first_occurrences(np.frombuffer(hashes, dtype=np.int64))
        counts["duplicate"] = int(len(keep) - keep.sum())
        if counts["duplicate"]:
            for temp in temps:
                _filter_lines(temp, keep)
            kept -= counts["duplicate"]
    if kept == 0:
        raise DataError(f"no training pairs left after cleaning: {lines:,} lines read, "
                        f"{counts['empty']:,} with an empty side, {counts['bad_utf8']:,} "
                        f"undecodable, {counts['duplicate']:,} duplicates", where=source.name)
    for lang, temp in zip(langs, temps, strict=True):
        outputs[f"train.clean.{lang}"] = temp
    log.info("clean: %s training pairs read, %s kept", f"{lines:,}", f"{kept:,}")
    return {"lines": lines, "pairs": kept, "filtered": counts}


def _first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """(N,) bool: True where a hash appears for the first time."""
    _, first = np.unique(hashes, return_index=True)
    keep = np.zeros(len(hashes), dtype=bool)
    keep[first] = True
    return keep


def _filter_lines(path: Path, keep: np.ndarray) -> None:
    """Rewrite a text file keeping the lines where `keep` is True."""
    with open(path, "rb") as src, files.atomic_file(path, "wb") as dst:
        for line, k in zip(src, keep, strict=True):
            if k:
                dst.write(line)


def _copy_eval(ws: Workspace, source: corpora.Source, split: str, c: PrepareConfig,
               progress: ProgressSink, outputs: dict[str, Path]) -> dict[str, Any]:
    """Validation and test text, never filtered: raw lines kept for scoring."""
    langs = (source.src, source.tgt)
    temps = [ws.temp(f"{split}.raw.{lang}") for lang in langs]
    policy = "replace" if c.on_bad_utf8 == "skip" else c.on_bad_utf8  # lines are never dropped
    pairs = 0
    texts = source.pairs(split, policy)
    progress.start(f"copy {split}", None)
    with LineWriter(temps[0]) as out_src, LineWriter(temps[1]) as out_tgt:
        for s, t in texts:
            out_src.write(s.translate(LINE_BREAKS))
            out_tgt.write(t.translate(LINE_BREAKS))
            pairs += 1
    progress.advance(pairs)
    progress.stop()
    if pairs == 0:
        raise DataError(f"the {split} set is empty", where=source.name)
    for lang, temp in zip(langs, temps, strict=True):
        outputs[f"{split}.raw.{lang}"] = temp
    return {"lines": pairs, "pairs": pairs}


class LineWriter:
    """Buffered writer of one line at a time into a UTF-8 text file with LF line ends."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "w", encoding="utf-8", newline="\n")
        self._buffer: list[str] = []

    def write(self, line: str) -> None:
        self._buffer.append(line)
        if len(self._buffer) >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._file.write("\n".join(self._buffer))
            self._file.write("\n")
            self._buffer.clear()

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._flush()
        self._file.close()
