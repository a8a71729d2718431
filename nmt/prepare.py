"""`nmt prepare`: raw parallel text in, everything `nmt train` needs out (format: nmt/data.py).

Stages, each skipped when its outputs exist and were made from the same input and settings
(recorded in `stages.json`); `force` redoes them all:

1. clean: stream the training pairs, collapse whitespace, drop pairs with an empty side
   (and undecodable or duplicate ones when asked); copy validation and test text unfiltered to
   `{split}.raw.{lang}`. Writes `train.clean.{lang}`.
2. spm: train one joint SentencePiece BPE model on a bounded random sample of both sides.
3. encode: worker processes encode chunks of lines (byte ranges of the text files) with
   SentencePiece's batch encoder; the main process appends the flat id arrays to the
   memory-mapped `{split}.{lang}.bin` files and their offsets. Training pairs longer than
   `max_len` subwords or with a length ratio above `max_ratio` (Moses clean-corpus) are dropped
   here, after encoding.

Then `manifest.json`. All writes go to a staging directory next to the output directory
(`.NAME.partial`), into which finished stages found in the output directory are hard-linked;
on success the staging directory replaces the output directory. A failed or interrupted run
therefore never damages a finished one, and the next run resumes from the staging directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nmt import __version__, corpora
from nmt.data import MANIFEST_FORMAT, TokenArrayWriter, token_dtype
from nmt.errors import ConfigError, DataError
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, train_sentencepiece

log = logging.getLogger(__name__)

STATE_FILE = "stages.json"
SPM_FILE = "spm.model"
MIN_VOCAB_SIZE = 300  # 256 byte-fallback pieces, 4 specials and room for real pieces
SMALL_CORPUS_PAIRS = 1_000_000  # local corpora below this get the small default vocabulary
SMALL_VOCAB_SIZE, LARGE_VOCAB_SIZE = 8000, 32000
_WRITE_BATCH = 10_000  # cleaned lines buffered before a write
_SCAN_BLOCK = 1 << 22  # bytes read at a time when finding chunk boundaries (bounded memory)
_STATE_VERSION = 1  # bump when a stage's outputs change meaning, to invalidate old records
# characters that str.splitlines() breaks on (a `datasets` string may hold any of them): kept
# out of the one-sentence-a-line raw text files
_LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """What to prepare and how; the defaults reproduce the Transformer paper's WMT setup."""

    corpus: str  # a named corpus (see corpora.CORPORA) or "local"
    out: Path | None = None  # output directory; None: data/<corpus name>
    src_lang: str | None = None  # local only: source language code (the file suffix)
    tgt_lang: str | None = None  # local only: target language code
    train: Path | None = None  # local only: training text prefix, or a data file datasets reads
    valid: Path | None = None  # local only: validation text prefix or data file
    test: Path | None = None  # local only: test text prefix or data file (optional)
    dataset: Path | None = None  # local only: a directory datasets loads, with train/valid splits
    name: str | None = None  # local only: corpus name; None: the data's directory name
    vocab_size: int | None = None  # joint vocabulary; None: the corpus default (32000 WMT, 8000)
    max_len: int = 250  # drop training pairs with a side longer than this many subwords
    max_ratio: float = 1.5  # drop training pairs whose subword length ratio exceeds this
    dedup: bool = False  # drop exact duplicate training pairs (after whitespace cleaning)
    spm_sample: int = 10_000_000  # at most this many sentences (both sides) train SentencePiece
    workers: int = 0  # encoding processes and SentencePiece threads; 0: all cores
    on_bad_utf8: str = "error"  # undecodable line: "error", "skip" (drop the pair), "replace"
    force: bool = False  # redo every stage even when its outputs are up to date
    seed: int = 1  # seed of the SentencePiece sample
    cache_dir: Path | None = None  # `datasets` cache; None: its default (~/.cache/huggingface)
    chunk_pairs: int = 10_000  # pairs per encoding task sent to a worker


