import dataclasses
import itertools

import pytest
import torch

from nmt.config import ModelConfig
from nmt.model import Transformer
from nmt.search import (
    Ensemble,
    SearchConfig,
    beam_search,
    greedy,
    greedy_search,
    length_penalty,
    output_limit,
    sample,
    sample_tokens,
    search,
    topk_candidates,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _full_greedy(model, src_row, max_len):
    """Reference: greedy decoding by full recomputation of the decoder at every step."""
    cfg = model.config
    tgt = [cfg.bos_id]
    with torch.no_grad():
        for _ in range(max_len):
            logits = model(src_row[None], torch.tensor([tgt]))[0, -1]
            logits[cfg.pad_id] = logits[cfg.bos_id] = float("-inf")
            tok = int(logits.argmax())
            if tok == cfg.eos_id:
                break
            tgt.append(tok)
    return tgt[1:]


def test_output_limit_is_input_plus_50():
    src = torch.tensor([[5, 6, 7, 0], [5, 0, 0, 0]])
    assert output_limit(src, pad_id=0).tolist() == [53, 51]


def test_greedy_equals_full_recomputation_and_respects_limits(tiny_model, tiny_config):
    g = torch.Generator().manual_seed(5)
    src = torch.randint(4, tiny_config.vocab_size, (4, 6), generator=g)
    src[2, 3:] = tiny_config.pad_id
    limits = torch.tensor([7, 3, 5, 1])
    got = greedy(tiny_model, src, limits)
    for row in range(4):
        n = int((src[row] != 0).sum())
        assert got[row] == _full_greedy(tiny_model, src[row, :n], int(limits[row]))
        assert len(got[row]) <= limits[row]


# --- beam search, sampling, ensembles ---------------------------------------------------------


MICRO = ModelConfig(vocab_size=10, d_model=16, d_ff=32, n_heads=2, n_encoder_layers=2,
                    n_decoder_layers=2, dropout=0.0, max_positions=64)


def _micro(seed: int, *, sharpen: float = 3.0, eos_bias: float = 0.0, **overrides
           ) -> Transformer:
    """A random model over 6 real tokens + <unk> + EOS (PAD and BOS are never produced).

    `sharpen` scales the output logits (fewer near-ties); `eos_bias` adds about that much to
    the EOS logit at every step (shorter outputs, so that early stopping has work to do)."""
    torch.manual_seed(seed)
    model = Transformer(dataclasses.replace(MICRO, **overrides)).eval()
    with torch.no_grad():
        model.output.weight.mul_(sharpen)
        eos = model.output.weight[model.config.eos_id]
        model.decoder.layers[-1].ffn_res.norm.bias.copy_(eos_bias * eos / eos.dot(eos))
    return model


def _step_log_probs(models, src_row, prefixes):
    """Log-probabilities (P, V) of the next token after each of equal-length `prefixes`."""
    return _step_log_probs_full(models, src_row, prefixes)[:, -1]


def _teacher_forced(models, src_row, seq):
    """Full recomputation in one pass: log-probabilities (len(seq), V) of every position."""
    return _step_log_probs_full(models, src_row, [seq[:-1]])[0]


def _step_log_probs_full(models, src_row, prefixes):
    """Full recomputation: mean over `models` of log_softmax at every position after BOS +
    each prefix, PAD and BOS at -inf -> (P, T, V)."""
    cfg = models[0].config
    tgt = torch.tensor([[cfg.bos_id, *p] for p in prefixes])
    with torch.no_grad():
        lp = torch.stack([m(src_row.expand(len(prefixes), -1), tgt).log_softmax(-1)
                          for m in models]).mean(0)  # (P, T, V)
    lp[..., cfg.pad_id] = lp[..., cfg.bos_id] = float("-inf")
    return lp


def _exhaustive(models, src_row, max_len, alpha, style):
    """Every finished hypothesis (tokens, score) under the search's conventions, best first."""
    cfg = models[0].config
    done, live = [], [((), 0.0)]
    for t in range(max_len):
        lp = _step_log_probs(models, src_row, [p for p, _ in live])
        nxt = []
        for (prefix, total), row in zip(live, lp.tolist(), strict=True):
            for tok, value in enumerate(row):
                if value == float("-inf"):
                    continue
                if tok == cfg.eos_id or t + 1 == max_len:
                    toks = prefix if tok == cfg.eos_id else (*prefix, tok)
                    pen = float(length_penalty(torch.tensor(t + 1), alpha, style))
                    done.append((list(toks), (total + value) / pen))
                else:
                    nxt.append(((*prefix, tok), total + value))
        live = nxt
    return sorted(done, key=lambda h: -h[1])


def _sources(cfg, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), cfg.pad_id)
    for row, n in enumerate(lengths):
        src[row, :n - 1] = torch.randint(4, cfg.vocab_size, (n - 1,), generator=g)
        src[row, n - 1] = cfg.eos_id
    return src


