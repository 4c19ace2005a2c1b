import random
import re

import pytest

from speechxl.synth import grammar
from speechxl.synth.grammar import (
    Clause,
    NounPhrase,
    PrepPhrase,
    Sentence,
    because,
    number_word,
    question,
    report,
    sample_sentence,
    sample_splits,
    since,
    statement,
)
from speechxl.synth.lexicon import (
    ADJECTIVES,
    ADVERBIALS,
    INTRANSITIVE_VERBS,
    NOUNS,
    PREPOSITIONS,
    PRONOUNS,
    REPORTING_VERBS,
    TRANSITIVE_VERBS,
)


def noun(en):
    return next(n for n in NOUNS if n.en_sg == en)


def adj(en):
    return next(a for a in ADJECTIVES if a.en == en)


def tverb(en):
    return next(v for v in TRANSITIVE_VERBS if v.en[0] == en)


def iverb(en):
    return next(v for v in INTRANSITIVE_VERBS if v.en[0] == en)


def adverbial(en):
    return next(a for a in ADVERBIALS if a.en == en)


def pronoun(en):
    return next(p for p in PRONOUNS if p.en == en)


def the(en, **kw):
    return NounPhrase(noun(en), definite=True, **kw)


def assert_sentence(sentence, en, de, fr, es):
    assert (sentence.en, sentence.de, sentence.fr, sentence.es) == (en, de, fr, es)


@pytest.fixture(scope="module")
def sample():
    rng = random.Random(1234)
    return [sample_sentence(rng) for _ in range(4000)]


# --- corpus-level properties -------------------------------------------------------------------------------


def test_same_seed_same_splits_and_other_seed_differs():
    sizes = {"train": 200, "dev": 20, "test": 20}
    assert sample_splits(5, sizes) == sample_splits(5, sizes)
    assert sample_splits(5, sizes)["train"] != sample_splits(6, sizes)["train"]


def test_adding_a_split_at_the_end_keeps_the_earlier_ones():
    small = sample_splits(3, {"train": 100, "dev": 10})
    large = sample_splits(3, {"train": 100, "dev": 10, "ext_mt": 500})
    assert small["train"] == large["train"] and small["dev"] == large["dev"]


def test_splits_have_the_requested_sizes_and_are_disjoint_by_english():
    sizes = {"train": 1500, "dev": 100, "test": 100, "ext_mt": 2000}
    splits = sample_splits(11, sizes)
    assert list(splits) == list(sizes)
    assert {name: len(s) for name, s in splits.items()} == sizes
    english = [s.en for sentences in splits.values() for s in sentences]
    assert len(set(english)) == len(english)


def test_english_has_5_to_15_words(sample):
    lengths = [len(s.en.split()) for s in sample]
    assert min(lengths) >= 5 and max(lengths) <= 15
    assert min(lengths) <= 6 and max(lengths) >= 14  # the whole range is used, not a narrow band


def test_at_least_300_english_word_types(sample):
    types = {w for s in sample for w in re.findall(r"[a-z'-]+", s.en.lower())}
    assert len(types) >= 300


def test_every_sentence_is_speakable_cased_and_punctuated(sample):
    for s in sample:
        for lang in grammar.LANGS:
            text = s.text(lang)
            assert text.strip() == text and "  " not in text
            assert not re.search(r"\d", text), text
            assert text[-1] in ".?", text
            assert text.lstrip("¿")[0].isupper(), text
    assert all(s.es.startswith("¿") for s in sample if s.es.endswith("?"))
    assert any(s.en.endswith("?") for s in sample) and any(s.en.endswith(".") for s in sample)


def test_unknown_language_is_an_error():
    with pytest.raises(KeyError, match="xx"):
        Sentence("a", "b", "c", "d").text("xx")


def test_lexicon_tags_are_consistent():
    noun_tags = set().union(*(n.tags for n in NOUNS))
    for a in ADJECTIVES:
        assert a.tags <= noun_tags, a.en
    for v in TRANSITIVE_VERBS + INTRANSITIVE_VERBS:
        assert v.subjects <= noun_tags and v.objects <= noun_tags and v.pps <= set(PREPOSITIONS), v.en
    for n in NOUNS:
        if n.mass:
            assert n.de_pl is None and n.fr_pl is None and n.es_pl is None, n.en_sg
        else:
            assert n.de_pl and n.fr_pl and n.es_pl, n.en_sg
        assert n.de_sg[0].isupper(), n.en_sg  # German nouns are capitalised


