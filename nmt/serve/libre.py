"""The LibreTranslate API on `nmt serve`: `POST /translate` with `q` and `GET /languages`.

`q` (a string, or a list of strings: then every answer field is a list), `source` (the model's
source language or "auto", which means it: one model serves one pair, nothing is detected),
`target`, `format` ("text": each line is a sentence; "html": the text between tags is
translated, tags kept), `alternatives` (how many next-best translations to add) and `api_key`.
Other fields are ignored, as LibreTranslate does. The answer is `{"translatedText": ...,
"alternatives": [...]}`; a pair the model does not serve is a 400 naming the one it serves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nmt.errors import ConfigError
from nmt.serve.engine import Options, Output
from nmt.serve.guards import BadRequest
from nmt.serve.markup import Segmented, segment
from nmt.serve.native import check_lines

if TYPE_CHECKING:
    from nmt.serve.app import ServeConfig

FORMATS = ("text", "html")

# ISO 639-1 codes and English names, for `GET /languages`; an unlisted code is named by itself
_NAMES = dict(pair.split(":") for pair in (
    "af:Afrikaans ar:Arabic az:Azerbaijani be:Belarusian bg:Bulgarian bn:Bengali bs:Bosnian "
    "ca:Catalan cs:Czech cy:Welsh da:Danish de:German el:Greek en:English eo:Esperanto "
    "es:Spanish et:Estonian eu:Basque fa:Persian fi:Finnish fr:French ga:Irish gl:Galician "
    "gu:Gujarati ha:Hausa he:Hebrew hi:Hindi hr:Croatian hu:Hungarian hy:Armenian "
    "id:Indonesian is:Icelandic it:Italian ja:Japanese ka:Georgian kk:Kazakh km:Khmer "
    "ko:Korean ky:Kyrgyz lt:Lithuanian lv:Latvian mk:Macedonian ml:Malayalam mn:Mongolian "
    "mr:Marathi ms:Malay mt:Maltese my:Burmese nb:Norwegian ne:Nepali nl:Dutch no:Norwegian "
    "pa:Punjabi pl:Polish ps:Pashto pt:Portuguese ro:Romanian ru:Russian si:Sinhala "
    "sk:Slovak sl:Slovenian so:Somali sq:Albanian sr:Serbian sv:Swedish sw:Swahili ta:Tamil "
    "te:Telugu th:Thai tl:Tagalog tr:Turkish uk:Ukrainian ur:Urdu uz:Uzbek vi:Vietnamese "
    "xh:Xhosa yo:Yoruba zh:Chinese zu:Zulu").split())


def language_name(code: str) -> str:
    return _NAMES.get(code.lower(), code)


def parse_pair(text: str) -> tuple[str, str]:
    """`--languages en-de` as ("en", "de")."""
    parts = text.strip().lower().split("-")
    if len(parts) != 2 or not all(p.isalnum() for p in parts):
        raise ConfigError(f"--languages must be SRC-TGT, e.g. en-de, not {text!r}")
    return parts[0], parts[1]


def languages(pair: tuple[str, str] | None) -> list[dict]:
    """The answer of `GET /languages`: every language, with the targets it translates into."""
    if pair is None:
        return []
    src, tgt = pair
    return [{"code": src, "name": language_name(src), "targets": [tgt]},
            {"code": tgt, "name": language_name(tgt), "targets": []}]


@dataclass
class LibreRequest:
    texts: list[Segmented]  # one per q
    is_list: bool  # q was a list: answer with lists
    alternatives: int
    options: Options

    @property
    def sentences(self) -> list[str]:
        return [s for t in self.texts for s in t.sentences]


def _unknown_pair(pair: tuple[str, str] | None) -> str:
    if pair is None:
        return ("this model's languages are unknown (its checkpoint does not record them); "
                "start nmt serve with --languages SRC-TGT")
    return f"this model translates {pair[0]} to {pair[1]} only (source {pair[0]} or auto, " \
           f"target {pair[1]})"


def parse(data: dict, config: ServeConfig, pair: tuple[str, str] | None) -> LibreRequest:
    """A decoded LibreTranslate body as sentences and options, or `BadRequest` (400; 413 for
    too many or too long sentences)."""
    q = data.get("q")
    if isinstance(q, str):
        qs, is_list = [q], False
    elif isinstance(q, list) and q and all(isinstance(t, str) for t in q):
        qs, is_list = q, True
    else:
        raise BadRequest(400, '"q" must be the text to translate: a string, or a list of '
                              "strings" + ("" if q is not None else " (it is missing)"))
    if not any(t.strip() for t in qs):
        raise BadRequest(400, '"q" is empty')
    for name in ("source", "target"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise BadRequest(400, f'"{name}" is missing: a language code'
                             + (' (or "auto")' if name == "source" else ""))
    source, target = data["source"].lower(), data["target"].lower()
    if pair is None or source not in (pair[0], "auto") or target != pair[1]:
        raise BadRequest(400, f"{source}-{target} is not served: {_unknown_pair(pair)}")
    fmt = data.get("format", "text")
    if fmt not in FORMATS:
        raise BadRequest(400, f'"format" must be "text" or "html", not {str(fmt)!r:.20}')
    most = config.max_beam - 1
    raw = data.get("alternatives", 0)
    try:
        alternatives = int(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) \
            else -1
    except ValueError:
        alternatives = -1
    if not 0 <= alternatives <= most:
        raise BadRequest(400, f'"alternatives" must be an integer in [0, {most}]')
    texts = [segment(t, fmt) for t in qs]
    request = LibreRequest(texts, is_list, alternatives, config.defaults)
    check_lines(request.sentences, config, "sentences (lines of q, or text between tags)",
                "sentence")
    d = config.defaults
    request.options = dataclasses.replace(d, beam=max(d.beam, alternatives + 1),
                                          nbest=alternatives + 1, attention=False)
    return request


def answer(request: LibreRequest, outputs: list[Output]) -> dict:
    """`{"translatedText": ..., "alternatives": [...]}` (lists of them for a list `q`)."""
    texts, alternatives, start = [], [], 0
    for text in request.texts:
        mine = outputs[start:start + len(text.sentences)]
        start += len(text.sentences)
        best = text.join([o.translation for o in mine])
        others: list[str] = []
        for k in range(request.alternatives):  # the k-th next best of each sentence, joined
            other = text.join([o.alternatives[k] if k < len(o.alternatives) else o.translation
                               for o in mine])
            if other != best and other not in others:
                others.append(other)
        texts.append(best)
        alternatives.append(others)
    if request.is_list:
        return {"translatedText": texts, "alternatives": alternatives}
    return {"translatedText": texts[0], "alternatives": alternatives[0]}
