"""Translation speed of nmt beside Hugging Face Marian and CTranslate2, with the same weights.

    python benchmarks/translate_speed.py --checkpoint runs/multi30k-tiny/avg --threads 2
    python benchmarks/translate_speed.py --newstest --limit 500 --beams 4

Exports the checkpoint with nmt.export (to "hf" and to "ctranslate2" fp32 and int8) into a
temporary directory, then translates the same source lines with every engine at beam 1 and 4,
all with the fairseq length penalty (log P / |Y|^0.6), at most source tokens + 50 output
tokens and the same stopping rule (by default fairseq's: a sentence ends once `beam`
hypotheses finished; `--stopping exact` compares nmt and HF searching until no live beam can
win, which CTranslate2 cannot do), and prints seconds, sentences/s, target tokens/s
(SentencePiece pieces of the output, counted the same way for every engine), the speed ratio
to nmt and BLEU against the reference.
Model loading is excluded except for CTranslate2, whose loader runs inside
`export.translate_ctranslate2` (a few milliseconds for small models; at base size it is timed
separately and subtracted). CTranslate2 runs in a subprocess of its own, so that its OpenMP
threads do not meet torch's (in one process its 2-thread figure was 2.7x slower than 1 thread).

    python benchmarks/translate_speed.py --preset base --newstest --limit 50 --threads 1 2

`--preset base|big` benchmarks the paper's sizes: a seeded random initialisation of the preset
with a ~37k joint SentencePiece vocabulary trained on the WMT text at hand (newstest2013/2014
and the Moses-tokenized WMT train sample; cached under /tmp/speed/), saved as an nmt
checkpoint and exported from there to every engine. Untrained weights rarely emit EOS, so
outputs run to the length limit (source + --max-len-b): a per-token speed test, no BLEU.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# As the nmt CLI does: idle OpenMP threads sleep, so that the engines timed in this one process
# (torch, CTranslate2) do not spin on each other's cores. Set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

SHARED = Path("/work/shared/data")
MULTI30K = SHARED / "multi30k" / "test_2016_flickr.en"
NEWSTEST = SHARED / "wmt" / "newstest2014.en"
TINY_RUN = Path("/tmp/runs/tiny/checkpoints")


@dataclass(frozen=True)
class Result:
    engine: str  # engine label shown in the table
    beam: int  # beam size (1 = greedy)
    seconds: float  # wall time of the translation
    outputs: list[str]  # one detokenized translation per source line


WMT = SHARED / "wmt"
CACHE = Path("/tmp/speed")


def paper_vocab(size: int = 37000) -> Path:
    """A joint SentencePiece model of about `size` pieces on the WMT text at hand (cached)."""
    path = CACHE / f"spm{size // 1000}k.model"
    if not path.is_file():
        from nmt.vocab import train_sentencepiece

        text = []
        for name in ("newstest2013", "newstest2014", "train_sample/onmt_sample10k.tok"):
            for side in ("en", "de"):
                text += read_lines(WMT / f"{name}.{side}", None)
        CACHE.mkdir(parents=True, exist_ok=True)
        vocab = train_sentencepiece(text, vocab_size=size)
        path.write_bytes(vocab.model_bytes)
    return path


def paper_checkpoint(name: str, seed: int = 1) -> Path:
    """The `name` preset, seeded random weights, the paper-sized vocabulary (cached)."""
    from nmt.checkpoint import save_checkpoint
    from nmt.config import preset
    from nmt.model import Transformer
    from nmt.vocab import Vocabulary

    vocab = Vocabulary.from_file(paper_vocab())
    path = CACHE / f"{name}-v{len(vocab)}-seed{seed}"
    if not path.is_dir():
        torch.manual_seed(seed)
        model = Transformer(preset(name, vocab_size=len(vocab), dropout=0.0)).eval()
        save_checkpoint(path, model, vocab, {"step": 0, "note": f"seeded init, seed {seed}"})
    return path


def default_checkpoint() -> Path | None:
    """The newest step-* checkpoint of the tiny Multi30k run, if there is one."""
    steps = sorted(TINY_RUN.glob("step-*")) if TINY_RUN.is_dir() else []
    return steps[-1] if steps else None


def read_lines(path: Path, limit: int | None) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    return lines[:limit] if limit else lines


def run_nmt(checkpoint: Path, lines: list[str], beam: int, args: argparse.Namespace,
            precision: str = "fp32") -> Result:
    """`nmt translate` in process (token batching), timed by its own stats (load excluded)."""
    from nmt import translate
    from nmt.search import SearchConfig

    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as tmp:
        tmp.write("\n".join(lines) + "\n")
        tmp.flush()
        out = io.StringIO()
        config = translate.TranslateConfig(
            checkpoints=(checkpoint,), input=Path(tmp.name), device="cpu", precision=precision,
            threads=args.threads, batch_tokens=args.batch_tokens, max_len_b=args.max_len_b,
            search=SearchConfig(beam=beam, alpha=args.alpha, lenpen_style="fairseq",
                                stopping=args.stopping))
        stats = translate.run(config, stdin=None, stdout=out)
    label = "nmt" if precision == "fp32" else f"nmt-{precision}"
    return Result(label, beam, stats.seconds, out.getvalue().splitlines())


def run_nmt_cpu(checkpoint: Path, lines: list[str], beam: int, args: argparse.Namespace,
                precision: str = "fp32") -> Result:
    """`run_nmt` timed in CPU seconds of this process, less those of a blank-line run (the
    loader): with one thread, the work done, whatever else the machine runs."""
    t = time.process_time()
    run_nmt(checkpoint, [""], beam, args, precision)
    load = time.process_time() - t
    t = time.process_time()
    r = run_nmt(checkpoint, lines, beam, args, precision)
    return Result(r.engine, beam, time.process_time() - t - load, r.outputs)


def run_hf(hf_dir: Path, lines: list[str], beam: int, args: argparse.Namespace) -> Result:
    """MarianMTModel.generate on batches of `--batch-size` sentences sorted by length."""
    from transformers import MarianMTModel
    from transformers.utils import logging as hf_logging

    from nmt.vocab import Vocabulary

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = MarianMTModel.from_pretrained(hf_dir).eval()
    vocab = Vocabulary.from_file(hf_dir / "source.spm")  # our SentencePiece model, our ids
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    ids = [vocab.encode(line)[:model.config.max_position_embeddings - 1] + [eos]
           for line in lines]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    outputs = [""] * len(lines)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), args.batch_size):
            rows = order[start:start + args.batch_size]
            longest = max(len(ids[i]) for i in rows)
            src = torch.full((len(rows), longest), pad, dtype=torch.long)  # (B, S)
            for k, i in enumerate(rows):
                src[k, :len(ids[i])] = torch.tensor(ids[i])
            # One limit per batch (generate takes one): the longest source + 50, as nmt's
            # per-sentence limit for the longest line; shorter lines may run a little longer.
            gen = model.generate(input_ids=src, attention_mask=src.ne(pad), num_beams=beam,
                                 max_new_tokens=longest + args.max_len_b,
                                 length_penalty=args.alpha,
                                 early_stopping=True if args.stopping == "finished" else "never",
                                 do_sample=False)  # (B, T)
            for k, i in enumerate(rows):
                out = [t for t in gen[k, 1:].tolist() if t not in (pad, eos)]
                outputs[i] = vocab.decode(out)
    return Result("hf-marian", beam, time.perf_counter() - started, outputs)


_CT2_WORKER = """
import json, sys, time
from nmt import export
if sys.argv[1] == "cpu":
    time.perf_counter = time.process_time  # CPU seconds of this process (all its threads)
