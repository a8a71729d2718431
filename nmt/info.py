"""`nmt info`: what a checkpoint holds, as rows for a table."""

from __future__ import annotations

import os

from nmt.checkpoint import load_checkpoint
from nmt.config import preset_name
from nmt.model import count_parameters


def run(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(field, value) rows describing the checkpoint at `path`."""
    ckpt = load_checkpoint(path)
    c = ckpt.config
    model = ckpt.build_model()
    data = ckpt.meta.get("data") or {}
    norm = "pre-norm" if c.norm_first else "post-norm"
    tying = ("three-way tied" if c.share_embeddings and c.tie_output
             else "decoder in/out tied" if c.tie_output
             else "shared encoder/decoder" if c.share_embeddings else "untied")
    langs = f"{data.get('src_lang', '?')}-{data.get('tgt_lang', '?')}" if data else "unknown"
    return [
        ("checkpoint", str(ckpt.path)),
        ("architecture", f"Transformer ({preset_name(c) or 'custom'}), {norm}"),
        ("layers", f"{c.n_encoder_layers} encoder + {c.n_decoder_layers} decoder"),
        ("d_model / d_ff / heads", f"{c.d_model} / {c.d_ff} / {c.n_heads}"),
        ("dropout", f"{c.dropout} (attention {c.attn_dropout}, activation {c.activation_dropout})"),
        ("parameters", f"{count_parameters(model):,}"),
        ("vocabulary", f"{len(ckpt.vocab):,} SentencePiece pieces, embeddings {tying}"),
        ("vocabulary sha256", ckpt.vocab.sha256[:16]),
        ("training step", f"{ckpt.step:,}{_epoch(ckpt.meta)}"),
        ("data", f"{data.get('name', 'unknown')} {langs}"
                 + (f", content {data['content_hash'][:16]}" if data.get("content_hash") else "")),
        ("averaged from", ", ".join(ckpt.meta["averaged_from"])
         if ckpt.meta.get("averaged_from") else "-"),
        ("nmt version", str(ckpt.meta.get("nmt_version", "?"))),
    ]


def _epoch(meta: dict) -> str:
    """Where the step lies in the data: meta's "epoch" is the epoch in progress, so a checkpoint
    written where one ended names the next."""
    if "epoch" not in meta:
        return ""
    if "epoch_end" not in meta:  # written before checkpoints recorded it
        return f" (epoch {meta['epoch']})"
    if meta["epoch_end"] and meta["epoch"] > 1:
        return f" (end of epoch {meta['epoch'] - 1})"
    return f" (in epoch {meta['epoch']})"
