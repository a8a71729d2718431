"""The staging directory of `nmt prepare`: stage keys and records, reuse, publishing.

Every write goes to `.NAME.partial` beside the output directory NAME. A stage's outputs are
recorded in its `stages.json` under a key (a hash of everything they depend on) with their
sizes; a stage whose record matches is reused, from the staging directory or by hard-linking
the files of a finished output directory. On success the staging directory replaces NAME
(`files.publish_directory`), so a failed or interrupted run never damages a finished one and
the next run resumes from the staging directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt import corpora, files
from nmt.errors import DataError

if TYPE_CHECKING:
    from nmt.prepare.config import PrepareConfig

log = logging.getLogger(__name__)

STATE_FILE = "stages.json"
MANIFEST_FILE = "manifest.json"
_STATE_VERSION = 1  # bump when a stage's outputs change meaning, to invalidate old records


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


# --- stage keys and records ------------------------------------------------------------------
def digest(value: Any) -> str:
    """sha256 of `value` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class Keys:
    """Each stage's key: a hash of everything its outputs depend on."""

    def __init__(self, source: corpora.Source, c: PrepareConfig) -> None:
        self.source, self.c = source, c

    def clean(self) -> str:
        return digest({"v": _STATE_VERSION, "source": self.source.identity,
                       "splits": self.source.splits, "langs": [self.source.src, self.source.tgt],
                       "on_bad_utf8": self.c.on_bad_utf8, "dedup": self.c.dedup,
                       **self._style()})

    def _style(self) -> dict[str, Any]:
        """The text style, in a key only when it is not plain (keys of older runs hold)."""
        style = self.c.text_style
        return {} if style.plain else {"text": style.to_dict()}

    def spm(self, vocab_size: int) -> str:
        if self.c.vocab_from is not None:  # a given model: its bytes are what matters
            from nmt.prepare.config import given_vocabulary

            return digest({"v": _STATE_VERSION, "given": given_vocabulary(
                self.c.vocab_from).sha256})
        return digest({"v": _STATE_VERSION, "clean": self.clean(), "vocab_size": vocab_size,
                       "spm_sample": self.c.spm_sample, "seed": self.c.seed})

    def encode(self, spm_sha256: str) -> str:
        return digest({"v": _STATE_VERSION, "clean": self.clean(), "spm": spm_sha256,
                       "max_len": self.c.max_len, "max_ratio": self.c.max_ratio,
                       **self._style()})


def read_state(directory: Path) -> dict[str, Any]:
    """The stage records of `directory` ({} when there are none, or they are damaged: a
    record is a cache, and a stage without one is redone)."""
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        return {}
    return state


_HEX = re.compile(r"[0-9a-f]{64}")
_COUNT, _DIGEST = "count", "digest"
# What each stage's result holds ("*": every split; leaves: a count or a sha256 digest).
_RESULTS: dict[str, dict[str, Any]] = {
    "clean": {"*": {"lines": _COUNT, "pairs": _COUNT}},
    "spm": {"sha256": _DIGEST, "vocab_size": _COUNT, "requested_vocab_size": _COUNT,
            "sample_sentences": _COUNT},
    "encode": {"*": {"pairs": _COUNT, "src_tokens": _COUNT, "tgt_tokens": _COUNT},
               "file_sha256": {"*": _DIGEST}},
}


def _fits(value: Any, shape: Any) -> bool:
    if shape == _COUNT:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62
    if shape == _DIGEST:
        return isinstance(value, str) and _HEX.fullmatch(value) is not None
    if not isinstance(value, dict):
        return False
    named = {k: v for k, v in shape.items() if k != "*"}
    if any(k not in value or not _fits(value[k], v) for k, v in named.items()):
        return False
    rest = {k: v for k, v in value.items() if k not in named}
    if "*" in shape:
        return all(_fits(v, shape["*"]) for v in rest.values())
    # others: the train split's filter counts, spm's "from" (the --vocab-from path)
    return all(_fits(v, _COUNT) or _fits(v, {"*": _COUNT}) or isinstance(v, str)
               for v in rest.values())


