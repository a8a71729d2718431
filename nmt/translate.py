"""`nmt translate`: raw text in, detokenized translations out, one line per input line.

Input is read as bytes in chunks of `buffer_lines` lines, so memory does not grow with the input
and the translations of each chunk are flushed before the next is read (the command can sit in
a pipe). Within a chunk, sentences are encoded with the checkpoint's own SentencePiece model,
sorted by length and cut into batches of at most `batch_tokens` padded source tokens (each
line counted once per beam, as it takes that many decoder rows); every batch is searched at
once (see `nmt.search`), and the results are written back in input order.

One bad line never stops the run: undecodable bytes are replaced, over-long lines are
truncated, and a line whose search fails gets an empty translation; each with a warning that
names the line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

import torch

from nmt import lines as line_input
from nmt.attention import format_pairs, hard_alignment, outputs_of, replay, word_alignment
from nmt.checkpoint import load_checkpoint
from nmt.config import PRECISIONS
from nmt.errors import CheckpointError, ConfigError, DataError
from nmt.files import atomic_file, available_cores
from nmt.progress import NoProgress, ProgressSink
from nmt.search import Ensemble, Hypothesis, SearchConfig, output_limit, search
from nmt.text import StyledVocabulary, TextStyle
from nmt.vocab import LINE_BREAKS, Vocabulary

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("text", "jsonl")
ENGINES = ("torch", "ctranslate2")
TRANSLATE_PRECISIONS = (*PRECISIONS, "int8")  # int8: CPU only, dynamic quantization


@dataclass(frozen=True, kw_only=True)
class TranslateConfig:
    checkpoints: tuple[Path, ...]  # one checkpoint directory, or several to ensemble
    search: SearchConfig = field(default_factory=SearchConfig)  # beam, penalty, sampling...
    input: Path | None = None  # read this file instead of the `stdin` stream given to `run`
    output: Path | None = None  # write this file (atomically) instead of the `stdout` stream
    output_format: str = "text"  # "text": one translation per line; "jsonl": one object per line
    max_len_a: float = 1.0  # maximum output length = a * source length (with EOS) + b
    max_len_b: int = 50  # (the paper: input length + 50)
    batch_tokens: int = 6000  # padded source tokens per batch, x beam (decoder rows x length)
    buffer_lines: int = 2000  # input lines read, sorted and translated together
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # "auto" (fp32 on CPU, bf16 or fp16 on GPU), "fp32", "bf16", "fp16",
    # or "int8" (CPU: Linear layers with int8 weights, activations quantized per batch)
    threads: int | None = None  # CPU threads for torch; None: every core this process may use
    seed: int = 0  # random seed for --sampling
    engine: str = "torch"  # "torch", or "ctranslate2" for a `nmt export --to ctranslate2` dir
    alignments: bool = False  # add word alignments from cross-attention (see nmt.attention)
    attention_weights: bool = False  # jsonl: also the full (T, S) subword attention matrix
    alignment_layer: int = -1  # the decoder layer whose head-averaged attention aligns

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ConfigError("no checkpoint given")
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"unknown output format {self.output_format!r}; "
                              f"choose one of {', '.join(OUTPUT_FORMATS)}")
        if self.precision not in TRANSLATE_PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; "
                              f"choose one of {', '.join(TRANSLATE_PRECISIONS)}")
        if self.batch_tokens < 1 or self.buffer_lines < 1:
            raise ConfigError("batch-tokens and buffer-lines must be positive")
        if self.max_len_a < 0 or self.max_len_b < 0 or (self.max_len_a == 0 and
                                                        self.max_len_b == 0):
            raise ConfigError("the maximum output length (a * source length + b) must be positive")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be positive, got {self.threads}")
        if self.attention_weights and not (self.alignments and self.output_format == "jsonl"):
            raise ConfigError("attention weights need --alignments and --output-format jsonl")


@dataclass
class TranslateStats:
    """What a run did, for the closing summary and the benchmark."""

    lines: int = 0  # input lines read (= output lines written for nbest 1 text)
    sentences: int = 0  # non-empty lines that went through the model
    tokens: int = 0  # output subword tokens of the best hypotheses (without EOS)
    truncated: int = 0  # lines cut to the model's maximum source length
    replaced: int = 0  # lines with undecodable bytes replaced
    failed: int = 0  # lines whose search failed (written as empty translations)
    seconds: float = 0.0  # wall time of reading, translating and writing (not model loading)
    device: str = ""  # where the models ran, with their precision


@dataclass
class _Line:
    number: int  # 1-based input line number
    ids: list[int]  # source ids with EOS, or [] for a line that needs no model
    hyps: list[Hypothesis] = field(default_factory=list)  # best first
    aligned: list[Aligned] = field(default_factory=list)  # per hypothesis, with --alignments


@dataclass
class Aligned:
    """One hypothesis's alignment: word pairs, and the subword attention it came from."""

    pairs: list[tuple[int, int]]  # (source word, target word), 0-based
    source_tokens: list[str]  # S source pieces, EOS last
    target_tokens: list[str]  # T output pieces
    weights: torch.Tensor  # (T, S) head-averaged cross-attention of the alignment layer


