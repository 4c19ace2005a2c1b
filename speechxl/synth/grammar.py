"""SynthST's bilingual grammar: English sentences with exact German, French and Spanish translations.

A sentence is built from typed parts (noun phrases, clauses) taken from lexicon.py and realised separately
in each language, so agreement and word order are computed, never copied from a template string:

- noun phrases: definite / indefinite / number-word determiners ("the three hundred and twelve students"),
  one adjective (before the noun in English and German, after it in French and Spanish), German case
  (nominative, accusative, dative; strong, weak and mixed adjective endings; weak nouns), French and
  Spanish gender and number agreement, number words from num2words with French/Spanish gender agreement;
- clauses: present or perfect, negation, a time adverbial, transitive verbs (German dative objects,
  Spanish personal "a", French "répondre à"), intransitive verbs with a prepositional phrase, copula +
  adjective (Spanish ser/estar);
- sentences: a statement (optionally with the adverbial fronted: German verb-second), "X because Y"
  (German verb-final after "weil"), "Because Y, X" (German verb-second after a fronted clause),
  "S says that Y" (dass/que), and yes/no questions (German verb-first).

Text is cased and punctuated like a transcript (capital first letter, German nouns capitalised, final
period or question mark; a comma after a fronted adverbial in French only, where it is the norm), with
every number written as words so that espeak-ng can speak it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from num2words import num2words

from speechxl.synth.lexicon import (
    ADJECTIVES,
    ADVERBIALS,
    INTRANSITIVE_VERBS,
    NOUNS,
    PERSONS,
    PREPOSITIONS,
    PRONOUNS,
    REPORTING_VERBS,
    TRANSITIVE_VERBS,
    Adjective,
    Adverbial,
    Noun,
    Preposition,
    Pronoun,
    ReportingVerb,
    Verb,
)

LANGS = ("en", "de", "fr", "es")
MIN_WORDS, MAX_WORDS = 5, 15


@dataclass(frozen=True)
class Sentence:
    en: str
    de: str
    fr: str
    es: str

    def text(self, lang: str) -> str:
        if lang not in LANGS:
            raise KeyError(f"SynthST has no language {lang!r}; it has {', '.join(LANGS)}")
        return getattr(self, lang)


# ---------------------------------------------------------------------------------------------------------
# Sentence parts


@dataclass(frozen=True)
class NounPhrase:
    noun: Noun
    definite: bool
    plural: bool = False
    count: int = 0  # a number word (≥ 2) before the noun; with definite: "the three books"
    adjective: Adjective | None = None

    def __post_init__(self) -> None:
        if self.count and (self.count < 2 or not self.plural):
            raise ValueError("a number word needs a plural noun phrase and a count of at least two")
        if not self.definite and self.plural and not self.count:
            raise ValueError("an indefinite plural needs a number word (no 'some' in this grammar)")


Subject = NounPhrase | Pronoun


@dataclass(frozen=True)
class PrepPhrase:
    prep: Preposition
    np: NounPhrase


@dataclass(frozen=True)
class Clause:
    subject: Subject
    verb: Verb | None  # None: the copula with `predicate`
    obj: NounPhrase | None = None
    pp: PrepPhrase | None = None
    predicate: Adjective | None = None
    perfect: bool = False
    negated: bool = False
    adverbial: Adverbial | None = None

    def __post_init__(self) -> None:
        if (self.verb is None) != (self.predicate is not None):
            raise ValueError("a clause has either a verb or a copula predicate")
        if self.verb is not None and bool(self.verb.objects) != (self.obj is not None):
            raise ValueError("a transitive verb needs an object and an intransitive one takes none")
        if self.verb is None and self.perfect:
            raise ValueError("copula clauses are present tense only")


def _person(subject: Subject) -> str:
    if isinstance(subject, Pronoun):
        return subject.person
    return "3pl" if subject.plural else "3sg"


# ---------------------------------------------------------------------------------------------------------
# Number words


@lru_cache(maxsize=None)
def number_word(n: int, lang: str, gender: str = "m") -> str:
    """`n` as words before a noun of `gender`: agreement for French (vingt et une) and Spanish
    (veintiún / veintiuna, doscientas); English and German number words do not inflect."""
    if lang == "en":
        return num2words(n)
    words = num2words(n, lang=lang)
    if lang == "fr" and gender == "f" and re.search(r"(^|[ -])un$", words):
        words += "e"
    if lang == "es":
        if gender == "f":
            words = re.sub(r"ientos\b", "ientas", words)
            if words.endswith("uno"):
                words = words[:-1] + "a"
        elif words.endswith("veintiuno"):
            words = words[:-3] + "ún"
        elif words.endswith("uno"):
            words = words[:-1]
    return words


# ---------------------------------------------------------------------------------------------------------
# English


def _en_np(np: NounPhrase) -> list[str]:
    words = []
    if np.count:
        words.append(number_word(np.count, "en"))
    if np.adjective is not None:
        words.append(np.adjective.en)
    words.append(np.noun.en_pl if np.plural else np.noun.en_sg)
    if np.definite:
        return ["the", *words]
    if np.count:
        return words
    return ["an" if words[0][0].lower() in "aeiou" else "a", *words]


def _en_subject(subject: Subject) -> list[str]:
    return [subject.en] if isinstance(subject, Pronoun) else _en_np(subject)


def _en_clause(c: Clause, *, question: bool = False, front_adverbial: bool = False) -> list[str]:
    person = _person(c.subject)
    third_sg = person == "3sg"
    main: list[str] = []
    if c.verb is None:
        aux: str | None = {"1sg": "am", "3sg": "is"}.get(person, "are")
    elif c.perfect:
        aux, main = ("has" if third_sg else "have"), [c.verb.en[2]]
    elif c.negated or question:
        aux, main = ("does" if third_sg else "do"), [c.verb.en[0]]
    else:
        aux, main = None, [c.verb.en_form(person)]
    if c.verb is not None and c.verb.en_particle:
        main.append(c.verb.en_particle)
    rest = main + (_en_np(c.obj) if c.obj else []) + (_en_pp(c.pp) if c.pp else [])
    rest += [c.predicate.en] if c.predicate else []
    adverbial = [c.adverbial.en] if c.adverbial else []
    if question:
        return [aux, *_en_subject(c.subject), *rest, *adverbial]  # type: ignore[list-item]
    verb_group = ([aux] if aux else []) + (["not"] if c.negated else [])
    if front_adverbial:
        return [*adverbial, *_en_subject(c.subject), *verb_group, *rest]
    return [*_en_subject(c.subject), *verb_group, *rest, *adverbial]


def _en_pp(pp: PrepPhrase) -> list[str]:
    return [pp.prep.en, *_en_np(pp.np)]


# ---------------------------------------------------------------------------------------------------------
# German

_DE_DEFINITE = {
    "nom": ("der", "die", "das", "die"),
    "acc": ("den", "die", "das", "die"),
    "dat": ("dem", "der", "dem", "den"),
}
_DE_INDEFINITE = {"nom": ("ein", "eine", "ein"), "acc": ("einen", "eine", "ein"), "dat": ("einem", "einer", "einem")}
_DE_GENDER_INDEX = {"m": 0, "f": 1, "n": 2}


def _de_adjective_ending(np: NounPhrase, case: str) -> str:
    if np.plural:
        # After an article every plural ending is -en (weak); after a bare number word it is strong.
        return "en" if np.definite or case == "dat" else "e"
    if case == "dat":
        return "en"
    gender = np.noun.de_gender
    if np.definite:
        return "en" if case == "acc" and gender == "m" else "e"
    # Mixed declension after ein/einen: the ending shows the gender ein does not.
    if gender == "m":
        return "er" if case == "nom" else "en"
    return "e" if gender == "f" else "es"


def _de_np(np: NounPhrase, case: str) -> list[str]:
    noun = np.noun
    gender_index = _DE_GENDER_INDEX[noun.de_gender]
    words = []
    if np.definite:
        words.append(_DE_DEFINITE[case][3 if np.plural else gender_index])
    elif not np.plural:
        words.append(_DE_INDEFINITE[case][gender_index])
    if np.count:
        words.append(number_word(np.count, "de"))
    if np.adjective is not None:
        words.append(np.adjective.de_stem + _de_adjective_ending(np, case))
    if np.plural:
        words.append(noun.de_dat_pl if case == "dat" else noun.de_pl)  # type: ignore[arg-type]
    else:
        words.append(noun.de_sg if case == "nom" else noun.de_oblique)
    return words


def _de_subject(subject: Subject) -> list[str]:
    return [subject.de] if isinstance(subject, Pronoun) else _de_np(subject, "nom")


_DE_SEIN = {"1sg": "bin", "3sg": "ist", "1pl": "sind", "3pl": "sind"}
_DE_HABEN = {"1sg": "habe", "3sg": "hat", "1pl": "haben", "3pl": "haben"}


def _de_clause(c: Clause, mode: str, *, vorfeld: list[str] | None = None, front_adverbial: bool = False) -> list[str]:
    """mode: "main" (verb-second: the subject, the adverbial with `front_adverbial`, or `vorfeld` fills
    the first position), "sub" (verb-final, after weil/dass) or "question" (verb-first)."""
    if front_adverbial and c.adverbial:
        vorfeld = [c.adverbial.de]
    person = _person(c.subject)
    right: list[str] = []  # the right sentence bracket: participle or separable particle
    if c.verb is None:
        finite = _DE_SEIN[person]
    elif c.perfect:
        finite = (_DE_SEIN if c.verb.de_aux_sein else _DE_HABEN)[person]
        right = [c.verb.de_participle]
    else:
        finite = c.verb.de_form(person)
        if c.verb.de_particle:
            right = [c.verb.de_particle]
    middle: list[str] = []
    if c.adverbial and not front_adverbial:
        middle.append(c.adverbial.de)  # time before objects ("liest heute das Buch")
    if c.obj:
        middle += _de_np(c.obj, "dat" if c.verb and c.verb.de_dative else "acc")
    if c.negated:
        middle.append("nicht")  # after a definite object, before a PP, predicate or participle
    if c.pp:
        middle += [c.pp.prep.de, *_de_np(c.pp.np, "dat" if c.pp.prep.de_dative else "acc")]
    if c.predicate:
        middle.append(c.predicate.de)
    subject = _de_subject(c.subject)
    if mode == "sub":
        if right and not c.perfect:  # separable verb written as one word at the end: "anruft"
            return [*subject, *middle, right[0] + finite]
        return [*subject, *middle, *right, finite]
    if mode == "question":
        return [finite, *subject, *middle, *right]
    if vorfeld is None:
        return [*subject, finite, *middle, *right]
    return [*vorfeld, finite, *subject, *middle, *right]


# ---------------------------------------------------------------------------------------------------------
# French

_FR_ETRE = {"1sg": "suis", "3sg": "est", "1pl": "sommes", "3pl": "sont"}
_FR_AVOIR = {"1sg": "ai", "3sg": "a", "1pl": "avons", "3pl": "ont"}


def _fr_np(np: NounPhrase) -> list[str]:
    noun, gender = np.noun, np.noun.fr_gender
    if np.definite:
        words = ["les" if np.plural else "le" if gender == "m" else "la"]
    else:
        words = [] if np.plural else ["un" if gender == "m" else "une"]
    if np.count:
        words.append(number_word(np.count, "fr", gender))
    words.append(noun.fr_pl if np.plural else noun.fr_sg)  # type: ignore[arg-type]
    if np.adjective is not None:
        words.append(np.adjective.fr_form(gender, np.plural))
    return words


def _fr_clause(c: Clause, *, front_adverbial: bool = False) -> list[str]:
    person = _person(c.subject)
    if isinstance(c.subject, Pronoun):
        subject, gender, plural = [c.subject.fr], c.subject.gender, c.subject.person.endswith("pl")
    else:
        subject, gender, plural = _fr_np(c.subject), c.subject.noun.fr_gender, c.subject.plural
    after: list[str] = []
    if c.verb is None:
        finite = _FR_ETRE[person]
    elif c.perfect:
        finite, after = _FR_AVOIR[person], [c.verb.fr_participle]
    else:
        finite = c.verb.fr_form(person)
    verb_group = ["ne", finite, "pas"] if c.negated else [finite]
    if c.obj:
        after += ([c.verb.fr_object_prep] if c.verb and c.verb.fr_object_prep else []) + _fr_np(c.obj)
    if c.pp:
        after += [c.pp.prep.fr, *_fr_np(c.pp.np)]
    if c.predicate:
        after.append(c.predicate.fr_form(gender, plural))
    if c.adverbial and front_adverbial:
        return [c.adverbial.fr, ",", *subject, *verb_group, *after]
    return [*subject, *verb_group, *after, *([c.adverbial.fr] if c.adverbial else [])]


# ---------------------------------------------------------------------------------------------------------
# Spanish

_ES_SER = {"1sg": "soy", "3sg": "es", "1pl": "somos", "3pl": "son"}
_ES_ESTAR = {"1sg": "estoy", "3sg": "está", "1pl": "estamos", "3pl": "están"}
_ES_HABER = {"1sg": "he", "3sg": "ha", "1pl": "hemos", "3pl": "han"}


def _es_np(np: NounPhrase) -> list[str]:
    noun, feminine = np.noun, np.noun.es_gender == "f"
    if np.definite:
        words = [("las" if feminine else "los") if np.plural else ("la" if feminine else "el")]
    else:
        words = [] if np.plural else ["una" if feminine else "un"]
    if np.count:
        words.append(number_word(np.count, "es", noun.es_gender))
    words.append(noun.es_pl if np.plural else noun.es_sg)  # type: ignore[arg-type]
    if np.adjective is not None:
        words.append(np.adjective.es_form(noun.es_gender, np.plural))
    return words


def _es_clause(c: Clause, *, front_adverbial: bool = False) -> list[str]:
    person = _person(c.subject)
    if isinstance(c.subject, Pronoun):
        # Spanish drops subject pronouns: the verb ending carries the person.
        subject, gender, plural = [], c.subject.gender, c.subject.person.endswith("pl")
    else:
        subject, gender, plural = _es_np(c.subject), c.subject.noun.es_gender, c.subject.plural
    verbs: list[str]
    if c.verb is None:
        verbs = [(_ES_ESTAR if c.predicate and c.predicate.es_estar else _ES_SER)[person]]
    elif c.perfect:
        verbs = [_ES_HABER[person], c.verb.es_participle]
    else:
        verbs = [c.verb.es_form(person)]
    after: list[str] = []
    if c.obj:
        # Direct objects that are people or animals take the "personal a" (ve al perro).
        after += (["a"] if c.obj.noun.animate else []) + _es_np(c.obj)
    if c.pp:
        after += [c.pp.prep.es, *_es_np(c.pp.np)]
    if c.predicate:
        after.append(c.predicate.es_form(gender, plural))
    verb_group = ["no", *verbs] if c.negated else verbs
    if c.adverbial and front_adverbial:
        return [c.adverbial.es, *subject, *verb_group, *after]
    return [*subject, *verb_group, *after, *([c.adverbial.es] if c.adverbial else [])]


# ---------------------------------------------------------------------------------------------------------
# Finishing: contractions, elision, casing, punctuation

_FR_ELIDING = {"le", "la", "je", "ne", "que", "de"}
_FR_NO_ELISION = ("huit", "onze")  # "que huit", "que onze": numbers that block elision


def _fr_vowel_initial(word: str) -> bool:
    # Every h-word in the lexicon has a mute h (l'homme, l'hôpital, j'habite).
    return word[0].lower() in "aeiouyàâéèêîôûœh" and not word.lower().startswith(_FR_NO_ELISION)


def _contract_fr(words: list[str]) -> list[str]:
    elided: list[str] = []
    for word in words:
        if elided and elided[-1] in _FR_ELIDING and _fr_vowel_initial(word):
            elided[-1] = elided[-1][:-1] + "'" + word
        else:
            elided.append(word)
    out: list[str] = []
    for word in elided:
        if out and out[-1] == "à" and word in ("le", "les"):
            out[-1] = "au" if word == "le" else "aux"
        else:
            out.append(word)
    return out


def _contract_pairs(words: list[str], pairs: dict[tuple[str, str], str]) -> list[str]:
    out: list[str] = []
    for word in words:
        if out and (out[-1], word) in pairs:
            out[-1] = pairs[(out[-1], word)]
        else:
            out.append(word)
    return out


_DE_CONTRACTIONS = {("in", "dem"): "im"}
_ES_CONTRACTIONS = {("a", "el"): "al"}


def _finish(lang: str, words: list[str], end: str) -> str:
    if lang == "fr":
        words = _contract_fr(words)
    elif lang == "de":
        words = _contract_pairs(words, _DE_CONTRACTIONS)
    elif lang == "es":
        words = _contract_pairs(words, _ES_CONTRACTIONS)
    text = " ".join(words).replace(" ,", ",").replace("¿ ", "¿")
    # French typography puts a space before "?"; the other three languages do not.
    text += (" " + end) if (lang == "fr" and end == "?") else end
    first = next(i for i, ch in enumerate(text) if ch.isalpha())
    return text[:first] + text[first].upper() + text[first + 1 :]


# ---------------------------------------------------------------------------------------------------------
# Sentence templates. Each `_template(lang, *parts)` gives one language's words and final punctuation;
# the public functions below build a whole Sentence from chosen parts (the grammar's internal API).

Words = tuple[list[str], str]


def _statement(lang: str, c: Clause, front_adverbial: bool) -> Words:
    if lang == "en":
        return _en_clause(c, front_adverbial=front_adverbial), "."
    if lang == "de":
        return _de_clause(c, "main", front_adverbial=front_adverbial), "."
    if lang == "fr":
        return _fr_clause(c, front_adverbial=front_adverbial), "."
    return _es_clause(c, front_adverbial=front_adverbial), "."


def _because(lang: str, main: Clause, reason: Clause) -> Words:
    if lang == "en":
        return [*_en_clause(main), "because", *_en_clause(reason)], "."
    if lang == "de":
        return [*_de_clause(main, "main"), ",", "weil", *_de_clause(reason, "sub")], "."
    if lang == "fr":
        return [*_fr_clause(main), "parce", "que", *_fr_clause(reason)], "."
    return [*_es_clause(main), "porque", *_es_clause(reason)], "."


def _since(lang: str, reason: Clause, main: Clause) -> Words:
    if lang == "en":
        return ["because", *_en_clause(reason), ",", *_en_clause(main)], "."
    if lang == "de":
        return _de_clause(main, "main", vorfeld=["weil", *_de_clause(reason, "sub"), ","]), "."
    # A fronted cause is introduced by comme / como in French and Spanish (parce que / porque follow).
    if lang == "fr":
        return ["comme", *_fr_clause(reason), ",", *_fr_clause(main)], "."
    return ["como", *_es_clause(reason), ",", *_es_clause(main)], "."


def _report(lang: str, speaker: Subject, verb: ReportingVerb, content: Clause) -> Words:
    person = _person(speaker)
    if lang == "en":
        return [*_en_subject(speaker), verb.en if person == "3sg" else verb.en_base, "that", *_en_clause(content)], "."
    if lang == "de":
        de_verb = verb.de[0] if person == "1sg" else verb.de[1] if person == "3sg" else verb.de[2]
        return [*_de_subject(speaker), de_verb, ",", "dass", *_de_clause(content, "sub")], "."
    index = PERSONS.index(person)
    if lang == "fr":
        speaker_words = [speaker.fr] if isinstance(speaker, Pronoun) else _fr_np(speaker)
        return [*speaker_words, verb.fr[index], "que", *_fr_clause(content)], "."
    speaker_words = [] if isinstance(speaker, Pronoun) else _es_np(speaker)
    return [*speaker_words, verb.es[index], "que", *_es_clause(content)], "."


def _question(lang: str, c: Clause) -> Words:
    if lang == "en":
        return _en_clause(c, question=True), "?"
    if lang == "de":
        return _de_clause(c, "question"), "?"
    if lang == "fr":
        return ["est-ce", "que", *_fr_clause(c)], "?"
    return ["¿", *_es_clause(c)], "?"


def _render(template: Callable[..., Words], lang: str, parts: tuple) -> str:
    words, end = template(lang, *parts)
    return _finish(lang, words, end)


def _sentence(template: Callable[..., Words], *parts: object) -> Sentence:
    return Sentence(*(_render(template, lang, parts) for lang in LANGS))


def statement(c: Clause, *, front_adverbial: bool = False) -> Sentence:
    """A main clause; with `front_adverbial` the adverbial comes first (German: verb-second)."""
    if front_adverbial and c.adverbial is None:
        raise ValueError("nothing to front: the clause has no adverbial")
    return _sentence(_statement, c, front_adverbial)


def because(main: Clause, reason: Clause) -> Sentence:
    """ "X because Y" — German "X, weil Y" with the verb last in Y."""
    return _sentence(_because, main, reason)


def since(reason: Clause, main: Clause) -> Sentence:
    """ "Because Y, X" — the fronted clause fills German's first position, so the verb follows it."""
    return _sentence(_since, reason, main)