# --- exact agreement and word order ------------------------------------------------------------------------


def test_feminine_plural_noun_with_adjective_and_predicate():
    c = Clause(the("house", plural=True, adjective=adj("white")), None, predicate=adj("expensive"))
    assert_sentence(
        statement(c),
        "The white houses are expensive.",
        "Die weißen Häuser sind teuer.",
        "Les maisons blanches sont chères.",
        "Las casas blancas son caras.",
    )


def test_spanish_estar_and_feminine_singular_predicate():
    c = Clause(pronoun("she"), None, predicate=adj("tired"), negated=True)
    assert_sentence(
        statement(c), "She is not tired.", "Sie ist nicht müde.", "Elle n'est pas fatiguée.", "No está cansada."
    )


def test_german_accusative_masculine_and_spanish_personal_a():
    c = Clause(the("doctor"), tverb("see"), obj=the("dog", adjective=adj("black")))
    assert_sentence(
        statement(c),
        "The doctor sees the black dog.",
        "Der Arzt sieht den schwarzen Hund.",
        "Le médecin voit le chien noir.",
        "El médico ve al perro negro.",
    )


def test_german_mixed_declension_after_indefinite_article():
    c = Clause(NounPhrase(noun("car"), definite=False, adjective=adj("red")), None, predicate=adj("new"))
    assert statement(c).de == "Ein rotes Auto ist neu."
    c = Clause(pronoun("we"), tverb("find"), obj=NounPhrase(noun("ball"), definite=False, adjective=adj("red")))
    assert_sentence(
        statement(c),
        "We find a red ball.",
        "Wir finden einen roten Ball.",
        "Nous trouvons un ballon rouge.",
        "Encontramos una pelota roja.",
    )
    c = Clause(pronoun("I"), tverb("see"), obj=NounPhrase(noun("umbrella"), definite=False))
    assert_sentence(
        statement(c), "I see an umbrella.", "Ich sehe einen Regenschirm.", "Je vois un parapluie.", "Veo un paraguas."
    )


def test_german_dative_object_weak_noun_and_french_a_contraction():
    c = Clause(the("child"), tverb("help"), obj=the("student"))
    assert_sentence(
        statement(c),
        "The child helps the student.",
        "Das Kind hilft dem Studenten.",
        "L'enfant aide l'étudiant.",
        "El niño ayuda al estudiante.",
    )
    c = Clause(the("guest"), tverb("answer"), obj=the("waiter", plural=True), perfect=True)
    assert_sentence(
        statement(c),
        "The guest has answered the waiters.",
        "Der Gast hat den Kellnern geantwortet.",
        "L'invité a répondu aux serveurs.",
        "El invitado ha respondido a los camareros.",
    )


def test_verb_second_after_fronted_adverbial():
    c = Clause(the("doctor"), tverb("read"), obj=the("book"), adverbial=adverbial("today"))
    assert_sentence(
        statement(c, front_adverbial=True),
        "Today the doctor reads the book.",
        "Heute liest der Arzt das Buch.",
        "Aujourd'hui, le médecin lit le livre.",
        "Hoy el médico lee el libro.",
    )
    assert_sentence(
        statement(c),
        "The doctor reads the book today.",
        "Der Arzt liest heute das Buch.",
        "Le médecin lit le livre aujourd'hui.",
        "El médico lee el libro hoy.",
    )


def test_verb_final_in_weil_clause():
    main = Clause(the("student"), None, predicate=adj("happy"))
    reason = Clause(the("doctor"), tverb("read"), obj=the("book"))
    assert_sentence(
        because(main, reason),
        "The student is happy because the doctor reads the book.",
        "Der Student ist glücklich, weil der Arzt das Buch liest.",
        "L'étudiant est heureux parce que le médecin lit le livre.",
        "El estudiante es feliz porque el médico lee el libro.",
    )


def test_separable_verb_in_main_subordinate_and_perfect_clauses():
    call = Clause(pronoun("she"), tverb("call"), obj=the("doctor"), negated=True)
    main = Clause(the("teacher", plural=True), iverb("wait"))
    s = because(main, call)
    assert_sentence(
        s,
        "The teachers wait because she does not call the doctor.",
        "Die Lehrer warten, weil sie den Arzt nicht anruft.",
        "Les professeurs attendent parce qu'elle n'appelle pas le médecin.",
        "Los profesores esperan porque no llama al médico.",
    )
    assert statement(call).de == "Sie ruft den Arzt nicht an."
    perfect = Clause(pronoun("she"), tverb("call"), obj=the("doctor"), perfect=True)
    assert because(main, perfect).de == "Die Lehrer warten, weil sie den Arzt angerufen hat."