class ProgressSink(Protocol):
    """Receives progress of the long stages (the CLI draws Rich progress bars)."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...

    def stop(self) -> None: ...


class _NoProgress:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass(frozen=True)
class StageReport:
    """How one stage went."""

    name: str  # "clean", "spm" or "encode"
    ran: bool  # False: its outputs were up to date and reused
    seconds: float  # wall time, 0 when skipped
    pairs: int  # sentence pairs it processed (read, sampled as sentences / 2, or encoded)
    cpu_seconds: float = 0.0  # CPU time of this process and its finished workers

    @property
    def pairs_per_second(self) -> float | None:
        return self.pairs / self.seconds if self.ran and self.seconds > 0 else None


@dataclass(frozen=True)
class PrepareSummary:
    """The result of `run`: the output directory, its manifest and the stage reports."""

    out: Path
    manifest: dict[str, Any]
    stages: tuple[StageReport, ...]

    @property
    def up_to_date(self) -> bool:
        """True when every stage was skipped and nothing was written."""
        return not any(stage.ran for stage in self.stages)


def list_corpora() -> list[corpora.CorpusSpec]:
    """The named corpora `nmt prepare NAME` knows."""
    return list(corpora.CORPORA.values())


# --- entry point -----------------------------------------------------------------------------
def run(config: PrepareConfig, progress: ProgressSink | None = None) -> PrepareSummary:
    """Prepare `config.corpus`; returns what was written (or found up to date)."""
    progress = progress or _NoProgress()
    _validate(config)
    source = _source(config)
    out = Path(config.out) if config.out else Path("data") / source.name
    header = {"corpus": source.name, "src_lang": source.src, "tgt_lang": source.tgt}
    _check_output_dir(out, header)
    if not config.force:
        done = _up_to_date(out, source, config)
        if done is not None:
            log.info("%s is up to date; nothing to do (--force redoes it)", out)
            return done
    ws = _Workspace(out, header, force=config.force)
    try:
        reports, manifest = _run_stages(ws, source, config, progress)
        ws.publish()
    except BaseException:
        progress.stop()
        ws.abandon()
        raise
    log.info("prepared %s in %s", source.name, out)
    return PrepareSummary(out=out, manifest=manifest, stages=tuple(reports))


def _run_stages(ws: _Workspace, source: corpora.Source, config: PrepareConfig,
                progress: ProgressSink) -> tuple[list[StageReport], dict[str, Any]]:
    keys = _Keys(source, config)
    clean, report_clean = ws.stage("clean", keys.clean(),
                                   lambda: _clean_stage(ws, source, config, progress))
    vocab_size = _vocab_size(config, source, clean["train"]["pairs"])
    spm, report_spm = ws.stage("spm", keys.spm(vocab_size),
                               lambda: _spm_stage(ws, config, source, clean, vocab_size,
                                                  progress))
    encoded, report_encode = ws.stage("encode", keys.encode(spm["sha256"]),
                                      lambda: _encode_stage(ws, config, source, clean, spm,
                                                            progress))
    manifest = _manifest(source, config, clean, spm, encoded)
    _write_json(ws.path("manifest.json"), manifest)
    return [report_clean, report_spm, report_encode], manifest


def _validate(c: PrepareConfig) -> None:
    if c.on_bad_utf8 not in corpora.BAD_UTF8_POLICIES:
        raise ConfigError(f"--on-bad-utf8 must be one of {', '.join(corpora.BAD_UTF8_POLICIES)}")
    if c.vocab_size is not None and c.vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (SentencePiece byte "
                          "fallback alone takes 256 pieces)")
    for value, flag, low in ((c.max_len, "--max-len", 1), (c.spm_sample, "--spm-sample", 1000),
                             (c.workers, "--workers", 0), (c.chunk_pairs, "chunk_pairs", 1)):
        if value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")
    if c.max_ratio < 1.0:
        raise ConfigError(f"--max-ratio must be at least 1.0, got {c.max_ratio}")


def _source(c: PrepareConfig) -> corpora.Source:
    local_only = {"--src": c.src_lang, "--tgt": c.tgt_lang, "--train": c.train,
                  "--valid": c.valid, "--test": c.test, "--dataset": c.dataset, "--name": c.name}
    if c.corpus != "local":
        given = [flag for flag, value in local_only.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: only for `nmt prepare local`; "
                              f"{c.corpus} fixes its own files and languages")
        if c.corpus == corpora.SAMPLE_CORPUS:
            return corpora.sample_source()
        return corpora.hub_source(corpora.corpus_spec(c.corpus), c.cache_dir)
    if not c.src_lang or not c.tgt_lang or c.src_lang == c.tgt_lang:
        raise ConfigError("`nmt prepare local` needs --src and --tgt, two different language "
                          "codes (the file suffixes, e.g. --src en --tgt de)")
    return corpora.local_source(src=c.src_lang, tgt=c.tgt_lang, train=c.train, valid=c.valid,
                                test=c.test, dataset=c.dataset, name=c.name,
                                cache_dir=c.cache_dir)


def _vocab_size(c: PrepareConfig, source: corpora.Source, train_pairs: int) -> int:
    if c.vocab_size is not None:
        return c.vocab_size
    if source.default_vocab_size is not None:
        return source.default_vocab_size
    return SMALL_VOCAB_SIZE if train_pairs < SMALL_CORPUS_PAIRS else LARGE_VOCAB_SIZE


def _workers(c: PrepareConfig) -> int:
    if c.workers:
        return c.workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- stage keys and the staging directory ----------------------------------------------------
def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class _Keys:
    """Each stage's key: a hash of everything its outputs depend on."""

    def __init__(self, source: corpora.Source, c: PrepareConfig) -> None:
        self.source, self.c = source, c

    def clean(self) -> str:
        return _digest({"v": _STATE_VERSION, "source": self.source.identity,
                        "splits": self.source.splits, "langs": [self.source.src, self.source.tgt],
                        "on_bad_utf8": self.c.on_bad_utf8, "dedup": self.c.dedup})

    def spm(self, vocab_size: int) -> str:
        return _digest({"v": _STATE_VERSION, "clean": self.clean(), "vocab_size": vocab_size,
                        "spm_sample": self.c.spm_sample, "seed": self.c.seed})

    def encode(self, spm_sha256: str) -> str:
        return _digest({"v": _STATE_VERSION, "clean": self.clean(), "spm": spm_sha256,
                        "max_len": self.c.max_len, "max_ratio": self.c.max_ratio})