def report(speaker: Subject, verb: ReportingVerb, content: Clause) -> Sentence:
    """ "S says that Y" — German "S sagt, dass Y" with the verb last in Y."""
    return _sentence(_report, speaker, verb, content)


def question(c: Clause) -> Sentence:
    """A yes/no question: English inversion with do/have/be, German verb-first, French "est-ce que",
    Spanish statement order between ¿ and ?."""
    if c.negated:
        raise ValueError("questions are built from affirmative clauses only")
    return _sentence(_question, c)


# ---------------------------------------------------------------------------------------------------------
# Random sampling


def _with_tags(tags: frozenset[str]) -> tuple[Noun, ...]:
    return tuple(n for n in NOUNS if n.tags & tags)


_PERSONS = _with_tags(frozenset({"person"}))
_SUBJECTS = {v: _with_tags(v.subjects) for v in TRANSITIVE_VERBS + INTRANSITIVE_VERBS}
_OBJECTS = {v: _with_tags(v.objects) for v in TRANSITIVE_VERBS}
_PP_NOUNS = {name: _with_tags(p.np_tags) for name, p in PREPOSITIONS.items()}
_ADJECTIVES_FOR = {n: tuple(a for a in ADJECTIVES if a.tags & n.tags) for n in NOUNS}
_COPULA_SUBJECTS = {a: _with_tags(a.tags) for a in ADJECTIVES}
_THIRD_PERSON_PRONOUNS = tuple(p for p in PRONOUNS if p.person == "3sg")
_ADVERBIALS_FOR = {
    (perfect, negated): tuple(
        a for a in ADVERBIALS if (a.with_perfect or not perfect) and (a.with_negation or not negated)
    )
    for perfect in (False, True)
    for negated in (False, True)
}


