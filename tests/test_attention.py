"""Attention capture (replay of the chosen hypothesis) and the alignments read off it."""

import io
import json

import pytest
import torch
from conftest import toy_pairs

from nmt import attention, translate
from nmt.checkpoint import save_checkpoint
from nmt.config import preset
from nmt.model import AttentionRecorder, Transformer
from nmt.search import SearchConfig, beam_search, output_limit
from nmt.translate import TranslateConfig

pytestmark = pytest.mark.usefixtures("one_thread")




def _src(vocab, texts):
    ids = [vocab.encode(t) + [vocab.eos_id] for t in texts]
    src = torch.zeros((len(ids), max(map(len, ids))), dtype=torch.long)
    for row, seq in enumerate(ids):
        src[row, :len(seq)] = torch.tensor(seq)
    return src


def test_recording_changes_nothing_and_rows_are_distributions(tiny_model, tiny_vocab):
    src = _src(tiny_vocab, [en for en, _ in toy_pairs()[:3]])
    tgt_in = src[:, :5].clone()
    tgt_in[:, 0] = tiny_model.config.bos_id
    with torch.inference_mode():
        plain = tiny_model(src, tgt_in)
        recorder = AttentionRecorder()
        memory, mask = tiny_model.encode(src, recorder)
        recorded = tiny_model.decode(tgt_in, memory, mask, recorder)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert set(recorder.maps) == {(k, i) for k in attention.KINDS for i in range(2)}
    cross = recorder.maps[("cross", 0)][0]  # (B, H, T, S)
    assert cross.shape == (3, 4, 5, src.size(1))
    torch.testing.assert_close(cross.sum(-1), torch.ones(3, 4, 5))
    assert (cross.masked_select(~mask.expand_as(cross)) == 0).all()  # padding gets nothing
    dec = recorder.maps[("decoder", 1)][0]
    assert torch.triu(dec, diagonal=1).abs().max() == 0  # causal


def test_only_the_kinds_asked_for_are_recorded(tiny_model, tiny_vocab):
    src = _src(tiny_vocab, ["A man sits ."])
    recorder = AttentionRecorder(kinds=frozenset({"cross"}))
    with torch.inference_mode():
        tiny_model.decode(src[:, :2], *tiny_model.encode(src, recorder), recorder)
    assert set(recorder.maps) == {("cross", 0), ("cross", 1)}


def test_replay_equals_the_teacher_forced_pass_for_the_beam_hypotheses(tiny_model, tiny_vocab):
    cfg = tiny_model.config
    src = _src(tiny_vocab, [en for en, _ in toy_pairs()[::40]])
    hyps = beam_search(tiny_model, src, output_limit(src, 0, 1.0, 6), beam=3)
    outputs = [attention.outputs_of(h[0], cfg.eos_id) for h in hyps]
    maps = attention.replay(tiny_model, src, outputs)
    for row, out in enumerate(outputs):
        s = int((src[row] != cfg.pad_id).sum())
        tgt_in = torch.tensor([[cfg.bos_id] + out[:-1]])
        ref = attention.teacher_forced(tiny_model, src[row:row + 1, :s], tgt_in)
        for kind in attention.KINDS:
            got = maps[kind][row]  # (L, H, T or S, K)
            torch.testing.assert_close(got, ref[kind][:, 0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(got.sum(-1), torch.ones(got.shape[:-1]))
        assert maps["cross"][row].shape == (2, 4, len(out), s)


def test_capture_labels_both_axes(tiny_model, tiny_vocab):
    maps = attention.capture(tiny_model, tiny_vocab, "A man sits in the park .",
                             SearchConfig(beam=2), max_len_b=6)
    L, H, T, S = maps.cross.shape
    assert (L, H) == (2, 4)
    assert len(maps.source_tokens) == S and maps.source_tokens[-1] == "</s>"
    assert len(maps.target_tokens) == len(maps.decoder_inputs) == T
    assert maps.decoder_inputs[0] == "<s>"
    assert maps.encoder.shape == (L, H, S, S) and maps.decoder.shape == (L, H, T, T)


def test_alignment_helpers():
    w = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.1, 0.2, 0.7]])  # (T, S), EOS last
    assert attention.hard_alignment(w) == [(0, 0), (1, 1)]  # source EOS and target EOS skipped
    assert attention.hard_alignment(w, target_eos=False) == [(0, 0), (1, 1), (1, 2)]
    assert attention.word_index(["▁The", "▁anim", "al", "▁", ",", "▁it"]) == [0, 1, 1, 2, 2, 3]
    pairs = attention.word_alignment([(0, 0), (1, 1), (2, 1)], ["▁a", "▁do", "g"], ["▁x", "▁y"])
    assert attention.format_pairs(pairs) == "0-0 1-1"


