"""A LibreTranslate `q` as the sentences the model translates, and their translations put back.

- `format="text"`: each non-blank line is one sentence; line breaks and the spaces around a line
  are kept.
- `format="html"`: the text between tags is translated (entities decoded first, the translation
  escaped again); tags, comments, and what `<script>` and `<style>` hold are kept as they are.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")
# a tag starts with a letter, / ! or ? after "<", so "a < b" stays text
_TAG = re.compile(r"(<!--.*?(?:-->|\Z)|<[A-Za-z/!?][^<>]*>)", re.S)
_RAW_TEXT = re.compile(r"<(script|style)\b", re.I)
_SPACE = re.compile(r"\s+")


@dataclass
class Segmented:
    parts: list[str]  # the text as pieces; the translated ones are filled in by `join`
    slots: list[tuple[int, str, str]] = field(default_factory=list)  # (part, leading, trailing)
    sentences: list[str] = field(default_factory=list)
    escape: bool = False

    def join(self, translations: list[str]) -> str:
        parts = list(self.parts)
        for (index, lead, trail), text in zip(self.slots, translations, strict=True):
            parts[index] = lead + (html.escape(text, quote=False) if self.escape else text) + trail
        return "".join(parts)

    def _add(self, index: int, text: str) -> None:
        core = text.strip()
        if not core:
            return
        lead, trail = text[:len(text) - len(text.lstrip())], text[len(text.rstrip()):]
        self.slots.append((index, lead, trail))
        self.sentences.append(_SPACE.sub(" ", core))


def segment(text: str, fmt: str) -> Segmented:
    """The sentences of `text` (`fmt` "text" or "html") and how to put their translations
    back."""
    if fmt == "html":
        parts = _TAG.split(text)
        out = Segmented(parts, escape=True)
        raw_until = None  # inside <script> or <style>: the closing tag that ends it
        for index, part in enumerate(parts):
            if index % 2:  # a tag or a comment
                if raw_until is None and (m := _RAW_TEXT.match(part)) and not part.endswith("/>"):
                    raw_until = f"</{m.group(1).lower()}"
                elif raw_until is not None and part.lower().startswith(raw_until):
                    raw_until = None
            elif raw_until is None:
                out._add(index, html.unescape(part))
        return out
    parts = _LINE_BREAK.split(text)
    out = Segmented(parts)
    for index in range(0, len(parts), 2):
        out._add(index, parts[index])
    return out
