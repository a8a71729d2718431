"""What `nmt prepare` is asked to do: the settings, their checks and what follows from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nmt import corpora
from nmt.errors import ConfigError
from nmt.files import available_cores
from nmt.text import TextStyle
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID, SPM_FILE, UNK_ID, Vocabulary

MIN_VOCAB_SIZE = 300  # 256 byte-fallback pieces, 4 specials and room for real pieces
SMALL_CORPUS_PAIRS = 1_000_000  # local corpora below this get the small default vocabulary
SMALL_VOCAB_SIZE, LARGE_VOCAB_SIZE = 8000, 32000


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
    vocab_size: int | None = None  # joint vocabulary; None: the corpus default (37000 WMT14 en-de)
    vocab_from: Path | None = None  # reuse this SentencePiece model (a .model file, a checkpoint
    #                                 or a prepared directory) instead of training one
    max_len: int = 250  # drop training pairs with a side longer than this many subwords
    max_ratio: float = 1.5  # drop training pairs whose subword length ratio exceeds this
    dedup: bool = False  # drop exact duplicate training pairs (after whitespace cleaning)
    lowercase: bool = False  # lowercase all text the model sees (both sides, every split)
    moses_tokenize: bool = False  # Moses-style tokens; `nmt translate` detokenizes its output
    spm_sample: int = 10_000_000  # at most this many sentences (both sides) train SentencePiece
    workers: int = 0  # encoding processes and SentencePiece threads; 0: all cores
    on_bad_utf8: str = "error"  # undecodable line: "error", "skip" (drop the pair), "replace"
    force: bool = False  # redo every stage even when its outputs are up to date
    seed: int = 1  # seed of the SentencePiece sample
    cache_dir: Path | None = None  # `datasets` cache; None: its default (~/.cache/huggingface)
    chunk_pairs: int = 10_000  # pairs per encoding task sent to a worker


    @property
    def text_style(self) -> TextStyle:
        return TextStyle(lowercase=self.lowercase, moses_tokenize=self.moses_tokenize)


def validate(c: PrepareConfig) -> None:
    """A one-line ConfigError for the first setting out of range."""
    if c.on_bad_utf8 not in corpora.BAD_UTF8_POLICIES:
        raise ConfigError(f"--on-bad-utf8 must be one of {', '.join(corpora.BAD_UTF8_POLICIES)}")
    if c.vocab_size is not None and c.vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (SentencePiece byte "
                          "fallback alone takes 256 pieces)")
    for value, flag, low in ((c.max_len, "--max-len", 1), (c.spm_sample, "--spm-sample", 1000),
                             (c.workers, "--workers", 0), (c.chunk_pairs, "chunk_pairs", 1)):
        if value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")
    if not c.max_ratio >= 1.0:  # NaN too
        raise ConfigError(f"--max-ratio must be at least 1.0, got {c.max_ratio}")
    if c.vocab_from is not None and c.vocab_size is not None:
        raise ConfigError("--vocab-from reuses a vocabulary of its own size: drop --vocab-size")


def source_of(c: PrepareConfig) -> corpora.Source:
    """The corpus `c` names: a named one (hub or the built-in sample) or local files."""
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


def vocab_size_of(c: PrepareConfig, source: corpora.Source, train_pairs: int) -> int:
    """The joint vocabulary size: asked for, the corpus default, or by corpus size."""
    if c.vocab_from is not None:
        return len(given_vocabulary(c.vocab_from))
    if c.vocab_size is not None:
        return c.vocab_size
    if source.default_vocab_size is not None:
        return source.default_vocab_size
    return SMALL_VOCAB_SIZE if train_pairs < SMALL_CORPUS_PAIRS else LARGE_VOCAB_SIZE


def given_vocabulary(path: Path) -> Vocabulary:
    """The SentencePiece model `--vocab-from` names: a `.model` file, or the one inside a
    checkpoint or prepared directory; it must use nmt's special ids (pad/unk/bos/eos 0-3)."""
    path = Path(path)
    file = path / SPM_FILE if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"no SentencePiece model: neither a .model file nor a directory with "
                          f"{SPM_FILE} (a checkpoint or prepared data)",
                          where=f"--vocab-from {path}")
    vocab = Vocabulary.from_file(file)
    ids = (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id)
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise ConfigError(f"special ids pad/unk/bos/eos are {ids}, nmt needs "
                          f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}", where=str(file))
    return vocab


def workers_of(c: PrepareConfig) -> int:
    """Encoding processes and SentencePiece threads: asked for, or every available core."""
    return c.workers or available_cores()
