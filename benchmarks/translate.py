"""Throughput of `nmt translate`: sentences/s and target tokens/s for beam 1 and beam 4.

    python benchmarks/translate.py --checkpoint runs/multi30k-tiny/avg
    python benchmarks/translate.py            # random-weight tiny model: timing of the machinery

Times `nmt.translate.run` (what `nmt translate` runs, model loading excluded) on the Multi30k
test set (test_2016_flickr.en, 1,000 sentences) and prints a table. Trains nothing: without
--checkpoint it builds a tiny-preset model with RANDOM weights over a SentencePiece vocabulary of
Multi30k; such a model rarely emits EOS, so every output runs to the length limit (input + 50)
and the figures say how fast the search machinery is, not how fast a real model translates.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nmt import translate
from nmt.files import available_cores
from nmt.search import SearchConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def random_checkpoint(directory: Path, vocab_size: int) -> Path:
    """A tiny-preset model with random weights and a Multi30k SentencePiece vocabulary."""
    from nmt.checkpoint import save_checkpoint
    from nmt.config import preset
    from nmt.model import Transformer
    from nmt.vocab import train_sentencepiece

    text = []
    for lang in ("en", "de"):
        with open(DATA / f"train.{lang}", encoding="utf-8") as f:
            text += [line.rstrip("\n") for _, line in zip(range(10000), f, strict=False)]
    vocab = train_sentencepiece(text, vocab_size=vocab_size)
    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=len(vocab))).eval()
    return save_checkpoint(directory / "random-tiny", model, vocab,
                           {"step": 0, "note": "random weights, for benchmarking only"})


def measure(checkpoint: Path, source: Path, beam: int, threads: int, args: argparse.Namespace
            ) -> translate.TranslateStats:
    config = translate.TranslateConfig(
        checkpoints=(checkpoint,), search=SearchConfig(beam=beam), input=source,
        batch_tokens=args.batch_tokens, buffer_lines=args.buffer_lines, device=args.device,
        precision=args.precision, threads=threads)
    return translate.run(config, stdout=io.StringIO())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: a "
                        "random-weight tiny model, labelled as such)")
    parser.add_argument("--input", type=Path, default=DATA / "test_2016_flickr.en")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=1, help="runs per beam; the median counts")
    parser.add_argument("--batch-tokens", type=int, default=6000)
    parser.add_argument("--buffer-lines", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU thread counts to time (default: all available cores)")
    parser.add_argument("--vocab-size", type=int, default=8000,
                        help="vocabulary of the random model")
    args = parser.parse_args(argv)
    console = Console(width=120)
    if not args.input.is_file():
        console.print(f"[red]no input file {args.input}[/]")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, label = args.checkpoint, str(args.checkpoint)
        if checkpoint is None:
            console.print("[yellow]no --checkpoint: building a tiny model with RANDOM weights; "
                          "outputs run to the length limit, figures are not representative "
                          "of a trained model[/]")
            checkpoint = random_checkpoint(Path(tmp), args.vocab_size)
            label = "tiny preset, RANDOM weights"
        rows = []
        for threads in args.threads or [available_cores()]:
            for beam in args.beams:
                runs = [measure(checkpoint, args.input, beam, threads, args)
                        for _ in range(args.repeat)]
                seconds = statistics.median(r.seconds for r in runs)
                rows.append((beam, threads, runs[0], seconds))
    table = Table(title=f"nmt translate: {args.input.name}, {label}")
    for name in ("beam", "device", "threads", "sentences", "target tokens", "seconds",
                 "sentences/s", "target tokens/s"):
        table.add_column(name, justify="right")
    for beam, threads, stats, seconds in rows:
        table.add_row(str(beam), stats.device, str(threads), f"{stats.sentences:,}",
                      f"{stats.tokens:,}", f"{seconds:.2f}", f"{stats.sentences / seconds:,.1f}",
                      f"{stats.tokens / seconds:,.0f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