# --- setup ---------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available")
    return device


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the loaded weights; int8 loads fp32 and quantizes after (`quantize_int8`)."""
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError(f"--precision int8 runs on CPU only, not on {device}; "
                              "use bf16 or fp16 there")
        return torch.float32
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """`model` (CPU, fp32, eval) with every nn.Linear, the tied output projection included, as
    a dynamically quantized int8 Linear (int8 weights per output channel; activations quantized
    per call, so no calibration). Embeddings, layer norms and attention stay fp32."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notices: nothing for the user to do
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8)


def load_models(paths: tuple[Path, ...], device: torch.device, dtype: torch.dtype,
                int8: bool = False) -> tuple[Ensemble, Vocabulary]:
    """The checkpoints' models in eval mode on `device` (int8: quantized, see `quantize_int8`),
    and their (shared) vocabulary, which lowercases / tokenizes input and detokenizes output if
    the first model was trained so."""
    models, vocab, style = [], None, None
    for path in paths:
        ckpt = load_checkpoint(path)
        if vocab is not None and ckpt.vocab.sha256 != vocab.sha256:
            raise CheckpointError(f"its vocabulary differs from that of {paths[0]}; only "
                                  "checkpoints with one vocabulary can be ensembled",
                                  where=str(path))
        vocab = vocab or ckpt.vocab
        model = ckpt.build_model(device).to(dtype)
        models.append(quantize_int8(model) if int8 else model)
        data = ckpt.meta.get("data") or {}
        style = style or TextStyle.from_dict(data.get("text"), where=str(path / "meta.json"))
    if not style.plain:  # trained on lowercased / tokenized text: read and write it so
        vocab = StyledVocabulary(vocab, style, data.get("src_lang", "xx"),
                                 data.get("tgt_lang", "xx"))
    return Ensemble(models), vocab


# --- input and output ---------------------------------------------------------------------------
def read_chunks(source: BinaryIO, size: int, name: str, stats: TranslateStats
                ) -> Iterator[list[tuple[int, str]]]:
    """(line number, text) for `size` lines at a time, or fewer once a pipe or terminal pauses
    (`nmt.lines`); undecodable bytes become U+FFFD."""

    def replaced() -> None:
        stats.replaced += 1

    return line_input.read_chunks(source, size, name, on_replaced=replaced)


@contextlib.contextmanager
def open_input(path: Path | None, stdin: BinaryIO | None) -> Iterator[BinaryIO]:
    if path is None:
        yield stdin if stdin is not None else sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read input ({exc.strerror})", where=str(path)) from None
    with handle:
        yield handle