def _unpadded(src, row, pad_id):
    return src[row, : int((src[row] != pad_id).sum())]


def test_length_penalties():
    n = torch.tensor([1, 2, 10])
    assert torch.allclose(length_penalty(n, 0.6, "gnmt"), ((5 + n.float()) / 6) ** 0.6)
    assert torch.allclose(length_penalty(n, 1.0, "fairseq"), n.float())
    assert length_penalty(torch.tensor([1]), 0.6)[0] == 1.0


@pytest.mark.parametrize("beams,vocab,k", [(4, 50, 8), (3, 5, 6), (2, 3, 4)])
def test_topk_candidates_equal_the_top_k_of_every_extension(beams, vocab, k):
    """Each beam's k best tokens suffice: the same candidates as ranking all K*V extensions."""
    g = torch.Generator().manual_seed(beams * vocab)
    lp = torch.randn(3, beams, vocab, generator=g).log_softmax(-1)
    scores = -torch.rand(3, beams, generator=g) * 5
    scores[0, 1:] = float("-inf")  # a first step: one live beam
    cand, beam, tok, tok_lp = topk_candidates(scores, lp, k)
    for i in range(3):
        every = sorted(((float(scores[i, b] + lp[i, b, v]), b, v) for b in range(beams)
                        for v in range(vocab)), reverse=True)[:k]
        assert cand[i].tolist() == pytest.approx([c for c, _, _ in every])
        finite = [j for j, (c, _, _) in enumerate(every) if c > float("-inf")]
        assert [(int(beam[i, j]), int(tok[i, j])) for j in finite] == \
            [(b, v) for _, b, v in (every[j] for j in finite)]
        assert tok_lp[i].tolist() == pytest.approx(
            [float(lp[i, beam[i, j], tok[i, j]]) for j in range(k)])


@pytest.mark.parametrize("alpha,style", [(0.6, "gnmt"), (1.0, "fairseq"), (2.0, "gnmt")])
def test_large_beam_equals_exhaustive_search(alpha, style):
    model = _micro(0)
    src = _sources(model.config, [5, 3], seed=1)
    limits = torch.tensor([4, 3])
    n_sequences = sum(7 ** i for i in range(5))  # 1 + 7 + 49 + 343 (with EOS) + 2401 (at limit)
    got = beam_search(model, src, limits, beam=n_sequences, nbest=5, alpha=alpha,
                      lenpen_style=style, stopping="exact")
    for row in range(2):
        ref = _exhaustive([model], _unpadded(src, row, 0), int(limits[row]), alpha, style)
        assert len(ref) == (n_sequences if row == 0 else 1 + 7 + 49 + 343)
        assert ref[0][1] - ref[1][1] > 1e-4  # a unique best, so the comparison is exact
        assert got[row][0].tokens == ref[0][0]
        assert got[row][0].score == pytest.approx(ref[0][1], abs=1e-5)
        assert [h.score for h in got[row]] == pytest.approx([s for _, s in ref[:5]], abs=1e-5)


def test_early_stopping_never_changes_the_result(monkeypatch):
    """The stopping bound is sound: searching on to max_len finds nothing better."""
    steps = {True: 0, False: 0}
    real_step = Ensemble.step

    def counting_step(self, tokens, state):
        steps[counting_step.early] += 1
        return real_step(self, tokens, state)

    monkeypatch.setattr(Ensemble, "step", counting_step)
    limits = torch.tensor([12, 9, 15, 6, 11, 8, 14, 20])
    for seed in range(3):
        model = _micro(seed, sharpen=1.0, eos_bias=5.0)
        src = _sources(model.config, [9, 4, 7, 2, 6, 5, 8, 3], seed=seed)
        for alpha, style in [(0.6, "gnmt"), (2.0, "gnmt"), (3.0, "gnmt"), (1.5, "fairseq"),
                             (-0.5, "gnmt")]:
            kw = dict(beam=3, nbest=3, alpha=alpha, lenpen_style=style, stopping="exact")
            counting_step.early = True
            fast = beam_search(model, src, limits, **kw)
            counting_step.early = False
            full = beam_search(model, src, limits, early_stop=False, **kw)
            assert [[h.tokens for h in hs] for hs in fast] == \
                [[h.tokens for h in hs] for hs in full], (seed, alpha, style)
    assert steps[True] < 0.9 * steps[False]  # early stopping did stop early


