"""Where nmt's beam-4 decoding spends its time, and what model-level changes would gain.

    python benchmarks/profile_decode.py --checkpoint CKPT --lines 100 --threads 1
    python benchmarks/profile_decode.py --preset base --lines 16 --threads 1

Profiles `nmt.search.search` (torch.profiler, self CPU time per operator) on the first
--lines newstest2014 (or --multi30k) lines, then times prototypes monkeypatched over nmt.model
(nothing in nmt is edited), each against the unpatched code in alternation, best of --repeat,
in CPU seconds of the process at one thread (so that other jobs on a shared machine matter
less; wall time otherwise), and checks that every prototype's output equals the unpatched one:

  cross-kv-once the encoder-decoder keys/values of every layer in one (D, 2LD) projection
  skip-reorder  beam reordering that keeps every row in place returns the state as it is
  all           the two together
  compile       torch.compile of Decoder.step (dynamic shapes): compile time and gain

Two earlier prototypes have landed and left this list: the decoder step's one q/k/v projection
(`MultiHeadAttention.stacked_qkv`) and the beam candidates taken from each beam's best tokens
(`nmt.search.topk_candidates`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import translate_speed  # noqa: E402

from nmt import model as M  # noqa: E402
from nmt.search import SearchConfig, output_limit, search  # noqa: E402


# --- prototypes (monkeypatches) ----------------------------------------------------------------
def cross_kv_once(self, memory):
    if not hasattr(self, "_kv_all"):
        mods = [m for layer in self.layers for m in (layer.cross_attn.k_proj,
                                                     layer.cross_attn.v_proj)]
        self._kv_all = (torch.cat([m.weight for m in mods]), torch.cat([m.bias for m in mods]))
    parts = F.linear(memory, *self._kv_all).chunk(2 * len(self.layers), dim=-1)
    split = self.layers[0].cross_attn.split_heads
    return [M.KeyValue(split(parts[2 * i]), split(parts[2 * i + 1]))
            for i in range(len(self.layers))]


_original_reorder = M.DecoderState.reorder


def skip_noop_reorder(self, index):
    if torch.equal(index, torch.arange(index.numel(), device=index.device)):
        return self
    return _original_reorder(self, index)


PATCHES = {
    "cross-kv-once": [(M.Decoder, "memory_kv", cross_kv_once)],
    "skip-reorder": [(M.DecoderState, "reorder", skip_noop_reorder)],
}
PATCHES["all"] = [p for v in PATCHES.values() for p in v]


class patched:
    def __init__(self, name: str | None) -> None:
        self.items = PATCHES.get(name, []) if name else []

    def __enter__(self):
        self.saved = [(cls, attr, cls.__dict__[attr]) for cls, attr, _ in self.items]
        for cls, attr, fn in self.items:
            setattr(cls, attr, fn)

    def __exit__(self, *exc):
        for cls, attr, fn in self.saved:
            setattr(cls, attr, fn)


# --- driver --------------------------------------------------------------------------------------
def batches(model, vocab, lines, batch_size):
    ids = sorted(([*vocab.encode(s)[:model.config.max_positions - 1], vocab.eos_id]
                  for s in lines if s.strip()), key=len)
    pad = model.config.pad_id
    for i in range(0, len(ids), batch_size):
        rows = ids[i:i + batch_size]
        src = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
        for r, row in enumerate(rows):
            src[r, :len(row)] = torch.tensor(row)
        yield src, output_limit(src, pad, 1.0, 50).clamp(1, model.config.max_positions)


def clock() -> float:
    """CPU seconds of this process with one thread (robust on a shared machine), else wall."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def decode_all(model, data, beam):
    cfg = SearchConfig(beam=beam, alpha=0.6, lenpen_style="fairseq")
    out = []
    started = clock()
    with torch.inference_mode():
        for src, limit in data:
            out += [tuple(h[0].tokens) for h in search(model, src, limit, cfg, None)]
    return clock() - started, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--preset", choices=["base", "big"])
    parser.add_argument("--multi30k", action="store_true")
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--prototypes", nargs="*",
                        default=["cross-kv-once", "skip-reorder", "all"], choices=list(PATCHES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args(argv)
    from nmt.checkpoint import load_checkpoint

    torch.set_num_threads(args.threads)
    ckpt_path = translate_speed.paper_checkpoint(args.preset) if args.preset else args.checkpoint
    ckpt = load_checkpoint(ckpt_path)
    model, vocab = ckpt.build_model("cpu"), ckpt.vocab
    source = translate_speed.MULTI30K if args.multi30k else translate_speed.NEWSTEST
    lines = translate_speed.read_lines(source, args.lines)
    data = list(batches(model, vocab, lines, args.batch_size))
    c = model.config
    print(f"# {ckpt_path}: d {c.d_model}, {c.n_encoder_layers}+{c.n_decoder_layers} layers, "
          f"vocab {c.vocab_size}; {len(lines)} lines of {source.name}, beam {args.beam}, "
          f"{args.threads} thread(s)")
    decode_all(model, data[:1], args.beam)  # warm-up
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        seconds, reference = decode_all(model, data, args.beam)
    tokens = sum(map(len, reference))
    print(f"profiled run: {seconds:.2f} s, {tokens} tokens")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top,
                                    max_name_column_width=40))
    best: dict[str, float] = {}
    names = [None, *args.prototypes]
    for _ in range(args.repeat):
        for name in names:
            for obj in (model.decoder, *model.decoder.layers):  # fresh fused weights per patch
                for attr in ("_kv_all",):
                    obj.__dict__.pop(attr, None)
            with patched(name):
                secs, out = decode_all(model, data, args.beam)
            if out != reference:
                print(f"{name}: OUTPUT DIFFERS from the unpatched search")
            key = name or "unpatched"
            best[key] = min(best.get(key, float("inf")), secs)
    print(f"\n| variant | best of {args.repeat} s | gain vs unpatched |\n|---|---:|---:|")
    for key, secs in best.items():
        print(f"| {key} | {secs:.3f} | {best['unpatched'] / secs:.3f}x |")
    if args.compile:
        step = model.decoder.step
        t = time.perf_counter()
        model.decoder.step = torch.compile(step, dynamic=True)
        first, out = decode_all(model, data[:1], args.beam)
        compile_s = first - best["unpatched"] * len(data[:1]) / len(data)
        runs = [decode_all(model, data, args.beam)[0] for _ in range(args.repeat)]
        gain = best["unpatched"] - min(runs)
        print(f"| torch.compile(Decoder.step, dynamic) | {min(runs):.3f} | "
              f"{best['unpatched'] / min(runs):.3f}x |")
        print(f"compile ~{compile_s:.1f} s (first batch {first:.1f} s; setup "
              f"{time.perf_counter() - t:.1f} s in all); break-even after "
              + (f"{compile_s / gain * len(lines):.0f} lines" if gain > 0 else "never"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
