"""The decoder: causal self-attention, attention over the encoder states and a feed-forward
network per layer, run over a whole target (training) or one position at a time with a
key/value cache (`DecoderState`, search), so step t costs O(t) and not O(t^2).

Shapes: B batch (decoder rows), S source length, T target length, D d_model, H heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.model.attention import AttentionRecorder, KeyValue, MultiHeadAttention, Record, record_for
from nmt.model.layers import Embedding, FeedForward, Residual


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(config)
        self.self_attn_res = Residual(config)
        self.cross_attn = MultiHeadAttention(config)
        self.cross_attn_res = Residual(config)
        self.ffn = FeedForward(config)
        self.ffn_res = Residual(config)

    def forward(self, x: Tensor, memory_kv: KeyValue, src_mask: Tensor,
                record_self: Record | None = None, record_cross: Record | None = None
                ) -> Tensor:
        # Full forward over all T positions with a causal mask: (B, T, D) -> (B, T, D)
        x = self.self_attn_res(x, lambda h: self.self_attn(h, h, causal=True, record=record_self))
        x = self.cross_attn_res(x, lambda h: self.cross_attn.attend(h, memory_kv, src_mask,
                                                                    record=record_cross))
        return self.ffn_res(x, self.ffn)

    def step(self, x: Tensor, cache: KeyValue | None, memory_kv: KeyValue,
             src_mask: Tensor, group: int = 1, record_self: Record | None = None,
             record_cross: Record | None = None,
             qkv: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, KeyValue]:
        # One new position: x (B, 1, D); cache holds keys/values of the earlier positions;
        # memory_kv and src_mask have one row per `group` rows of x; qkv: the self-attention's
        # `stacked_qkv()`, if any.
        def self_attend(h: Tensor) -> Tensor:
            nonlocal cache
            q, new = self.self_attn.project_qkv(h, qkv)  # (B, H, 1, D/H) each
            if cache is None:
                cache = new
            else:
                cache = KeyValue(torch.cat([cache.k, new.k], 2), torch.cat([cache.v, new.v], 2))
            # the new query sees every cached position
            return self.self_attn.attend_heads(q, cache, record=record_self)

        x = self.self_attn_res(x, self_attend)
        x = self.cross_attn_res(
            x, lambda h: self.cross_attn.attend(h, memory_kv, src_mask, group=group,
                                                record=record_cross))
        return self.ffn_res(x, self.ffn), cache


@dataclass
class DecoderState:
    """Everything incremental decoding carries between steps, for B decoder rows that share
    B / group encoder rows (beam search: the `group` beams of each sentence)."""

    memory_kv: list[KeyValue]  # per layer: encoder-decoder keys/values, precomputed once
    src_mask: Tensor  # (B / group, 1, 1, S) True where the source token is real
    self_kv: list[KeyValue | None]  # per layer: self-attention keys/values of past positions
    self_qkv: list[tuple[Tensor, Tensor] | None]  # per layer: `stacked_qkv()`, made once
    length: int = 0  # number of target positions decoded so far
    group: int = 1  # decoder rows per encoder row

    def select(self, index: Tensor, memory_index: Tensor | None = None) -> DecoderState:
        """Keep, reorder or repeat decoder rows `index` (beam reordering, dropping finished
        rows) and encoder rows `memory_index` (default: `index`, for a group of 1)."""
        if memory_index is None:
            if self.group != 1:
                raise ValueError("a grouped decoder state needs the encoder rows to keep")
            memory_index = index
        pick = lambda kv, i: KeyValue(kv.k.index_select(0, i), kv.v.index_select(0, i))  # noqa: E731
        return DecoderState(
            memory_kv=[pick(kv, memory_index) for kv in self.memory_kv],
            src_mask=self.src_mask.index_select(0, memory_index),
            self_kv=[None if kv is None else pick(kv, index) for kv in self.self_kv],
            self_qkv=self.self_qkv,
            length=self.length,
            group=self.group,
        )

    def reorder(self, index: Tensor) -> DecoderState:
        """Like `select` for an `index` that only moves decoder rows among the rows of the same
        encoder row (beam reordering): the encoder keys/values stay as they are."""
        pick = lambda kv: KeyValue(kv.k.index_select(0, index), kv.v.index_select(0, index))  # noqa: E731
        return DecoderState(memory_kv=self.memory_kv, src_mask=self.src_mask,
                            self_kv=[None if kv is None else pick(kv) for kv in self.self_kv],
                            self_qkv=self.self_qkv, length=self.length, group=self.group)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, tokens: nn.Embedding) -> None:
        super().__init__()
        self.embed = Embedding(tokens, config)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_decoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else None

    def memory_kv(self, memory: Tensor) -> list[KeyValue]:
        return [layer.cross_attn.project_kv(memory) for layer in self.layers]

    def forward(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor,
                recorder: AttentionRecorder | None = None) -> Tensor:
        x = self.embed(tgt_in)  # (B, T, D)
        for i, (layer, kv) in enumerate(zip(self.layers, self.memory_kv(memory), strict=True)):
            x = layer(x, kv, src_mask, record_for(recorder, "decoder", i),
                      record_for(recorder, "cross", i))
        return self.final_norm(x) if self.final_norm is not None else x

    def step(self, tokens: Tensor, state: DecoderState,
             recorder: AttentionRecorder | None = None) -> Tensor:
        x = self.embed(tokens, offset=state.length)  # (B, 1, D)
        for i, layer in enumerate(self.layers):
            x, state.self_kv[i] = layer.step(x, state.self_kv[i], state.memory_kv[i],
                                             state.src_mask, state.group,
                                             record_for(recorder, "decoder", i),
                                             record_for(recorder, "cross", i), state.self_qkv[i])
        state.length += 1
        return self.final_norm(x) if self.final_norm is not None else x  # (B, 1, D)
