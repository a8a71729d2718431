"""The built-in sample corpus: exact translations, agreement, determinism, splits on disk."""

from __future__ import annotations

import random
import re

import pytest

from nmt import sample
from nmt.errors import ConfigError, DataError
from nmt.sample import (
    NOUNS,
    TIMES,
    Clause,
    Sentence,
    adj,
    generate_pairs,
    noun_phrase,
    pronoun,
    random_sentence,
    render,
    verb,
)

N = noun_phrase


def _c(subj, v, obj=None, *, frame=None, **kw) -> Clause:
    return Clause(subj=subj, verb=verb(v, frame), obj=obj, **kw)


# Hand-checked (English, German) translations, one per construction.
CASES = [
    (Sentence(clause=_c(N("the", "dog"), "see", N("the", "cat")), time="today"),
     "Today the dog sees the cat.", "Heute sieht der Hund die Katze."),
    (Sentence(clause=_c(N("the", "woman"), "read", N("a", "book")),
              reporter=N("the", "man"), report_verb=verb("say")),
     "The man says that the woman reads a book.", "Der Mann sagt, dass die Frau ein Buch liest."),
    (Sentence(clause=_c(N("the", "child"), "play", pp=("with", N("the", "dog")))),
     "The child plays with the dog.", "Das Kind spielt mit dem Hund."),
    (Sentence(clause=_c(N("the", "woman"), "sit", pp=("in", N("the", "park")))),
     "The woman sits in the park.", "Die Frau sitzt im Park."),
    (Sentence(clause=_c(N("the", "dog"), "see", N("the", "cat"), neg=True)),
     "The dog does not see the cat.", "Der Hund sieht die Katze nicht."),
    (Sentence(clause=_c(N("the", "dog"), "see", N("a", "cat"), neg=True)),
     "The dog does not see a cat.", "Der Hund sieht keine Katze."),
    (Sentence(clause=_c(N("the", "man"), "give", N("a", "ball", "red"),
                        iobj=N("the", "woman"))),
     "The man gives the woman a red ball.", "Der Mann gibt der Frau einen roten Ball."),
    (Sentence(clause=_c(N("my", "father", "old"), "help", N("the", "child", plural=True))),
     "My old father helps the children.", "Mein alter Vater hilft den Kindern."),
    (Sentence(clause=_c(N("two", "dog", "small"), "follow", N("a", "man", "old"))),
     "Two small dogs follow an old man.", "Zwei kleine Hunde folgen einem alten Mann."),
    (Sentence(clause=_c(N("the", "girl"), "wait", N("the", "teacher"))),
     "The girl waits for the teacher.", "Das Mädchen wartet auf den Lehrer."),
    (Sentence(clause=_c(N("the", "girl"), "wait", N("a", "teacher"), neg=True)),
     "The girl does not wait for a teacher.", "Das Mädchen wartet nicht auf einen Lehrer."),
    (Sentence(clause=_c(N("the", "dog"), "eat", N("the", "cake"))),
     "The dog eats the cake.", "Der Hund frisst den Kuchen."),
    (Sentence(clause=_c(N("the", "child", plural=True), "eat", N("the", "cake"))),
     "The children eat the cake.", "Die Kinder essen den Kuchen."),
    (Sentence(clause=_c(N("the", "child", plural=True), "sleep", pp=("in", N("the", "house")),
                        neg=True),
              time="in the evening", reporter=N("the", "woman"), report_verb=verb("say")),
     "In the evening the woman says that the children do not sleep in the house.",
     "Am Abend sagt die Frau, dass die Kinder nicht im Haus schlafen."),
    (Sentence(clause=_c(N("the", "book", plural=True), "belong", N("my", "sister"))),
     "The books belong to my sister.", "Die Bücher gehören meiner Schwester."),
    (Sentence(clause=_c(N("the", "car", "new"), "be", pred=adj("expensive"), neg=True)),
     "The new car is not expensive.", "Das neue Auto ist nicht teuer."),
    (Sentence(clause=_c(pronoun("we"), "buy", N("a", "car", "expensive"),
                        pp=("for", N("our", "mother")))),
     "We buy an expensive car for our mother.", "Wir kaufen ein teures Auto für unsere Mutter."),
    (Sentence(clause=_c(pronoun("she"), "have", N("no", "cat", "black", plural=True))),
     "She has no black cats.", "Sie hat keine schwarzen Katzen."),
    (Sentence(clause=_c(N("the", "teacher"), "show", N("three", "picture", "beautiful"),
                        iobj=N("the", "pupil", plural=True))),
     "The teacher shows the pupils three beautiful pictures.",
     "Der Lehrer zeigt den Schülern drei schöne Bilder."),
    (Sentence(clause=_c(N("the", "man"), "know", N("the", "woman"), frame="acc"),
              reporter=pronoun("he"), report_verb=verb("know", "that")),
     "He knows that the man knows the woman.", "Er weiß, dass der Mann die Frau kennt."),
    (Sentence(clause=_c(N("a", "child", "tired"), "sleep", pp=("in", N("a", "room", "small")))),
     "A tired child sleeps in a small room.", "Ein müdes Kind schläft in einem kleinen Zimmer."),
    (Sentence(clause=_c(pronoun("they"), "play", pp=("with", N("two", "ball"))), time="often"),
     "Often they play with two balls.", "Oft spielen sie mit zwei Bällen."),
    (Sentence(clause=_c(N("the", "cat", "hungry", plural=True), "follow", N("the", "dog", "old"),
                        neg=True)),
     "The hungry cats do not follow the old dog.",
     "Die hungrigen Katzen folgen dem alten Hund nicht."),
    (Sentence(clause=_c(pronoun("she"), "answer", N("a", "girl"), neg=True), time="today"),
     "Today she does not answer a girl.", "Heute antwortet sie keinem Mädchen."),
    (Sentence(clause=_c(N("the", "woman"), "give", N("a", "apple"),
                        iobj=N("the", "man"), neg=True)),
     "The woman does not give the man an apple.", "Die Frau gibt dem Mann keinen Apfel."),
    (Sentence(clause=_c(N("the", "man"), "see", N("the", "dog", plural=True),
                        pp=("in", N("the", "garden", "big"))), time="every day"),
     "Every day the man sees the dogs in the big garden.",
     "Jeden Tag sieht der Mann die Hunde im großen Garten."),
    (Sentence(clause=_c(N("our", "horse", "white"), "swim", pp=("in", N("the", "lake")))),
     "Our white horse swims in the lake.", "Unser weißes Pferd schwimmt im See."),
    (Sentence(clause=_c(N("his", "uncle", plural=True), "look", N("bare", "key", "heavy")),
              reporter=N("the", "aunt", plural=True), report_verb=verb("hope")),
     "The aunts hope that his uncles look for heavy keys.",
     "Die Tanten hoffen, dass seine Onkel schwere Schlüssel suchen."),
]