def record_ok(directory: Path, name: str, record: Any, key: str) -> bool:
    """Whether `record` is stage `name`'s for `key`, well formed, and all its files are there
    with their recorded sizes."""
    if not isinstance(record, dict) or record.get("key") != key:
        return False
    sizes = record.get("files")
    if not isinstance(sizes, dict) or not all(_fits(v, _COUNT) for v in sizes.values()):
        return False
    result = record.get("result")
    if not _fits(result, _RESULTS[name]):
        log.warning("%s: the record of stage %s is damaged; redoing it", directory / STATE_FILE,
                    name)
        return False
    if name in ("clean", "encode") and not isinstance(result.get("train", {}).get("filtered"),
                                                       dict):
        return False
    for file, size in sizes.items():
        path = directory / file
        if Path(file).name != file or not path.is_file() or path.stat().st_size != size:
            return False
    return True


def write_json(path: Path, value: Any) -> None:
    files.write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


# --- the output directory --------------------------------------------------------------------
def _header_of(directory: Path) -> dict[str, Any] | None:
    for name in (MANIFEST_FILE, STATE_FILE):
        try:
            data = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        return {k: data.get(k) for k in ("corpus", "src_lang", "tgt_lang")}
    return None


def check_output_dir(out: Path, header: dict[str, Any]) -> None:
    """A one-line error when `out` holds something else than this corpus."""
    files.recover(out)  # an interrupted publish: the old output is put back
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


def staging_dir(out: Path) -> Path:
    """Where a run on `out` writes: `.NAME.partial` beside it, kept across failed runs."""
    return out.parent / f".{out.name}.partial"


def _cpu_seconds() -> float:
    """User + system time of this process and of its children that have exited."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# --- the staging directory -------------------------------------------------------------------
class Workspace:
    """The staging directory: stage records, reuse of finished stages, and publishing."""

    def __init__(self, out: Path, header: dict[str, Any], *, force: bool) -> None:
        self.out = out
        self.dir = staging_dir(out)
        self.force = force
        self.created = False  # this run made the staging directory
        self.computed = False  # this run finished a stage by computing it
        if self.dir.is_dir() and (force or _header_of(self.dir) != header):
            shutil.rmtree(self.dir)
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True)
            self.created = True
        self.state = read_state(self.dir) or {**header, "stages": {}}
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
        outputs, result, pairs = compute()
        self._commit(name, key, outputs, result)
        return result, StageReport(name, True, time.perf_counter() - start, pairs,
                                   _cpu_seconds() - cpu)

    def _reuse(self, name: str, key: str) -> dict[str, Any] | None:
        record = self.state["stages"].get(name)
        if record_ok(self.dir, name, record, key):
            return record["result"]
        record = read_state(self.out).get("stages", {}).get(name) if self.out.is_dir() else None
        if not record_ok(self.out, name, record, key):
            return None
        for file in record["files"]:
            target = self.dir / file
            target.unlink(missing_ok=True)
            try:
                os.link(self.out / file, target)  # files are never written in place: safe
            except OSError:
                shutil.copy2(self.out / file, target)
        self.state["stages"][name] = record
        write_json(self.path(STATE_FILE), self.state)
        return record["result"]

    def _commit(self, name: str, key: str, outputs: dict[str, Path],
                result: dict[str, Any]) -> None:
        if self.state["stages"].pop(name, None) is not None:  # no record over half-moved files
            write_json(self.path(STATE_FILE), self.state)
        for final, temp in outputs.items():
            os.replace(temp, self.path(final))
        sizes = {final: self.path(final).stat().st_size for final in outputs}
        self.state["stages"][name] = {"key": key, "files": sizes, "result": result}
        write_json(self.path(STATE_FILE), self.state)
        self.computed = True

    def publish(self) -> None:
        """Drop files no stage owns, then replace the output directory by the staging one."""
        keep = {STATE_FILE, MANIFEST_FILE}
        for record in self.state["stages"].values():
            keep.update(record["files"])
        for path in self.dir.iterdir():
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        # The staging directory itself is published (not a `files.temp_name` copy of it): a run
        # that dies here leaves its finished stages where the next run resumes from.
        files.publish_directory(self.dir, self.out)

    def abandon(self) -> None:
        """After a failure: keep finished stages for the next run, else leave no trace."""
        for path in self.dir.glob("*.tmp*"):
            path.unlink(missing_ok=True)
        if self.created and not self.computed:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.computed:
            log.info("finished stages kept in %s; the next run resumes from there", self.dir)
