"""Multi-head attention, its key/value cache entries, and the recorder that keeps its weights.

`MultiHeadAttention` runs the fused `F.scaled_dot_product_attention`; given a `Record` callback
(from an `AttentionRecorder`, for `nmt attention` and alignments) it computes the probabilities
explicitly, with the same masks, and hands them over.

Shapes: B batch, H heads, T query positions, L key positions, D d_model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.config import ModelConfig


@dataclass
class KeyValue:
    """Cached keys and values of one attention module, each (B, H, L, D/H)."""

    k: Tensor
    v: Tensor


Record = Callable[[Tensor], None]  # receives one module's probabilities, (B, H, T, L)


@dataclass
class AttentionRecorder:
    """Collects attention probabilities as the model computes them.

    `maps[(kind, layer)]` is the list of (B, H, T, L) probability tensors that module wrote, one
    per call (one per step in incremental decoding); kind is "encoder" (encoder self-attention),
    "decoder" (decoder self-attention) or "cross" (encoder-decoder attention). Only the `kinds`
    asked for are recorded; the other modules keep the fused path.
    """

    kinds: frozenset[str] = frozenset({"encoder", "decoder", "cross"})
    maps: dict[tuple[str, int], list[Tensor]] = field(default_factory=dict)

    def at(self, kind: str, layer: int) -> Record | None:
        """The callback for one module, or None when its kind is not recorded."""
        if kind not in self.kinds:
            return None
        store = self.maps.setdefault((kind, layer), [])
        return lambda probs: store.append(probs.detach().float())


def record_for(recorder: AttentionRecorder | None, kind: str, layer: int) -> Record | None:
    """The callback of one module when a recorder asks for its kind, else None."""
    return None if recorder is None else recorder.at(kind, layer)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over H heads, through `F.scaled_dot_product_attention`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = config.attn_dropout

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, D/H)

    def project_kv(self, x: Tensor) -> KeyValue:
        return KeyValue(self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x)))

    def stacked_qkv(self) -> tuple[Tensor, Tensor] | None:
        """The q, k and v projections as one (3D, D) weight and (3D,) bias, so that decoding
        projects a position with one GEMM instead of three (a step at d 128 is mostly per-call
        overhead); None when they are not plain Linear layers (int8 translation)."""
        projs = (self.q_proj, self.k_proj, self.v_proj)
        if not all(type(p) is nn.Linear and p.bias is not None for p in projs):
            return None
        return torch.cat([p.weight for p in projs]), torch.cat([p.bias for p in projs])

    def project_qkv(self, x: Tensor, stacked: tuple[Tensor, Tensor] | None
                    ) -> tuple[Tensor, KeyValue]:
        """Queries (B, H, T, D/H) and keys/values of x (B, T, D), through `stacked_qkv()`'s
        weights when given, else through the three projections."""
        if stacked is None:
            return self.split_heads(self.q_proj(x)), self.project_kv(x)
        b, t, d = x.shape
        qkv = F.linear(x, *stacked).view(b, t, 3, self.n_heads, d // self.n_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, T, D/H)
        return qkv[0], KeyValue(qkv[1], qkv[2])

    def attend(
        self, x: Tensor, kv: KeyValue, mask: Tensor | None = None, causal: bool = False,
        group: int = 1, record: Record | None = None,
    ) -> Tensor:
        # x: (B, T, D) queries; kv: (B, H, L, D/H); mask: (B, 1, 1 or T, L) bool, True = attend
        return self.attend_heads(self.split_heads(self.q_proj(x)), kv, mask, causal, group,
                                 record)

    def attend_heads(
        self, q: Tensor, kv: KeyValue, mask: Tensor | None = None, causal: bool = False,
        group: int = 1, record: Record | None = None,
    ) -> Tensor:
        # q: (B, H, T, D/H) projected queries, otherwise as `attend`.
        # With group G > 1 (incremental decoding, T = 1: the beams of a sentence) each G
        # consecutive query rows share one key/value row: kv (B/G, H, L, D/H), mask
        # (B/G, 1, 1, L), and the G queries attend as G positions of that row.
        # With `record`, the probabilities are computed explicitly and passed to it (B, H, T, L).
        b, h, t, dh = q.shape
        if group > 1:
            q = q.view(b // group, group, h, t, dh).transpose(1, 2).reshape(
                b // group, h, group * t, dh)  # (B/G, H, G*T, D/H)
        p = self.attn_dropout if self.training else 0.0
        if record is None:
            out = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=mask, dropout_p=p,
                                                 is_causal=causal)  # (B/G, H, G*T, D/H)
        else:
            out = self.explicit(q, kv, mask, causal, p, group, record)
        if group > 1:
            out = out.view(b // group, h, group, t, dh).transpose(1, 2).reshape(b, h, t, dh)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * dh))  # (B, T, D)

    @staticmethod
    def explicit(q: Tensor, kv: KeyValue, mask: Tensor | None, causal: bool, p: float,
                 group: int, record: Record) -> Tensor:
        """softmax(q k^T / sqrt(d) masked) v, what SDPA computes, with the probabilities kept."""
        # q: (B/G, H, G*T, D/H); kv: (B/G, H, L, D/H); mask True = attend
        scores = (q @ kv.k.transpose(-2, -1)) * q.size(-1) ** -0.5  # (B/G, H, G*T, L)
        if causal:  # SDPA's is_causal: query i sees keys 0..i (top-left aligned)
            allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~allowed, float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(-1)  # (B/G, H, G*T, L)
        bg, h, gt, length = probs.shape
        t = gt // group
        record(probs.view(bg, h, group, t, length).transpose(1, 2).reshape(
            bg * group, h, t, length))  # (B, H, T, L)
        return F.dropout(probs, p) @ kv.v if p else probs @ kv.v  # (B/G, H, G*T, D/H)

    def forward(
        self, x: Tensor, memory: Tensor, mask: Tensor | None = None, causal: bool = False,
        record: Record | None = None,
    ) -> Tensor:
        return self.attend(x, self.project_kv(memory), mask, causal, record=record)