@pytest.mark.parametrize(("sentence", "en", "de"), CASES, ids=[c[1] for c in CASES])
def test_hand_checked_translations(sentence, en, de):
    assert render(sentence) == (en, de)


def test_same_seed_same_pairs_other_seed_other_pairs():
    assert generate_pairs(300, seed=1) == generate_pairs(300, seed=1)
    assert generate_pairs(300, seed=1) != generate_pairs(300, seed=2)
    assert generate_pairs(500, seed=3)[:200] == generate_pairs(200, seed=3)


def test_pairs_are_distinct_on_both_sides_and_well_formed():
    pairs = generate_pairs(6000, seed=0)
    assert len(pairs) == 6000
    assert len({en for en, _ in pairs}) == len({de for _, de in pairs}) == 6000
    for en, de in pairs:
        for text in (en, de):
            assert re.fullmatch(r"[A-ZÄÖÜ][^.\n\r]*[a-zäöüß]\.", text), text
            assert "  " not in text and " ," not in text
        assert 4 <= len(en.split()) <= 14
        assert len(de.split()) <= 16


def test_corpus_size_and_vocabulary_stay_learnable():
    pairs = generate_pairs(8000, seed=0)
    words = {w.strip(".,").lower() for _, de in pairs for w in de.split()}
    mean = sum(len(en.split()) for en, _ in pairs) / len(pairs)
    assert 5.0 <= mean <= 10.0
    assert 150 <= len(words) <= 600


def test_asking_for_a_negative_number_of_pairs_is_an_error():
    assert generate_pairs(0) == []
    with pytest.raises(ConfigError):
        generate_pairs(-1)


# --- agreement over many generated sentences, checked against a reference table ----------------
# Which (slot, case) a German determiner can express; slot is m, f, n or pl.
_DET_FEATURES = {"der": {("m", "nom"), ("f", "dat")},
                 "die": {("f", "nom"), ("f", "acc"), ("pl", "nom"), ("pl", "acc")},
                 "das": {("n", "nom"), ("n", "acc")}, "den": {("m", "acc"), ("pl", "dat")},
                 "dem": {("m", "dat"), ("n", "dat")}}
