"""The shared subword vocabulary: a joint SentencePiece model with fixed special-token ids.

The model's bytes travel inside every prepared data directory and every checkpoint, so that
`translate` applies exactly the segmentation the model was trained with (no BPE by hand).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from nmt.errors import DataError
from nmt.files import available_cores

log = logging.getLogger(__name__)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# The SentencePiece model's file name in prepared data, checkpoint and export directories.
SPM_FILE = "spm.model"
# Every character `str.splitlines` breaks on (a `datasets` string or a decoded translation may
# hold any of them), mapped to a space: text written one sentence a line must not hold them.
LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


class Vocabulary:
    """A SentencePiece model held as bytes; encodes text to ids and decodes ids to text."""

    def __init__(self, model_bytes: bytes) -> None:
        import sentencepiece as spm

        self.model_bytes = model_bytes
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_bytes)
        except Exception as exc:  # sentencepiece raises plain RuntimeError/OSError
            raise DataError(f"not a SentencePiece model ({exc})") from None
        self.pad_id = self.sp.pad_id()
        self.unk_id = self.sp.unk_id()
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Vocabulary:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read SentencePiece model ({exc.strerror})",
                            where=str(path)) from None
        try:
            return cls(data)
        except DataError as exc:
            raise DataError(str(exc), where=str(path)) from None

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_bytes).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_bytes(self.model_bytes)

    def encode(self, text: str) -> list[int]:
        """Subword ids of `text`, without BOS/EOS."""
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text of `ids`; special tokens are dropped."""
        specials = {self.pad_id, self.bos_id, self.eos_id}
        return self.sp.decode([i for i in ids if i not in specials])

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)


def train_sentencepiece(
    sentences: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    byte_fallback: bool = True,
    input_sentence_size: int = 10_000_000,
    num_threads: int | None = None,
) -> Vocabulary:
    """Train a joint SentencePiece model on `sentences` with pad/unk/bos/eos = 0/1/2/3.

    With byte fallback no input character becomes `<unk>`. `hard_vocab_limit` is off so that a
    small corpus with fewer distinct pieces than `vocab_size` still gets a model.
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    iterator: Iterator[str] = (s for s in sentences if s)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iterator,
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=1_000_000,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
            hard_vocab_limit=False,
            num_threads=num_threads or available_cores(),
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise DataError(f"SentencePiece training failed: {exc}") from None
    return Vocabulary(without_thread_count(buffer.getvalue()))


# --- the model file's bytes ------------------------------------------------------------------
_TRAINER_SPEC = 2  # ModelProto.trainer_spec
_NUM_THREADS = 16  # TrainerSpec.num_threads


def without_thread_count(model: bytes) -> bytes:
    """The SentencePiece model with `trainer_spec.num_threads` removed.

    SentencePiece records the thread count it trained with; the pieces and scores do not depend
    on it, but the bytes (and so the vocabulary's hash and the prepared data's content hash)
    would differ between machines. The field is optional, so the model loads unchanged.
    """
    out = bytearray()
    for field, wire, start, end, body in _fields(model):
        if field == _TRAINER_SPEC and wire == 2:
            spec = _drop_field(body, _NUM_THREADS)
            out += _varint((field << 3) | 2) + _varint(len(spec)) + spec
        else:
            out += model[start:end]
    return bytes(out)


def _drop_field(message: bytes, number: int) -> bytes:
    return b"".join(message[start:end] for field, _, start, end, _ in _fields(message)
                    if field != number)


def _fields(data: bytes):
    """(field number, wire type, start, end, payload of a length-delimited field) per field."""
    i = 0
    while i < len(data):
        start = i
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        payload = b""
        if wire == 0:
            _, i = _read_varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = _read_varint(data, i)
            payload, i = data[i:i + length], i + length
        elif wire == 5:
            i += 4
        else:
            raise DataError(f"not a SentencePiece model (protobuf wire type {wire})")
        if i > len(data):
            raise DataError("not a SentencePiece model (truncated protobuf)")
        yield field, wire, start, i, payload


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise DataError("not a SentencePiece model (bad protobuf varint)")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        shift += 7
        if not byte & 0x80:
            return value, i


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
