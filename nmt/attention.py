"""Attention maps of a translation, and word alignments read off its cross-attention.

The search (`nmt.search`) runs the fused attention kernels and keeps no probabilities. Once it
has chosen a hypothesis, `replay` decodes that hypothesis again the way the search did, step by
step through the key/value cache (`Transformer.decode_step`), with an `AttentionRecorder`: the
probabilities are the model's own, with the masks of decoding, for exactly the tokens chosen.

- `replay(model, src, outputs, kinds)`: per row, the (L, H, T, K) maps of the kinds asked for.
- `capture(model, vocab, text, ...)`: translate one sentence and return all its maps with the
  subword tokens of both sides (`nmt attention`).
- `hard_alignment(weights)`: for each target token, the source token it attends to most (the
  source EOS excluded, as fairseq's `--print-alignment`); `word_alignment` turns subword pairs
  into pairs of whitespace-separated words, the `i-j` format of Moses and fast_align.

Shapes: L layers, H heads, T target positions (the tokens predicted, EOS last when the
hypothesis ended with it), S source tokens (with EOS), K keys (S, or T for decoder
self-attention).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.errors import ConfigError, DataError
from nmt.model import AttentionRecorder, Transformer
from nmt.search import Hypothesis, SearchConfig, output_limit, search
from nmt.vocab import Vocabulary

KINDS = ("cross", "encoder", "decoder")
WORD_START = "\u2581"  # SentencePiece's word-boundary marker


@dataclass
class AttentionMaps:
    """Every attention probability of one translation, with the tokens on both axes."""

    text: str  # the source sentence
    translation: str  # the detokenized best hypothesis
    source_tokens: list[str]  # S source pieces, EOS last
    target_tokens: list[str]  # T pieces predicted at each decoder position
    decoder_inputs: list[str]  # T pieces fed to the decoder: BOS, then the output shifted
    cross: Tensor  # (L, H, T, S) encoder-decoder attention
    encoder: Tensor  # (L, H, S, S) encoder self-attention
    decoder: Tensor  # (L, H, T, T) decoder self-attention (zero above the diagonal)

    def of(self, kind: str) -> tuple[Tensor, list[str], list[str]]:
        """The (L, H, rows, columns) maps of `kind`, with row and column labels."""
        if kind == "cross":
            return self.cross, self.target_tokens, self.source_tokens
        if kind == "encoder":
            return self.encoder, self.source_tokens, self.source_tokens
        if kind == "decoder":
            return self.decoder, self.target_tokens, self.decoder_inputs
        raise ConfigError(f"unknown attention kind {kind!r}; choose one of {', '.join(KINDS)}")


def outputs_of(hyp: Hypothesis, eos_id: int) -> list[int]:
    """The tokens a hypothesis predicted, one per decoder step: EOS included when it ended so
    (its log-probabilities then have one entry more than its tokens)."""
    return hyp.tokens + ([eos_id] if len(hyp.log_probs) > len(hyp.tokens) else [])


@torch.inference_mode()
def replay(model: Transformer, src: Tensor, outputs: Sequence[Sequence[int]],
           kinds: Iterable[str] = KINDS) -> dict[str, list[Tensor]]:
    """Decode `outputs[i]` (the tokens predicted, EOS included if any) for source row `src[i]`
    step by step, as the search does, recording attention.

    src (B, S) padded; returns kind -> B tensors: cross (L, H, T_i, S_i), encoder
    (L, H, S_i, S_i), decoder (L, H, T_i, T_i), with S_i the row's unpadded length.
    """
    cfg = model.config
    kinds = frozenset(kinds)
    recorder = AttentionRecorder(kinds=kinds)
    lengths = [max(len(o), 1) for o in outputs]
    steps = max(lengths) if lengths else 0
    memory, mask = model.encode(src, recorder)
    state = model.start_state(memory, mask)
    tgt_in = torch.full((src.size(0), steps), cfg.pad_id, dtype=torch.long, device=src.device)
    tgt_in[:, 0] = cfg.bos_id  # (B, T)
    for row, out in enumerate(outputs):
        if len(out) > 1:
            tgt_in[row, 1:len(out)] = torch.tensor(out[:-1], device=src.device)
    for t in range(steps):
        model.decode_step(tgt_in[:, t], state, recorder)
    src_len = (src != cfg.pad_id).sum(1).tolist()  # (B,)
    n_layers = {"encoder": len(model.encoder.layers), "decoder": len(model.decoder.layers),
                "cross": len(model.decoder.layers)}
    result: dict[str, list[Tensor]] = {}
    for kind in kinds:
        per_layer = []
        for layer in range(n_layers[kind]):
            parts = recorder.maps[(kind, layer)]
            if kind == "decoder":  # step t saw t + 1 positions: pad every step to T keys
                parts = [torch.nn.functional.pad(p, (0, steps - p.size(-1))) for p in parts]
            per_layer.append(torch.cat(parts, dim=2))  # (B, H, T or S, K)
        maps = torch.stack(per_layer).cpu()  # (L, B, H, T or S, K)
        rows = []
        for row, (t, s) in enumerate(zip(lengths, src_len, strict=True)):
            q, k = {"cross": (t, s), "encoder": (s, s), "decoder": (t, t)}[kind]
            rows.append(maps[:, row, :, :q, :k])
        result[kind] = rows
    return result


def capture(model: Transformer, vocab: Vocabulary, text: str,
            search_config: SearchConfig | None = None, *, max_len_a: float = 1.0,
            max_len_b: int = 50) -> AttentionMaps:
    """Translate `text` with `model` and return every attention map of the best hypothesis."""
    cfg = model.config
    ids = vocab.encode(text)
    if not ids:
        raise DataError("nothing to translate: the sentence is empty")
    ids = ids[:model.config.max_positions - 1] + [cfg.eos_id]
    device = next(model.parameters()).device
    src = torch.tensor([ids], device=device)  # (1, S)
    limit = output_limit(src, cfg.pad_id, max_len_a, max_len_b).clamp(1, cfg.max_positions)
    hyp = search(model, src, limit, search_config or SearchConfig())[0][0]
    outputs = outputs_of(hyp, cfg.eos_id)
    maps = replay(model, src, [outputs])
    pieces = vocab.sp.id_to_piece
    target = [pieces(i) for i in outputs] or [pieces(cfg.eos_id)]
    return AttentionMaps(
        text=text, translation=vocab.decode(hyp.tokens),
        source_tokens=[pieces(i) for i in ids], target_tokens=target,
        decoder_inputs=[pieces(cfg.bos_id)] + target[:-1],
        cross=maps["cross"][0], encoder=maps["encoder"][0], decoder=maps["decoder"][0])


def teacher_forced(model: Transformer, src: Tensor, tgt_in: Tensor) -> dict[str, Tensor]:
    """The same maps from one full forward pass (causal mask) over `tgt_in` (B, T): the
    reference `replay` must agree with. Returns kind -> (L, B, H, T or S, K)."""
    recorder = AttentionRecorder()
    with torch.inference_mode():
        memory, mask = model.encode(src, recorder)
        model.decode(tgt_in, memory, mask, recorder)
    return {kind: torch.stack([torch.cat(recorder.maps[(kind, i)], 2) for i in range(n)])
            for kind, n in (("encoder", len(model.encoder.layers)),
                            ("decoder", len(model.decoder.layers)),
                            ("cross", len(model.decoder.layers)))}


# --- alignments ----------------------------------------------------------------------------------
def alignment_weights(cross: Tensor, layer: int = -1) -> Tensor:
    """The head average of one layer (default: the last, as fairseq): (L, H, T, S) -> (T, S)."""
    return cross[layer].mean(0)


def hard_alignment(weights: Tensor, *, target_eos: bool = True) -> list[tuple[int, int]]:
    """(source index, target index) pairs: each target token (a final EOS excluded when
    `target_eos`) aligned to the source token it attends to most, the source EOS excluded.

    weights (T, S) with the source EOS last."""
    t, s = weights.shape
    if s < 2:
        return []
    rows = t - 1 if target_eos else t
    best = weights[:rows, :s - 1].argmax(-1).tolist()  # (rows,)
    return [(j, i) for i, j in enumerate(best)]


def word_index(pieces: Sequence[str]) -> list[int]:
    """The whitespace-separated word each SentencePiece piece belongs to."""
    index, word = [], -1
    for n, piece in enumerate(pieces):
        if n == 0 or piece.startswith(WORD_START):
            word += 1
        index.append(max(word, 0))
    return index


def word_alignment(pairs: Iterable[tuple[int, int]], source_pieces: Sequence[str],
                   target_pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Subword pairs -> sorted, distinct pairs of words (Moses/fast_align `i-j`, 0-based)."""
    src_word, tgt_word = word_index(source_pieces), word_index(target_pieces)
    return sorted({(src_word[i], tgt_word[j]) for i, j in pairs})


def format_pairs(pairs: Iterable[tuple[int, int]]) -> str:
    return " ".join(f"{i}-{j}" for i, j in pairs)