for _stem in ("ein", "kein", "mein", "sein", "unser"):
    _DET_FEATURES |= {
        _stem: {("m", "nom"), ("n", "nom"), ("n", "acc")},
        _stem + "e": {("f", "nom"), ("f", "acc"), ("pl", "nom"), ("pl", "acc")},
        _stem + "en": {("m", "acc"), ("pl", "dat")}, _stem + "em": {("m", "dat"), ("n", "dat")},
        _stem + "er": {("f", "dat")}}
for _form in ("ein", "eine", "einen", "einem", "einer"):  # "ein" has no plural
    _DET_FEATURES[_form] = {f for f in _DET_FEATURES[_form] if f[0] != "pl"}
_ALL = {(s, c) for s in ("m", "f", "n", "pl") for c in ("nom", "acc", "dat")}
_PLURAL = {("pl", c) for c in ("nom", "acc", "dat")}
# Adjective ending → features, after der-words (weak), ein-words (mixed), nothing (strong).
_WEAK_E = {("m", "nom"), ("f", "nom"), ("f", "acc"), ("n", "nom"), ("n", "acc")}
_ENDINGS = {"weak": {"e": _WEAK_E, "en": _ALL - _WEAK_E},
            "mixed": {"er": {("m", "nom")}, "es": {("n", "nom"), ("n", "acc")},
                      "e": {("f", "nom"), ("f", "acc")},
                      "en": _ALL - _WEAK_E - {("f", "nom"), ("f", "acc")}},
            "strong": {"e": {("pl", "nom"), ("pl", "acc")}, "en": {("pl", "dat")}}}
_PREP_CASE = {"mit": "dat", "in": "dat", "im": "dat", "für": "acc", "auf": "acc"}
_ADJ_STEMS = {a.stem for a in sample.ADJS}


def _noun_features() -> dict[str, set]:
    table: dict[str, set] = {}
    for n in NOUNS:
        table.setdefault(n.de, set()).update((n.gender, c) for c in ("nom", "acc", "dat"))
        table.setdefault(n.de_pl, set()).update({("pl", "nom"), ("pl", "acc")})
        dat = n.de_pl if n.de_pl.endswith(("n", "s")) else n.de_pl + "n"
        table.setdefault(dat, set()).add(("pl", "dat"))
    return table


def _check_noun_phrases(de: str, nouns: dict[str, set]) -> int:
    """Every noun agrees with its determiner, adjective and governing preposition."""
    tokens = de.rstrip(".").replace(",", "").split()
    tokens[0] = tokens[0].lower()
    checked = 0
    for i, word in enumerate(tokens):
        if word not in nouns:
            continue
        features, j = set(nouns[word]), i - 1
        adjective = None
        if j >= 0 and tokens[j][-2:] in ("en", "er", "es") and tokens[j][:-2] in _ADJ_STEMS:
            adjective, j = tokens[j][-2:], j - 1
        elif j >= 0 and tokens[j].endswith("e") and tokens[j][:-1] in _ADJ_STEMS:
            adjective, j = "e", j - 1
        det = tokens[j] if j >= 0 else None
        if det == "im":
            kind, features = "weak", features & _DET_FEATURES["dem"]
        elif det in _DET_FEATURES:
            kind = "weak" if det in ("der", "die", "das", "den", "dem") else "mixed"
            features &= _DET_FEATURES[det]
            j -= 1
        else:
            kind, features = "strong", features & _PLURAL
            j -= 1 if det in ("zwei", "drei") else 0
        if adjective is not None:
            features &= _ENDINGS[kind].get(adjective, set())
        prep = "im" if det == "im" else (tokens[j] if j >= 0 else None)
        if prep in _PREP_CASE:
            features = {f for f in features if f[1] == _PREP_CASE[prep]}
        assert features, f"no agreement for {word!r} in {de!r}"
        checked += 1
    return checked


def test_every_noun_phrase_agrees_in_gender_number_and_case():
    nouns = _noun_features()
    pairs = generate_pairs(3000, seed=5)
    checked = sum(_check_noun_phrases(de, nouns) for _, de in pairs)
    assert checked > 2 * len(pairs)


