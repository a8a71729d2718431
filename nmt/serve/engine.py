"""The models of `nmt serve`, loaded once, and the translation of one batch of lines."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nmt import translate as tr
from nmt.checkpoint import read_meta
from nmt.files import available_cores
from nmt.search import SearchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """Per-request settings; requests with equal options can share a model call."""

    beam: int = 4
    alpha: float = 0.6
    lenpen_style: str = "gnmt"
    max_len_a: float = 1.0
    max_len_b: int = 50
    attention: bool = False  # also return the cross-attention of each translation
    nbest: int = 1  # hypotheses per line: the best, then `nbest - 1` alternatives (<= beam)


@dataclass
class Output:
    translation: str
    attention: dict | None = None  # source_tokens, target_tokens, weights (T x S)
    alternatives: list[str] = field(default_factory=list)  # the next best, when nbest > 1


def languages_of(checkpoint: Path) -> tuple[str, str] | None:
    """(source, target) language codes of the data the checkpoint was trained on, if its meta
    records them."""
    data = read_meta(checkpoint).get("data") or {}
    src, tgt = data.get("src_lang"), data.get("tgt_lang")
    return (src.lower(), tgt.lower()) if src and tgt else None


class Engine:
    """One checkpoint (or an ensemble) on one device; `translate` is called from one thread."""

    def __init__(self, checkpoints: tuple[Path, ...], *, device: str = "auto",
                 precision: str = "auto", threads: int | None = None,
                 batch_tokens: int = 6000) -> None:
        self.base = tr.TranslateConfig(checkpoints=tuple(checkpoints), device=device,
                                       precision=precision, threads=threads,
                                       batch_tokens=batch_tokens)
        torch.set_num_threads(threads or available_cores())
        self.device = tr.resolve_device(device)
        dtype = tr.resolve_dtype(precision, self.device)
        self.ensemble, self.vocab = tr.load_models(self.base.checkpoints, self.device, dtype,
                                                   int8=precision == "int8")
        self.name = Path(checkpoints[0]).resolve().name
        self.languages = languages_of(Path(checkpoints[0]))
        self.description = f"{self.device} {str(dtype).removeprefix('torch.')}"
        self.calls = 0  # model calls (one per `translate`), for /health and the tests
        self._translators: dict[Options, tr.Translator] = {}

    def translator(self, options: Options) -> tr.Translator:
        found = self._translators.get(options)
        if found is None:
            config = dataclasses.replace(
                self.base, search=SearchConfig(beam=options.beam, alpha=options.alpha,
                                               lenpen_style=options.lenpen_style,
                                               nbest=options.nbest),
                max_len_a=options.max_len_a, max_len_b=options.max_len_b,
                alignments=options.attention)
            found = tr.Translator(self.ensemble, config, self.device, "<http>", self.vocab)
            if len(self._translators) > 64:
                self._translators.clear()
            self._translators[options] = found
        return found

    def translate(self, texts: list[str], options: Options) -> list[Output]:
        """Translate `texts` together, as `nmt translate` translates one chunk."""
        self.calls += 1
        translator = self.translator(options)
        stats = tr.TranslateStats()
        lines = tr.encode_chunk(list(enumerate(texts, start=1)), self.vocab,
                                translator.max_positions, "<http>", stats)
        with torch.inference_mode():
            for batch in tr.make_batches(lines, self.base.batch_tokens, options.beam):
                translator.translate(batch, stats)
        outputs = []
        for line in lines:
            text = tr.clean(self.vocab.decode(line.hyps[0].tokens)) if line.hyps else ""
            attention = None
            if options.attention and line.aligned:
                a = line.aligned[0]
                attention = {"source_tokens": a.source_tokens, "target_tokens": a.target_tokens,
                             "weights": [[round(w, 4) for w in row]
                                         for row in a.weights.tolist()]}
            others = [tr.clean(self.vocab.decode(h.tokens)) for h in line.hyps[1:]]
            outputs.append(Output(text, attention, others))
        return outputs