def _reference_beam(models, src_row, max_len, beam, alpha, style):
    """The fairseq/CTranslate2 rule, one sentence, plain Python, full recomputation at every
    step: rank the 2K one-token extensions of the live beams; those among the best K that end
    (EOS or max_len) finish; the best K that do not end live on; stop once K have finished and
    keep the best K (HF's choice; fairseq keeps the first K, equal here for the top one)."""
    cfg = models[0].config
    done, live = [], [((), 0.0)]
    for t in range(max_len):
        lp = _step_log_probs(models, src_row, [p for p, _ in live])
        cands = sorted(((total + value, i, tok) for i, (_, total) in enumerate(live)
                        for tok, value in enumerate(lp[i].tolist()) if value > float("-inf")),
                       key=lambda c: (-c[0], c[1], c[2]))[:2 * beam]
        pen = float(length_penalty(torch.tensor(t + 1), alpha, style))
        nxt = []
        for rank, (total, i, tok) in enumerate(cands):
            ends = tok == cfg.eos_id or t + 1 == max_len
            prefix = live[i][0]
            if ends and rank < beam:
                done.append((list(prefix if tok == cfg.eos_id else (*prefix, tok)), total / pen))
            elif not ends and len(nxt) < beam:
                nxt.append(((*prefix, tok), total))
        if len(done) >= beam or not nxt:
            break
        live = nxt
    return sorted(done, key=lambda h: -h[1])[:beam]


@pytest.mark.parametrize("alpha,style", [(0.6, "gnmt"), (1.0, "fairseq"), (0.0, "gnmt")])
def test_finished_stopping_equals_the_fairseq_rule(alpha, style):
    """The default stopping rule is fairseq's and CTranslate2's: a sentence ends once K
    hypotheses finished, counting only ending candidates ranked among the best K, and an
    ending candidate is never continued (EOS-heavy models make all of this happen)."""
    limits = torch.tensor([12, 9, 15, 6, 11])
    exact_differs = 0
    for beam, eos_bias, seed in itertools.product((3, 4), (1.0, 3.0, 6.0), range(4)):
        model = _micro(seed, sharpen=1.0, eos_bias=eos_bias)
        src = _sources(model.config, [9, 4, 7, 2, 6], seed=seed)
        kw = dict(beam=beam, nbest=beam, alpha=alpha, lenpen_style=style)
        got = beam_search(model, src, limits, **kw)
        exact = beam_search(model, src, limits, stopping="exact", **kw)
        for row in range(len(limits)):
            ref = _reference_beam([model], _unpadded(src, row, 0), int(limits[row]), beam,
                                  alpha, style)
            where = (beam, eos_bias, seed, row)
            assert [h.tokens for h in got[row]] == [toks for toks, _ in ref], where
            assert [h.score for h in got[row]] == pytest.approx([s for _, s in ref], abs=1e-5)
            exact_differs += [h.tokens for h in got[row]] != [h.tokens for h in exact[row]]
    assert exact_differs > 0  # the two rules are really different searches


def test_beam_hypotheses_equal_full_recomputation():
    """Cached decoding with beam reordering and dropped sentences scores every hypothesis
    exactly as teacher forcing over the whole prefix does."""
    model = _micro(2)
    cfg = model.config
    src = _sources(cfg, [6, 3, 8, 5], seed=4)
    limits = torch.tensor([9, 5, 12, 2])
    results = beam_search(model, src, limits, beam=4, nbest=4, alpha=0.6)
    for row, hyps in enumerate(results):
        assert len(hyps) == 4
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            ended = len(h.log_probs) == len(h.tokens) + 1
            assert len(h.log_probs) <= limits[row]
            assert ended or len(h.tokens) == limits[row]
            assert cfg.eos_id not in h.tokens
            seq = h.tokens + ([cfg.eos_id] if ended else [])
            lp = _teacher_forced([model], _unpadded(src, row, 0), seq)
            ref = [float(lp[i, tok]) for i, tok in enumerate(seq)]
            assert h.log_probs == pytest.approx(ref, abs=1e-5)
            pen = float(length_penalty(torch.tensor(len(seq)), 0.6))
            assert h.score == pytest.approx(sum(ref) / pen, abs=1e-5)


def test_padding_invariance():
    """A sentence's translation does not depend on what else is in its batch."""
    model = _micro(3)
    src = _sources(model.config, [7, 2, 10, 4, 5], seed=5)
    limits = torch.tensor([12, 6, 20, 9, 10])
    for fn in (lambda s, m: beam_search(model, s, m, beam=5, nbest=2),
               lambda s, m: [[h] for h in greedy_search(model, s, m)]):
        together = fn(src, limits)
        for row in range(len(limits)):
            alone = fn(_unpadded(src, row, 0)[None], limits[row:row + 1])[0]
            assert [h.tokens for h in alone] == [h.tokens for h in together[row]]
            assert [h.score for h in alone] == pytest.approx([h.score for h in together[row]],
                                                             abs=1e-5)


