"""The encoder: a stack of self-attention + feed-forward layers over the embedded source.

Shapes: B batch, S source length, D d_model.
"""

from __future__ import annotations

from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.model.attention import AttentionRecorder, MultiHeadAttention, Record, record_for
from nmt.model.layers import Embedding, FeedForward, Residual


class EncoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(config)
        self.self_attn_res = Residual(config)
        self.ffn = FeedForward(config)
        self.ffn_res = Residual(config)

    def forward(self, x: Tensor, mask: Tensor, record: Record | None = None) -> Tensor:
        # x: (B, S, D); mask: (B, 1, 1, S) True where the source token is real
        x = self.self_attn_res(x, lambda h: self.self_attn(h, h, mask, record=record))
        return self.ffn_res(x, self.ffn)  # (B, S, D)


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig, tokens: nn.Embedding) -> None:
        super().__init__()
        self.embed = Embedding(tokens, config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_encoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else None

    def forward(self, src: Tensor, mask: Tensor,
                recorder: AttentionRecorder | None = None) -> Tensor:
        x = self.embed(src)  # (B, S, D)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, record_for(recorder, "encoder", i))
        return self.final_norm(x) if self.final_norm is not None else x