@contextlib.contextmanager
def open_output(path: Path | None, stdout: TextIO | None) -> Iterator[TextIO]:
    """`stdout`, or a temporary file beside `path` renamed to `path` only on success."""
    if path is None:
        yield stdout if stdout is not None else sys.stdout
        return
    if path.is_dir():
        raise DataError("is a directory, not an output file", where=str(path))
    with atomic_file(path, "w") as handle:
        yield handle


def clean(text: str) -> str:
    """A translation fit for one output line."""
    return text.translate(LINE_BREAKS)


def format_line(line: _Line, vocab: Vocabulary, fmt: str, nbest: int,
                alignments: bool = False, weights: bool = False) -> str:
    """The output for one input line (several lines for text n-best lists), with newlines.

    With `alignments`, each translation is followed by its word alignment (text: after
    ` ||| `; jsonl: an `alignment` field and, with `weights`, the `attention` matrix)."""
    texts = [clean(vocab.decode(h.tokens)) for h in line.hyps]
    pairs = [format_pairs(a.pairs) for a in line.aligned] or [""] * len(texts)
    if fmt == "jsonl":
        best = line.hyps[0] if line.hyps else None
        obj = {
            "translation": texts[0] if texts else "",
            "score": best.score if best else None,
            "tokens": len(best.tokens) if best else 0,
            "hypotheses": [{"translation": t, "score": h.score, "tokens": len(h.tokens),
                            "log_probs": h.log_probs}
                           for t, h in zip(texts, line.hyps, strict=True)],
        }
        if alignments:
            obj["alignment"] = pairs[0] if pairs else ""
            for hyp, p in zip(obj["hypotheses"], pairs, strict=True):
                hyp["alignment"] = p
        if weights:
            a = line.aligned[0] if line.aligned else None
            obj["attention"] = None if a is None else {
                "source_tokens": a.source_tokens, "target_tokens": a.target_tokens,
                "weights": [[round(w, 5) for w in row] for row in a.weights.tolist()]}
        return json.dumps(obj, ensure_ascii=False) + "\n"
    tail = (lambda i: f" ||| {pairs[i]}") if alignments else (lambda i: "")
    if nbest == 1:
        if not texts:
            return " ||| \n" if alignments else "\n"
        return texts[0] + tail(0) + "\n"
    # Moses-style n-best list: 0-based sentence id ||| translation ||| score [||| alignment].
    # A line with no hypothesis (empty input, or a failed search) still gets its id: an empty
    # one, score 0.
    if not line.hyps:
        return f"{line.number - 1} |||  ||| {0.0:.6f}{' ||| ' if alignments else ''}\n"
    return "".join(f"{line.number - 1} ||| {t} ||| {h.score:.6f}{tail(i)}\n"
                   for i, (t, h) in enumerate(zip(texts, line.hyps, strict=True)))


# --- translation ----------------------------------------------------------------------------------
def encode_chunk(chunk: list[tuple[int, str]], vocab: Vocabulary, max_source: int, name: str,
                 stats: TranslateStats) -> list[_Line]:
    """Source ids with EOS per line; empty lines get none; over-long lines are truncated."""
    lines = [_Line(number=n, ids=[]) for n, _ in chunk]
    todo = [(line, text) for line, (_, text) in zip(lines, chunk, strict=True) if text.strip()]
    encoded = vocab.encode_batch([text for _, text in todo]) if todo else []
    for (line, _), ids in zip(todo, encoded, strict=True):
        if not ids:
            continue
        if len(ids) > max_source - 1:
            stats.truncated += 1
            log.warning("%s:%d: %d source tokens, truncated to the model's %d", name,
                        line.number, len(ids), max_source - 1)
            ids = ids[:max_source - 1]
        line.ids = ids + [vocab.eos_id]
    return lines


def make_batches(lines: list[_Line], batch_tokens: int, copies: int = 1) -> list[list[_Line]]:
    """Lines with a source, longest first, in batches of at most `batch_tokens` padded source
    tokens counting each line `copies` times (its beams: that many decoder rows); a line over
    the budget gets a batch of its own."""
    todo = sorted((line for line in lines if line.ids), key=lambda line: -len(line.ids))
    batches: list[list[_Line]] = []
    for line in todo:
        if batches and len(batches[-1][0].ids) * (len(batches[-1]) + 1) * copies <= batch_tokens:
            batches[-1].append(line)
        else:
            batches.append([line])
    return batches