def test_beam_one_is_greedy():
    model = _micro(4)
    src = _sources(model.config, [6, 3, 9], seed=6)
    limits = torch.tensor([10, 4, 14])
    ref = greedy_search(model, src, limits, alpha=0.0)
    # without a length penalty a beam of one cannot do better than its greedy path
    beam1 = beam_search(model, src, limits, beam=1, alpha=0.0)
    assert [h[0].tokens for h in beam1] == [h.tokens for h in ref]
    assert [h[0].score for h in beam1] == pytest.approx([h.score for h in ref], abs=1e-5)
    # and `search` with beam 1 runs greedy decoding, whatever the penalty
    got = search(model, src, limits, SearchConfig(beam=1))
    assert [h[0].tokens for h in got] == greedy(model, src, limits)


def test_ensemble_of_one_and_of_copies_equals_the_model():
    model = _micro(5)
    src = _sources(model.config, [6, 4], seed=7)
    limits = torch.tensor([10, 8])
    ref = beam_search(model, src, limits, beam=3, nbest=3)
    for ens in (Ensemble([model]), Ensemble([model, model])):
        got = beam_search(ens, src, limits, beam=3, nbest=3)
        assert [[h.tokens for h in hs] for hs in got] == [[h.tokens for h in hs] for hs in ref]
        assert [[h.score for h in hs] for hs in got] == [[h.score for h in hs] for hs in ref]


def test_ensemble_of_two_averages_log_probabilities():
    a, b = _micro(6), _micro(7)
    cfg = a.config
    src = _sources(cfg, [7, 5], seed=8)
    limits = torch.tensor([10, 10])
    ens = Ensemble([a, b])
    for row, hyp in enumerate(greedy_search(ens, src, limits)):
        seq = hyp.tokens + ([cfg.eos_id] if len(hyp.log_probs) > len(hyp.tokens) else [])
        lp = _teacher_forced([a, b], _unpadded(src, row, 0), seq)
        assert seq == lp.argmax(-1).tolist()  # each step picks the best averaged token
        assert hyp.log_probs == pytest.approx([float(lp[i, t]) for i, t in enumerate(seq)],
                                              abs=1e-5)
    assert greedy(ens, src, limits) != greedy(a, src, limits) or greedy(a, src, limits) != \
        greedy(b, src, limits)  # the two models do disagree somewhere


def test_ensemble_rejects_different_vocabularies():
    from nmt.errors import ConfigError

    with pytest.raises(ConfigError):
        Ensemble([_micro(0), _micro(0, vocab_size=12)])


def test_sample_tokens_respects_top_k_top_p_and_temperature():
    lp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]]), -1).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    draws = sample_tokens(lp, generator=g)
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert torch.allclose(freq, lp[0].exp(), atol=0.03)
    assert set(sample_tokens(lp, top_k=2, generator=g).tolist()) == {0, 1}
    p = lp[0].exp()  # 0.61, 0.22, 0.14, ...: top-p 0.7 keeps the first two
    assert float(p[0]) < 0.7 < float(p[:2].sum())
    assert set(sample_tokens(lp, top_p=0.7, generator=g).tolist()) == {0, 1}
    assert set(sample_tokens(lp, temperature=1e-4, generator=g).tolist()) == {0}


def test_sampling_with_top_k_one_is_greedy_and_scores_samples():
    model = _micro(8)
    src = _sources(model.config, [6, 4, 8], seed=9)
    limits = torch.tensor([10, 8, 12])
    g = torch.Generator().manual_seed(1)
    got = sample(model, src, limits, n=2, top_k=1, generator=g)
    ref = greedy_search(model, src, limits)
    for hyps, r in zip(got, ref, strict=True):
        assert [h.tokens for h in hyps] == [r.tokens, r.tokens]
        assert hyps[0].score == pytest.approx(r.score, abs=1e-6)
    many = sample(model, src, limits, n=6, generator=g)
    for hyps in many:
        assert len(hyps) == 6 and [h.score for h in hyps] == sorted(
            (h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) > 1  # genuinely random


def test_search_config_rejects_nonsense():
    from nmt.errors import ConfigError

    for bad in (dict(beam=0), dict(beam=2, nbest=3), dict(lenpen_style="x"),
                dict(temperature=0.0), dict(top_p=0.0), dict(top_k=-1),
                dict(alpha=float("nan")), dict(alpha=float("inf")),
                dict(temperature=float("inf")), dict(top_p=float("nan"))):
        with pytest.raises(ConfigError):
            SearchConfig(**bad)