def test_fronted_subordinate_clause_takes_the_first_position():
    reason = Clause(the("doctor"), None, predicate=adj("tired"))
    main = Clause(the("child", plural=True), iverb("play"), pp=PrepPhrase(PREPOSITIONS["in"], the("garden")))
    assert_sentence(
        since(reason, main),
        "Because the doctor is tired, the children play in the garden.",
        "Weil der Arzt müde ist, spielen die Kinder im Garten.",
        "Comme le médecin est fatigué, les enfants jouent dans le jardin.",
        "Como el médico está cansado, los niños juegan en el jardín.",
    )


def test_report_with_dass_and_perfect_with_sein():
    c = Clause(pronoun("she"), iverb("run"), perfect=True)
    assert_sentence(
        report(pronoun("I"), REPORTING_VERBS[1], c),
        "I know that she has run.",
        "Ich weiß, dass sie gelaufen ist.",
        "Je sais qu'elle a couru.",
        "Sé que ha corrido.",
    )


def test_question_is_verb_first_in_german():
    c = Clause(the("doctor"), tverb("call"), obj=the("student"), perfect=True)
    assert_sentence(
        question(c),
        "Has the doctor called the student?",
        "Hat der Arzt den Studenten angerufen?",
        "Est-ce que le médecin a appelé l'étudiant ?",
        "¿El médico ha llamado al estudiante?",
    )
    c = Clause(the("cat", plural=True), tverb("eat"), obj=the("fish"))
    assert_sentence(
        question(c),
        "Do the cats eat the fish?",
        "Essen die Katzen den Fisch?",
        "Est-ce que les chats mangent le poisson ?",
        "¿Los gatos comen el pescado?",
    )


def test_negation_and_dative_plural_in_prepositional_phrase():
    c = Clause(
        the("girl"),
        iverb("dance"),
        negated=True,
        pp=PrepPhrase(PREPOSITIONS["with"], the("child", plural=True, count=3)),
    )
    assert_sentence(
        statement(c),
        "The girl does not dance with the three children.",
        "Das Mädchen tanzt nicht mit den drei Kindern.",
        "La fille ne danse pas avec les trois enfants.",
        "La chica no baila con los tres niños.",
    )


def test_numbers_agree_with_the_noun():
    c = Clause(pronoun("we"), tverb("see"), obj=NounPhrase(noun("house"), definite=False, plural=True, count=21))
    assert_sentence(
        statement(c),
        "We see twenty-one houses.",
        "Wir sehen einundzwanzig Häuser.",
        "Nous voyons vingt et une maisons.",
        "Vemos veintiuna casas.",
    )
    c = Clause(the("student", plural=True, count=231), tverb("read"), obj=the("book"))
    assert_sentence(
        statement(c),
        "The two hundred and thirty-one students read the book.",
        "Die zweihunderteinunddreißig Studenten lesen das Buch.",
        "Les deux cent trente et un étudiants lisent le livre.",
        "Los doscientos treinta y un estudiantes leen el libro.",
    )
    assert number_word(581, "es", "f") == "quinientas ochenta y una"
    assert number_word(81, "fr", "f") == "quatre-vingt-une"
    assert number_word(21, "es", "m") == "veintiún"


def test_french_elision_does_not_touch_huit_and_onze():
    c = Clause(the("doctor"), None, predicate=adj("tired"))
    reason = Clause(NounPhrase(noun("student"), definite=False, plural=True, count=8), iverb("sleep"))
    assert because(c, reason).fr == "Le médecin est fatigué parce que huit étudiants dorment."
    reason = Clause(NounPhrase(noun("student"), definite=False), iverb("sleep"))
    assert because(c, reason).fr == "Le médecin est fatigué parce qu'un étudiant dort."


def test_parts_that_do_not_fit_are_rejected():
    with pytest.raises(ValueError):
        Clause(the("doctor"), tverb("read"))  # transitive verb without object
    with pytest.raises(ValueError):
        NounPhrase(noun("book"), definite=False, plural=True)  # bare indefinite plural
    with pytest.raises(ValueError):
        question(Clause(the("doctor"), iverb("sleep"), negated=True))
    with pytest.raises(ValueError):
        statement(Clause(the("doctor"), iverb("sleep")), front_adverbial=True)