def _read_state(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _record_ok(directory: Path, record: dict[str, Any] | None, key: str) -> bool:
    """Whether `record` is for `key` and all its files are there with their recorded sizes."""
    if not record or record.get("key") != key:
        return False
    for name, size in record["files"].items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _header_of(directory: Path) -> dict[str, Any] | None:
    for name in ("manifest.json", STATE_FILE):
        try:
            data = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return {k: data.get(k) for k in ("corpus", "src_lang", "tgt_lang")}
    return None


def _check_output_dir(out: Path, header: dict[str, Any]) -> None:
    """A one-line error when `out` holds something else than this corpus."""
    _recover_interrupted_publish(out)
    if out.exists() and not out.is_dir():
        raise DataError("output path exists and is not a directory", where=str(out))
    if not out.is_dir() or not any(out.iterdir()):
        return
    theirs = _header_of(out)
    if theirs is None:
        raise DataError("output directory is not empty and holds no prepared data; choose "
                        "another --out", where=str(out))
    if theirs != header:
        raise DataError(f"output directory holds a different corpus ({theirs['corpus']}, "
                        f"{theirs['src_lang']}-{theirs['tgt_lang']}); choose another --out or "
                        "remove it", where=str(out))


def _sibling(out: Path, suffix: str) -> Path:
    return out.parent / f".{out.name}.{suffix}"


def _recover_interrupted_publish(out: Path) -> None:
    """A crash between the two renames of `publish` leaves only `.NAME.old`: put it back."""
    old = _sibling(out, "old")
    if old.is_dir():
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, out)


def _up_to_date(out: Path, source: corpora.Source, c: PrepareConfig) -> PrepareSummary | None:
    """The summary of `out` when all its stages match this config, else None."""
    stages = _read_state(out).get("stages", {})
    keys = _Keys(source, c)
    clean = stages.get("clean")
    if not _record_ok(out, clean, keys.clean()):
        return None
    spm = stages.get("spm")
    vocab_size = _vocab_size(c, source, clean["result"]["train"]["pairs"])
    if not _record_ok(out, spm, keys.spm(vocab_size)):
        return None
    if not _record_ok(out, stages.get("encode"), keys.encode(spm["result"]["sha256"])):
        return None
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    reports = tuple(StageReport(name, False, 0.0, 0) for name in ("clean", "spm", "encode"))
    return PrepareSummary(out=out, manifest=manifest, stages=reports)


