import pickle

import pytest

from speechxl.data.vocab import Vocab, train_vocab

TEXTS = [
    "the small dog sees the red house",
    "der kleine hund sieht das rote haus",
    "a big cat sleeps under the old table",
    "eine grosse katze schlaeft unter dem alten tisch",
    "three friends walk to the station every morning",
    "drei freunde gehen jeden morgen zum bahnhof",
] * 4
LANGS = ["en", "de"]


@pytest.fixture(scope="module")
def spm_prefix(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("spm") / "spm"
    train_vocab(TEXTS, prefix, 60, LANGS)
    return prefix


@pytest.fixture(scope="module")
def vocab(spm_prefix):
    return Vocab.load(f"{spm_prefix}.model")


def test_special_ids_follow_fairseq_order(vocab):
    assert (vocab.bos, vocab.pad, vocab.eos, vocab.unk) == (0, 1, 2, 3)
    assert [vocab.piece(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]


def test_tags_are_single_pieces_with_stable_ids(vocab):
    assert [vocab.tag(t) for t in ["audio", "asr", "ast", "en", "de"]] == [4, 5, 6, 7, 8]
    assert vocab.has_tag("de") and not vocab.has_tag("fr")
    with pytest.raises(KeyError, match="<fr>"):
        vocab.tag("fr")
    ids = vocab.encode("<ast> der hund")
    assert vocab.tag("ast") in ids and ids.count(vocab.tag("ast")) == 1


def test_encode_decode_round_trip_drops_tags_and_specials(vocab):
    for text in TEXTS[:6]:
        ids = vocab.encode(text)
        assert vocab.bos not in ids and vocab.eos not in ids
        assert vocab.decode(ids) == text
    assert vocab.decode([vocab.tag("de")] + vocab.encode("das rote haus") + [vocab.eos, vocab.pad]) == "das rote haus"
    assert len(vocab) == 60


def test_too_large_size_falls_back_and_too_small_is_a_clear_error(tmp_path):
    small = train_vocab(TEXTS, tmp_path / "big", 5000, LANGS)
    assert 9 < len(small) < 5000
    assert small.decode(small.encode(TEXTS[0])) == TEXTS[0]
    with pytest.raises(ValueError, match="larger vocab size"):
        train_vocab(TEXTS, tmp_path / "tiny", 12, LANGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.model", "big.vocab"]


def test_training_is_deterministic(vocab, tmp_path):
    again = train_vocab(TEXTS, tmp_path / "spm", 60, LANGS)
    assert [again.piece(i) for i in range(len(again))] == [vocab.piece(i) for i in range(len(vocab))]


def test_imported_dictionary_remaps_ids_and_unknown_pieces(vocab, spm_prefix):
    ordinary = [vocab.piece(i) for i in range(9, len(vocab))]
    dropped = vocab.piece(vocab.encode("hund")[-1])
    # A fairseq-style dictionary: specials first, then pieces in another order, one piece missing.
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "<de>", "<en>"] + [p for p in reversed(ordinary) if p != dropped]
    imported = Vocab.load(f"{spm_prefix}.model", pieces=pieces)
    assert len(imported) == len(pieces) and imported.tag("de") == 4 and imported.eos == 2
    text = "das rote haus"
    ids = imported.encode(text)
    assert [imported.piece(i) for i in ids] == [vocab.piece(i) for i in vocab.encode(text)]
    assert imported.decode(ids) == text
    assert imported.encode("hund")[-1] == imported.unk


def test_pickles_for_dataloader_workers(vocab):
    clone = pickle.loads(pickle.dumps(vocab))
    assert clone.encode(TEXTS[1]) == vocab.encode(TEXTS[1]) and len(clone) == len(vocab)
