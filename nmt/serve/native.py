"""nmt's own request schema on `POST /translate`:

`{"text": ["...", ...], "beam": 4, "lenpen": 0.6, "attention": false}` ->
`{"translations": [...], "model": ..., "elapsed_ms": ...}`, plus `"attention"` (one
`{source_tokens, target_tokens, weights}` per line) when asked for. Unknown fields are refused
(a typo must not pass silently); defaults come from `ServeConfig.defaults`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from nmt.serve.engine import Options
from nmt.serve.guards import BadRequest

if TYPE_CHECKING:
    from nmt.serve.app import ServeConfig

FIELDS = {"text", "beam", "lenpen", "alpha", "lenpen_style", "max_len_a", "max_len_b",
          "attention", "api_key"}


def check_lines(lines: list[str], config: ServeConfig, what: str = "lines",
                item: str = "line") -> None:
    """413 when there are more `lines` than `config.max_lines` or one is over `max_chars`."""
    if len(lines) > config.max_lines:
        raise BadRequest(413, f"{len(lines)} {what}; at most {config.max_lines} per request "
                              "(--max-lines)")
    for n, t in enumerate(lines):
        if len(t) > config.max_chars:
            raise BadRequest(413, f"{item} {n + 1} has {len(t)} characters; at most "
                                  f"{config.max_chars} (--max-chars)")


def parse_request(data: dict, config: ServeConfig) -> tuple[list[str], Options]:
    """The lines and options of a decoded nmt /translate body, or `BadRequest`."""
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(FIELDS))}")
    if "text" not in data:
        raise BadRequest(400, 'missing "text": a list of sentences (or "q", for the '
                              "LibreTranslate API)")
    text = data["text"]
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
        raise BadRequest(422, '"text" must be a list of strings')
    if not text:
        raise BadRequest(422, '"text" is empty')
    check_lines(text, config)
    d = config.defaults

    def number(key: str, default, kind, low, high):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, kind) or (
                isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
            what = "an integer" if kind is int else "a number"
            raise BadRequest(422, f'"{key}" must be {what} in [{low}, {high}]')
        return value

    beam = number("beam", d.beam, int, 1, config.max_beam)
    alpha = number("lenpen", d.alpha, int | float, 0.0, 10.0)
    if "alpha" in data:
        alpha = number("alpha", d.alpha, int | float, 0.0, 10.0)
    style = data.get("lenpen_style", d.lenpen_style)
    if style not in ("gnmt", "fairseq"):
        raise BadRequest(422, '"lenpen_style" must be "gnmt" or "fairseq"')
    max_len_a = number("max_len_a", d.max_len_a, int | float, 0.0, 10.0)
    max_len_b = number("max_len_b", d.max_len_b, int, 0, 1000)
    if max_len_a == 0 and max_len_b == 0:
        raise BadRequest(422, "the maximum output length (a * source + b) must be positive")
    attention = data.get("attention", d.attention)
    if not isinstance(attention, bool):
        raise BadRequest(422, '"attention" must be true or false')
    # line breaks inside a line would not survive: they are spaces, as in `nmt translate`
    text = [t.translate({10: 32, 13: 32}) for t in text]
    return text, Options(beam=beam, alpha=float(alpha), lenpen_style=style,
                         max_len_a=float(max_len_a), max_len_b=max_len_b, attention=attention)
