"""The options of `nmt translate` and what a run did."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nmt.config import PRECISIONS
from nmt.errors import ConfigError
from nmt.search import SearchConfig

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
        if not math.isfinite(self.max_len_a):
            raise ConfigError(f"max-len-a must be a finite number, got {self.max_len_a}")
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
