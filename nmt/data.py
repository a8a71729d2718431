"""The prepared-data format that `nmt prepare` writes and `nmt train` reads.

A prepared directory holds:

- `manifest.json`: what was prepared and how (see `MANIFEST_FORMAT` and `PreparedData`),
- `spm.model`: the joint SentencePiece model,
- `{split}.{lang}.bin` + `{split}.{lang}.idx.npy`: the subword ids of every sentence, concatenated
  into one flat array (uint16 when the vocabulary fits, else int32), and the int64 offsets of
  sentence boundaries (n + 1 entries). Both are memory-mapped, so nothing is loaded into RAM.
  Sentences are stored without BOS/EOS; the trainer adds them.
- `{split}.raw.{lang}`: the untokenized validation and test text, kept for scoring.

Manifest keys: `format`, `corpus`, `src_lang`, `tgt_lang`, `dtype`, `spm` (`file`, `sha256`,
`vocab_size`, ...), `splits` (per split: `pairs`, `src_tokens`, `tgt_tokens`, and for train the
pairs each filter removed), `settings` (the stage settings), `content_hash`.
"""

from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmt.errors import DataError
from nmt.vocab import Vocabulary

MANIFEST_FORMAT = "nmt-prepared/1"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else int32."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class TokenArrayWriter:
    """Streams sentences of ids into `{prefix}.bin` and `{prefix}.idx.npy`."""

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype) -> None:
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self._bin = open(f"{self.prefix}.bin", "wb")
        self._offsets = array("q", [0])

    def append(self, ids) -> None:
        data = np.asarray(ids, dtype=self.dtype)
        self._bin.write(data.tobytes())
        self._offsets.append(self._offsets[-1] + len(data))

    def append_flat(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Append many sentences at once: their ids concatenated, and each one's length."""
        self._bin.write(np.ascontiguousarray(flat, dtype=self.dtype).tobytes())
        ends = self._offsets[-1] + np.cumsum(lengths, dtype=np.int64)
        self._offsets.extend(ends.tolist())

    @property
    def n_tokens(self) -> int:
        return self._offsets[-1]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def close(self) -> None:
        self._bin.close()
        np.save(f"{self.prefix}.idx.npy", np.frombuffer(self._offsets, dtype=np.int64))

    def __enter__(self) -> TokenArrayWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TokenArray:
    """Read-only, memory-mapped sentences of token ids: `arr[i]` is a 1-D numpy array."""

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype) -> None:
        self.prefix = Path(prefix)
        idx_path, bin_path = Path(f"{prefix}.idx.npy"), Path(f"{prefix}.bin")
        for path in (idx_path, bin_path):
            if not path.is_file():
                raise DataError("missing prepared data file; run `nmt prepare`", where=str(path))
        self.offsets = np.load(idx_path, mmap_mode="r")
        size = bin_path.stat().st_size
        n = size // np.dtype(dtype).itemsize
        if int(self.offsets[-1]) != n:
            raise DataError(
                f"truncated: index expects {int(self.offsets[-1])} tokens, file has {n}",
                where=str(bin_path))
        self.ids = (np.memmap(bin_path, dtype=dtype, mode="r") if n
                    else np.zeros(0, dtype=dtype))
        self.lengths = np.diff(self.offsets).astype(np.int64)  # (N,) tokens per sentence

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


@dataclass(frozen=True)
class ParallelSplit:
    """One split: source and target sentences, aligned by index."""

    name: str
    src: TokenArray
    tgt: TokenArray

    def __len__(self) -> int:
        return len(self.src)


@dataclass(frozen=True)
class PreparedData:
    """A prepared data directory, opened read-only."""

    path: Path
    manifest: dict[str, Any]
    vocab: Vocabulary

    @property
    def src_lang(self) -> str:
        return self.manifest["src_lang"]

    @property
    def tgt_lang(self) -> str:
        return self.manifest["tgt_lang"]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @property
    def name(self) -> str:
        return self.manifest["corpus"]

    def has_split(self, name: str) -> bool:
        return name in self.manifest["splits"]

    def split(self, name: str) -> ParallelSplit:
        if name not in self.manifest["splits"]:
            raise DataError(f"no {name!r} split in this prepared data", where=str(self.path))
        dtype = np.dtype(self.manifest["dtype"])
        src = TokenArray(self.path / f"{name}.{self.src_lang}", dtype)
        tgt = TokenArray(self.path / f"{name}.{self.tgt_lang}", dtype)
        if len(src) != len(tgt):
            raise DataError(f"{name}: {len(src)} source but {len(tgt)} target sentences",
                            where=str(self.path))
        return ParallelSplit(name, src, tgt)

    def raw_path(self, split: str, lang: str) -> Path:
        """The untokenized text of a validation or test split (for scoring)."""
        return self.path / f"{split}.raw.{lang}"


def load_prepared(path: str | os.PathLike) -> PreparedData:
    """Open a directory written by `nmt prepare`, with one-line errors for anything missing."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not path.is_dir():
        raise DataError("no such data directory; run `nmt prepare` first", where=str(path))
    if not manifest_path.is_file():
        raise DataError("no manifest.json: not a prepared data directory (run `nmt prepare`)",
                        where=str(path))
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable manifest ({exc})", where=str(manifest_path)) from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"unknown format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}",
                        where=str(manifest_path))
    vocab = Vocabulary.from_file(path / manifest["spm"]["file"])
    if vocab.sha256 != manifest["spm"]["sha256"]:
        raise DataError("SentencePiece model does not match the manifest's hash",
                        where=str(path / manifest["spm"]["file"]))
    return PreparedData(path=path, manifest=manifest, vocab=vocab)
