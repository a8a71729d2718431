"""Search over the decoder: greedy decoding, beam search and sampling.

Every search function takes a model (a `Transformer`, or an `Ensemble` of several whose
next-token log-probabilities are averaged), a padded source batch `src` (B, S) and the maximum
number of output tokens per row `max_len` (B,). All rows of a batch, and all beams of every
sentence, are decoded together as one batch of rows; rows whose sentence is finished are dropped
from the decoder state, so the work shrinks as sentences end.

Conventions, shared by every search and by the tests:

- Log-probabilities are the model's `log_softmax` over the full vocabulary (averaged over an
  ensemble); PAD and BOS are then set to -inf so they are never produced.
- A hypothesis is finished when it emits EOS or when it has `max_len` tokens. |Y| counts its
  output tokens including the EOS when one was emitted, so |Y| <= max_len always.
- Its score is sum(log-probabilities of those |Y| tokens) / lp(|Y|), with the length penalty
  lp(n) = ((5 + n) / 6) ** alpha ("gnmt", Wu et al., 2016, cited by the paper) or
  lp(n) = n ** alpha ("fairseq").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.errors import ConfigError
from nmt.model import DecoderState, Transformer

PENALTY_STYLES = ("gnmt", "fairseq")
STOPPING = ("finished", "exact")
NEG_INF = float("-inf")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    beam: int = 4  # beams per sentence; 1 means greedy decoding
    nbest: int = 1  # hypotheses returned per sentence (<= beam; samples drawn with sampling)
    alpha: float = 0.6  # length penalty exponent (the paper's 0.6)
    lenpen_style: str = "gnmt"  # "gnmt": ((5 + |Y|) / 6) ** alpha; "fairseq": |Y| ** alpha
    sampling: bool = False  # draw tokens at random instead of searching (beam is ignored)
    temperature: float = 1.0  # sampling: divide log-probabilities by this before softmax
    top_k: int = 0  # sampling: keep only the k most likely tokens (0 = all)
    top_p: float = 1.0  # sampling: keep the smallest set of tokens with this much mass
    stopping: str = "finished"  # "finished": a sentence ends once `beam` hypotheses have
    # (fairseq, CTranslate2, HF early_stopping=True); "exact": once no live beam can beat them

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise ConfigError(f"beam must be at least 1, got {self.beam}")
        if self.nbest < 1:
            raise ConfigError(f"nbest must be at least 1, got {self.nbest}")
        if not self.sampling and self.nbest > self.beam:
            raise ConfigError(f"nbest {self.nbest} cannot exceed the beam size {self.beam}")
        if self.lenpen_style not in PENALTY_STYLES:
            raise ConfigError(f"unknown length penalty style {self.lenpen_style!r}; "
                              f"choose one of {', '.join(PENALTY_STYLES)}")
        if self.stopping not in STOPPING:
            raise ConfigError(f"unknown stopping rule {self.stopping!r}; "
                              f"choose one of {', '.join(STOPPING)}")
        for name in ("alpha", "temperature", "top_p"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top-k must be 0 (off) or positive, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top-p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Hypothesis:
    """One finished output of a search."""

    tokens: list[int]  # output token ids, without BOS and EOS
    log_probs: list[float]  # one per output token, plus the EOS's when it was emitted (|Y|)
    score: float  # sum(log_probs) / length_penalty(len(log_probs))


def output_limit(src: Tensor, pad_id: int, a: float = 1.0, b: int = 50) -> Tensor:
    """The paper's maximum output length per row: a * input length + b, as (B,) int64."""
    lengths = (src != pad_id).sum(1)
    return (lengths.double() * a).floor().long() + b


def length_penalty(lengths: Tensor, alpha: float, style: str = "gnmt") -> Tensor:
    """lp(|Y|) as float32: ((5 + |Y|) / 6) ** alpha (GNMT) or |Y| ** alpha (fairseq)."""
    n = lengths.float()
    if style == "gnmt":
        return ((5.0 + n) / 6.0) ** alpha
    if style == "fairseq":
        return n ** alpha
    raise ConfigError(f"unknown length penalty style {style!r}")


