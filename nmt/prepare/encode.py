"""Stage 3 of `nmt prepare`: encode and binarize every split.

Worker processes encode chunks of lines (byte ranges of the text files) with SentencePiece's
batch encoder; the main process appends the flat id arrays to the memory-mapped
`{split}.{lang}.bin` files and their offsets (`nmt.data.TokenArrayWriter`). Training pairs
longer than `max_len` subwords or with a length ratio above `max_ratio` (Moses clean-corpus) are
dropped here, after encoding. Validation and test text is whitespace-normalized, never filtered.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmt import corpora
from nmt.data import TokenArrayWriter, token_dtype
from nmt.errors import DataError
from nmt.prepare.clean import normalize
from nmt.prepare.config import workers_of
from nmt.text import TextStyle
from nmt.vocab import SPM_FILE

if TYPE_CHECKING:
    from nmt.prepare.config import PrepareConfig
    from nmt.prepare.staging import Workspace
    from nmt.progress import ProgressSink

log = logging.getLogger(__name__)

_SCAN_BLOCK = 1 << 22  # bytes read at a time when finding chunk boundaries (bounded memory)


@dataclass(frozen=True)
class _Chunk:
    """One encoding task: the same lines of the source and target text files, as byte ranges."""

    src: tuple[str, int, int]  # (path, start, end) in bytes
    tgt: tuple[str, int, int]
    normalize: bool  # collapse whitespace first (raw validation/test text)
    style: TextStyle  # and then lowercase / Moses-tokenize it (the training text already is)
    langs: tuple[str, str]  # source and target language (for the tokenizer)
    max_len: int | None  # length filter (training only); None: keep every pair
    max_ratio: float | None
    dtype: str  # token array dtype


@dataclass(frozen=True)
class _Encoded:
    """A chunk's kept pairs as flat id arrays plus lengths, and what the filters removed."""

    src_ids: np.ndarray  # (sum of src_lengths,)
    src_lengths: np.ndarray  # (N,) int64
    tgt_ids: np.ndarray
    tgt_lengths: np.ndarray
    lines: int  # pairs in the chunk before filtering
    too_long: int
    ratio: int


_WORKER_SP = None  # each worker process's SentencePiece processor


def _load_model(model_bytes: bytes) -> None:
    import sentencepiece as spm

    global _WORKER_SP
    _WORKER_SP = spm.SentencePieceProcessor()
    _WORKER_SP.LoadFromSerializedProto(model_bytes)


def _init_pool_worker(model_bytes: bytes) -> None:
    # Ctrl-C reaches the whole process group: only the parent handles it (and ends the pool)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _load_model(model_bytes)


def _read_range(path: str, start: int, end: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.decode("utf-8").split("\n")
    lines.pop()  # the chunk ends with a line feed
    return lines


def _flatten(ids: list[list[int]], lengths: np.ndarray, dtype: str) -> np.ndarray:
    return np.fromiter(chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))


def _encode_chunk(task: _Chunk) -> _Encoded:
    """Encode one chunk in a worker (runs in a child process)."""
    src = _read_range(*task.src)
    tgt = _read_range(*task.tgt)
    if task.normalize:
        src, tgt = [normalize(s) for s in src], [normalize(t) for t in tgt]
        if not task.style.plain:
            src = [task.style.apply(s, task.langs[0]) for s in src]
            tgt = [task.style.apply(t, task.langs[1]) for t in tgt]
    src_ids = _WORKER_SP.encode(src, out_type=int, num_threads=1)
    tgt_ids = _WORKER_SP.encode(tgt, out_type=int, num_threads=1)
    src_len = np.fromiter(map(len, src_ids), dtype=np.int64, count=len(src_ids))
    tgt_len = np.fromiter(map(len, tgt_ids), dtype=np.int64, count=len(tgt_ids))
    too_long = ratio = 0
    if task.max_len is not None:
        long_mask = (src_len > task.max_len) | (tgt_len > task.max_len)
        ratio_mask = ~long_mask & ((src_len > task.max_ratio * tgt_len)
                                   | (tgt_len > task.max_ratio * src_len))
        too_long, ratio = int(long_mask.sum()), int(ratio_mask.sum())
        if too_long or ratio:
            keep = ~(long_mask | ratio_mask)
            src_ids = [ids for ids, k in zip(src_ids, keep, strict=True) if k]
            tgt_ids = [ids for ids, k in zip(tgt_ids, keep, strict=True) if k]
            src_len, tgt_len = src_len[keep], tgt_len[keep]
    return _Encoded(_flatten(src_ids, src_len, task.dtype), src_len,
                    _flatten(tgt_ids, tgt_len, task.dtype), tgt_len, len(src), too_long, ratio)


def line_ends(path: Path, every: int) -> list[int]:
    """Byte offsets just after every `every`-th line feed of `path`, and the file's end."""
    ends: list[int] = []
    seen = pos = 0
    with open(path, "rb") as f:
        while block := f.read(_SCAN_BLOCK):
            feeds = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
            first = (every - seen % every) - 1  # index in `feeds` of the next boundary
            ends.extend((pos + feeds[first::every] + 1).tolist())
            seen += len(feeds)
            pos += len(block)
    if pos and (not ends or ends[-1] != pos):
        ends.append(pos)
    return ends