# --- a model that copies: its alignment is the diagonal ------------------------------------------
@pytest.fixture(scope="module")
def copy_model(tiny_vocab):
    """A one-decoder-layer model trained to copy sequences of 10 distinct tokens (~15 s)."""
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=len(tiny_vocab), d_model=64, d_ff=128, n_heads=4,
                 n_encoder_layers=2, n_decoder_layers=1, dropout=0.0, attn_dropout=0.0)
    model = Transformer(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    words = [i for i in range(len(tiny_vocab)) if tiny_vocab.sp.id_to_piece(i).startswith("▁")
             and tiny_vocab.encode(tiny_vocab.sp.id_to_piece(i)[1:]) == [i]]
    tokens = torch.tensor(words[:10])  # ten whole words, one piece each
    for step in range(500):
        n = 3 + step % 6  # lengths 3..8, one per batch
        seqs = tokens[torch.stack([torch.randperm(10, generator=gen)[:n] for _ in range(32)])]
        src = torch.cat([seqs, torch.full((32, 1), cfg.eos_id)], 1)  # (B, n + 1)
        tgt_in = torch.cat([torch.full((32, 1), cfg.bos_id), seqs], 1)
        logits = model(src, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                 src.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, loss.item()
    return model.eval(), tokens.tolist()


@pytest.mark.slow
def test_a_copy_model_aligns_on_the_diagonal(copy_model):
    copy_model, w = copy_model
    cfg = copy_model.config
    src = torch.tensor([[w[5], w[1], w[8], w[0], w[3], w[9], cfg.eos_id],
                        [w[2], w[7], w[4], w[6], w[1], w[0], cfg.eos_id]])
    hyps = beam_search(copy_model, src, torch.tensor([10, 10]), beam=2)
    assert [h[0].tokens for h in hyps] == [row[:-1] for row in src.tolist()]
    outputs = [attention.outputs_of(h[0], cfg.eos_id) for h in hyps]
    for cross in attention.replay(copy_model, src, outputs, kinds=("cross",))["cross"]:
        pairs = attention.hard_alignment(attention.alignment_weights(cross))
        assert pairs == [(i, i) for i in range(6)]


@pytest.mark.slow
def test_translate_alignments_text_and_jsonl(tmp_path, copy_model, tiny_vocab):
    copy_model, words = copy_model
    ckpt = save_checkpoint(tmp_path / "ck", copy_model, tiny_vocab, {"step": 1})
    line = " ".join(tiny_vocab.sp.id_to_piece(i)[1:] for i in words[3:8])  # five words
    base = dict(checkpoints=(ckpt,), search=SearchConfig(beam=2), threads=1, alignments=True)
    sink = io.StringIO()
    translate.run(TranslateConfig(**base), stdin=io.BytesIO(f"{line}\n\n".encode()),
                  stdout=sink)
    first, second = sink.getvalue().splitlines()
    assert first == f"{line} ||| 0-0 1-1 2-2 3-3 4-4"
    assert second == " ||| "
    sink = io.StringIO()
    translate.run(TranslateConfig(**base, output_format="jsonl", attention_weights=True),
                  stdin=io.BytesIO(f"{line}\n".encode()), stdout=sink)
    obj = json.loads(sink.getvalue())
    assert obj["translation"] == line and obj["alignment"] == "0-0 1-1 2-2 3-3 4-4"
    att = obj["attention"]
    assert att["source_tokens"][-1] == "</s>" and len(att["weights"]) == len(
        att["target_tokens"])
    assert all(abs(sum(row) - 1) < 1e-3 for row in att["weights"])