# --- the decoder step ----------------------------------------------------------------------------
@dataclass
class EnsembleState:
    """The decoder states of every model of an ensemble, for the same B rows."""

    states: list[DecoderState]

    def select(self, index: Tensor, memory_index: Tensor | None = None) -> EnsembleState:
        """Keep, reorder or repeat decoder rows `index` and encoder rows `memory_index`
        (drops finished sentences; see `DecoderState.select`)."""
        return EnsembleState([s.select(index, memory_index) for s in self.states])

    def reorder_beams(self, index: Tensor) -> EnsembleState:
        """Move rows among the beams of each sentence (see `DecoderState.reorder`)."""
        return EnsembleState([s.reorder(index) for s in self.states])


class Ensemble:
    """One or more models decoded in lockstep; the next-token log-probabilities are the average
    of the models' log-probabilities. A single model is an ensemble of one."""

    def __init__(self, models: Sequence[Transformer]) -> None:
        if not models:
            raise ConfigError("an ensemble needs at least one model")
        first = models[0].config
        for m in models[1:]:
            c = m.config
            if (c.vocab_size, c.pad_id, c.bos_id, c.eos_id) != (
                    first.vocab_size, first.pad_id, first.bos_id, first.eos_id):
                raise ConfigError("ensembled models must share one vocabulary and special ids")
        self.models = list(models)
        self.config = first
        self.max_positions = min(m.config.max_positions for m in models)  # longest sequence

    def start(self, src: Tensor, group: int = 1) -> EnsembleState:
        """Encode `src` (B, S) with every model, for `group` decoder rows per source row."""
        return EnsembleState([m.start_state(*m.encode(src), group=group) for m in self.models])

    def step(self, tokens: Tensor, state: EnsembleState) -> Tensor:
        """Feed tokens (B,); returns float32 log-probabilities (B, V), PAD and BOS at -inf."""
        lp = None
        for model, s in zip(self.models, state.states, strict=True):
            one = model.decode_step(tokens, s).float().log_softmax(-1)  # (B, V)
            lp = one if lp is None else lp + one
        if len(self.models) > 1:
            lp = lp / len(self.models)
        lp[:, self.config.pad_id] = NEG_INF
        lp[:, self.config.bos_id] = NEG_INF
        return lp


def as_ensemble(model: Transformer | Ensemble) -> Ensemble:
    return model if isinstance(model, Ensemble) else Ensemble([model])


def _limits(max_len: Tensor, ens: Ensemble, device: torch.device) -> Tensor:
    """max_len (B,) on `device`, at least 1 and within the decoder's positions."""
    return max_len.to(device).clamp(1, ens.max_positions)


# --- one token per row: greedy and sampling ----------------------------------------------------
def _one_per_row(ens: Ensemble, src: Tensor, max_len: Tensor,
                 pick: Callable[[Tensor], Tensor], alpha: float, style: str
                 ) -> list[Hypothesis]:
    """Decode each row of `src` by choosing one token per step with `pick(log_probs) -> (B,)`;
    rows leave the batch when they emit EOS or reach their `max_len`."""
    cfg, device, batch = ens.config, src.device, src.size(0)
    limit = _limits(max_len, ens, device)
    steps = int(limit.max()) if batch else 0
    state = ens.start(src)
    out_tok = torch.full((batch, steps), cfg.pad_id, dtype=torch.long, device=device)  # (B, T)
    out_lp = torch.zeros((batch, steps), device=device)  # (B, T)
    length = torch.zeros(batch, dtype=torch.long, device=device)  # |Y| per row
    alive = torch.arange(batch, device=device)  # original row of each batch row
    tokens = torch.full((batch,), cfg.bos_id, dtype=torch.long, device=device)
    for t in range(steps):
        lp = ens.step(tokens, state)  # (n, V)
        tokens = pick(lp)  # (n,)
        out_tok[alive, t] = tokens
        out_lp[alive, t] = lp.gather(1, tokens[:, None]).squeeze(1)
        done = (tokens == cfg.eos_id) | (limit[alive] <= t + 1)  # (n,)
        if done.any():
            length[alive[done]] = t + 1
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            alive, tokens, state = alive[keep], tokens[keep], state.select(keep)
    scores = out_lp.sum(1) / length_penalty(length, alpha, style)  # padding entries are 0
    hyps = []
    for toks, lps, n, score in zip(out_tok.tolist(), out_lp.tolist(), length.tolist(),
                                   scores.tolist(), strict=True):
        toks = toks[:n]
        if toks and toks[-1] == cfg.eos_id:
            toks = toks[:-1]
        hyps.append(Hypothesis(tokens=toks, log_probs=lps[:n], score=score))
    return hyps


