"""Shared helpers of the `nmt translate` tests: configs, runs on bytes, and test lines."""

import dataclasses
import io
import random

import torch
from conftest import toy_pairs

from nmt import translate
from nmt.search import SearchConfig, greedy, output_limit
from nmt.translate import TranslateConfig


def config_for(ckpt, **kw):
    """A TranslateConfig for `ckpt`: beam 2, outputs of at most source + 8 tokens, one thread;
    search options among `kw` go to its SearchConfig."""
    search_kw = {k: kw.pop(k) for k in list(kw) if k in {f.name for f in
                                                          dataclasses.fields(SearchConfig)}}
    search_kw.setdefault("beam", 2)
    kw.setdefault("max_len_b", 8)
    kw.setdefault("threads", 1)
    ckpts = kw.pop("checkpoints", (ckpt,))
    return TranslateConfig(checkpoints=ckpts, search=SearchConfig(**search_kw), **kw)


def run_bytes(config, data: bytes):
    """(output text, stats) of `nmt.translate.run` with `data` as its stdin."""
    sink = io.StringIO()
    stats = translate.run(config, stdin=io.BytesIO(data), stdout=sink)
    return sink.getvalue(), stats


def sample_lines():
    """Source lines of very different lengths, with empty and blank lines, shuffled."""
    src = [en for en, _ in toy_pairs()[::12]]
    src += [" ".join(src[i:i + 3]) for i in range(0, 9, 3)] + ["Dog", "", "   ", ""]
    random.Random(0).shuffle(src)
    return src


def expected_greedy(model, vocab, text, b):
    if not text.strip():
        return ""
    src = torch.tensor([vocab.encode(text) + [vocab.eos_id]])
    return translate.clean(vocab.decode(greedy(model, src, output_limit(src, 0, 1.0, b))[0]))
