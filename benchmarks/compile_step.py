"""torch.compile of nmt's training step, on and off, with the compile time and break-even.

    python benchmarks/compile_step.py --preset tiny --device cpu --steps 10
    python benchmarks/compile_step.py --preset base --device cuda --precision bf16 --tokens 25000

A prototype: nmt has no --compile flag. Builds the preset's Transformer (seeded), a fixed random
batch of about --tokens target tokens (sentences of --length tokens on both sides), and times
forward + label-smoothed cross-entropy + backward + Adam, first eagerly, then with the model
wrapped in `torch.compile` (the optimizer stays eager). Prints one JSON object: eager and
compiled ms/step (median of --steps after --warmup), the compile time (the compiled run's
first step minus an eager step), the speed-up and the number of steps after which compiling
pays for itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, batch, args, device, compiled: bool) -> tuple[float, list[float]]:
    """(first step seconds, steady step seconds) for `model`, eager or compiled."""
    src, tgt_in, tgt_out = batch
    net = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9,
                           fused=device.type == "cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(src, tgt_in)
            loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(),
                                   label_smoothing=0.1, ignore_index=0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    times = []
    for _ in range(args.warmup + args.steps + 1):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    return times[0], times[1 + args.warmup:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--tokens", type=int, default=2000, help="target tokens per batch")
    parser.add_argument("--length", type=int, default=25, help="tokens per sentence")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    args = parser.parse_args(argv)
    from nmt.config import preset
    from nmt.model import Transformer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = preset(args.preset, vocab_size=args.vocab)
    rows = max(1, args.tokens // args.length)
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(4, args.vocab, (rows, args.length), generator=gen)
    tgt = torch.randint(4, args.vocab, (rows, args.length), generator=gen)
    tgt_in = torch.cat([torch.full((rows, 1), config.bos_id), tgt[:, :-1]], 1)
    batch = tuple(t.to(device) for t in (src, tgt_in, tgt))
    out = {"preset": args.preset, "device": str(device), "precision": args.precision,
           "tokens": rows * args.length, "vocab": args.vocab, "threads": torch.get_num_threads()}
    for mode in args.modes:
        torch.manual_seed(0)
        model = Transformer(config).to(device).train()
        first, steady = time_steps(model, batch, args, device, compiled=mode == "compiled")
        out[f"{mode}_first_s"] = first
        out[f"{mode}_ms"] = 1000 * statistics.median(steady)
        out[f"{mode}_min_ms"] = 1000 * min(steady)
        del model
    if "eager_ms" in out and "compiled_ms" in out:
        gain = out["eager_ms"] - out["compiled_ms"]
        out["compile_s"] = out["compiled_first_s"] - out["eager_ms"] / 1000
        out["speedup"] = out["eager_ms"] / out["compiled_ms"]
        out["break_even_steps"] = (out["compile_s"] * 1000 / gain) if gain > 0 else None
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
