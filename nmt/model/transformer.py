"""The encoder-decoder model over one shared vocabulary, its initialisation, and its size.

Shapes: B batch, S source length, T target length, D d_model, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.model.attention import AttentionRecorder, MultiHeadAttention
from nmt.model.decoder import Decoder, DecoderState
from nmt.model.encoder import Encoder
from nmt.model.layers import FeedForward

# How `Transformer.reset_parameters` initialises the projections: nmt's own Xavier-uniform, or
# fairseq's transformer (for reproducing results published with it): "fairseq" as it is since
# v0.10, "fairseq-0.9" as before (and in forks of that time), which differ in the feed-forward.
INIT_STYLES = ("xavier", "fairseq", "fairseq-0.9")


class Transformer(nn.Module):
    """Encoder-decoder Transformer over one shared vocabulary."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d, v = config.d_model, config.vocab_size
        src_tokens = nn.Embedding(v, d, padding_idx=config.pad_id)
        tgt_tokens = src_tokens if config.share_embeddings else nn.Embedding(
            v, d, padding_idx=config.pad_id)
        self.encoder = Encoder(config, src_tokens)
        self.decoder = Decoder(config, tgt_tokens)
        self.output = nn.Linear(d, v, bias=False)
        if config.tie_output:
            self.output.weight = tgt_tokens.weight
        self.reset_parameters()

    def reset_parameters(self, style: str = "xavier") -> None:
        """Embeddings N(0, d^-0.5) with the padding row zero; projections by `style`.

        xavier: Xavier-uniform weights and zero biases everywhere. fairseq-0.9: as fairseq's
        transformer did before v0.10, q/k/v Xavier-uniform with gain 1/sqrt(2) (the bound of one
        fused (3D, D) matrix) and PyTorch's default biases, everything else as xavier. fairseq:
        as it does since, the same and feed-forward layers with PyTorch's default Linear init
        (uniform within 1/sqrt(fan_in)) instead of Xavier's.
        """
        if style not in INIT_STYLES:
            raise ValueError(f"unknown init style {style!r}; choose {', '.join(INIT_STYLES)}")
        for name, p in self.named_parameters():
            if p.dim() == 2 and "tokens" not in name and not name.startswith("output"):
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        if style != "xavier":
            for module in self.modules():
                if isinstance(module, MultiHeadAttention):
                    for proj in (module.q_proj, module.k_proj, module.v_proj):
                        proj.reset_parameters()  # PyTorch's bias init
                        nn.init.xavier_uniform_(proj.weight, gain=2 ** -0.5)
                elif style == "fairseq" and isinstance(module, FeedForward):
                    module.fc1.reset_parameters()
                    module.fc2.reset_parameters()
        std = self.config.d_model ** -0.5
        embeddings = {id(m.weight): m for m in self.modules() if isinstance(m, nn.Embedding)}
        for emb in embeddings.values():
            nn.init.normal_(emb.weight, 0.0, std)
            with torch.no_grad():
                emb.weight[self.config.pad_id].zero_()
        if not self.config.tie_output:
            nn.init.normal_(self.output.weight, 0.0, std)

    def source_mask(self, src: Tensor) -> Tensor:
        return (src != self.config.pad_id)[:, None, None, :]  # (B, 1, 1, S) True = real token

    def encode(self, src: Tensor, recorder: AttentionRecorder | None = None
               ) -> tuple[Tensor, Tensor]:
        """src (B, S) -> memory (B, S, D) and the source mask (B, 1, 1, S)."""
        mask = self.source_mask(src)
        return self.encoder(src, mask, recorder), mask

    def decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor,
               recorder: AttentionRecorder | None = None) -> Tensor:
        """Teacher-forced decoding: tgt_in (B, T) -> logits (B, T, V)."""
        return self.output(self.decoder(tgt_in, memory, src_mask, recorder))

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)  # (B, T, V)

    def start_state(self, memory: Tensor, src_mask: Tensor, group: int = 1) -> DecoderState:
        """State for incremental decoding of `group` rows per source row (beam search: the
        beams); encoder-decoder keys/values are computed here once per source row."""
        return DecoderState(
            memory_kv=self.decoder.memory_kv(memory),
            src_mask=src_mask,
            self_kv=[None] * len(self.decoder.layers),
            self_qkv=[layer.self_attn.stacked_qkv() for layer in self.decoder.layers],
            group=group,
        )

    def decode_step(self, tokens: Tensor, state: DecoderState,
                    recorder: AttentionRecorder | None = None) -> Tensor:
        """Feed one token per row, tokens (B,) or (B, 1); returns logits (B, V), updates state."""
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(1)
        return self.output(self.decoder.step(tokens, state, recorder)).squeeze(1)  # (B, V)


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters())


def closed_form_parameters(config: ModelConfig) -> int:
    """The parameter count from the architecture alone, to check `Transformer` against."""
    d, f, v = config.d_model, config.d_ff, config.vocab_size
    attention = 4 * (d * d + d)
    ffn = d * f + f + f * d + d
    norm = 2 * d
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    n_embeddings = 1 if config.share_embeddings else 2
    output = 0 if config.tie_output else v * d
    final_norms = 2 * norm if config.norm_first else 0
    return (n_embeddings * v * d + output + final_norms
            + config.n_encoder_layers * encoder_layer + config.n_decoder_layers * decoder_layer)
