"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), in plain PyTorch.

Small modules with one idea each: sinusoidal positions, multi-head attention, the feed-forward
network, encoder and decoder layers and stacks, and the model that ties them to one shared
vocabulary. The API is explicit:

- `Transformer.encode(src)` -> encoder states and the source padding mask,
- `Transformer.decode(tgt_in, memory, src_pad)` -> logits for every target position (training),
- `Transformer.forward(src, tgt_in)` -> both of the above,
- `Transformer.start_state(memory, src_pad)` and `Transformer.decode_step(tokens, state)` ->
  incremental decoding with a key/value cache, so step t costs O(t) and not O(t^2).

`encode`, `decode` and `decode_step` take an optional `AttentionRecorder`: the attention modules
it asks for then compute their probabilities explicitly (same masks) and hand them to it. Without
one, every module runs the fused `F.scaled_dot_product_attention` and nothing else changes.

Shapes: B batch, S source length, T target length, D d_model, H heads, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.config import ModelConfig

# How `Transformer.reset_parameters` initialises the projections: nmt's own Xavier-uniform, or
# fairseq's transformer (for reproducing results published with it).
INIT_STYLES = ("xavier", "fairseq")


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    """PE[pos, i] = sin(pos / 10000^(2i/dim)) for i < dim/2, cos(...) for the second half.

    The paper's formula, laid out with all sines first and all cosines second. fairseq and
    tensor2tensor use the same layout but other frequencies, 10000^(-i/(dim/2-1)), and fairseq's
    positions start after the padding index; Marian (and so the Hugging Face export) uses the
    paper's frequencies with this layout, and the CTranslate2 export stores this table, so both
    exports compute the same function.
    """
    half = dim // 2
    positions = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) * 2.0 / dim)  # (dim/2,)
    angles = positions * freqs  # (P, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()  # (P, dim)


class Dropout(nn.Module):
    """Inverted dropout: in training, zero each element with probability p and scale the rest
    by 1 / (1 - p). On the CPU the mask is `torch.rand(...) >= p` made in place (fwd + bwd
    ~1.6x faster there than `F.dropout`, whose `bernoulli_` draws one number at a time);
    elsewhere `F.dropout`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, dtype=torch.float32).ge_(self.p)  # 1.0 kept, 0.0 dropped
        return x * keep.mul_(1.0 / (1.0 - self.p)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Embedding(nn.Module):
    """Token embedding scaled by sqrt(d_model), plus sinusoidal positions, then dropout."""

    def __init__(self, tokens: nn.Embedding, config: ModelConfig) -> None:
        super().__init__()
        self.tokens = tokens
        self.scale = math.sqrt(config.d_model)
        self.register_buffer(
            "positions", sinusoidal_table(config.max_positions, config.d_model), persistent=False
        )
        self.dropout = Dropout(config.dropout)

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        # ids: (B, T); offset: position of ids[:, 0] (non-zero during incremental decoding)
        pos = self.positions[offset : offset + ids.size(1)]  # (T, D)
        return self.dropout(self.tokens(ids) * self.scale + pos)  # (B, T, D)


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


def _at(recorder: AttentionRecorder | None, kind: str, layer: int) -> Record | None:
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


class FeedForward(nn.Module):
    """Position-wise FFN(x) = max(0, x W1 + b1) W2 + b2."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.d_ff)
        self.fc2 = nn.Linear(config.d_ff, config.d_model)
        self.dropout = Dropout(config.activation_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))  # (B, T, D)


class Residual(nn.Module):
    """Residual + LayerNorm: post-norm LN(x + drop(f(x))) or pre-norm x + drop(f(LN(x)))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.dropout = Dropout(config.dropout)
        self.norm_first = config.norm_first

    def forward(self, x: Tensor, sublayer) -> Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


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
            x = layer(x, mask, _at(recorder, "encoder", i))
        return self.final_norm(x) if self.final_norm is not None else x


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
            x = layer(x, kv, src_mask, _at(recorder, "decoder", i), _at(recorder, "cross", i))
        return self.final_norm(x) if self.final_norm is not None else x

    def step(self, tokens: Tensor, state: DecoderState,
             recorder: AttentionRecorder | None = None) -> Tensor:
        x = self.embed(tokens, offset=state.length)  # (B, 1, D)
        for i, layer in enumerate(self.layers):
            x, state.self_kv[i] = layer.step(x, state.self_kv[i], state.memory_kv[i],
                                             state.src_mask, state.group,
                                             _at(recorder, "decoder", i),
                                             _at(recorder, "cross", i), state.self_qkv[i])
        state.length += 1
        return self.final_norm(x) if self.final_norm is not None else x  # (B, 1, D)


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

        xavier: Xavier-uniform weights and zero biases everywhere. fairseq: as its transformer
        does it, q/k/v Xavier-uniform with gain 1/sqrt(2) (the bound of one fused (3D, D)
        matrix) and PyTorch's default biases, attention outputs Xavier-uniform with zero bias,
        feed-forward layers PyTorch's default Linear init (uniform within 1/sqrt(fan_in)).
        """
        if style not in INIT_STYLES:
            raise ValueError(f"unknown init style {style!r}; choose {', '.join(INIT_STYLES)}")
        for name, p in self.named_parameters():
            if p.dim() == 2 and "tokens" not in name and not name.startswith("output"):
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        if style == "fairseq":
            for module in self.modules():
                if isinstance(module, MultiHeadAttention):
                    for proj in (module.q_proj, module.k_proj, module.v_proj):
                        proj.reset_parameters()  # PyTorch's bias init
                        nn.init.xavier_uniform_(proj.weight, gain=2 ** -0.5)
                elif isinstance(module, FeedForward):
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