def _cpu_seconds() -> float:
    """User + system time of this process and of its children that have exited."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _Workspace:
    """The staging directory: stage records, reuse of finished stages, and publishing."""

    def __init__(self, out: Path, header: dict[str, Any], *, force: bool) -> None:
        self.out = out
        self.dir = _sibling(out, "partial")
        self.force = force
        self.created = False  # this run made the staging directory
        self.computed = False  # this run finished a stage by computing it
        if self.dir.is_dir() and (force or _header_of(self.dir) != header):
            shutil.rmtree(self.dir)
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True)
            self.created = True
        self.state = _read_state(self.dir) or {**header, "stages": {}}
        self.state.update(header)

    def path(self, name: str) -> Path:
        return self.dir / name

    def temp(self, name: str) -> Path:
        return self.dir / f"{name}.tmp"

    def stage(self, name: str, key: str,
              compute: Callable[[], tuple[dict[str, Path], dict[str, Any], int]],
              ) -> tuple[dict[str, Any], StageReport]:
        """Reuse the stage's outputs when a record matches `key`, else compute and commit."""
        found = None if self.force else self._reuse(name, key)
        if found is not None:
            log.info("%s: up to date, skipped", name)
            return found, StageReport(name, False, 0.0, 0)
        start, cpu = time.perf_counter(), _cpu_seconds()
        files, result, pairs = compute()
        self._commit(name, key, files, result)
        return result, StageReport(name, True, time.perf_counter() - start, pairs,
                                   _cpu_seconds() - cpu)

    def _reuse(self, name: str, key: str) -> dict[str, Any] | None:
        record = self.state["stages"].get(name)
        if _record_ok(self.dir, record, key):
            return record["result"]
        record = _read_state(self.out).get("stages", {}).get(name) if self.out.is_dir() else None
        if not _record_ok(self.out, record, key):
            return None
        for file in record["files"]:
            target = self.dir / file
            target.unlink(missing_ok=True)
            try:
                os.link(self.out / file, target)  # files are never written in place: safe
            except OSError:
                shutil.copy2(self.out / file, target)
        self.state["stages"][name] = record
        _write_json(self.path(STATE_FILE), self.state)
        return record["result"]

    def _commit(self, name: str, key: str, files: dict[str, Path], result: dict[str, Any]) -> None:
        if self.state["stages"].pop(name, None) is not None:  # no record over half-moved files
            _write_json(self.path(STATE_FILE), self.state)
        for final, temp in files.items():
            os.replace(temp, self.path(final))
        sizes = {final: self.path(final).stat().st_size for final in files}
        self.state["stages"][name] = {"key": key, "files": sizes, "result": result}
        _write_json(self.path(STATE_FILE), self.state)
        self.computed = True

    def publish(self) -> None:
        """Drop files no stage owns, then replace the output directory by the staging one."""
        keep = {STATE_FILE, "manifest.json"}
        for record in self.state["stages"].values():
            keep.update(record["files"])
        for path in self.dir.iterdir():
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        old = _sibling(self.out, "old")
        if self.out.exists():
            os.rename(self.out, old)
        os.rename(self.dir, self.out)
        shutil.rmtree(old, ignore_errors=True)

    def abandon(self) -> None:
        """After a failure: keep finished stages for the next run, else leave no trace."""
        for path in self.dir.glob("*.tmp*"):
            path.unlink(missing_ok=True)
        if self.created and not self.computed:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.computed:
            log.info("finished stages kept in %s; the next run resumes from there", self.dir)


# --- stage 1: clean --------------------------------------------------------------------------
def _normalize(text: str) -> str:
    """Strip and collapse every run of whitespace (line breaks included) into one space."""
    return " ".join(text.split())


def _clean_stage(ws: _Workspace, source: corpora.Source, c: PrepareConfig,
                 progress: ProgressSink) -> tuple[dict[str, Path], dict[str, Any], int]:
    files: dict[str, Path] = {}
    result: dict[str, Any] = {}
    read = 0
    for split in source.splits:
        if split == "train":
            result[split] = _clean_train(ws, source, c, progress, files)
            read += result[split]["lines"]
        else:
            result[split] = _copy_eval(ws, source, split, c, progress, files)
    return files, result, read


def _clean_train(ws: _Workspace, source: corpora.Source, c: PrepareConfig,
                 progress: ProgressSink, files: dict[str, Path]) -> dict[str, Any]:
    langs = (source.src, source.tgt)
    temps = [ws.temp(f"train.clean.{lang}") for lang in langs]
    counts = {"bad_utf8": 0, "empty": 0, "duplicate": 0}
    hashes = array("q")  # one 8-byte hash per kept pair, only with dedup
    lines = kept = 0
    pairs = source.pairs("train", c.on_bad_utf8)  # loads a `datasets` corpus before the bar
    progress.start("clean train", None)
    with _LineWriter(temps[0]) as out_src, _LineWriter(temps[1]) as out_tgt:
        for s, t in pairs:
            lines += 1
            if lines % _WRITE_BATCH == 0:
                progress.advance(_WRITE_BATCH)
            if s is None or t is None:
                counts["bad_utf8"] += 1
                continue
            s, t = _normalize(s), _normalize(t)
            if not s or not t:
                counts["empty"] += 1
                continue
            out_src.write(s)
            out_tgt.write(t)
            kept += 1
            if c.dedup:
                hashes.append(hash((s, t)))
    progress.advance(lines % _WRITE_BATCH)
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
        files[f"train.clean.{lang}"] = temp
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
    filtered = path.with_name(path.name + ".dedup")
    with open(path, "rb") as src, open(filtered, "wb") as dst:
        for line, k in zip(src, keep, strict=True):
            if k:
                dst.write(line)
    os.replace(filtered, path)