def decoder_rows(config: SearchConfig) -> int:
    """Decoder rows per sentence: one per beam, or per sample."""
    return config.nbest if config.sampling else config.beam


class Translator:
    """Searches batches of encoded lines with one model or an ensemble."""

    def __init__(self, ensemble: Ensemble, config: TranslateConfig, device: torch.device,
                 name: str, vocab: Vocabulary | None = None) -> None:
        self.ensemble = ensemble
        self.vocab = vocab  # needed for alignments (token pieces)
        self.config = config
        self.device = device
        self.name = name
        self.pad_id = ensemble.config.pad_id
        self.max_positions = ensemble.max_positions
        self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def search_batch(self, batch: list[_Line]) -> None:
        longest = max(len(line.ids) for line in batch)
        src = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)  # (B, S)
        for row, line in enumerate(batch):
            src[row, :len(line.ids)] = torch.tensor(line.ids)
        src = src.to(self.device)
        limit = output_limit(src, self.pad_id, self.config.max_len_a, self.config.max_len_b)
        limit = limit.clamp(1, self.max_positions)  # (B,)
        results = search(self.ensemble, src, limit, self.config.search, self.generator)
        for line, hyps in zip(batch, results, strict=True):
            line.hyps = hyps
        if self.config.alignments:
            self.align(batch, src)

    def align(self, batch: list[_Line], src: torch.Tensor) -> None:
        """Every hypothesis's alignment from the cross-attention its models paid while
        decoding it (replayed; head average of one layer, averaged over an ensemble)."""
        eos = self.ensemble.config.eos_id
        rows = [row for row, line in enumerate(batch) for _ in line.hyps]
        outputs = [outputs_of(h, eos) for line in batch for h in line.hyps]
        if not rows:
            return
        row_src = src[torch.tensor(rows, device=src.device)]  # (N, S)
        layer = self.config.alignment_layer
        weights = None
        for model in self.ensemble.models:
            cross = replay(model, row_src, outputs, kinds=("cross",))["cross"]
            mine = [c[layer].mean(0) for c in cross]  # (T, S) each
            weights = mine if weights is None else [w + m for w, m in zip(weights, mine,
                                                                          strict=True)]
        weights = [w / len(self.ensemble.models) for w in weights]
        piece = self.vocab.sp.id_to_piece
        flat = iter(zip(outputs, weights, strict=True))
        for line in batch:
            source = [piece(i) for i in line.ids]
            line.aligned = []
            for hyp in line.hyps:
                out, w = next(flat)
                target = [piece(i) for i in out]
                pairs = hard_alignment(w, target_eos=len(out) > len(hyp.tokens))
                line.aligned.append(Aligned(word_alignment(pairs, source[:-1], target),
                                            source, target, w))

    def translate(self, batch: list[_Line], stats: TranslateStats) -> None:
        """Search `batch`; if that fails, each line alone; a line that still fails stays empty."""
        try:
            self.search_batch(batch)
            return
        except RuntimeError as exc:  # e.g. out of memory: no reason to lose the other lines
            if len(batch) == 1:
                stats.failed += 1
                log.warning("%s:%d: translation failed, writing an empty line (%s)", self.name,
                            batch[0].number, str(exc).splitlines()[0] if str(exc) else exc)
                return
            log.warning("%s: a batch of %d lines failed (%s); retrying line by line", self.name,
                        len(batch), type(exc).__name__)
        for line in batch:
            self.translate([line], stats)


