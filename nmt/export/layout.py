"""What every `nmt export` directory holds besides the model, and how one is written.

Every export carries `SPM_FILE` (our SentencePiece model) and `nmt_export.json` (the source
checkpoint's config and meta), so the runtimes and users need nothing else. It is written into
`files.temp_name(out)` and published with `files.publish_directory`, so a failed export never
damages an existing one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nmt import __version__, files
from nmt.checkpoint import Checkpoint
from nmt.config import ModelConfig
from nmt.errors import CheckpointError, ConfigError
from nmt.vocab import SPM_FILE

EXPORT_META = "nmt_export.json"
SPM = SPM_FILE  # the SentencePiece model's name inside an export
EXTRA_HINT = "install nmt's `export` extra (pip install transformers ctranslate2)"


def require_package(module: str, target: str) -> None:
    """A one-line ConfigError naming the extra to install when `module` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"exporting to {target} needs the `{module}` package; {EXTRA_HINT}")


@contextmanager
def staging(out: Path, *, force: bool) -> Iterator[Path]:
    """A temporary sibling of `out` to write into; renamed to `out` only on success."""
    if out.exists() and not force:
        raise ConfigError("already exists; pass --force to replace it", where=str(out))
    if out.exists() and not (out.is_dir() and (not any(out.iterdir())
                                               or (out / EXPORT_META).is_file())):
        raise ConfigError(f"exists and is not an nmt export (no {EXPORT_META}); --force only "
                          "replaces an earlier export or an empty directory", where=str(out))
    tmp = files.temp_name(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise files.os_failure(exc, out) from None
    try:
        yield tmp
    except BaseException as exc:
        written = files.tree_size(tmp) if tmp.exists() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        failure = files.io_failure(exc, out, needed=written, at_least=True) \
            if isinstance(exc, Exception) else None
        if failure is None:
            raise
        raise failure from None
    files.publish_directory(tmp, out)


def write_export_meta(ckpt: Checkpoint, directory: Path, *, target: str,
                      quantization: str | None) -> None:
    """`SPM` and `EXPORT_META` into the export `directory`."""
    ckpt.vocab.save(directory / SPM)
    meta = {
        "format": "nmt-export/1",
        "target": target,
        "quantization": quantization,
        "source_checkpoint": str(ckpt.path.resolve()),
        "checkpoint_meta": ckpt.meta,
        "config": ckpt.config.to_dict(),
        "nmt_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (directory / EXPORT_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")


def read_export_meta(model_dir: Path) -> dict[str, Any]:
    """The `EXPORT_META` of an export directory, or a one-line CheckpointError."""
    try:
        meta = json.loads((model_dir / EXPORT_META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"not an nmt export ({EXPORT_META}: {exc})",
                              where=str(model_dir)) from None
    where = str(model_dir / EXPORT_META)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError("not an nmt export (no config object)", where=where)
    if not isinstance(meta.get("checkpoint_meta", {}), dict):
        raise CheckpointError("checkpoint_meta must be an object", where=where)
    try:
        ModelConfig.from_dict(meta["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"invalid model config ({exc})", where=where) from None
    return meta