def _copy_eval(ws: _Workspace, source: corpora.Source, split: str, c: PrepareConfig,
               progress: ProgressSink, files: dict[str, Path]) -> dict[str, Any]:
    """Validation and test text, never filtered: raw lines kept for scoring."""
    langs = (source.src, source.tgt)
    temps = [ws.temp(f"{split}.raw.{lang}") for lang in langs]
    policy = "replace" if c.on_bad_utf8 == "skip" else c.on_bad_utf8  # lines are never dropped
    pairs = 0
    texts = source.pairs(split, policy)
    progress.start(f"copy {split}", None)
    with _LineWriter(temps[0]) as out_src, _LineWriter(temps[1]) as out_tgt:
        for s, t in texts:
            out_src.write(s.translate(_LINE_BREAKS))
            out_tgt.write(t.translate(_LINE_BREAKS))
            pairs += 1
    progress.advance(pairs)
    progress.stop()
    if pairs == 0:
        raise DataError(f"the {split} set is empty", where=source.name)
    for lang, temp in zip(langs, temps, strict=True):
        files[f"{split}.raw.{lang}"] = temp
    return {"lines": pairs, "pairs": pairs}


class _LineWriter:
    """Buffered writer of one line at a time into a UTF-8 text file with LF line ends."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "w", encoding="utf-8", newline="\n")
        self._buffer: list[str] = []

    def write(self, line: str) -> None:
        self._buffer.append(line)
        if len(self._buffer) >= _WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._file.write("\n".join(self._buffer))
            self._file.write("\n")
            self._buffer.clear()

    def __enter__(self) -> _LineWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._flush()
        self._file.close()


# --- stage 2: SentencePiece ------------------------------------------------------------------
def _spm_stage(ws: _Workspace, c: PrepareConfig, source: corpora.Source, clean: dict[str, Any],
               vocab_size: int, progress: ProgressSink,
               ) -> tuple[dict[str, Path], dict[str, Any], int]:
    n = clean["train"]["pairs"]
    paths = [ws.path(f"train.clean.{lang}") for lang in (source.src, source.tgt)]
    sampled = [0]

    def sentences() -> Iterator[str]:
        for line in _sample_lines(paths, n, c.spm_sample, c.seed):
            sampled[0] += 1
            if sampled[0] % _WRITE_BATCH == 0:
                progress.advance(_WRITE_BATCH)
            yield line

    progress.start(f"SentencePiece {vocab_size:,} (sentences)", None)
    vocab = train_sentencepiece(sentences(), vocab_size=vocab_size, model_type="bpe",
                                byte_fallback=True, input_sentence_size=c.spm_sample,
                                num_threads=_workers(c))
    progress.advance(sampled[0] % _WRITE_BATCH)
    progress.stop()
    temp = ws.temp(SPM_FILE)
    vocab.save(temp)
    log.info("spm: %s pieces from %s sampled sentences", f"{len(vocab):,}", f"{sampled[0]:,}")
    result = {"sha256": vocab.sha256, "vocab_size": len(vocab), "requested_vocab_size": vocab_size,
              "sample_sentences": sampled[0]}
    return {SPM_FILE: temp}, result, sampled[0] // 2


def _sample_lines(paths: list[Path], n: int, budget: int, seed: int,
                  block: int = 1 << 16) -> Iterator[str]:
    """All lines of the `len(paths)` files of `n` lines each, or a uniform random sample of
    `budget` of them (without replacement; memory: one block's mask, whatever the corpus)."""
    total = n * len(paths)
    masks = _sample_masks(total, budget, np.random.default_rng(seed), block) \
        if total > budget else None
    mask = None
    g = 0  # line index over all files
    for path in paths:
        with open(path, encoding="utf-8", newline="\n") as f:
            for line in f:
                if masks is not None and g % block == 0:
                    mask = next(masks)
                if mask is None or mask[g % block]:
                    yield line.rstrip("\n")
                g += 1


def _sample_masks(total: int, budget: int, rng: np.random.Generator,
                  block: int) -> Iterator[np.ndarray]:
    """Boolean masks of consecutive blocks of `total` items, `budget` True in all: how many
    fall in each block is hypergeometric, which ones uniform within it."""
    population, needed = total, budget
    for start in range(0, total, block):
        size = min(block, total - start)
        if size == population:
            k = needed
        else:
            k = int(rng.hypergeometric(size, population - size, needed)) if needed else 0
        mask = np.zeros(size, dtype=bool)
        mask[rng.choice(size, size=k, replace=False)] = True
        population, needed = population - size, needed - k
        yield mask


# --- stage 3: encode and binarize ------------------------------------------------------------
@dataclass(frozen=True)
class _Chunk:
    """One encoding task: the same lines of the source and target text files, as byte ranges."""

    src: tuple[str, int, int]  # (path, start, end) in bytes
    tgt: tuple[str, int, int]
    normalize: bool  # collapse whitespace first (raw validation/test text)
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
        src, tgt = [_normalize(s) for s in src], [_normalize(t) for t in tgt]
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


def _line_ends(path: Path, every: int) -> list[int]:
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
    src_ends, tgt_ends = _line_ends(src, every), _line_ends(tgt, every)
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


def _encode_stage(ws: _Workspace, c: PrepareConfig, source: corpora.Source,
                  clean: dict[str, Any], spm: dict[str, Any], progress: ProgressSink,
                  ) -> tuple[dict[str, Path], dict[str, Any], int]:
    model_bytes = ws.path(SPM_FILE).read_bytes()
    dtype = token_dtype(spm["vocab_size"])
    workers = _workers(c)
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
    result["file_sha256"] = {name: _file_sha256(path) for name, path in sorted(hashed.items())}
    return files, result, sum(clean[split]["pairs"] for split in source.splits)


def _encode_split(ws: _Workspace, c: PrepareConfig, source: corpora.Source, split: str, n: int,
                  dtype: np.dtype, workers: int, mapper: Callable, progress: ProgressSink,
                  files: dict[str, Path]) -> dict[str, Any]:
    kind = "clean" if split == "train" else "raw"
    texts = [ws.path(f"{split}.{kind}.{lang}") for lang in (source.src, source.tgt)]
    every = max(1, min(c.chunk_pairs, -(-n // (4 * workers))))
    filters = {"max_len": c.max_len, "max_ratio": c.max_ratio} if split == "train" else \
        {"max_len": None, "max_ratio": None}
    tasks = _chunks(*texts, every, normalize=split != "train", dtype=dtype.name, **filters)
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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# --- manifest --------------------------------------------------------------------------------
def _manifest(source: corpora.Source, c: PrepareConfig, clean: dict[str, Any],
              spm: dict[str, Any], encoded: dict[str, Any]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in source.splits:
        entry = {"pairs": encoded[split]["pairs"], "lines": clean[split]["lines"],
                 "src_tokens": encoded[split]["src_tokens"],
                 "tgt_tokens": encoded[split]["tgt_tokens"]}
        if split == "train":
            entry["filtered"] = {**clean[split]["filtered"], **encoded[split]["filtered"]}
        splits[split] = entry
    # the content: every token and raw-text file, the SentencePiece model and the languages
    content = {"src_lang": source.src, "tgt_lang": source.tgt, "spm": spm["sha256"],
               "files": encoded["file_sha256"]}
    return {
        "format": MANIFEST_FORMAT,
        "corpus": source.name,
        "src_lang": source.src,
        "tgt_lang": source.tgt,
        "dtype": token_dtype(spm["vocab_size"]).name,
        "spm": {"file": SPM_FILE, "sha256": spm["sha256"], "vocab_size": spm["vocab_size"],
                "model_type": "bpe", "byte_fallback": True,
                "requested_vocab_size": spm["requested_vocab_size"],
                "sample_sentences": spm["sample_sentences"],
                "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}},
        "splits": splits,
        "settings": {"max_len": c.max_len, "max_ratio": c.max_ratio, "dedup": c.dedup,
                     "on_bad_utf8": c.on_bad_utf8, "vocab_size": spm["requested_vocab_size"],
                     "spm_sample": c.spm_sample, "seed": c.seed, "source": source.identity},
        "content_hash": _digest(content),
        "nmt_version": __version__,
    }