def run(config: TranslateConfig, *, stdin: BinaryIO | None = None,
        stdout: TextIO | None = None, progress: ProgressSink | None = None) -> TranslateStats:
    """Translate `config.input` (or `stdin`, bytes) to `config.output` (or `stdout`)."""
    progress = progress or NoProgress()
    if config.engine == "ctranslate2":
        return run_ctranslate2(config, stdin=stdin, stdout=stdout, progress=progress)
    torch.set_num_threads(config.threads or available_cores())
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.precision, device)
    ensemble, vocab = load_models(config.checkpoints, device, dtype,
                                  int8=config.precision == "int8")
    name = str(config.input) if config.input else "<stdin>"
    translator = Translator(ensemble, config, device, name, vocab)
    stats = TranslateStats(device=f"{device} " + (
        "int8" if config.precision == "int8" else str(dtype).removeprefix("torch.")))
    started = time.perf_counter()
    with open_input(config.input, stdin) as source, open_output(config.output, stdout) as sink:
        progress.start("translating (lines)", line_input.count_lines(source))
        for chunk in read_chunks(source, config.buffer_lines, name, stats):
            lines = encode_chunk(chunk, vocab, translator.max_positions, name, stats)
            for batch in make_batches(lines, config.batch_tokens, decoder_rows(config.search)):
                translator.translate(batch, stats)
            for line in lines:
                sink.write(format_line(line, vocab, config.output_format, config.search.nbest,
                                       config.alignments, config.attention_weights))
                stats.sentences += bool(line.ids)
                stats.tokens += len(line.hyps[0].tokens) if line.hyps else 0
            sink.flush()
            stats.lines += len(lines)
            progress.advance(len(lines))
    progress.stop()
    stats.seconds = time.perf_counter() - started
    return stats


def run_ctranslate2(config: TranslateConfig, *, stdin: BinaryIO | None = None,
                    stdout: TextIO | None = None, progress: ProgressSink) -> TranslateStats:
    """The same reading, chunking and writing, with a CTranslate2 export doing the search."""
    from nmt.export.ct2_engine import CTranslate2Engine

    s = config.search
    refused = [flag for flag, on in (
        ("--sampling", s.sampling), ("--nbest", s.nbest > 1),
        ("--ensemble", len(config.checkpoints) > 1),
        ("--stopping exact", s.stopping == "exact" and s.beam > 1),
        ("--output-format jsonl", config.output_format != "text"),
        ("--alignments", config.alignments),
        ("--lenpen-style gnmt (CTranslate2 divides by |Y|^alpha: use fairseq)",
         s.lenpen_style != "fairseq")) if on]
    if refused:
        raise ConfigError(f"--engine ctranslate2 does not support {', '.join(refused)}")
    device = "cuda" if config.device == "auto" and torch.cuda.is_available() else (
        "cpu" if config.device == "auto" else config.device.split(":")[0])
    compute = {"auto": "default", "fp32": "float32", "bf16": "bfloat16",
               "fp16": "float16", "int8": "int8"}[config.precision]
    name = str(config.input) if config.input else "<stdin>"
    engine = CTranslate2Engine(config.checkpoints[0], device=device, compute_type=compute,
                               threads=config.threads or 0)  # loaded once for every chunk
    vocab = engine.vocab  # counts tokens
    stats = TranslateStats(device=f"ctranslate2 {device} {compute}")
    started = time.perf_counter()
    with open_input(config.input, stdin) as source, open_output(config.output, stdout) as sink:
        progress.start("translating (lines)", line_input.count_lines(source))
        for chunk in read_chunks(source, config.buffer_lines, name, stats):
            texts = [text for _, text in chunk]
            outputs = engine.translate(texts, beam=s.beam, alpha=s.alpha,
                                       max_len_a=config.max_len_a, max_len_b=config.max_len_b)
            for text, translation in zip(texts, outputs, strict=True):
                sink.write(clean(translation) + "\n")
                stats.sentences += bool(text.strip())
                stats.tokens += len(vocab.encode(translation))
            sink.flush()
            stats.lines += len(chunk)
            progress.advance(len(chunk))
    progress.stop()
    stats.seconds = time.perf_counter() - started
    return stats
