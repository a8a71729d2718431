"""One input line's output: a translation, a Moses-style n-best list, or a JSON object."""

from __future__ import annotations

import json

from nmt.attention import format_pairs
from nmt.translate.batching import Line
from nmt.vocab import LINE_BREAKS, Vocabulary


def clean(text: str) -> str:
    """A translation fit for one output line."""
    return text.translate(LINE_BREAKS)


def format_line(line: Line, vocab: Vocabulary, fmt: str, nbest: int,
                alignments: bool = False, weights: bool = False) -> str:
    """The output for one input line (several lines for text n-best lists), with newlines.

    With `alignments`, each translation is followed by its word alignment (text: after
    ` ||| `; jsonl: an `alignment` field and, with `weights`, the `attention` matrix)."""
    texts = [clean(vocab.decode(h.tokens)) for h in line.hyps]
    pairs = [format_pairs(a.pairs) for a in line.aligned] or [""] * len(texts)
    if fmt == "jsonl":
        best = line.hyps[0] if line.hyps else None
        obj = {
            "translation": texts[0] if texts else "",
            "score": best.score if best else None,
            "tokens": len(best.tokens) if best else 0,
            "hypotheses": [{"translation": t, "score": h.score, "tokens": len(h.tokens),
                            "log_probs": h.log_probs}
                           for t, h in zip(texts, line.hyps, strict=True)],
        }
        if alignments:
            obj["alignment"] = pairs[0] if pairs else ""
            for hyp, p in zip(obj["hypotheses"], pairs, strict=True):
                hyp["alignment"] = p
        if weights:
            a = line.aligned[0] if line.aligned else None
            obj["attention"] = None if a is None else {
                "source_tokens": a.source_tokens, "target_tokens": a.target_tokens,
                "weights": [[round(w, 5) for w in row] for row in a.weights.tolist()]}
        return json.dumps(obj, ensure_ascii=False) + "\n"
    tail = (lambda i: f" ||| {pairs[i]}") if alignments else (lambda i: "")
    if nbest == 1:
        if not texts:
            return " ||| \n" if alignments else "\n"
        return texts[0] + tail(0) + "\n"
    # Moses-style n-best list: 0-based sentence id ||| translation ||| score [||| alignment].
    # A line with no hypothesis (empty input, or a failed search) still gets its id: an empty
    # one, score 0.
    if not line.hyps:
        return f"{line.number - 1} |||  ||| {0.0:.6f}{' ||| ' if alignments else ''}\n"
    return "".join(f"{line.number - 1} ||| {t} ||| {h.score:.6f}{tail(i)}\n"
                   for i, (t, h) in enumerate(zip(texts, line.hyps, strict=True)))
