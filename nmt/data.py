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

import io
import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmt.errors import ConfigError, DataError
from nmt.text import TextStyle
from nmt.vocab import Vocabulary

MANIFEST_FORMAT = "nmt-prepared/1"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else int32."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class TokenArrayWriter:
    """Streams sentences of ids into `{prefix}.bin` and `{prefix}.idx.npy`.

    Both files are written as sentences come: memory stays bounded whatever the corpus size
    (the offsets go to disk every `OFFSETS_BUFFER` sentences). The `.idx.npy` header, written
    first for an empty array, is rewritten in place at `close` with the final length: numpy
    pads the header so that its size does not depend on the length, and the file is
    byte-identical to `np.save` of the whole offsets array.
    """

    OFFSETS_BUFFER = 1 << 16  # offsets held in memory before they are written out

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype) -> None:
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self._bin = open(f"{self.prefix}.bin", "wb")
        self._idx = open(f"{self.prefix}.idx.npy", "wb")
        self._header = _offsets_header(0)
        self._idx.write(self._header)
        self._offsets = array("q", [0])  # not yet written out
        self._count = 0  # offsets written out
        self._last = 0  # tokens so far: the last offset

    def append(self, ids) -> None:
        data = np.asarray(ids, dtype=self.dtype)
        self._bin.write(data.tobytes())
        self._last += len(data)
        self._offsets.append(self._last)
        self._spill()

    def append_flat(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Append many sentences at once: their ids concatenated, and each one's length."""
        self._bin.write(np.ascontiguousarray(flat, dtype=self.dtype).tobytes())
        if len(lengths):
            ends = self._last + np.cumsum(lengths, dtype=np.int64)
            self._offsets.extend(ends.tolist())
            self._last = int(ends[-1])
        self._spill()

    def _spill(self, at_least: int | None = None) -> None:
        if len(self._offsets) >= (at_least or self.OFFSETS_BUFFER):
            self._idx.write(self._offsets.tobytes())
            self._count += len(self._offsets)
            self._offsets = array("q")

    @property
    def n_tokens(self) -> int:
        return self._last

    def __len__(self) -> int:
        return self._count + len(self._offsets) - 1

    def close(self) -> None:
        self._bin.close()
        self._spill(at_least=1)
        header = _offsets_header(self._count)
        if len(header) != len(self._header):  # cannot happen below 10^21 sentences
            raise DataError("offsets header grew", where=f"{self.prefix}.idx.npy")
        self._idx.seek(0)
        self._idx.write(header)
        self._idx.close()

    def __enter__(self) -> TokenArrayWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _offsets_header(n: int) -> bytes:
    """The `.npy` header `np.save` writes for an (n,) int64 array."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)), "fortran_order": False,
        "shape": (n,)})
    return buffer.getvalue()


class TokenArray:
    """Read-only, memory-mapped sentences of token ids: `arr[i]` is a 1-D numpy array."""

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype) -> None:
        self.prefix = Path(prefix)
        idx_path, bin_path = Path(f"{prefix}.idx.npy"), Path(f"{prefix}.bin")
        for path in (idx_path, bin_path):
            if not path.is_file():
                raise DataError("missing prepared data file; run `nmt prepare`", where=str(path))
        self.offsets = _load_offsets(idx_path)
        size = bin_path.stat().st_size
        n, rest = divmod(size, np.dtype(dtype).itemsize)
        if rest or int(self.offsets[-1]) != n:
            raise DataError(
                f"truncated: index expects {int(self.offsets[-1])} tokens, file has "
                f"{size} bytes of {np.dtype(dtype).name}", where=str(bin_path))
        self.ids = (np.memmap(bin_path, dtype=dtype, mode="r") if n
                    else np.zeros(0, dtype=dtype))
        self.lengths = np.diff(self.offsets).astype(np.int64)  # (N,) tokens per sentence
        if (self.lengths < 0).any():
            raise DataError("sentence offsets decrease: damaged index", where=str(idx_path))

    CHECK_BLOCK = 1 << 22  # ids read at a time by `check_ids`

    def check_ids(self, vocab_size: int, specials: tuple[int, ...] = ()) -> None:
        """Every id is a piece of the vocabulary and none is one of `specials` (padding, BOS,
        EOS: sentences are stored without them), so a damaged file cannot crash or silently
        corrupt training. One pass over the file in blocks read into a buffer, not through the
        memory map: memory stays bounded whatever the corpus size."""
        if not len(self.ids):
            return
        top, first = -1, None  # the largest id; the position of the first special id
        flag = max(specials) if specials else -1
        with open(f"{self.prefix}.bin", "rb") as f:
            start = 0
            while len(block := np.fromfile(f, dtype=self.ids.dtype, count=self.CHECK_BLOCK)):
                top = max(top, int(block.max()))
                if first is None and specials:
                    low = np.flatnonzero(block <= flag)  # one pass; few ids are this small
                    found = low[np.isin(block[low], specials)]
                    if len(found):
                        first = start + int(found[0])
                start += len(block)
        if top >= vocab_size:
            raise DataError(f"token id {top} is outside the vocabulary of {vocab_size}",
                            where=f"{self.prefix}.bin")
        if first is not None:
            sentence = int(np.searchsorted(self.offsets, first, side="right")) - 1
            raise DataError(f"sentence {sentence + 1} holds the special id "
                            f"{int(self.ids[first])} (padding, BOS or EOS): damaged token "
                            "file", where=f"{self.prefix}.bin")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


def _load_offsets(path: Path) -> np.ndarray:
    """A `.idx.npy` file: int64 offsets starting at 0, read without unpickling."""
    try:
        offsets = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"not a valid offsets array ({str(exc).splitlines()[0][:120]})",
                        where=str(path)) from None
    if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) < 1:
        raise DataError(f"offsets must be a 1-D int64 array, found {offsets.dtype} with shape "
                        f"{offsets.shape}", where=str(path))
    if int(offsets[0]) != 0:
        raise DataError("offsets must start at 0: damaged index", where=str(path))
    return offsets


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

    @property
    def text_style(self) -> TextStyle:
        """How the text was lowercased / tokenized before encoding (plain when not)."""
        return TextStyle.from_dict(self.manifest.get("text"))

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
        if len(src) != self.manifest["splits"][name]["pairs"]:
            raise DataError(f"{name}: {len(src)} sentence pairs, the manifest says "
                            f"{self.manifest['splits'][name]['pairs']}", where=str(self.path))
        for array_ in (src, tgt):
            array_.check_ids(len(self.vocab),
                             (self.vocab.pad_id, self.vocab.bos_id, self.vocab.eos_id))
        return ParallelSplit(name, src, tgt)

    def raw_path(self, split: str, lang: str) -> Path:
        """The untokenized text of a validation or test split (for scoring)."""
        return self.path / f"{split}.raw.{lang}"


def check_manifest(manifest: Any, *, where: str) -> None:
    """Type and range of every manifest field `nmt train` relies on."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise DataError(what, where=where)

    need(isinstance(manifest, dict), "the manifest must be a JSON object")
    need(manifest.get("format") == MANIFEST_FORMAT,
         f"unknown format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
    for key in ("corpus", "src_lang", "tgt_lang", "content_hash"):
        need(isinstance(manifest.get(key), str) and manifest[key] != "",
             f"{key} must be a non-empty string")
    need(manifest.get("dtype") in ("uint16", "int32"),
         f"dtype must be uint16 or int32, not {manifest.get('dtype')!r}")
    spm = manifest.get("spm")
    need(isinstance(spm, dict), "spm must be an object (file, sha256, vocab_size)")
    need(isinstance(spm.get("file"), str) and Path(spm["file"]).name == spm["file"] != "",
         f"spm.file must be a file name in the data directory, not {spm.get('file')!r}")
    need(isinstance(spm.get("sha256"), str) and len(spm["sha256"]) == 64,
         "spm.sha256 must be a sha256 digest")
    try:
        TextStyle.from_dict(manifest.get("text"))
    except ConfigError as exc:
        raise DataError(str(exc), where=where) from None
    splits = manifest.get("splits")
    need(isinstance(splits, dict) and "train" in splits, "splits must name a train split")
    for name, split in splits.items():
        need(isinstance(split, dict), f"splits.{name} must be an object")
        for key in ("pairs", "src_tokens", "tgt_tokens"):
            if key == "pairs" or key in split:
                need(_is_count(split.get(key)), f"splits.{name}.{key} must be a count")
    if "vocab_size" in spm:
        need(_is_count(spm["vocab_size"]) and 4 <= spm["vocab_size"] < 2**31,
             f"spm.vocab_size must be a vocabulary size, not {spm['vocab_size']!r:.40}")
    ids = spm.get("special_ids", {})
    need(isinstance(ids, dict) and all(_is_count(v) for v in ids.values()),
         "spm.special_ids must map names to token ids")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


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
    check_manifest(manifest, where=str(manifest_path))
    vocab = Vocabulary.from_file(path / manifest["spm"]["file"])
    if vocab.sha256 != manifest["spm"]["sha256"]:
        raise DataError("SentencePiece model does not match the manifest's hash",
                        where=str(path / manifest["spm"]["file"]))
    spm = manifest["spm"]
    ours = {"pad": vocab.pad_id, "bos": vocab.bos_id, "eos": vocab.eos_id}
    if spm.get("vocab_size", len(vocab)) != len(vocab) or any(
            spm.get("special_ids", {}).get(k, v) != v for k, v in ours.items()):
        raise DataError(f"spm.vocab_size or spm.special_ids differ from the SentencePiece "
                        f"model's ({len(vocab)} pieces, {ours})", where=str(manifest_path))
    return PreparedData(path=path, manifest=manifest, vocab=vocab)