def _random_count(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.55:
        return rng.randint(2, 12)
    if r < 0.85:
        return rng.randint(13, 99)
    n = rng.randint(100, 999)
    # "hundred and one" has no agreed German form before a noun (hunderteins? hundertein?): skip it.
    return n + 1 if n % 100 == 1 else n


def _random_np(
    rng: random.Random, nouns: tuple[Noun, ...], *, definite_only: bool = False, adjective_p: float = 0.3
) -> NounPhrase:
    noun = rng.choice(nouns)
    adjectives = _ADJECTIVES_FOR[noun]
    adjective = rng.choice(adjectives) if adjectives and rng.random() < adjective_p else None
    if noun.mass:
        return NounPhrase(noun, definite=True, adjective=adjective)
    r = rng.random()
    if definite_only:
        r *= 0.75  # only the definite shapes below
    if r < 0.40:
        return NounPhrase(noun, definite=True, adjective=adjective)
    if r < 0.58:
        return NounPhrase(noun, definite=True, plural=True, adjective=adjective)
    if r < 0.75:
        return NounPhrase(noun, definite=True, plural=True, count=_random_count(rng), adjective=adjective)
    if r < 0.88:
        return NounPhrase(noun, definite=False, adjective=adjective)
    return NounPhrase(noun, definite=False, plural=True, count=_random_count(rng), adjective=adjective)


def _random_subject(rng: random.Random, verb: Verb, *, third_person: bool) -> Subject:
    if "person" in verb.subjects and rng.random() < 0.15:
        return rng.choice(_THIRD_PERSON_PRONOUNS if third_person else PRONOUNS)
    return _random_np(rng, _SUBJECTS[verb], adjective_p=0.2)


def _random_clause(rng: random.Random, *, third_person: bool = False, negatable: bool = True) -> Clause:
    """A clause whose parts fit together: the subject suits the verb, negation only where German "nicht"
    is exact (definite objects), adverbials only in tenses and polarities they fit."""
    negated = negatable and rng.random() < 0.2
    r = rng.random()
    obj = pp = predicate = None
    verb: Verb | None
    if r < 0.2:
        verb, predicate = None, rng.choice(ADJECTIVES)
        nouns = _COPULA_SUBJECTS[predicate]
        if "person" in predicate.tags and rng.random() < 0.15:
            subject: Subject = rng.choice(_THIRD_PERSON_PRONOUNS)  # he/she: gender known for agreement
        else:
            subject = _random_np(rng, nouns, definite_only=True, adjective_p=0.0)
    elif r < 0.75:
        verb = rng.choice(TRANSITIVE_VERBS)
        subject = _random_subject(rng, verb, third_person=third_person)
        obj = _random_np(rng, _OBJECTS[verb], definite_only=negated)
        if isinstance(subject, NounPhrase) and subject.noun == obj.noun:
            obj = NounPhrase(obj.noun, definite=False) if not obj.noun.mass else obj
            negated = False
    else:
        verb = rng.choice(INTRANSITIVE_VERBS)
        subject = _random_subject(rng, verb, third_person=third_person)
        if verb.pps == {"in_home"} or rng.random() < 0.6:
            name = rng.choice(sorted(verb.pps))
            prep = PREPOSITIONS[name]
            np = _random_np(rng, _PP_NOUNS[name], definite_only=prep.definite_only or negated, adjective_p=0.2)
            pp = PrepPhrase(prep, np)
    perfect = verb is not None and rng.random() < 0.3
    adverbial = None
    if rng.random() < 0.35:
        adverbial = rng.choice(_ADVERBIALS_FOR[(perfect, negated)])
    return Clause(
        subject, verb, obj=obj, pp=pp, predicate=predicate, perfect=perfect, negated=negated, adverbial=adverbial
    )


def _random_plan(rng: random.Random) -> tuple[Callable[..., Words], tuple]:
    """A template and its parts, drawn at random."""
    r = rng.random()
    if r < 0.40:
        c = _random_clause(rng)
        return _statement, (c, c.adverbial is not None and rng.random() < 0.4)
    if r < 0.55:
        return _because, (_random_clause(rng), _random_clause(rng))
    if r < 0.65:
        return _since, (_random_clause(rng), _random_clause(rng))
    if r < 0.85:
        speaker = rng.choice(PRONOUNS) if rng.random() < 0.3 else _random_np(rng, _PERSONS, adjective_p=0.1)
        return _report, (speaker, rng.choice(REPORTING_VERBS), _random_clause(rng))
    return _question, (_random_clause(rng, third_person=True, negatable=False),)


def sample_sentence(rng: random.Random) -> Sentence:
    """A random sentence whose English has MIN_WORDS..MAX_WORDS words."""
    while True:
        template, parts = _random_plan(rng)
        # English first: most rejected plans then cost one language, not four.
        en = _render(template, "en", parts)
        if MIN_WORDS <= len(en.split()) <= MAX_WORDS:
            return Sentence(en, *(_render(template, lang, parts) for lang in LANGS[1:]))


def sample_splits(seed: int, sizes: dict[str, int]) -> dict[str, list[Sentence]]:
    """Disjoint (by English text) lists of sentences, one per named split, drawn in the order given from
    one `random.Random(seed)`: the same seed gives the same splits, and adding a split at the end leaves
    the earlier ones unchanged."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[Sentence]] = {}
    for name, size in sizes.items():
        if size < 0:
            raise ValueError(f"split {name!r}: size must be >= 0, got {size}")
        sentences: list[Sentence] = []
        while len(sentences) < size:
            sentence = sample_sentence(rng)
            if sentence.en not in seen:
                seen.add(sentence.en)
                sentences.append(sentence)
        splits[name] = sentences
    return splits
