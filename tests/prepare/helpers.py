"""Helpers of the `nmt prepare` tests: toy corpora, configs, directory snapshots."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
from conftest import toy_pairs
from typer.testing import CliRunner

from nmt import prepare
from nmt.errors import DataError

runner = CliRunner()
TOY_VOCAB = 300


def write_text(prefix: Path, pairs, src="en", tgt="de", gz=False) -> Path:
    """Write `pairs` as PREFIX.src / PREFIX.tgt (one sentence a line)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for lang, side in ((src, 0), (tgt, 1)):
        data = "".join(f"{p[side]}\n" for p in pairs).encode("utf-8")
        if gz:
            Path(f"{prefix}.{lang}.gz").write_bytes(gzip.compress(data))
        else:
            Path(f"{prefix}.{lang}").write_bytes(data)
    return prefix


def toy_corpus(root: Path) -> dict[str, Path]:
    pairs = toy_pairs()
    return {"train": write_text(root / "toy" / "train", pairs),
            "valid": write_text(root / "toy" / "valid", pairs[:20]),
            "test": write_text(root / "toy" / "test", pairs[20:45])}


def config(out: Path, files: dict[str, Path], **overrides) -> prepare.PrepareConfig:
    settings = {"corpus": "local", "src_lang": "en", "tgt_lang": "de", "out": out,
                "train": files["train"], "valid": files["valid"], "test": files.get("test"),
                "name": "toy", "vocab_size": TOY_VOCAB, "workers": 1, "max_ratio": 3.0}
    settings.update(overrides)
    return prepare.PrepareConfig(**settings)


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file of `directory` with its inode and content hash."""
    return {p.name: (p.stat().st_ino, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(directory.iterdir())}


def normalized(line: str) -> str:
    return " ".join(line.split())


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def decoded(split, vocab) -> list[tuple[str, str]]:
    return [(vocab.decode(split.src[i].tolist()), vocab.decode(split.tgt[i].tolist()))
            for i in range(len(split))]


def staging(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def write_parquet(path: Path, pairs, src="en", tgt="de") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"translation": [{src: s, tgt: t} for s, t in pairs]}), path)
    return path


def fails(out: Path, cfg, error=DataError, match: str = "") -> str:
    """Run, expect a one-line error, and check that `out` was not touched."""
    before = snapshot(out)
    with pytest.raises(error, match=match) as err:
        prepare.run(cfg)
    assert "\n" not in str(err.value)
    assert snapshot(out) == before and not staging(out).exists()
    return str(err.value)