def _chunks(src: Path, tgt: Path, every: int, **task: Any) -> list[_Chunk]:
    src_ends, tgt_ends = line_ends(src, every), line_ends(tgt, every)
    if len(src_ends) != len(tgt_ends):  # both files are written by the clean stage
        raise DataError(f"{src.name} and {tgt.name} are not line-aligned; rerun with --force",
                        where=str(src.parent))
    starts = zip([0, *src_ends[:-1]], [0, *tgt_ends[:-1]], strict=True)
    return [_Chunk(src=(str(src), s0, s1), tgt=(str(tgt), t0, t1), **task)
            for (s0, t0), s1, t1 in zip(starts, src_ends, tgt_ends, strict=True)]


@contextmanager
def _encoder_map(model_bytes: bytes, workers: int) -> Iterator[Callable]:
    """An order-preserving `map` over chunks: a pool of `workers` processes, or in-process."""
    if workers <= 1:
        _load_model(model_bytes)
        yield map
        return
    # fork: no re-import of the caller's __main__ (spawn breaks under `python -` and unguarded
    # scripts); the children only run SentencePiece and numpy, never the parent's threads' code
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_pool_worker, initargs=(model_bytes,)) as pool:
        yield lambda fn, tasks: _bounded_imap(pool, fn, tasks, ahead=2 * workers)


def _bounded_imap(pool, fn: Callable, tasks, ahead: int) -> Iterator:
    """`pool.imap` with at most `ahead` tasks in flight, so that finished chunks cannot pile
    up in memory when the writer falls behind."""
    tasks = iter(tasks)
    pending = deque(pool.apply_async(fn, (task,)) for task in islice(tasks, ahead))
    while pending:
        result = pending.popleft().get()
        for task in islice(tasks, 1):
            pending.append(pool.apply_async(fn, (task,)))
        yield result


def encode_stage(ws: Workspace, c: PrepareConfig, source: corpora.Source,
                 clean: dict[str, Any], spm: dict[str, Any], progress: ProgressSink,
                 ) -> tuple[dict[str, Path], dict[str, Any], int]:
    """The stage: (files written, result recorded, pairs encoded)."""
    model_bytes = ws.path(SPM_FILE).read_bytes()
    dtype = token_dtype(spm["vocab_size"])
    workers = workers_of(c)
    files: dict[str, Path] = {}
    result: dict[str, Any] = {}
    with _encoder_map(model_bytes, workers) as mapper:
        for split in source.splits:
            result[split] = _encode_split(ws, c, source, split, clean[split]["pairs"], dtype,
                                          workers, mapper, progress, files)
    train = result["train"]
    if train["pairs"] == 0:
        raise DataError(f"no training pairs left after the length filters (--max-len "
                        f"{c.max_len}, --max-ratio {c.max_ratio})", where=source.name)
    hashed = {**files, **{f"{split}.raw.{lang}": ws.path(f"{split}.raw.{lang}")
                          for split in source.splits if split != "train"
                          for lang in (source.src, source.tgt)}}
    result["file_sha256"] = {name: file_sha256(path) for name, path in sorted(hashed.items())}
    return files, result, sum(clean[split]["pairs"] for split in source.splits)


def _encode_split(ws: Workspace, c: PrepareConfig, source: corpora.Source, split: str, n: int,
                  dtype: np.dtype, workers: int, mapper: Callable, progress: ProgressSink,
                  files: dict[str, Path]) -> dict[str, Any]:
    kind = "clean" if split == "train" else "raw"
    texts = [ws.path(f"{split}.{kind}.{lang}") for lang in (source.src, source.tgt)]
    every = max(1, min(c.chunk_pairs, -(-n // (4 * workers))))
    filters = {"max_len": c.max_len, "max_ratio": c.max_ratio} if split == "train" else \
        {"max_len": None, "max_ratio": None}
    tasks = _chunks(*texts, every, normalize=split != "train", style=c.text_style,
                    langs=(source.src, source.tgt), dtype=dtype.name, **filters)
    prefixes = [ws.temp(f"{split}.{lang}") for lang in (source.src, source.tgt)]
    too_long = ratio = 0
    progress.start(f"encode {split}", n)
    with (TokenArrayWriter(prefixes[0], dtype) as w_src,
          TokenArrayWriter(prefixes[1], dtype) as w_tgt):
        for enc in mapper(_encode_chunk, tasks):
            w_src.append_flat(enc.src_ids, enc.src_lengths)
            w_tgt.append_flat(enc.tgt_ids, enc.tgt_lengths)
            too_long += enc.too_long
            ratio += enc.ratio
            progress.advance(enc.lines)
    progress.stop()
    for lang, prefix in zip((source.src, source.tgt), prefixes, strict=True):
        files[f"{split}.{lang}.bin"] = Path(f"{prefix}.bin")
        files[f"{split}.{lang}.idx.npy"] = Path(f"{prefix}.idx.npy")
    info = {"pairs": len(w_src), "src_tokens": w_src.n_tokens, "tgt_tokens": w_tgt.n_tokens}
    if split == "train":
        info["filtered"] = {"too_long": too_long, "ratio": ratio}
    log.info("encode %s: %s pairs, %s + %s tokens", split, f"{info['pairs']:,}",
             f"{info['src_tokens']:,}", f"{info['tgt_tokens']:,}")
    return info


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