@torch.inference_mode()
def greedy_search(model: Transformer | Ensemble, src: Tensor, max_len: Tensor, *,
                  alpha: float = 0.6, lenpen_style: str = "gnmt") -> list[Hypothesis]:
    """The most likely token at every step; one scored hypothesis per row."""
    return _one_per_row(as_ensemble(model), src, max_len, lambda lp: lp.argmax(-1), alpha,
                        lenpen_style)


def greedy(model: Transformer | Ensemble, src: Tensor, max_len: Tensor) -> list[list[int]]:
    """Greedy decoding: the output token ids of every row (no BOS/EOS)."""
    return [h.tokens for h in greedy_search(model, src, max_len)]


def sample_tokens(lp: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row from softmax(lp / temperature), restricted to the top-k tokens
    and to the smallest set holding top-p of the probability; lp (B, V) -> (B,)."""
    logits = lp / temperature  # (B, V)
    if 0 < top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # mass of the more likely tokens
        drop = mass_before >= top_p  # the most likely token is always kept
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, NEG_INF))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


@torch.inference_mode()
def sample(model: Transformer | Ensemble, src: Tensor, max_len: Tensor, *, n: int = 1,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           alpha: float = 0.6, lenpen_style: str = "gnmt",
           generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """`n` samples per row, each scored with the model's (untempered) log-probabilities and
    the length penalty, best first."""
    rows = torch.arange(src.size(0), device=src.device).repeat_interleave(n)
    pick = lambda lp: sample_tokens(lp, temperature=temperature, top_k=top_k,  # noqa: E731
                                    top_p=top_p, generator=generator)
    flat = _one_per_row(as_ensemble(model), src[rows], max_len.to(src.device)[rows], pick,
                        alpha, lenpen_style)
    return [sorted(flat[i * n:(i + 1) * n], key=lambda h: -h.score) for i in range(src.size(0))]


# --- beam search -------------------------------------------------------------------------------
def topk_candidates(scores: Tensor, lp: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The k best one-token extensions of each sentence's beams.

    scores (n, K) cumulative log-probabilities of the live beams; lp (n, K, V) next-token
    log-probabilities. Returns, each (n, k) and best first: the extensions' cumulative
    log-probabilities, the beam each extends, its token and that token's log-probability.
    Within one beam the ranking by cumulative score is the ranking by lp, so every one of the
    k best extensions is among its own beam's k best tokens: the top k is taken over each
    beam's k best (n, K*k) instead of over all K*V sums (8 % of a beam-4 step at d 128).
    """
    n, beams, vocab = lp.shape
    row_lp, row_tok = lp.topk(min(k, vocab), dim=2)  # (n, K, k') each beam's best tokens
    per_beam = row_lp.size(2)
    total = (scores.unsqueeze(2) + row_lp).view(n, beams * per_beam)  # (n, K*k')
    cand, flat = total.topk(k, dim=1)  # (n, k)
    return (cand, flat // per_beam, row_tok.view(n, -1).gather(1, flat),
            row_lp.view(n, -1).gather(1, flat))


def _penalty_table(longest: int, alpha: float, style: str, device: torch.device) -> Tensor:
    """lp(n) for n = 0..longest + 1 (entry 0 is never used as a divisor)."""
    lengths = torch.arange(longest + 2, device=device)
    return length_penalty(lengths.clamp(min=1), alpha, style)  # (L + 2,)


@dataclass
class _Beams:
    """The live part of a beam search over n sentences with K beams each (n*K decoder rows)."""

    sent: Tensor  # (n,) original batch index of each live sentence
    scores: Tensor  # (n, K) cumulative log-probability of each live beam
    tokens: Tensor  # (n*K, t) output tokens so far
    token_lp: Tensor  # (n*K, t) their log-probabilities
    best_done: Tensor  # (n, K) best finished scores so far, descending (-inf: none)
    state: EnsembleState  # decoder state of the n*K rows


def _collect_finished(beams: _Beams, out: list[list[Hypothesis]], fin: Tensor, score: Tensor,
                      beam: Tensor, tok: Tensor, tok_lp: Tensor, eos_id: int) -> None:
    """Append the candidates marked by `fin` (n, 2K), with their `score` (n, 2K), to `out`."""
    idx = fin.nonzero()  # (F, 2): sentence, candidate
    if idx.numel() == 0:
        return
    i, j = idx[:, 0], idx[:, 1]
    rows = i * beams.scores.size(1) + beam[i, j]  # (F,) decoder rows they extend
    toks = torch.cat([beams.tokens[rows], tok[i, j, None]], 1)  # (F, t + 1)
    lps = torch.cat([beams.token_lp[rows], tok_lp[i, j, None]], 1)  # (F, t + 1)
    for s, tk, lp, sc in zip(beams.sent[i].tolist(), toks.tolist(), lps.tolist(),
                             score[i, j].tolist(), strict=True):
        out[s].append(Hypothesis(tokens=tk[:-1] if tk[-1] == eos_id else tk, log_probs=lp,
                                 score=sc))


@torch.inference_mode()
def beam_search(model: Transformer | Ensemble, src: Tensor, max_len: Tensor, *, beam: int = 4,
                nbest: int = 1, alpha: float = 0.6, lenpen_style: str = "gnmt",
                stopping: str = "finished", early_stop: bool = True
                ) -> list[list[Hypothesis]]:
    """Beam search over all sentences of `src` at once; the `nbest` best hypotheses per row.

    At step t every live beam has t tokens, so all 2K candidate extensions of a sentence have
    the same length and the same length penalty: ranking them by cumulative log-probability
    ranks them by score. Candidates that end (EOS, or the sentence's `max_len`) become finished
    hypotheses; the best K that do not end form the next beams.

    `stopping="finished"` (fairseq, CTranslate2 and HF `early_stopping=True`): only ending
    candidates ranked among the best K of the 2K count, a sentence stops once K hypotheses
    have finished, and the best K of them are kept (as HF; fairseq keeps the first K to
    finish, which can differ only for `nbest` > 1). `stopping="exact"`: every ending candidate
    counts, and a sentence stops when it has K finished hypotheses and no live beam can beat
    the worst of them: log-probabilities are <= 0, so a beam with cumulative log-probability s
    can only end with a total s' <= s at some length n in [t + 2, max_len], scoring
    s' / lp(n) <= s / lp(n) <= s / max(lp(t + 2), lp(max_len)) (lp is monotone in n for both
    styles and any alpha).
    With a positive alpha that bound is loose, so "exact" decodes many more steps.
    With "exact", `early_stop=False` searches to `max_len` instead (for tests: the result must
    not change); "finished" ignores it.
    """
    if stopping not in STOPPING:
        raise ConfigError(f"unknown stopping rule {stopping!r}")
    ens = as_ensemble(model)
    cfg, device, batch, k = ens.config, src.device, src.size(0), beam
    limit = _limits(max_len, ens, device)
    out: list[list[Hypothesis]] = [[] for _ in range(batch)]
    if batch == 0:
        return out
    steps = int(limit.max())
    pen = _penalty_table(steps, alpha, lenpen_style, device)  # (steps + 2,)
    scores = torch.full((batch, k), NEG_INF, device=device)
    scores[:, 0] = 0.0  # all beams start as the same empty prefix: keep one of them
    start = ens.start(src, group=k)  # the K beams of a sentence share its encoder states
    beams = _Beams(sent=torch.arange(batch, device=device), scores=scores,
                   tokens=torch.empty((batch * k, 0), dtype=torch.long, device=device),
                   token_lp=torch.empty((batch * k, 0), device=device),
                   best_done=torch.full((batch, k), NEG_INF, device=device), state=start)
    last = torch.full((batch * k,), cfg.bos_id, dtype=torch.long, device=device)
    exact = stopping == "exact"
    counted = torch.ones(2 * k, dtype=torch.bool, device=device)  # candidates that may finish
    if not exact:
        counted[k:] = False
    for t in range(steps):
        n = beams.sent.numel()
        lp = ens.step(last, beams.state).view(n, k, -1)  # (n, K, V)
        cand, from_beam, tok, tok_lp = topk_candidates(beams.scores, lp, 2 * k)  # (n, 2K)
        sent_limit = limit[beams.sent]  # (n,)
        at_limit = sent_limit == t + 1  # (n,)
        ends = (tok == cfg.eos_id) | at_limit[:, None]  # (n, 2K)
        done_score = torch.where(ends & counted & (cand > NEG_INF), cand / pen[t + 1], NEG_INF)
        beams.best_done = torch.cat([beams.best_done, done_score], 1).topk(k, dim=1).values
        worst = beams.best_done[:, -1]  # (n,) -inf until K hypotheses are finished
        keep_done = (done_score > NEG_INF) & (done_score >= worst[:, None])
        _collect_finished(beams, out, keep_done, done_score, from_beam, tok, tok_lp, cfg.eos_id)

        # the K best candidates that do not end, in rank order
        rank = torch.arange(2 * k, device=device) + ends * (2 * k)  # (n, 2K)
        pos = rank.topk(k, dim=1, largest=False).indices  # (n, K)
        new_scores = cand.gather(1, pos)
        rows = (torch.arange(n, device=device)[:, None] * k + from_beam.gather(1, pos))  # (n, K)
        new_tok, new_tok_lp = tok.gather(1, pos), tok_lp.gather(1, pos)  # (n, K)

        done = at_limit
        if not exact:
            done = done | (worst > NEG_INF)
        elif early_stop:
            # live sentences have max_len >= t + 2; lp's maximum over [t + 2, max_len]
            bound = new_scores[:, 0] / torch.maximum(pen[sent_limit], pen[t + 2])  # (n,)
            done = done | ((worst > NEG_INF) & (bound <= worst))
        if bool(done.all()):
            break
        flat = rows.view(-1)
        if bool(done.any()):
            live = (~done).nonzero().squeeze(1)
            flat = rows[live].view(-1)
            new_scores, new_tok, new_tok_lp = new_scores[live], new_tok[live], new_tok_lp[live]
            beams.sent, beams.best_done = beams.sent[live], beams.best_done[live]
            beams.state = beams.state.select(flat, live)
        else:
            beams.state = beams.state.reorder_beams(flat)
        beams.tokens = torch.cat([beams.tokens[flat], new_tok.view(-1, 1)], 1)
        beams.token_lp = torch.cat([beams.token_lp[flat], new_tok_lp.view(-1, 1)], 1)
        beams.scores = new_scores
        last = new_tok.view(-1)
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in out]


# --- dispatch ------------------------------------------------------------------------------------
def search(model: Transformer | Ensemble, src: Tensor, max_len: Tensor, config: SearchConfig,
           generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """The `config.nbest` best hypotheses per row: sampling, greedy (beam 1) or beam search."""
    common = dict(alpha=config.alpha, lenpen_style=config.lenpen_style)
    if config.sampling:
        return sample(model, src, max_len, n=config.nbest, temperature=config.temperature,
                      top_k=config.top_k, top_p=config.top_p, generator=generator, **common)
    if config.beam == 1:
        return [[h] for h in greedy_search(model, src, max_len, **common)]
    return beam_search(model, src, max_len, beam=config.beam, nbest=config.nbest,
                       stopping=config.stopping, **common)
