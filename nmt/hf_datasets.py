"""Reading parallel corpora through Hugging Face `datasets` (imported lazily): named corpora
from the hub, and local data files or directories it can load, streamed in Arrow batches.
`nmt.corpora` wraps these in its `Source`s."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.errors import DataError

if TYPE_CHECKING:
    from nmt.corpora import CorpusSpec

log = logging.getLogger(__name__)

# suffix of a data file -> the `datasets` builder that reads it
DATA_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv",
                      ".arrow": "arrow"}
_HF_BATCH = 10_000  # rows per Arrow batch when streaming a `datasets` split


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """`datasets`' progress bars off and its log muted while it loads: they would print beside
    nmt's progress, and its own report of a failure beside nmt's one-line error."""
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    library_log = logging.getLogger("datasets")
    level = library_log.level
    datasets.disable_progress_bars()
    library_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        library_log.setLevel(level)
        if bars_were_on:
            datasets.enable_progress_bars()


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
    if not Path(spec.hf_path).exists() and not _hub_resolvable():
        raise _unreachable(spec, "cannot resolve huggingface.co")
    for noisy in ("huggingface_hub", "datasets", "fsspec", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)  # retries would print a page of noise
    try:
        loaded = datasets.load_dataset(
            spec.hf_path, spec.hf_config, revision=spec.hf_revision, data_dir=spec.hf_data_dir,
            cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # datasets raises many unrelated types; each becomes one line
        if _is_unreachable(exc):
            raise _unreachable(spec, type(exc).__name__) from None
        raise DataError(f"cannot load {spec.source}: {_first_line(exc)}", where=spec.name) from None
    return {ours: _split(loaded, theirs, spec.name) for ours, theirs in spec.splits.items()}


def _hub_resolvable() -> bool:
    """False when the hub's host name does not resolve (no network), so that the user gets the
    one-line error at once instead of after a minute of retries; offline mode and proxies are
    left to `datasets` itself."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE") == "1" or any(
            os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.getaddrinfo("huggingface.co", 443)
    except OSError:
        return False
    return True


def _unreachable(spec: CorpusSpec, why: str) -> DataError:
    return DataError(
        f"cannot reach the Hugging Face hub to download {spec.hf_path} ({why}); without network "
        f"access, get the corpus as text files and run `nmt prepare local --src {spec.src} "
        f"--tgt {spec.tgt} --train PREFIX --valid PREFIX --test PREFIX`", where=spec.name)


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
        if path.is_file():
            loaded = {"train": load_data_file(path, cache_dir)}
        else:
            with quiet():
                if (path / "dataset_dict.json").is_file():
                    loaded = datasets.load_from_disk(str(path))
                else:
                    loaded = datasets.load_dataset(str(path), cache_dir=str(cache_dir)
                                                   if cache_dir else None)
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
        with quiet():
            return datasets.load_dataset(builder, data_files={"train": str(path)},
                                         split="train",
                                         cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # anything `datasets` cannot read
        raise DataError(f"`datasets` cannot load it: {_first_line(exc)}", where=str(path)) from None


def dataset_schema(dataset, src: str, tgt: str, where: str) -> str:
    """"translation" (one column of {lang: text}, the WMT schema) or "columns" (one per lang)."""
    features = dataset.features
    if "translation" in features:
        feature = features["translation"]
        if getattr(feature, "languages", None):  # datasets.Translation: text in every language
            langs, texts = set(feature.languages), set(feature.languages)
        elif isinstance(feature, dict):
            langs = set(feature)
            texts = {lang for lang, value in feature.items() if _is_text(value)}
        else:
            raise DataError(f"its 'translation' column holds {_kind(feature)}, not "
                            "{language: text} objects", where=where)
        missing = [lang for lang in (src, tgt) if lang not in langs]
        if missing:
            raise DataError(f"its 'translation' column has no {'/'.join(missing)} "
                            f"(languages: {', '.join(sorted(langs))})", where=where)
        for lang in (src, tgt):
            if lang not in texts:
                raise DataError(f"its 'translation' column's {lang} holds "
                                f"{_kind(feature[lang])}, not text", where=where)
        return "translation"
    if src in features and tgt in features:
        for lang in (src, tgt):
            if not _is_text(features[lang]):
                raise DataError(f"its {lang!r} column holds {_kind(features[lang])}, not text",
                                where=where)
        return "columns"
    raise DataError(f"no 'translation' column with {src!r}/{tgt!r} keys and no {src!r} and "
                    f"{tgt!r} columns (columns: {', '.join(features)})", where=where)


def _is_text(feature: Any) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


def _kind(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    return f"{dtype} values" if dtype else type(feature).__name__


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