job = json.load(sys.stdin)
kw = dict(beam=job["beam"], alpha=job["alpha"], max_len_b=job["max_len_b"],
          batch_size=job["batch_size"], threads=job["threads"])
export.translate_ctranslate2(job["dir"], job["lines"][:8], **kw)  # warm-up
t = time.perf_counter()
export.translate_ctranslate2(job["dir"], [""], **kw)  # the loader alone (a blank line)
load = time.perf_counter() - t
t = time.perf_counter()
out = export.translate_ctranslate2(job["dir"], job["lines"], **kw)
json.dump({"seconds": time.perf_counter() - t - load, "load": load, "outputs": out}, sys.stdout)
"""


def run_ct2(ct2_dir: Path, label: str, lines: list[str], beam: int,
            args: argparse.Namespace) -> Result:
    """export.translate_ctranslate2 in a subprocess of its own (its OpenMP threads meet no
    torch threads); the loader's time, measured on a blank line, is subtracted."""
    import json
    import subprocess

    job = {"dir": str(ct2_dir), "lines": lines, "beam": beam, "alpha": args.alpha,
           "max_len_b": args.max_len_b, "batch_size": args.batch_size, "threads": args.threads}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    if label.endswith("-mkl"):  # CTranslate2 uses oneDNN on AMD CPUs unless told to use MKL
        env["CT2_USE_MKL"] = "1"
    done = subprocess.run([sys.executable, "-c", _CT2_WORKER, args.clock],
                          input=json.dumps(job), capture_output=True, text=True, env=env,
                          check=True)
    res = json.loads(done.stdout)
    return Result(label, beam, res["seconds"], res["outputs"])


