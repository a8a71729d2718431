"""Where `nmt prepare` reads parallel text from: named hub corpora, local text files, local data
files or directories that Hugging Face `datasets` can load.

Every source yields sentence pairs split by split ("train", "valid", "test"); a pair side is
`None` when its line was undecodable and `--on-bad-utf8 skip` asked to drop it. Nothing here
cleans or tokenizes: that is `nmt.prepare`'s job. `datasets` is imported lazily.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

from nmt.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
BAD_UTF8_POLICIES = ("error", "skip", "replace")
# suffix of a data file -> the `datasets` builder that reads it
DATA_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv",
                      ".arrow": "arrow"}
_HF_BATCH = 10_000  # rows per Arrow batch when streaming a `datasets` split


@dataclass(frozen=True, kw_only=True)
class CorpusSpec:
    """A named corpus on the Hugging Face hub, as `nmt prepare NAME` knows it."""

    name: str  # what users type: `nmt prepare wmt14-en-de`
    src: str  # source language code
    tgt: str  # target language code
    hf_path: str  # dataset id on the hub (a local directory works too)
    hf_config: str | None  # dataset config name; None for the default one
    hf_revision: str | None = None  # git revision; the parquet export for script-only datasets
    hf_data_dir: str | None = None  # repository sub-directory holding this config's files
    schema: str = "translation"  # "translation": one {lang: text} column; "columns": one per lang
    splits: dict[str, str] = field(  # our split name -> the dataset's split name
        default_factory=lambda: {"train": "train", "valid": "validation", "test": "test"})
    sizes: tuple[int, int, int]  # documented (train, valid, test) pairs
    eval_sets: tuple[str, str]  # what the (valid, test) splits are, e.g. newstest2013/2014
    vocab_size: int  # default joint SentencePiece vocabulary size

    @property
    def source(self) -> str:
        extra = f" ({self.hf_config})" if self.hf_config else ""
        return f"hf:{self.hf_path}{extra}"


def _wmt14(name: str, src: str, tgt: str, config: str, train: int) -> CorpusSpec:
    return CorpusSpec(name=name, src=src, tgt=tgt, hf_path="wmt/wmt14", hf_config=config,
                      sizes=(train, 3000, 3003), eval_sets=("newstest2013", "newstest2014"),
                      vocab_size=32000)


CORPORA: dict[str, CorpusSpec] = {spec.name: spec for spec in (
    _wmt14("wmt14-en-de", "en", "de", "de-en", 4_508_785),
    _wmt14("wmt14-de-en", "de", "en", "de-en", 4_508_785),
    _wmt14("wmt14-en-fr", "en", "fr", "fr-en", 40_836_715),
    CorpusSpec(name="wmt16-en-ro", src="en", tgt="ro", hf_path="wmt/wmt16", hf_config="ro-en",
               sizes=(610_320, 1999, 1999), eval_sets=("newsdev2016", "newstest2016"),
               vocab_size=32000),
    # The hub repository still holds a loading script, which `datasets` >= 4 refuses to run; its
    # automatic parquet export (one sub-directory per config) loads without it.
    CorpusSpec(name="iwslt2017-de-en", src="de", tgt="en", hf_path="IWSLT/iwslt2017",
               hf_config=None, hf_revision="refs/convert/parquet", hf_data_dir="iwslt2017-de-en",
               sizes=(206_112, 888, 8079), eval_sets=("dev2010", "tst2010-2015"),
               vocab_size=8000),
    CorpusSpec(name="multi30k-en-de", src="en", tgt="de", hf_path="bentrevett/multi30k",
               hf_config=None, schema="columns", sizes=(29_000, 1014, 1000),
               eval_sets=("val", "test_2016_flickr"), vocab_size=8000),
)}


def corpus_spec(name: str) -> CorpusSpec:
    try:
        return CORPORA[name]
    except KeyError:
        known = ", ".join(CORPORA)
        raise ConfigError(f"unknown corpus {name!r}; named corpora: {known}, or `local`") from None


# --- local text files ------------------------------------------------------------------------
def text_file(prefix: Path, lang: str) -> Path:
    """`PREFIX.lang`, else `PREFIX.lang.gz`; a one-line error naming both when neither exists."""
    plain = Path(f"{prefix}.{lang}")
    for path in (plain, Path(f"{plain}.gz")):
        if path.is_file():
            return path
    raise DataError(f"missing file (nor {plain.name}.gz)", where=str(plain))


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: Path, on_bad_utf8: str) -> Iterator[str | None]:
    """The lines of `path` without their terminator (LF or CRLF); only LF separates lines.

    An undecodable line raises a DataError naming file and line (`error`), becomes None
    (`skip`) or is decoded with U+FFFD replacement characters (`replace`).
    """
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                raw = raw[:-1] if raw.endswith(b"\n") else raw
                raw = raw[:-1] if raw.endswith(b"\r") else raw
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if on_bad_utf8 == "error":
                        raise DataError(f"invalid UTF-8 at byte {exc.start + 1} of the line "
                                        "(--on-bad-utf8 skip|replace to go on)",
                                        where=f"{path}:{lineno}") from None
                    yield None if on_bad_utf8 == "skip" else raw.decode("utf-8", "replace")
    except (OSError, EOFError) as exc:  # unreadable file or corrupt gzip stream
        raise DataError(f"cannot read ({exc})", where=str(path)) from None


def text_pairs(src: Path, tgt: Path, on_bad_utf8: str) -> Iterator[tuple[str | None, str | None]]:
    """Line-aligned pairs of two files; different line counts are a one-line error."""
    end = object()
    n_src = n_tgt = 0
    mismatch = False
    for s, t in zip_longest(read_lines(src, on_bad_utf8), read_lines(tgt, on_bad_utf8),
                            fillvalue=end):
        n_src += s is not end
        n_tgt += t is not end
        if s is end or t is end:
            mismatch = True
        elif not mismatch:
            yield s, t
    if mismatch:
        raise DataError(f"line counts differ: {src} has {n_src:,} lines, {tgt} has {n_tgt:,}",
                        where=str(src))


def file_identity(path: Path) -> dict[str, Any]:
    """What identifies a local input without reading it: resolved path, size and mtime."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def tree_identity(path: Path) -> list[dict[str, Any]]:
    """`file_identity` of every file under a directory (or of the file itself)."""
    if path.is_file():
        return [file_identity(path)]
    return [file_identity(p) for p in sorted(path.rglob("*")) if p.is_file()]


