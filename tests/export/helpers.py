"""Helpers of the `nmt export` tests: random and trained toy checkpoints, our searches."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from conftest import toy_pairs

from nmt.checkpoint import save_checkpoint
from nmt.config import ModelConfig, preset
from nmt.model import Transformer
from nmt.search import beam_search, greedy, output_limit
from nmt.vocab import Vocabulary, train_sentencepiece

NEEDS_EXTRA = "needs the `export` extra (pip install -e '.[export]')"
# Architecture variants Marian and CTranslate2 must both reproduce (pre-norm: CTranslate2 only).
OPTIONS = {
    "post-norm, tied": {},
    "separate embeddings": {"share_embeddings": False},
    "untied output": {"tie_output": False},
    "nothing shared": {"share_embeddings": False, "tie_output": False},
    "short positions, dropouts": {"max_positions": 64, "attn_dropout": 0.1,
                                  "activation_dropout": 0.2, "dropout": 0.3},
}


def random_checkpoint(path: Path, config: ModelConfig, vocab: Vocabulary, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = Transformer(config).eval()
    with torch.no_grad():  # random LayerNorm and bias values too, so a swapped one shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return save_checkpoint(path, model, vocab, {"step": 1})


def random_batch(config: ModelConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded source batch (pieces + EOS) and target inputs (BOS + pieces)."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, config.vocab_size, (3, 11), generator=gen)
    src[:, -1] = config.eos_id
    src[1, 6:] = config.pad_id
    src[1, 5] = config.eos_id
    src[2, 3:] = config.pad_id
    src[2, 2] = config.eos_id
    tgt = torch.randint(4, config.vocab_size, (3, 9), generator=gen)
    tgt[:, 0] = config.bos_id
    return src, tgt


def pad(rows: list[list[int]]) -> torch.Tensor:
    longest = max(map(len, rows))
    return torch.tensor([r + [0] * (longest - len(r)) for r in rows])


def train_toy(vocab: Vocabulary, steps: int = 100) -> Transformer:
    """A few seconds of Adam on toy_pairs(): fluent on the toy language, unsure off it."""
    pairs = toy_pairs()
    src = [vocab.encode(s) + [vocab.eos_id] for s, _ in pairs]
    tgt = [vocab.encode(t) + [vocab.eos_id] for _, t in pairs]
    config = preset("tiny", vocab_size=len(vocab), d_model=64, d_ff=128, n_heads=4,
                    n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
    torch.manual_seed(0)
    model = Transformer(config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pick = random.Random(0)
    for _ in range(steps):
        idx = [pick.randrange(len(pairs)) for _ in range(32)]
        s, y = pad([src[i] for i in idx]), pad([tgt[i] for i in idx])
        y_in = torch.cat([torch.full((len(idx), 1), vocab.bos_id), y[:, :-1]], 1)
        logits = model(s, y_in)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=vocab.pad_id)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def toy_sentences(n: int = 24) -> list[str]:
    """Word salad from the toy vocabulary: in-vocabulary, but unlike any training sentence."""
    words = ("a man woman dog girl plays sits street park water beach red car the old two "
             "children is walking running looks near at in on").split()
    pick = random.Random(1)
    return [" ".join(pick.choice(words) for _ in range(pick.randint(2, 9))).capitalize() + " ."
            for _ in range(n)]


def nmt_beam(model: Transformer, vocab: Vocabulary, lines: list[str], beam: int,
             alpha: float, stopping: str = "finished") -> list[str]:
    src = pad([vocab.encode(line) + [vocab.eos_id] for line in lines])
    limit = output_limit(src, vocab.pad_id)
    if beam == 1:
        out = greedy(model, src, limit)
    else:
        out = [h[0].tokens for h in beam_search(model, src, limit, beam=beam, alpha=alpha,
                                                lenpen_style="fairseq", stopping=stopping)]
    assert all(len(o) < n for o, n in zip(out, limit.tolist(), strict=True))  # none cut off
    return [vocab.decode(o) for o in out]


def trained_vocab(ckpt: Path) -> Vocabulary:
    return Vocabulary.from_file(ckpt / "spm.model")


def train_multi30k(data: Path, steps: int, pairs: int) -> tuple[Transformer, Vocabulary]:
    """A very small model: `steps` updates of 48 sentence pairs (shorter than 30 pieces) drawn
    from the first `pairs` pairs; a few BLEU after 200 steps."""
    en = (data / "train.en").read_text(encoding="utf-8").splitlines()[:pairs]
    de = (data / "train.de").read_text(encoding="utf-8").splitlines()[:pairs]
    vocab = train_sentencepiece(en + de, vocab_size=600)
    rows = [(s + [vocab.eos_id], t + [vocab.eos_id])
            for s, t in zip(vocab.encode_batch(en), vocab.encode_batch(de), strict=True)
            if 0 < len(s) < 30 and 0 < len(t) < 30]
    config = preset("tiny", vocab_size=len(vocab), d_model=64, d_ff=128, n_heads=4,
                    n_encoder_layers=2, n_decoder_layers=2, dropout=0.0, max_positions=256)
    torch.manual_seed(0)
    model = Transformer(config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    pick = random.Random(0)
    for _ in range(steps):
        batch = pick.sample(rows, 48)
        s, y = pad([b[0] for b in batch]), pad([b[1] for b in batch])
        y_in = torch.cat([torch.full((len(batch), 1), vocab.bos_id), y[:, :-1]], 1)
        logits = model(s, y_in)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=vocab.pad_id,
                               label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), vocab