def bleu(outputs: list[str], references: list[str] | None) -> float | None:
    if references is None:
        return None
    import sacrebleu

    return sacrebleu.corpus_bleu(outputs, [references]).score


def make_table(title: str, results: list[Result], count_tokens: Callable[[str], int],
               references: list[str] | None) -> Table:
    table = Table(title=title)
    for name in ("engine", "beam", "seconds", "sentences/s", "target tokens/s", "ratio vs nmt",
                 "BLEU"):
        table.add_column(name, justify="left" if name == "engine" else "right")
    base = {r.beam: r for r in results if r.engine == "nmt"}
    for r in results:
        n_sent = len(r.outputs)
        tokens = sum(count_tokens(line) for line in r.outputs)
        rate = tokens / r.seconds
        ref = base.get(r.beam)
        ratio = ""
        if ref is not None:
            ref_rate = sum(count_tokens(line) for line in ref.outputs) / ref.seconds
            ratio = f"{rate / ref_rate:.2f}x"
        score = bleu(r.outputs, references)
        table.add_row(r.engine, str(r.beam), f"{r.seconds:.2f}", f"{n_sent / r.seconds:.1f}",
                      f"{rate:,.0f}", ratio, "-" if score is None else f"{score:.2f}")
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=default_checkpoint(),
                        help=f"nmt checkpoint directory (default: newest in {TINY_RUN})")
    parser.add_argument("--newstest", action="store_true",
                        help=f"translate {NEWSTEST} instead of Multi30k test_2016_flickr")
    parser.add_argument("--limit", type=int, default=None, help="first N source lines only")
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 1])
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="torch threads and CTranslate2 intra-op threads (several: a table "
                             "each)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="sentences per batch for HF and CTranslate2")
    parser.add_argument("--batch-tokens", type=int, default=6000,
                        help="nmt's token batching (padded source tokens x beam)")
    parser.add_argument("--alpha", type=float, default=0.6, help="length penalty exponent")
    parser.add_argument("--stopping", choices=["finished", "exact"], default="finished",
                        help="nmt's beam stopping rule; HF gets the same one (early_stopping "
                             "True / 'never'); CTranslate2 has only 'finished' (patience 1)")
    parser.add_argument("--max-len-b", type=int, default=50, help="output limit: source + B")
    parser.add_argument("--engines", nargs="+",
                        default=["nmt", "nmt-int8", "hf", "ct2-fp32", "ct2-int8"],
                        choices=["nmt", "nmt-int8", "hf", "ct2-fp32", "ct2-int8", "ct2-fp32-mkl",
                                 "ct2-int8-mkl"],
                        help="ct2-*-mkl: CTranslate2 with CT2_USE_MKL=1 (it picks oneDNN on AMD)")
    parser.add_argument("--preset", choices=["base", "big"], default=None,
                        help="seeded weights at the paper's size and ~37k vocabulary instead of "
                             "--checkpoint (see the module docstring)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: CPU seconds of the translating process, model loading "
                             "subtracted (fair on a shared machine at --threads 1 only)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per engine, alternating engines; the fastest is kept")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nmt import host

    host.keep_freed_memory()  # as the nmt CLI does (CTranslate2 runs in its own process)
    console = Console(width=120)
    source = NEWSTEST if args.newstest else MULTI30K
    if args.preset:
        args.checkpoint = paper_checkpoint(args.preset)
        weights = f"{args.preset} preset, seeded random init (no training)"
    else:
        weights = f"trained checkpoint {args.checkpoint}"
    if args.checkpoint is None or not args.checkpoint.is_dir():
        console.print(f"[red]no checkpoint directory {args.checkpoint}; pass --checkpoint[/]")
        return 2
    if not source.is_file():
        console.print(f"[red]no source file {source}[/]")
        return 2
    from nmt import export
    from nmt.vocab import Vocabulary

    thread_counts = args.threads
    lines = read_lines(source, args.limit)
    ref_path = source.with_suffix(".de")
    references = read_lines(ref_path, args.limit) if ref_path.is_file() else None
    if args.preset:
        references = None  # untrained weights: BLEU means nothing
    vocab = Vocabulary.from_file(args.checkpoint / "spm.model")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {}
        if "hf" in args.engines:
            dirs["hf"] = export.run(args.checkpoint, root / "hf", to="hf")
        if {"ct2-fp32", "ct2-fp32-mkl"} & set(args.engines):
            dirs["ct2-fp32"] = export.run(args.checkpoint, root / "ct2", to="ctranslate2")
        if {"ct2-int8", "ct2-int8-mkl"} & set(args.engines):
            dirs["ct2-int8"] = export.run(args.checkpoint, root / "ct2-int8", to="ctranslate2",
                                          quantization="int8")

        def once(engine: str, texts: list[str], beam: int) -> Result:
            if engine.startswith("nmt"):
                timed = run_nmt_cpu if args.clock == "cpu" else run_nmt
                return timed(args.checkpoint, texts, beam, args,
                             "int8" if engine == "nmt-int8" else "fp32")
            if engine == "hf":
                return run_hf(dirs["hf"], texts, beam, args)
            return run_ct2(dirs[engine.removesuffix("-mkl")], engine, texts, beam, args)

        for threads in thread_counts:
            args.threads = threads
            torch.set_num_threads(threads)
            results: list[Result] = []
            for engine in args.engines:  # warm-up: first-call costs (allocators, lazy imports)
                if not engine.startswith("ct2"):  # (CTranslate2 warms up in its subprocess)
                    once(engine, lines[:8], 2)
            for beam in args.beams:
                best: dict[str, Result] = {}
                for _ in range(args.repeat):  # alternate engines; keep each one's fastest
                    for engine in args.engines:
                        console.log(f"{threads} threads, {engine} beam {beam} ...")
                        r = once(engine, lines, beam)
                        if engine not in best or r.seconds < best[engine].seconds:
                            best[engine] = r
                results += [best[e] for e in args.engines]
            title = (f"{source.name} ({len(lines)} lines), {weights}, vocabulary {len(vocab):,}, "
                     f"{threads} threads, CPU, stopping {args.stopping}, max len source + "
                     f"{args.max_len_b}, best of {args.repeat}, {args.clock} clock")
            console.print(make_table(title, results,
                                     lambda s: len(vocab.encode(s)) if s else 0, references))
    return 0


if __name__ == "__main__":
    sys.exit(main())
