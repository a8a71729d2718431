"""The sample corpus's vocabulary: word classes and the English-German word tables (nouns with
gender and plural, adjectives with their German stem, verbs with their frames and cases,
pronouns, prepositions, determiners) that `nmt.sample`'s grammar draws from. Data, no logic."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Noun:
    en: str  # English singular
    en_pl: str  # English plural
    gender: str  # "m", "f" or "n"
    de: str  # German singular (the same in all cases: no weak masculines in the lexicon)
    de_pl: str  # German nominative plural
    tags: frozenset[str]  # semantic classes that verbs and adjectives select on


@dataclass(frozen=True, kw_only=True)
class Adj:
    en: str  # English adjective
    de: str  # German predicative form ("teuer")
    stem: str  # German attributive stem that takes the endings ("teur" → "teure")
    tags: frozenset[str]  # noun classes it describes


@dataclass(frozen=True, kw_only=True)
class Verb:
    en: str  # English base form (also the plural present)
    en_3sg: str  # English third person singular present
    de_3sg: str  # German third person singular present
    de_3pl: str  # German third person plural present (= first person plural)
    frame: str  # "acc", "dat", "ditrans", "intr", "cop" (to be) or "that" (takes a dass-clause)
    subj: frozenset[str]  # noun classes allowed as subject
    obj: frozenset[str] = frozenset()  # classes of the (accusative or dative) object
    iobj: frozenset[str] = frozenset()  # classes of the dative object of a ditransitive verb
    pps: tuple[tuple[str, frozenset[str]], ...] = ()  # optional/required (preposition, classes)
    en_particle: str = ""  # English preposition after the verb: "looks for", "belongs to"
    de_prep: str = ""  # German preposition (+ accusative) before the object: "wartet auf"
    de_animal: tuple[str, str] | None = None  # (3sg, 3pl) with an animal subject: "frisst"


@dataclass(frozen=True, kw_only=True)
class Pron:
    en: str  # English subject pronoun
    de: str  # German subject pronoun
    plural: bool  # takes the plural verb form


@dataclass(frozen=True, kw_only=True)
class NP:
    noun: Noun  # head noun
    det: str  # "the", "a", "my", "his", "our", "no", "two", "three" or "bare" (no article)
    plural: bool = False  # plural noun
    adj: Adj | None = None  # attributive adjective


@dataclass(frozen=True, kw_only=True)
class Clause:
    subj: NP | Pron  # subject
    verb: Verb  # finite verb
    obj: NP | None = None  # accusative object, dative object of a "dat" verb, or prep. object
    iobj: NP | None = None  # dative object of a ditransitive verb
    pp: tuple[str, NP] | None = None  # (preposition key of PREPS, its noun phrase)
    pred: Adj | None = None  # predicative adjective of "to be"
    neg: bool = False  # negated: "does not" → "nicht" / "kein"


@dataclass(frozen=True, kw_only=True)
class Sentence:
    clause: Clause  # the (embedded, if reported) clause
    time: str | None = None  # fronted time adverb, a key of TIMES
    reporter: NP | Pron | None = None  # "the man" in "The man says that ..."
    report_verb: Verb | None = None  # a "that" verb: says, knows, believes, hopes


def _t(spec: str) -> frozenset[str]:
    return frozenset(spec.split())


def _n(en, en_pl, gender, de, de_pl, tags) -> Noun:
    return Noun(en=en, en_pl=en_pl, gender=gender, de=de, de_pl=de_pl, tags=_t(tags))


def _a(en, de, stem, tags) -> Adj:
    return Adj(en=en, de=de, stem=stem, tags=_t(tags))


def _v(en, en_3sg, de_3sg, de_3pl, frame, subj, obj="", iobj="", pps="", **kw) -> Verb:
    pp_spec = tuple((p, _t(tags.replace(",", " "))) for p, tags in
                    (item.split(":") for item in pps.split()))
    return Verb(en=en, en_3sg=en_3sg, de_3sg=de_3sg, de_3pl=de_3pl, frame=frame, subj=_t(subj),
                obj=_t(obj), iobj=_t(iobj), pps=pp_spec, **kw)


# Noun tags: person, animal, thing (can be seen, bought, needed), port (can be carried, given),
# read, write, food, bake, toy, open; place (one can be in it), water (one can swim in it), home
# (one can live in it); own (takes my/his/our: "my mother", "in my garden"), single (not with a
# plural possessive: no "my mothers").
NOUNS = (
    _n("man", "men", "m", "Mann", "Männer", "person"),
    _n("woman", "women", "f", "Frau", "Frauen", "person"),
    _n("child", "children", "n", "Kind", "Kinder", "person own"),
    _n("girl", "girls", "n", "Mädchen", "Mädchen", "person"),
    _n("teacher", "teachers", "m", "Lehrer", "Lehrer", "person own"),
    _n("doctor", "doctors", "m", "Arzt", "Ärzte", "person own"),
    _n("friend", "friends", "m", "Freund", "Freunde", "person own"),
    _n("father", "fathers", "m", "Vater", "Väter", "person own single"),
    _n("mother", "mothers", "f", "Mutter", "Mütter", "person own single"),
    _n("brother", "brothers", "m", "Bruder", "Brüder", "person own"),
    _n("sister", "sisters", "f", "Schwester", "Schwestern", "person own"),
    _n("uncle", "uncles", "m", "Onkel", "Onkel", "person own"),
    _n("aunt", "aunts", "f", "Tante", "Tanten", "person own"),
    _n("cook", "cooks", "m", "Koch", "Köche", "person"),
    _n("pupil", "pupils", "m", "Schüler", "Schüler", "person own"),
    _n("king", "kings", "m", "König", "Könige", "person"),
    _n("queen", "queens", "f", "Königin", "Königinnen", "person"),
    _n("dog", "dogs", "m", "Hund", "Hunde", "animal"),
    _n("cat", "cats", "f", "Katze", "Katzen", "animal"),
    _n("horse", "horses", "n", "Pferd", "Pferde", "animal"),
    _n("bird", "birds", "m", "Vogel", "Vögel", "animal"),
    _n("cow", "cows", "f", "Kuh", "Kühe", "animal"),
    _n("mouse", "mice", "f", "Maus", "Mäuse", "animal"),
    _n("pig", "pigs", "n", "Schwein", "Schweine", "animal"),
    _n("duck", "ducks", "f", "Ente", "Enten", "animal"),
    _n("rabbit", "rabbits", "n", "Kaninchen", "Kaninchen", "animal"),
    _n("book", "books", "n", "Buch", "Bücher", "thing port read write"),
    _n("letter", "letters", "m", "Brief", "Briefe", "thing port read write open"),
    _n("newspaper", "newspapers", "f", "Zeitung", "Zeitungen", "thing port read"),
    _n("story", "stories", "f", "Geschichte", "Geschichten", "read write"),
    _n("apple", "apples", "m", "Apfel", "Äpfel", "thing port food"),
    _n("cake", "cakes", "m", "Kuchen", "Kuchen", "thing port food bake"),
    _n("cookie", "cookies", "m", "Keks", "Kekse", "thing port food bake"),
    _n("egg", "eggs", "n", "Ei", "Eier", "thing port food"),
    _n("banana", "bananas", "f", "Banane", "Bananen", "thing port food"),
    _n("pear", "pears", "f", "Birne", "Birnen", "thing port food"),
    _n("ball", "balls", "m", "Ball", "Bälle", "thing port toy"),
    _n("doll", "dolls", "f", "Puppe", "Puppen", "thing port toy"),
    _n("key", "keys", "m", "Schlüssel", "Schlüssel", "thing port"),
    _n("hat", "hats", "m", "Hut", "Hüte", "thing port"),
    _n("shoe", "shoes", "m", "Schuh", "Schuhe", "thing port"),
    _n("cup", "cups", "f", "Tasse", "Tassen", "thing port"),
    _n("bottle", "bottles", "f", "Flasche", "Flaschen", "thing port open"),
    _n("bag", "bags", "f", "Tasche", "Taschen", "thing port open"),
    _n("box", "boxes", "f", "Kiste", "Kisten", "thing port open"),
    _n("flower", "flowers", "f", "Blume", "Blumen", "thing port"),
    _n("picture", "pictures", "n", "Bild", "Bilder", "thing port"),
    _n("clock", "clocks", "f", "Uhr", "Uhren", "thing"),
    _n("lamp", "lamps", "f", "Lampe", "Lampen", "thing"),
    _n("chair", "chairs", "m", "Stuhl", "Stühle", "thing"),
    _n("table", "tables", "m", "Tisch", "Tische", "thing"),
    _n("car", "cars", "n", "Auto", "Autos", "thing"),
    _n("bicycle", "bicycles", "n", "Fahrrad", "Fahrräder", "thing"),
    _n("door", "doors", "f", "Tür", "Türen", "thing open"),
    _n("window", "windows", "n", "Fenster", "Fenster", "thing open"),
    _n("park", "parks", "m", "Park", "Parks", "place"),
    _n("garden", "gardens", "m", "Garten", "Gärten", "place own"),
    _n("forest", "forests", "m", "Wald", "Wälder", "place"),
    _n("lake", "lakes", "m", "See", "Seen", "water"),
    _n("kitchen", "kitchens", "f", "Küche", "Küchen", "place own"),
    _n("school", "schools", "f", "Schule", "Schulen", "place own"),
    _n("city", "cities", "f", "Stadt", "Städte", "place home"),
    _n("house", "houses", "n", "Haus", "Häuser", "place own home thing"),
    _n("village", "villages", "n", "Dorf", "Dörfer", "place own home"),
    _n("room", "rooms", "n", "Zimmer", "Zimmer", "place own"),
    _n("office", "offices", "n", "Büro", "Büros", "place own"),
)

ADJS = (
    _a("big", "groß", "groß", "person animal thing place"),
    _a("small", "klein", "klein", "person animal thing place"),
    _a("old", "alt", "alt", "person animal thing place"),
    _a("beautiful", "schön", "schön", "person animal thing place"),
    _a("new", "neu", "neu", "thing place"),
    _a("young", "jung", "jung", "person animal"),
    _a("hungry", "hungrig", "hungrig", "person animal"),
    _a("tired", "müde", "müd", "person animal"),
    _a("friendly", "freundlich", "freundlich", "person animal"),
    _a("happy", "glücklich", "glücklich", "person animal"),
    _a("clever", "klug", "klug", "person animal"),
    _a("black", "schwarz", "schwarz", "animal thing"),
    _a("white", "weiß", "weiß", "animal thing"),
    _a("brown", "braun", "braun", "animal thing"),
    _a("red", "rot", "rot", "thing"),
    _a("blue", "blau", "blau", "thing"),
    _a("green", "grün", "grün", "thing"),
    _a("expensive", "teuer", "teur", "thing"),
    _a("heavy", "schwer", "schwer", "thing"),
)

_ANIM = "person animal"
VERBS = (
    _v("see", "sees", "sieht", "sehen", "acc", _ANIM, "person animal thing", pps="in:place"),
    _v("like", "likes", "mag", "mögen", "acc", "person", "person animal thing"),
    _v("have", "has", "hat", "haben", "acc", "person", "animal thing"),
    _v("read", "reads", "liest", "lesen", "acc", "person", "read", pps="in:place"),
    _v("write", "writes", "schreibt", "schreiben", "acc", "person", "write",
       pps="in:place for:person"),
    _v("eat", "eats", "isst", "essen", "acc", _ANIM, "food", pps="in:place",
       de_animal=("frisst", "fressen")),
    _v("buy", "buys", "kauft", "kaufen", "acc", "person", "animal thing",
       pps="in:place for:person"),
    _v("find", "finds", "findet", "finden", "acc", _ANIM, "animal port", pps="in:place"),
    _v("carry", "carries", "trägt", "tragen", "acc", "person", "port", pps="for:person"),
    _v("fetch", "fetches", "holt", "holen", "acc", _ANIM, "port", pps="for:person"),
    _v("look", "looks", "sucht", "suchen", "acc", _ANIM, "person animal port",
       pps="in:place", en_particle="for"),
    _v("open", "opens", "öffnet", "öffnen", "acc", "person", "open"),
    _v("need", "needs", "braucht", "brauchen", "acc", "person", "thing"),
    _v("know", "knows", "kennt", "kennen", "acc", "person", "person"),
    _v("visit", "visits", "besucht", "besuchen", "acc", "person", "person", pps="in:home"),
    _v("love", "loves", "liebt", "lieben", "acc", "person", "person animal"),
    _v("hear", "hears", "hört", "hören", "acc", _ANIM, "person animal", pps="in:place"),
    _v("draw", "draws", "zeichnet", "zeichnen", "acc", "person", "person animal thing",
       pps="for:person"),
    _v("bake", "bakes", "backt", "backen", "acc", "person", "bake", pps="in:place for:person"),
    _v("wait", "waits", "wartet", "warten", "acc", _ANIM, _ANIM, en_particle="for",
       de_prep="auf"),
    _v("help", "helps", "hilft", "helfen", "dat", _ANIM, _ANIM, pps="in:place"),
    _v("thank", "thanks", "dankt", "danken", "dat", "person", "person"),
    _v("follow", "follows", "folgt", "folgen", "dat", _ANIM, _ANIM),
    _v("answer", "answers", "antwortet", "antworten", "dat", "person", "person"),
    _v("belong", "belongs", "gehört", "gehören", "dat", "animal thing", "person",
       en_particle="to"),
    _v("give", "gives", "gibt", "geben", "ditrans", "person", "port", _ANIM),
    _v("show", "shows", "zeigt", "zeigen", "ditrans", "person", "animal thing", "person"),
    _v("bring", "brings", "bringt", "bringen", "ditrans", "person", "port", "person"),
    _v("send", "sends", "schickt", "schicken", "ditrans", "person", "port", "person"),
    _v("sleep", "sleeps", "schläft", "schlafen", "intr", _ANIM, pps="in:place"),
    _v("play", "plays", "spielt", "spielen", "intr", _ANIM,
       pps="in:place with:person,animal,toy"),
    _v("work", "works", "arbeitet", "arbeiten", "intr", "person", pps="in:place with:person"),
    _v("sit", "sits", "sitzt", "sitzen", "intr", _ANIM, pps="in:place"),
    _v("live", "lives", "wohnt", "wohnen", "intr", "person", pps="in:home"),
    _v("run", "runs", "läuft", "laufen", "intr", _ANIM, pps="in:place"),
    _v("sing", "sings", "singt", "singen", "intr", "person", pps="in:place with:person"),
    _v("talk", "talks", "spricht", "sprechen", "intr", "person", pps="with:person"),
    _v("dance", "dances", "tanzt", "tanzen", "intr", "person", pps="in:place with:person"),
    _v("swim", "swims", "schwimmt", "schwimmen", "intr", _ANIM, pps="in:water"),
    _v("be", "is", "ist", "sind", "cop", "person animal thing"),
    _v("say", "says", "sagt", "sagen", "that", "person"),
    _v("know", "knows", "weiß", "wissen", "that", "person"),
    _v("believe", "believes", "glaubt", "glauben", "that", "person"),
    _v("hope", "hopes", "hofft", "hoffen", "that", "person"),
)

PRONOUNS = (
    Pron(en="he", de="er", plural=False), Pron(en="she", de="sie", plural=False),
    Pron(en="we", de="wir", plural=True), Pron(en="they", de="sie", plural=True),
)

# key → (English preposition, German preposition, German case)
PREPS = {"in": ("in", "in", "dat"), "with": ("with", "mit", "dat"), "for": ("for", "für", "acc")}
TIMES = {"today": "heute", "now": "jetzt", "sometimes": "manchmal", "often": "oft",
         "in the morning": "am Morgen", "in the evening": "am Abend",
         "on Sunday": "am Sonntag", "every day": "jeden Tag"}

# German article forms, indexed by slot: masculine, feminine, neuter singular, plural.
_DEF = {"nom": ("der", "die", "das", "die"), "acc": ("den", "die", "das", "die"),
        "dat": ("dem", "der", "dem", "den")}
_EIN_ENDINGS = {"nom": ("", "e", "", "e"), "acc": ("en", "e", "", "e"),
                "dat": ("em", "er", "em", "en")}
_EIN_WORDS = {"a": "ein", "no": "kein", "my": "mein", "his": "sein", "our": "unser"}
_NUMBERS = {"two": "zwei", "three": "drei"}

# Determiner weights by role; the generator draws from these.
_DETS = {
    "subj": (("the", 6), ("a", 2), ("my", 1), ("his", 1), ("our", 1), ("two", 1), ("three", 1)),
    "obj": (("the", 5), ("a", 3), ("my", 1), ("his", 1), ("our", 1), ("two", 1), ("three", 1),
            ("bare", 1), ("no", 1)),
    "iobj": (("the", 5), ("a", 2), ("my", 1), ("his", 1), ("our", 1), ("two", 1), ("three", 1)),
    "pp": (("the", 5), ("a", 2), ("my", 1), ("his", 1), ("our", 1), ("two", 1), ("three", 1)),
    "place": (("the", 6), ("a", 2), ("my", 1), ("his", 1), ("our", 1)),
}
_FRAMES = (("acc", 40), ("dat", 12), ("ditrans", 13), ("intr", 25), ("cop", 10))
_OWNABLE_ONLY = frozenset({"person", "place", "water"})  # possessives only for nouns tagged "own"
_MIN_WORDS, _MAX_WORDS = 4, 14  # English sentence length bounds, in words
SPLITS = ("train", "valid", "test")
