"""Training speed of nmt beside the same architecture as Hugging Face MarianMTModel.

    python benchmarks/train_speed.py --preset tiny --batch-tokens 2000 --steps 20
    python benchmarks/train_speed.py --preset base --batch-tokens 25000 --precision bf16  # GPU

Both frameworks start from the same weights (an nmt model, seeded, exported with
`nmt.export.run(..., to="hf")` and loaded with `MarianMTModel.from_pretrained`), train on the
same batches (the first pairs of Multi30k train, tokenized with a SentencePiece vocabulary and
packed by nmt.batching as `nmt train` packs them) with the same objective: label-smoothed
cross-entropy (eps 0.1) summed and divided by the batch's target tokens, fused Adam(0.9, 0.98,
eps 1e-9) at a fixed learning rate. nmt runs its own training step (`nmt.train.Objective`:
output projection and loss at real target positions only, `nmt.loss.smoothed_loss`); Marian
runs its forward pass and PyTorch's `F.cross_entropy(label_smoothing=0.1)`, as a Hugging Face
user would write it. Each framework runs in its own
child process so that the peak resident memory (getrusage maxrss) is its own. Reports target
tokens/s and ms/step over the timed steps (after `--warmup-steps` untimed ones); on a GPU also
peak allocated memory and MFU against a measured bf16 matmul rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# As the nmt CLI does: idle OpenMP threads sleep (shared machines). Set before torch starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

MULTI30K = Path("/work/shared/data/multi30k")
TINY_RUN = Path("/tmp/runs/tiny/checkpoints")
FRAMEWORKS = ("nmt", "hf-marian", "hf-marian-kept", "nmt-compiled")
# nmt runs as `nmt train` runs it: with nmt.host.keep_freed_memory() (malloc keeps large freed
# blocks for reuse instead of returning them to the kernel). hf-marian is Hugging Face as its
# users run it (the default allocator); hf-marian-kept gives it the same allocator setting.
KEEPS_FREED_MEMORY = ("nmt", "nmt-compiled", "hf-marian-kept")
# nmt-compiled: a prototype, only here: nmt's Objective wrapped in torch.compile(dynamic=True)
# (batch shapes vary); its compile time is in the first (untimed) step, reported apart.


def default_vocab() -> Path | None:
    """The SentencePiece model of the newest tiny Multi30k checkpoint, if there is one."""
    steps = sorted(TINY_RUN.glob("step-*")) if TINY_RUN.is_dir() else []
    return steps[-1] / "spm.model" if steps else None


def build_vocab(path: Path | None, out: Path) -> Path:
    """`path`, or a fresh 8,000-piece SentencePiece model of Multi30k train written to `out`."""
    if path is not None and path.is_file():
        return path
    from nmt.vocab import train_sentencepiece

    text = []
    for lang in ("en", "de"):
        with open(MULTI30K / f"train.{lang}", encoding="utf-8") as f:
            text += [line.rstrip("\n") for _, line in zip(range(10_000), f, strict=False)]
    train_sentencepiece(text, vocab_size=8000).save(out)
    return out


def make_batches(vocab, args: argparse.Namespace) -> list:
    """The first warmup + steps batches of one nmt-style epoch over the first pairs."""
    from nmt import batching

    def read(lang: str) -> list[np.ndarray]:
        with open(MULTI30K / f"train.{lang}", encoding="utf-8") as f:
            lines = [line.rstrip("\n") for _, line in zip(range(args.sentences), f, strict=False)]
        return [np.asarray(ids, dtype=np.int64) for ids in vocab.encode_batch(lines)]

    src, tgt = read("en"), read("de")
    src_len = np.array([len(x) for x in src])
    tgt_len = np.array([len(y) for y in tgt])
    sizes = batching.pair_sizes(src_len, tgt_len)
    rows = batching.epoch_batches(sizes, src_len, tgt_len, np.arange(len(src)),
                                  max_tokens=args.batch_tokens, seed=1, epoch=1)
    needed = args.warmup_steps + args.steps
    if len(rows) < needed:
        raise SystemExit(f"only {len(rows)} batches from {args.sentences} pairs; "
                         f"raise --sentences or lower --batch-tokens")
    return [batching.collate(src, tgt, r, pad_id=vocab.pad_id, bos_id=vocab.bos_id,
                             eos_id=vocab.eos_id) for r in rows[:needed]]


def build_models(framework: str, vocab, args: argparse.Namespace, tmp: Path):
    """(model, loss(batch) -> summed smoothed loss) for `framework`, seeded identically."""
    from nmt import train
    from nmt.config import preset
    from nmt.model import Transformer

    torch.manual_seed(args.seed)
    ours = Transformer(preset(args.preset, vocab_size=len(vocab), pad_id=vocab.pad_id,
                              bos_id=vocab.bos_id, eos_id=vocab.eos_id))
    if framework in ("nmt", "nmt-compiled"):
        objective = train.Objective(ours, eps=0.1)
        if framework == "nmt-compiled":
            objective = torch.compile(objective, dynamic=True)
        return ours, lambda b, real: objective(b.src, b.tgt_in, b.tgt_out, real)[0]
    from transformers import MarianMTModel
    from transformers.utils import logging as hf_logging

    from nmt import export
    from nmt.checkpoint import save_checkpoint

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    ckpt = save_checkpoint(tmp / "init", ours, vocab, {"step": 0, "note": "benchmark init"})
    hf = MarianMTModel.from_pretrained(export.run(ckpt, tmp / "hf", to="hf"))
    pad = vocab.pad_id
    # Padding sits at the end of each target, so the causal mask alone keeps it out of the
    # real positions, as in nmt; no decoder_attention_mask.

    def loss(b, _real):
        logits = hf(input_ids=b.src, attention_mask=b.src.ne(pad),
                    decoder_input_ids=b.tgt_in).logits  # (B, T, V)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), b.tgt_out.view(-1),
                               ignore_index=pad, label_smoothing=0.1, reduction="sum")

    return hf, loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(framework: str, args: argparse.Namespace) -> dict:
    """Run warm-up and timed steps of `framework`; return its measurements."""
    from nmt.train import real_positions
    from nmt.vocab import Vocabulary

    if framework in KEEPS_FREED_MEMORY:
        from nmt import host

        host.keep_freed_memory()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    vocab = Vocabulary.from_file(args.vocab)
    batches = make_batches(vocab, args)
    with tempfile.TemporaryDirectory() as tmp:
        model, loss_of = build_models(framework, vocab, args, Path(tmp))
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9,
                           fused=True)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if args.precision == "bf16" else contextlib.nullcontext())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, losses, tokens, first = [], [], 0, 0.0
    for i, batch in enumerate(batches):
        n_tgt = int(batch.tgt_out.ne(vocab.pad_id).sum())
        sync(device)
        start = clock()
        real = real_positions(batch.tgt_out, vocab.pad_id).to(device)  # as nmt.train does
        batch = batch.to(device)
        with autocast:
            loss = loss_of(batch, real)
        (loss / n_tgt).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i == 0:
            first = clock() - start
        if i >= args.warmup_steps:
            times.append(clock() - start)
            tokens += n_tgt
            losses.append(loss.item() / n_tgt)
    result = {
        "framework": framework, "steps": len(times), "seconds": sum(times), "tokens": tokens,
        "ms_step": 1000 * statistics.median(times), "loss_first": losses[0],
        "loss_last": losses[-1], "params": sum(p.numel() for p in model.parameters()),
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": rss_before, "device": str(device), "first_step_s": first,
    }
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["mfu"] = mfu(model, batches[args.warmup_steps:], result["seconds"], device)
    return result


def mfu(model: torch.nn.Module, batches: list, seconds: float, device: torch.device) -> float:
    """Model FLOPs utilisation: (6 x params x target tokens + attention FLOPs) / time, over a
    measured dense bf16 matmul rate (an approximation: the embedding is counted as a matmul)."""
    params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    d = cfg.d_model
    n_enc = getattr(cfg, "n_encoder_layers", None) or cfg.encoder_layers  # nmt or Marian
    n_dec = getattr(cfg, "n_decoder_layers", None) or cfg.decoder_layers
    flops = 0.0
    for b in batches:
        rows, s, t = b.src.size(0), b.src.size(1), b.tgt_in.size(1)
        flops += 6 * params * int(b.tgt_out.ne(0).sum())
        # QK^T and AV (2 matmuls x 2 FLOPs per MAC), forward + backward (x3), padded shapes.
        flops += 3 * 2 * 2 * d * rows * (n_enc * s * s + n_dec * (t * t + t * s))
    return flops / seconds / peak_bf16_flops(device)


def peak_bf16_flops(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def run_child(framework: str, argv: list[str], tmp: Path) -> dict:
    out = tmp / f"{framework}.json"
    cmd = [sys.executable, __file__, *argv, "--worker", framework, "--result", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def make_table(results: list[dict], args: argparse.Namespace) -> Table:
    table = Table(title=f"training steps: preset {args.preset}, {args.batch_tokens} batch "
                        f"tokens, {args.precision}, {results[0]['device']}, "
                        f"{args.threads} threads, {args.clock} clock")
    cuda = "cuda_peak_mib" in results[0]
    columns = ["framework", "steps", "tokens/s", "ms/step", "peak RSS MiB (before steps)"]
    columns += ["peak CUDA MiB", "MFU"] if cuda else []
    columns += ["nmt tokens/s ÷ this", "loss first→last", "first step s"]
    for name in columns:
        table.add_column(name, justify="left" if name == "framework" else "right")
    base = results[0]["tokens"] / results[0]["seconds"]
    for r in results:
        rate = r["tokens"] / r["seconds"]
        row = [r["framework"], str(r["steps"]), f"{rate:,.0f}", f"{r['ms_step']:.1f}",
               f"{r['maxrss_mib']:,.0f} ({r['rss_before_mib']:,.0f})"]
        row += [f"{r['cuda_peak_mib']:,.0f}", f"{100 * r['mfu']:.1f}%"] if cuda else []
        row += [f"{base / rate:.2f}x",
                f"{r['loss_first']:.3f}→{r['loss_last']:.3f}", f"{r['first_step_s']:.1f}"]
        table.add_row(*row)
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="nmt model preset")
    parser.add_argument("--batch-tokens", type=int, default=2000,
                        help="padded tokens per batch (nmt train's --batch-tokens)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="fp32, or bf16 autocast")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first")
    parser.add_argument("--sentences", type=int, default=5000,
                        help="Multi30k train pairs to batch")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: CPU seconds of the process (fair on a shared machine at "
                             "--threads 1 only)")
    parser.add_argument("--lr", type=float, default=3e-4, help="fixed Adam learning rate")
    parser.add_argument("--seed", type=int, default=1, help="seeds the shared initial weights")
    parser.add_argument("--vocab", type=Path, default=default_vocab(),
                        help="SentencePiece model (default: the tiny run's; else trained)")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS,
                        default=["nmt", "hf-marian", "hf-marian-kept"],
                        help="which to run (nmt alone: memory per preset)")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        args.result.write_text(json.dumps(train(args.worker, args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        vocab = build_vocab(args.vocab, Path(tmp) / "spm.model")
        child_argv = [f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
                      if key not in ("worker", "result", "vocab", "frameworks")]
        child_argv.append(f"--vocab={vocab}")
        results = [run_child(fw, child_argv, Path(tmp)) for fw in args.frameworks]
    Console(width=140).print(make_table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