def test_case_of_each_role_over_many_sentences():
    rng = random.Random(11)
    seen = {"acc_den": 0, "mit": 0, "dat_obj": 0}
    for _ in range(3000):
        s = random_sentence(rng)
        c, (_, de) = s.clause, render(s)
        obj = c.obj
        if (obj is not None and c.verb.frame in ("acc", "ditrans") and obj.det == "the"
                and obj.noun.gender == "m" and not obj.plural):
            adjective = fr"{obj.adj.stem}en " if obj.adj else ""
            assert re.search(fr"\bden {adjective}{obj.noun.de}\b", de), de
            seen["acc_den"] += 1
        if c.pp is not None and c.pp[0] == "with":
            det = de.split(" mit ")[1].split()[0]
            assert det in {"dem", "der", "den", "zwei", "drei"} or det.endswith(("em", "er", "en"))
            seen["mit"] += 1
        if obj is not None and c.verb.frame == "dat" and obj.det == "the":
            article = "den" if obj.plural else {"m": "dem", "f": "der", "n": "dem"}[obj.noun.gender]
            assert f" {article} " in de, de
            seen["dat_obj"] += 1
    assert min(seen.values()) > 20, seen


def test_verb_second_after_a_time_adverb_and_verb_final_after_dass():
    rng = random.Random(12)
    fronted = subordinate = 0
    for _ in range(3000):
        s = random_sentence(rng)
        en, de = render(s)
        words = de.rstrip(".").replace(",", "").split()
        main = s.report_verb or s.clause.verb
        finite = {main.de_3sg, main.de_3pl, *(main.de_animal or ())}
        if s.time:
            assert en.lower().startswith(s.time.lower())
            assert words[len(TIMES[s.time].split())] in finite, de
            fronted += 1
        if s.reporter:
            v = s.clause.verb
            assert ", dass " in de and " that " in en
            assert words[-1] in {v.de_3sg, v.de_3pl, *(v.de_animal or ())}, de
            subordinate += 1
        negations = sum(w == "nicht" or w.startswith("kein") for w in words)
        assert negations == s.clause.neg or (not s.clause.neg and "no " in f" {en.lower()}")
        obj = s.clause.obj
        if s.clause.neg and obj and obj.det in ("a", "bare") and not s.clause.verb.de_prep:
            assert "nicht" not in words, de  # "sieht keine Katze", never "sieht eine Katze nicht"
    assert fronted > 300 and subordinate > 300


# --- the corpus on disk -------------------------------------------------------------------------
def test_write_corpus_writes_disjoint_splits(tmp_path):
    prefixes = sample.write_corpus(tmp_path / "sample", train=400, valid=50, test=60, seed=4)
    assert prefixes == {name: tmp_path / "sample" / name for name in ("train", "valid", "test")}
    splits = {}
    for name, size in (("train", 400), ("valid", 50), ("test", 60)):
        sides = []
        for lang in ("en", "de"):
            raw = (tmp_path / "sample" / f"{name}.{lang}").read_bytes()
            assert raw.endswith(b"\n") and b"\r" not in raw
            sides.append(raw.decode("utf-8").splitlines())
        assert len(sides[0]) == len(sides[1]) == size
        splits[name] = set(zip(*sides, strict=True))
    assert not splits["train"] & splits["valid"]
    assert not splits["train"] & splits["test"]
    assert not splits["valid"] & splits["test"]
    assert sorted(p.name for p in (tmp_path / "sample").iterdir()) == sorted(
        f"{n}.{lang}" for n in ("train", "valid", "test") for lang in ("en", "de"))
    # the test split does not depend on the size of train
    again = sample.write_corpus(tmp_path / "again", train=100, valid=50, test=60, seed=4)
    assert again["test"].with_suffix(".de").read_text() == (
        prefixes["test"].with_suffix(".de").read_text())


def test_failed_write_leaves_old_files_and_no_temporaries(tmp_path, monkeypatch):
    (tmp_path / "train.en").write_text("old\n")

    def refuse(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sample.os, "replace", refuse)
    with pytest.raises(DataError, match="No space left"):
        sample.write_corpus(tmp_path, train=10, valid=2, test=2)
    assert [p.name for p in tmp_path.iterdir()] == ["train.en"]
    assert (tmp_path / "train.en").read_text() == "old\n"


def test_write_corpus_rejects_empty_splits(tmp_path):
    with pytest.raises(ConfigError, match="valid"):
        sample.write_corpus(tmp_path, train=10, valid=0, test=2)
    assert not list(tmp_path.iterdir())