# --- Hugging Face datasets -------------------------------------------------------------------
def _is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` means the hub could not be reached (no network, offline mode, timeout)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return (isinstance(exc, ConnectionError | TimeoutError)
            or bool(names & {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError",
                             "ConnectTimeout", "TimeoutException", "ReadTimeout"}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_hub_corpus(spec: CorpusSpec, cache_dir: Path | None) -> dict[str, Any]:
    """Download (or take from the cache) a named corpus: our split name -> `datasets.Dataset`."""
    import datasets

    log.info("loading %s from the Hugging Face hub (%s)", spec.name, spec.source)
    try:
        loaded = datasets.load_dataset(
            spec.hf_path, spec.hf_config, revision=spec.hf_revision, data_dir=spec.hf_data_dir,
            cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # datasets raises many unrelated types; each becomes one line
        if _is_unreachable(exc):
            raise DataError(
                f"cannot reach the Hugging Face hub to download {spec.hf_path} "
                f"({type(exc).__name__}); without network access, get the corpus as text files "
                f"and run `nmt prepare local --src {spec.src} --tgt {spec.tgt} --train PREFIX "
                "--valid PREFIX --test PREFIX`", where=spec.name) from None
        raise DataError(f"cannot load {spec.source}: {_first_line(exc)}", where=spec.name) from None
    return {ours: _split(loaded, theirs, spec.name) for ours, theirs in spec.splits.items()}


def _split(loaded, name: str, where: str):
    if name not in loaded:
        raise DataError(f"no {name!r} split (has {', '.join(loaded)})", where=where)
    return loaded[name]


