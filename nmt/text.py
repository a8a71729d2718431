"""Text as the model sees it: the optional Moses-style preprocessing of `nmt prepare
--lowercase --moses-tokenize`, and its inverse for output.

The tokenizer is a compact version of Moses' tokenizer.perl (non-aggressive): split off every
character that is not a letter, digit, space, period, apostrophe, backtick, comma or hyphen;
split commas not between digits; keep runs of dots together; split apostrophes (English:
"don 't", "1990 's"); split a word-final period unless the word is an abbreviation, contains
another period ("U.S."), or the next word starts in lowercase. Hyphens stay inside words.
`detokenize` joins those tokens back as Moses' detokenizer does, so `nmt translate` writes
ordinary text that sacreBLEU scores like any other output. `nmt score --paper-bleu` uses the
same tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nmt.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TextStyle:
    """How text is changed before the model sees it (`nmt prepare` flags, kept in the
    manifest and the checkpoint so that `nmt translate` does the same)."""

    lowercase: bool = False  # lowercase both sides
    moses_tokenize: bool = False  # Moses-style tokens ("a man , who ..."); output detokenized

    def apply(self, line: str, lang: str) -> str:
        """`line` as the model was trained to read or write it."""
        if self.moses_tokenize:
            line = tokenize_moses_like(line, lang=lang)
        return line.lower() if self.lowercase else line

    def restore(self, line: str, lang: str) -> str:
        """Model output as ordinary text (tokens joined; case cannot come back)."""
        return detokenize(line, lang=lang) if self.moses_tokenize else line

    @property
    def plain(self) -> bool:
        return not (self.lowercase or self.moses_tokenize)

    def to_dict(self) -> dict[str, bool]:
        return {"lowercase": self.lowercase, "moses_tokenize": self.moses_tokenize}

    @classmethod
    def from_dict(cls, value: Any, *, where: str | None = None) -> TextStyle:
        """From a manifest or checkpoint (None: plain text, as before these flags existed)."""
        if value is None:
            return cls()
        if not isinstance(value, dict) or set(value) - {"lowercase", "moses_tokenize"} or not all(
                isinstance(v, bool) for v in value.values()):
            raise ConfigError(f"text style must map lowercase/moses_tokenize to true or false, "
                              f"not {value!r}", where=where)
        return cls(**value)

_SPECIAL = re.compile(r"([^\w\s.'`,\-]|_)")
_MULTIDOT = re.compile(r"\.{2,}")
_COMMA = re.compile(r"(?<!\d),|,(?!\d)")
_ALPHA = re.compile(r"[^\W\d_]")


# Words that keep their final period, a compact subset of Moses' per-language prefix lists:
# initials, titles, months and common abbreviations; German also keeps ordinals ("am 22. Mai")
# and Roman numerals. `_NUMERIC_ONLY` words keep it only before a number ("No. 5").
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TITLES = """Adj Adm Adv Asst Bart Bldg Brig Bros Capt Cmdr Col Comdr Con Corp Cpl DR Dr Drs Ens Gen
Gov Hon Hosp Insp Lt MM MR MRS MS Maj Messrs Mlle Mme Mr Mrs Ms Msgr Op Ord Pfc Ph Prof Pvt Rep
Reps Res Rev Rt Sen Sens Sfc Sgt Sr St Supt Surg v vs""".split()
_ROMAN = "I II III IV V VI VII VIII IX X XI XII XIII XIV XV XVI XVII XVIII XIX XX".split()
_NONBREAKING = {
    "en": frozenset([*_LETTERS, *_TITLES, "Hr", "Nos", "Nr", "Rs", "rev", *(
        "Jan Feb Mar Apr Jun Jul Aug Sep Oct Nov Dec".split())]),
    "de": frozenset([*_LETTERS, *_LETTERS.lower(), *_TITLES, *_ROMAN,
                     *(r.lower() for r in _ROMAN), *(str(n) for n in range(1, 100)), *(
        """Art Ca Chr Co Ltd Mio Mrd MwSt No Nos Nr Std bzw bzgl ca dgl etc evtl ff ggf jun pp sen
        sog sogen usf usw vgl zzt""".split())]),
    "xx": frozenset([*_LETTERS, *_TITLES]),
}
_NUMERIC_ONLY = {"en": frozenset(["No", "Art", "pp"])}


def tokenize_moses_like(line: str, *, lang: str = "xx") -> str:
    """A compact Moses-like tokenizer (no `&amp;` escaping); `lang` "en" changes apostrophes."""
    text = " ".join(line.split())
    text = _SPECIAL.sub(r" \1 ", text)
    text = _MULTIDOT.sub(r" \g<0> ", text)
    text = _COMMA.sub(" , ", text)
    text = _split_apostrophes(text, english=lang == "en")
    return " ".join(_split_periods(text.split(), lang=lang))


def _split_apostrophes(text: str, *, english: bool) -> str:
    if "'" not in text:
        return text
    if not english:
        return " ".join(text.replace("'", " ' ").split())

    def one(match: re.Match) -> str:
        i = match.start()
        before = text[i - 1] if i > 0 else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        if _ALPHA.match(before) and _ALPHA.match(after):
            return " '"  # don't -> don 't
        if before.isdigit() and after == "s":
            return " '"  # 1990's -> 1990 's
        if before.isdigit() and _ALPHA.match(after):
            return "'"
        return " ' "

    return " ".join(re.sub("'", one, text).split())


def _split_periods(words: list[str], *, lang: str) -> list[str]:
    nonbreaking = _NONBREAKING.get(lang, _NONBREAKING["xx"])
    numeric_only = _NUMERIC_ONLY.get(lang, frozenset())
    out = []
    for i, word in enumerate(words):
        if len(word) > 1 and word.endswith(".") and word.strip("."):
            stem = word[:-1]
            following = words[i + 1] if i + 1 < len(words) else ""
            keep = (("." in stem and _ALPHA.search(stem) is not None)
                    or (stem in nonbreaking and stem not in numeric_only)
                    or following[:1].islower()
                    or (stem in numeric_only and following[:1].isdigit()))
            if not keep:
                out.extend([stem, "."])
                continue
        out.append(word)
    return out


class StyledVocabulary:
    """A vocabulary that reads and writes text in a `TextStyle`: `encode` lowercases and
    tokenizes source text first, `decode` detokenizes; everything else is the vocabulary's."""

    def __init__(self, vocab: Any, style: TextStyle, src_lang: str, tgt_lang: str) -> None:
        self.vocab, self.style, self.src_lang, self.tgt_lang = vocab, style, src_lang, tgt_lang

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(self.style.apply(text, self.src_lang))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.vocab.encode_batch([self.style.apply(t, self.src_lang) for t in texts])

    def decode(self, ids: list[int]) -> str:
        return self.style.restore(self.vocab.decode(ids), self.tgt_lang)

    def __len__(self) -> int:
        return len(self.vocab)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vocab, name)


