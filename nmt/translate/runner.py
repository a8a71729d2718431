"""`run`: input chunks through encoding, batching, search and formatting to the output."""

from __future__ import annotations

import time
from typing import BinaryIO, TextIO

import torch

from nmt import lines as line_input
from nmt.errors import ConfigError
from nmt.files import available_cores
from nmt.progress import NoProgress, ProgressSink
from nmt.translate.batching import decoder_rows, encode_chunk, make_batches
from nmt.translate.config import TranslateConfig, TranslateStats
from nmt.translate.models import load_models, resolve_device, resolve_dtype
from nmt.translate.output import clean, format_line
from nmt.translate.streams import open_input, open_output, read_chunks
from nmt.translate.translator import Translator


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
