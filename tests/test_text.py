"""nmt.text: Moses-style tokens and their inverse, and the text style read from disk."""

import pytest

from nmt.errors import ConfigError
from nmt.text import StyledVocabulary, TextStyle, detokenize, tokenize_moses_like


@pytest.mark.parametrize("text,lang", [
    ("A man, who isn't (really) tired: he's fine!", "en"),
    ("Die Frau sagt: „Das ist gut“, und geht nach Hause.", "de"),
    ("Kosten: 5,5% von (100) Euro, oder mehr?", "de"),
    ('He said "yes" and left.', "en"),
    ("Zwei Hunde spielen im Schnee/Eis.", "de"),
])
def test_detokenize_inverts_tokenize(text, lang):
    tokens = tokenize_moses_like(text, lang=lang)
    assert tokens != text  # something was split
    assert detokenize(tokens, lang=lang) == text


def test_round_trip_on_real_text(shared_data):
    for lang in ("en", "de"):
        lines = (shared_data / "multi30k" / f"test_2016_flickr.{lang}").read_text().splitlines()
        lines = [" ".join(line.split()) for line in lines]
        same = sum(detokenize(tokenize_moses_like(x, lang=lang), lang=lang) == x for x in lines)
        assert same >= 0.99 * len(lines), (lang, same)


def test_style_applies_and_restores():
    style = TextStyle(lowercase=True, moses_tokenize=True)
    assert style.apply("A Man, Tired.", "en") == "a man , tired ."
    assert style.restore("a man , tired .", "en") == "a man, tired."
    assert TextStyle().apply("A Man.", "en") == "A Man." and TextStyle().plain
    assert TextStyle.from_dict(style.to_dict()) == style and TextStyle.from_dict(None).plain
    for bad in ([True], {"lowercase": "yes"}, {"upper": True}):
        with pytest.raises(ConfigError):
            TextStyle.from_dict(bad)


def test_styled_vocabulary_reads_and_writes_in_the_style(tiny_vocab):
    styled = StyledVocabulary(tiny_vocab, TextStyle(lowercase=True, moses_tokenize=True),
                              "en", "de")
    assert styled.encode("A man sits, Tired.") == tiny_vocab.encode("a man sits , tired .")
    ids = tiny_vocab.encode("ein mann sitzt , müde .")
    assert styled.decode(ids) == "ein mann sitzt, müde."
    assert len(styled) == len(tiny_vocab) and styled.eos_id == tiny_vocab.eos_id
