"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), in plain PyTorch.

Small modules with one idea each, one file per idea:

- `layers`: sinusoidal positions, dropout, the scaled embedding, the feed-forward network and
  the residual + LayerNorm wrapper;
- `attention`: multi-head attention, the key/value cache entries and the `AttentionRecorder`;
- `encoder` and `decoder`: the layers and their stacks, with `DecoderState` for incremental
  decoding;
- `transformer`: the model that ties them to one shared vocabulary, its initialisation and its
  parameter count.

The API is explicit:

- `Transformer.encode(src)` -> encoder states and the source padding mask,
- `Transformer.decode(tgt_in, memory, src_pad)` -> logits for every target position (training),
- `Transformer.forward(src, tgt_in)` -> both of the above,
- `Transformer.start_state(memory, src_pad)` and `Transformer.decode_step(tokens, state)` ->
  incremental decoding with a key/value cache, so step t costs O(t) and not O(t^2).

`encode`, `decode` and `decode_step` take an optional `AttentionRecorder`: the attention modules
it asks for then compute their probabilities explicitly (same masks) and hand them to it. Without
one, every module runs the fused `F.scaled_dot_product_attention` and nothing else changes.

The names below are the package's public API; each is defined in the module named.
"""

from nmt.model.attention import AttentionRecorder, KeyValue, MultiHeadAttention
from nmt.model.decoder import Decoder, DecoderLayer, DecoderState
from nmt.model.encoder import Encoder, EncoderLayer
from nmt.model.layers import Dropout, Embedding, FeedForward, Residual, sinusoidal_table
from nmt.model.transformer import INIT_STYLES, Transformer, closed_form_parameters, count_parameters

__all__ = [
    "INIT_STYLES", "AttentionRecorder", "Decoder", "DecoderLayer", "DecoderState", "Dropout",
    "Embedding", "Encoder", "EncoderLayer", "FeedForward", "KeyValue", "MultiHeadAttention",
    "Residual", "Transformer", "closed_form_parameters", "count_parameters", "sinusoidal_table",
]