def load_local_dataset(path: Path, cache_dir: Path | None) -> dict[str, Any]:
    """A local directory that `datasets` can load (data files, or `save_to_disk` output).

    Split names: train; validation, valid, val or dev; test. Missing test is allowed.
    """
    import datasets

    if not path.exists():
        raise DataError("no such dataset directory or file", where=str(path))
    try:
        if (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file():
            loaded = {"train": load_data_file(path, cache_dir)}
        else:
            loaded = datasets.load_dataset(str(path), cache_dir=str(cache_dir) if cache_dir
                                           else None)
    except DataError:
        raise
    except Exception as exc:  # anything `datasets` cannot read
        raise DataError(f"`datasets` cannot load it: {_first_line(exc)}", where=str(path)) from None
    splits: dict[str, Any] = {}
    names = {"train": ("train",), "valid": ("validation", "valid", "val", "dev"),
             "test": ("test",)}
    for ours, candidates in names.items():
        found = next((c for c in candidates if c in loaded), None)
        if found is not None:
            splits[ours] = loaded[found]
    for required in ("train", "valid"):
        if required not in splits:
            raise DataError(f"no {required} split (has {', '.join(loaded) or 'none'})",
                            where=str(path))
    return splits


def load_data_file(path: Path, cache_dir: Path | None):
    """One data file (parquet, json/jsonl, csv, arrow) as a `datasets.Dataset`."""
    import datasets

    builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"not a data file `datasets` reads ({', '.join(DATA_FILE_BUILDERS)})",
                        where=str(path))
    if not path.is_file():
        raise DataError("missing file", where=str(path))
    try:
        return datasets.load_dataset(builder, data_files={"train": str(path)}, split="train",
                                     cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # anything `datasets` cannot read
        raise DataError(f"`datasets` cannot load it: {_first_line(exc)}", where=str(path)) from None


def dataset_schema(dataset, src: str, tgt: str, where: str) -> str:
    """"translation" (one column of {lang: text}, the WMT schema) or "columns" (one per lang)."""
    features = dataset.features
    if "translation" in features:
        feature = features["translation"]
        langs = set(getattr(feature, "languages", None) or feature.keys())
        missing = [lang for lang in (src, tgt) if lang not in langs]
        if missing:
            raise DataError(f"its 'translation' column has no {'/'.join(missing)} "
                            f"(languages: {', '.join(sorted(langs))})", where=where)
        return "translation"
    if src in features and tgt in features:
        return "columns"
    raise DataError(f"no 'translation' column with {src!r}/{tgt!r} keys and no {src!r} and "
                    f"{tgt!r} columns (columns: {', '.join(features)})", where=where)


def dataset_pairs(dataset, src: str, tgt: str, schema: str) -> Iterator[tuple[str, str]]:
    """Stream the pairs of a `datasets.Dataset` in Arrow batches (never all rows at once)."""
    for table in dataset.with_format("arrow").iter(batch_size=_HF_BATCH):
        if schema == "translation":
            column = table.column("translation").combine_chunks()
            src_texts = column.field(src).to_pylist()
            tgt_texts = column.field(tgt).to_pylist()
        else:
            src_texts = table.column(src).to_pylist()
            tgt_texts = table.column(tgt).to_pylist()
        for s, t in zip(src_texts, tgt_texts, strict=True):
            yield s or "", t or ""


@dataclass(frozen=True, kw_only=True)
class Source:
    """One parallel corpus to prepare, resolved but not read yet."""

    name: str  # corpus name recorded in the manifest (and the default output directory)
    src: str  # source language code
    tgt: str  # target language code
    splits: tuple[str, ...]  # the splits it has, in order: train, valid[, test]
    identity: dict[str, Any]  # identifies the input without reading it (for resume)
    default_vocab_size: int | None  # the corpus's default vocabulary; None: by training size
    reader: Callable[[str, str], Iterator[tuple[str | None, str | None]]]  # (split, bad) -> pairs

    def pairs(self, split: str, on_bad_utf8: str) -> Iterator[tuple[str | None, str | None]]:
        return self.reader(split, on_bad_utf8)


def hub_source(spec: CorpusSpec, cache_dir: Path | None) -> Source:
    """A named corpus; the hub is contacted only when a split is first read."""
    loaded: dict[str, Any] = {}

    def reader(split: str, on_bad_utf8: str):
        if not loaded:
            loaded.update(load_hub_corpus(spec, cache_dir))
        dataset = loaded[split]
        schema = dataset_schema(dataset, spec.src, spec.tgt, where=f"{spec.name} {split}")
        return dataset_pairs(dataset, spec.src, spec.tgt, schema)

    identity = {"kind": "hub", "hf_path": spec.hf_path, "hf_config": spec.hf_config,
                "hf_revision": spec.hf_revision, "hf_data_dir": spec.hf_data_dir}
    return Source(name=spec.name, src=spec.src, tgt=spec.tgt, splits=tuple(spec.splits),
                  identity=identity, default_vocab_size=spec.vocab_size, reader=reader)


def local_source(*, src: str, tgt: str, train: Path | None, valid: Path | None,
                 test: Path | None, dataset: Path | None, name: str | None,
                 cache_dir: Path | None) -> Source:
    """Local text files (`PREFIX.src`/`PREFIX.tgt`, optionally .gz), data files, or a dataset
    directory. Every input is checked to exist before anything is read."""
    if dataset is not None:
        if train or valid or test:
            raise ConfigError("give either --dataset or --train/--valid/--test, not both")
        return _local_dataset_source(src, tgt, dataset, name, cache_dir)
    if train is None or valid is None:
        raise ConfigError("`nmt prepare local` needs --train and --valid (text prefixes or data "
                          "files), or --dataset DIR")
    inputs = {split: path for split, path in zip(SPLITS, (train, valid, test), strict=True)
              if path is not None}
    readers: dict[str, Callable[[str], Iterator]] = {}
    identity: dict[str, Any] = {"kind": "local"}
    for split, path in inputs.items():
        if path.suffix.lower() in DATA_FILE_BUILDERS:
            if not path.is_file():
                raise DataError("missing file", where=str(path))
            readers[split] = _data_file_reader(path, src, tgt, cache_dir)
            identity[split] = file_identity(path)
        else:
            files = (text_file(path, src), text_file(path, tgt))
            readers[split] = _text_reader(*files)
            identity[split] = [file_identity(p) for p in files]
    return Source(name=name or _default_name(train), src=src, tgt=tgt, splits=tuple(inputs),
                  identity=identity, default_vocab_size=None,
                  reader=lambda split, bad: readers[split](bad))


def _text_reader(src_path: Path, tgt_path: Path):
    return lambda on_bad_utf8: text_pairs(src_path, tgt_path, on_bad_utf8)


def _data_file_reader(path: Path, src: str, tgt: str, cache_dir: Path | None):
    def read(on_bad_utf8: str):
        dataset = load_data_file(path, cache_dir)
        return dataset_pairs(dataset, src, tgt, dataset_schema(dataset, src, tgt, str(path)))
    return read


def _local_dataset_source(src: str, tgt: str, path: Path, name: str | None,
                          cache_dir: Path | None) -> Source:
    if not path.exists():
        raise DataError("no such dataset directory or file", where=str(path))
    loaded = load_local_dataset(path, cache_dir)
    schemas = {split: dataset_schema(ds, src, tgt, f"{path} {split}")
               for split, ds in loaded.items()}

    def reader(split: str, on_bad_utf8: str):
        return dataset_pairs(loaded[split], src, tgt, schemas[split])

    identity = {"kind": "dataset", "files": tree_identity(path)}
    return Source(name=name or path.stem, src=src, tgt=tgt, splits=tuple(loaded),
                  identity=identity, default_vocab_size=None, reader=reader)


def _default_name(train: Path) -> str:
    """The name of the directory holding the training data, e.g. `multi30k`."""
    return train.resolve().parent.name or "local"