def styled_vocabulary(vocab: Any, data: Any, *, where: str) -> Any:
    """`vocab` reading and writing text the way a model's training data was (the `data` object
    of its meta.json: `text`, `src_lang`, `tgt_lang`); `vocab` itself for plain text."""
    if not isinstance(data, dict):
        raise ConfigError(f"data must be an object, not {data!r:.40}", where=where)
    style = TextStyle.from_dict(data.get("text"), where=where)
    if style.plain:
        return vocab
    return StyledVocabulary(vocab, style, data.get("src_lang") or "xx",
                            data.get("tgt_lang") or "xx")


# --- detokenization --------------------------------------------------------------------------
_NO_SPACE_BEFORE = frozenset(",.!?;:%)]}…") | {"...", "''"}
_NO_SPACE_AFTER = frozenset("([{$£€¿¡") | {"``"}
_JOINERS = frozenset("/@#&*+=~^|\\")
# Quote marks pair up by family: the first of a family opens (hugs the next word), the next
# closes (hugs the word before); „ always opens, ” always closes.
_QUOTE_FAMILY = {'"': 0, "'": 1, "“": 2, "”": 2, "„": 2, "‘": 3, "’": 3, "‚": 3,
                 "»": 4, "«": 4, "›": 5, "‹": 5}
_ALWAYS_OPENS, _ALWAYS_CLOSES = frozenset("„‚"), frozenset("”")


def detokenize(line: str, *, lang: str = "xx") -> str:
    """Join Moses-style tokens back into text: no space before closing punctuation or after
    opening brackets, none around slashes inside words; quote marks pair up, opening ones
    hugging the next word and closing ones the word before."""
    out = ""
    glue = True  # the next token attaches to what is before it
    open_quotes: set[int] = set()
    for token in line.split():
        family = _QUOTE_FAMILY.get(token)
        if family is not None:
            closing = token in _ALWAYS_CLOSES or (family in open_quotes
                                                  and token not in _ALWAYS_OPENS)
            if family == 2 and token == "“" and 2 in open_quotes:
                closing = True  # German „...“
            if closing:
                open_quotes.discard(family)
                attach, glue_next = True, False
            else:
                open_quotes.add(family)
                attach, glue_next = glue, True
        elif token in _NO_SPACE_BEFORE or (lang == "en" and token[0] == "'" and len(token) > 1):
            attach, glue_next = True, False  # "don 't" -> "don't", "1990 's" -> "1990's"
        elif token in _NO_SPACE_AFTER:
            attach, glue_next = glue, True
        elif token in _JOINERS and out and out[-1].isalnum():
            attach, glue_next = True, True
        else:
            attach, glue_next = glue, False
        out += token if attach or not out else " " + token
        glue = glue_next
    return out
