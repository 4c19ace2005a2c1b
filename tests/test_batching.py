"""Examples, collate, dynamic batches, DDP sharding, resume, multitask mixing (speechxl.data.batching)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import soundfile as sf
import torch

from speechxl.data.audio import fbank_frames, load_audio
from speechxl.data.batching import (
    BatchLoader,
    DynamicBatchSampler,
    FeatureConfig,
    MultitaskSampler,
    SpeechTextDataset,
    build_loader,
    length_batches,
    padding_efficiency,
)
from speechxl.data.manifest import read_manifest, write_manifest
from speechxl.data.vocab import train_vocab
from speechxl.errors import DataError

SENTENCES = [
    ("the red house is small", "das rote haus ist klein"),
    ("two dogs see the cat", "zwei hunde sehen die katze"),
    ("i want to buy three apples", "ich will drei äpfel kaufen"),
    ("the teacher reads a book", "der lehrer liest ein buch"),
    ("we went home yesterday", "wir sind gestern nach hause gegangen"),
    ("she has seven green birds", "sie hat sieben grüne vögel"),
]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    texts = [t for pair in SENTENCES for t in pair] * 5
    return train_vocab(texts, tmp_path_factory.mktemp("vocab") / "spm", vocab_size=80, langs=["en", "de"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A manifest of 6 utterances with distinct lengths (0.1–0.35 s), the last one as a talk slice."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "wav").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, (en, de) in enumerate(SENTENCES):
        n = 1600 + 800 * i
        wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
        if i < 5:
            sf.write(root / "wav" / f"u{i}.wav", wave, 16000, subtype="FLOAT")
            audio = f"wav/u{i}.wav"
        else:  # a slice of a longer "talk"
            talk = np.concatenate([np.zeros(500, np.float32), wave])
            sf.write(root / "wav" / "talk.wav", talk, 16000, subtype="FLOAT")
            audio = f"wav/talk.wav:500:{n}"
        rows.append(
            dict(
                id=f"u{i}",
                audio=audio,
                n_frames=n,
                tgt_text=de,
                speaker="spk",
                src_text=en,
                src_lang="en",
                tgt_lang="de",
            )
        )
    write_manifest(root / "train.tsv", rows)
    return root / "train.tsv"


def test_st_example_and_collate_exact_tensors(corpus, vocab):
    ds = SpeechTextDataset.from_manifest(corpus, "st", vocab, features=FeatureConfig(features="wave"))
    batch = ds.collate([ds[0], ds[1]])
    t0 = [vocab.tag("de")] + vocab.encode("das rote haus ist klein") + [vocab.eos]
    t1 = [vocab.tag("de")] + vocab.encode("zwei hunde sehen die katze") + [vocab.eos]
    width = max(len(t0), len(t1))
    pad = lambda seq: seq + [vocab.pad] * (width - len(seq))  # noqa: E731
    assert torch.equal(batch["target"], torch.tensor([pad(t0), pad(t1)]))
    assert torch.equal(batch["prev_target"], torch.tensor([pad([vocab.eos] + t0[:-1]), pad([vocab.eos] + t1[:-1])]))
    assert torch.equal(batch["target_lengths"], torch.tensor([len(t0), len(t1)]))
    assert batch["ntokens"] == len(t0) + len(t1)
    assert batch["task"] == "st" and batch["ids"] == ["u0", "u1"]
    assert batch["transcript"] is None and batch["prev_transcript"] is None and batch["transcript_lengths"] is None
    # audio: raw wave, zero padded, mask True at padding
    wave0 = load_audio(str(corpus.parent / "wav/u0.wav"))
    assert batch["audio"].shape == (2, 2400) and batch["audio"].dtype == torch.float32
    assert torch.equal(batch["audio_lengths"], torch.tensor([1600, 2400]))
    assert torch.equal(batch["audio"][0, :1600], torch.from_numpy(wave0))
    assert torch.all(batch["audio"][0, 1600:] == 0)
    assert batch["audio_padding_mask"].dtype == torch.bool
    assert batch["audio_padding_mask"][0].sum() == 800 and not batch["audio_padding_mask"][1].any()


def test_tasks_fill_their_documented_keys(corpus, vocab):
    fbank = FeatureConfig(features="fbank", cmvn=True)
    asr = SpeechTextDataset.from_manifest(corpus, "asr", vocab, features=fbank)
    b = asr.collate([asr[5], asr[2]])  # u5 is the talk slice
    assert b["audio"].shape == (2, fbank_frames(5600), 80)
    assert torch.equal(b["audio_lengths"], torch.tensor([fbank_frames(5600), fbank_frames(3200)]))
    assert b["target"] is None and b["transcript"][0, 0] == vocab.tag("en")
    assert b["ntokens"] == int(b["transcript_lengths"].sum())
    mt = SpeechTextDataset.from_manifest(corpus, "mt", vocab)
    b = mt.collate([mt[0]])
    assert b["audio"] is None and b["audio_padding_mask"] is None
    assert b["transcript"].tolist() == [[vocab.tag("en")] + vocab.encode("the red house is small") + [vocab.eos]]
    assert b["target"][0, 0] == vocab.tag("de")
    tri = SpeechTextDataset.from_manifest(corpus, "triplet", vocab, features=FeatureConfig(features="wave"))
    b = tri.collate([tri[1]])
    assert all(b[k] is not None for k in ("audio", "transcript", "target", "prev_transcript", "prev_target"))
    no_tag = SpeechTextDataset.from_manifest(corpus, "st", vocab, prepend_lang_tag=False)
    assert no_tag.collate([no_tag[0]])["target"].tolist() == [vocab.encode("das rote haus ist klein") + [vocab.eos]]


def test_slice_row_loads_the_slice(corpus, vocab):
    ds = SpeechTextDataset.from_manifest(corpus, "st", vocab, features=FeatureConfig(features="wave"))
    talk = load_audio(str(corpus.parent / "wav/talk.wav"))
    assert torch.equal(ds[5].audio, torch.from_numpy(talk[500 : 500 + 5600]))


def test_specaugment_only_in_training_and_seeded_per_epoch(corpus, vocab):
    cfg = FeatureConfig(features="fbank", specaugment="ld")
    train = SpeechTextDataset.from_manifest(corpus, "st", vocab, features=cfg, train=True, seed=3)
    valid = SpeechTextDataset.from_manifest(corpus, "st", vocab, features=cfg, train=False)
    assert torch.equal(valid[(1, 4)].audio, valid[(2, 4)].audio)
    assert torch.equal(train[(1, 4)].audio, train[(1, 4)].audio)
    assert not torch.equal(train[(1, 4)].audio, train[(2, 4)].audio)


def test_feature_cache_gives_identical_features_without_rereading_audio(tmp_path, corpus, vocab):
    import shutil

    copy = tmp_path / "corpus"
    shutil.copytree(corpus.parent, copy)
    cfg = FeatureConfig(features="fbank", specaugment="ld", cache=True)
    cached = SpeechTextDataset.from_manifest(copy / "train.tsv", "st", vocab, features=cfg, train=True, seed=3)
    plain = SpeechTextDataset.from_manifest(
        corpus, "st", vocab, features=FeatureConfig(specaugment="ld"), train=True, seed=3
    )
    first = [cached[(1, i)].audio for i in range(len(cached))]
    shutil.rmtree(copy / "wav")  # a second epoch must come from memory
    for i in range(len(cached)):
        assert torch.equal(first[i], plain[(1, i)].audio)
        assert torch.equal(cached[(2, i)].audio, plain[(2, i)].audio)  # SpecAugment still redrawn per epoch


def test_empty_text_is_a_counted_skip(tmp_path, corpus, vocab):
    rows = read_manifest(corpus)
    rows[1]["tgt_text"] = " "
    rows[3]["src_text"] = ""
    write_manifest(tmp_path / "m.tsv", rows)
    st = SpeechTextDataset.from_manifest(tmp_path / "m.tsv", "st", vocab)
    assert len(st) == 5 and "u1" not in st.ids and st.skipped == {"empty tgt_text": 1}
    tri = SpeechTextDataset.from_manifest(tmp_path / "m.tsv", "triplet", vocab)
    assert len(tri) == 4 and sum(tri.skipped.values()) == 2
    assert "1 row(s) with empty src_text" in tri.skip_report()


def test_unknown_language_and_bad_audio_name_manifest_line(tmp_path, corpus, vocab):
    rows = read_manifest(corpus)
    rows[2]["tgt_lang"] = "fr"
    write_manifest(tmp_path / "m.tsv", rows)
    with pytest.raises(DataError, match=r"m\.tsv:4: tgt_lang 'fr'"):
        SpeechTextDataset.from_manifest(tmp_path / "m.tsv", "st", vocab)
    rows = read_manifest(corpus)
    rows[0]["audio"] = "wav/missing.wav"
    write_manifest(corpus.parent / "missing.tsv", rows)
    ds = SpeechTextDataset.from_manifest(corpus.parent / "missing.tsv", "st", vocab)
    with pytest.raises(DataError, match=r"missing\.tsv:2: audio .*missing\.wav"):
        ds[0]


def realistic_sizes(n: int, seed: int = 0) -> np.ndarray:
    """SynthST-like durations: 5–15 words at ~2.5 words/s, speed varied ±25 %, in 16 kHz samples."""
    rng = np.random.default_rng(seed)
    words = rng.integers(5, 16, size=n)
    seconds = words / 2.5 * rng.uniform(0.75, 1.25, size=n) + rng.uniform(0.2, 0.6, size=n)
    return (seconds * 16000).astype(np.int64)


def test_dynamic_batches_respect_budget_and_cover_each_example_once():
    sizes = np.random.default_rng(1).integers(5, 400, size=500)
    sampler = DynamicBatchSampler(sizes, max_tokens=2000, max_sentences=16, seed=1)
    seen = collections.Counter()
    for batch in sampler:
        assert max(sizes[batch]) * len(batch) <= 2000 and len(batch) <= 16
        seen.update(batch)
    assert sorted(seen) == list(range(500)) and set(seen.values()) == {1}
    assert sampler.state_dict() == {"epoch": 2, "consumed": 0}


def test_oversize_examples_are_counted_not_batched():
    sampler = DynamicBatchSampler([10, 20, 5000, 30], max_tokens=100)
    assert sampler.skipped_oversize == 1
    assert sorted(i for b in sampler for i in b) == [0, 1, 3]


def test_epoch_orders_differ_and_seed_reproduces():
    sizes = realistic_sizes(400)
    a = DynamicBatchSampler(sizes, max_tokens=500_000, seed=7)
    b = DynamicBatchSampler(sizes, max_tokens=500_000, seed=7)
    epoch1, epoch2 = list(a), list(a)
    assert epoch1 != epoch2
    assert sorted(map(tuple, epoch1)) == sorted(map(tuple, epoch2))  # same batches, other order
    assert list(b) == epoch1 and list(b) == epoch2
    assert list(DynamicBatchSampler(sizes, max_tokens=500_000, seed=8)) != epoch1


def test_ddp_shards_equal_length_and_cover_all_batches():
    sizes = realistic_sizes(300)
    world = 4
    shards = [DynamicBatchSampler(sizes, max_tokens=400_000, seed=2, rank=r, world_size=world) for r in range(world)]
    n_batches = len(shards[0].batches)
    assert n_batches % world != 0  # the padding path is exercised
    lists = [s.epoch_batches(1) for s in shards]
    assert len({len(x) for x in lists}) == 1 and len(lists[0]) == -(-n_batches // world)
    flat = [tuple(b) for x in lists for b in x]
    assert set(flat) == set(map(tuple, shards[0].batches))  # every batch on some rank
    repeats = len(flat) - len(set(flat))
    assert repeats == len(flat) - n_batches  # only the padding repeats a batch


def test_resume_yields_identical_remaining_sequence():
    sizes = realistic_sizes(300)
    full = DynamicBatchSampler(sizes, max_tokens=300_000, seed=5)
    reference = list(full) + list(full)  # epochs 1 and 2
    run = DynamicBatchSampler(sizes, max_tokens=300_000, seed=5)
    steps = iter(run)
    head = [next(steps) for _ in range(7)]
    state = run.state_dict()
    assert state == {"epoch": 1, "consumed": 7}
    resumed = DynamicBatchSampler(sizes, max_tokens=300_000, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # a DistributedSampler-style loop must not rewind the resumed epoch
    assert head + list(resumed) + list(resumed) == reference


def test_multitask_ratios_determinism_and_resume():
    def make() -> MultitaskSampler:
        samplers = {
            "st": DynamicBatchSampler(np.full(2000, 10), max_tokens=10, seed=1),  # 2000 single batches
            "mt": DynamicBatchSampler(np.full(300, 10), max_tokens=10, seed=2),
            "ext_mt": DynamicBatchSampler(np.full(50, 10), max_tokens=10, seed=3),
        }
        return MultitaskSampler(samplers, {"st": 2.0, "mt": 1.0, "ext_mt": 1.0}, seed=9)

    sampler = make()
    epoch = list(sampler)
    counts = collections.Counter(task for task, _ in epoch)
    assert counts["st"] == 2000  # the epoch is one pass over the first task
    total = len(epoch)
    assert abs(counts["st"] / total - 0.5) < 0.03
    assert abs(counts["mt"] / total - 0.25) < 0.03 and abs(counts["ext_mt"] / total - 0.25) < 0.03
    assert sampler.state_dict()["epoch"] == 2
    assert list(make()) == epoch
    run = make()
    steps = iter(run)
    head = [next(steps) for _ in range(1234)]
    resumed = make()
    resumed.load_state_dict(run.state_dict())
    assert head + list(resumed) == epoch


def test_padding_efficiency_on_synthst_like_lengths():
    sizes = realistic_sizes(3000)
    wave = DynamicBatchSampler(sizes, max_tokens=1_000_000, seed=1)
    assert padding_efficiency(wave.batches, sizes) >= 0.9
    frames = np.array([fbank_frames(int(n)) for n in sizes])
    assert padding_efficiency(length_batches(frames, max_tokens=4000), frames) >= 0.9
    assert padding_efficiency([[0, 1]], np.array([1, 3])) == pytest.approx(4 / 6)


def test_loader_yields_sampler_order_and_resumes_after_prefetch(corpus, vocab):
    ds = SpeechTextDataset.from_manifest(corpus, "st", vocab, features=FeatureConfig(features="fbank"))
    one_per_batch = dict(max_sentences=1, max_tokens=0, seed=4)
    expected_ids = [[ds.ids[i] for i in b] for b in DynamicBatchSampler(ds.sizes, **one_per_batch)]
    sampler = DynamicBatchSampler(ds.sizes, **one_per_batch)
    loader = build_loader(ds, sampler, num_workers=1)
    got = []
    for batch in loader:
        got.append(batch["ids"])
        if len(got) == 2:
            break
    assert sampler.state_dict() == {"epoch": 1, "consumed": 2}  # the worker prefetched more, not counted
    resumed = DynamicBatchSampler(ds.sizes, **one_per_batch)
    resumed.load_state_dict(loader.state_dict())
    rest = [b["ids"] for b in BatchLoader(ds, resumed)]
    assert got + rest == expected_ids
    assert resumed.state_dict() == {"epoch": 2, "consumed": 0}


def test_multitask_loader_batches_are_single_task(corpus, vocab):
    wave = FeatureConfig(features="wave")
    datasets = {t: SpeechTextDataset.from_manifest(corpus, t, vocab, features=wave) for t in ("st", "asr", "mt")}
    samplers = {t: DynamicBatchSampler(d.sizes, max_tokens=0, max_sentences=2, seed=1) for t, d in datasets.items()}
    sampler = MultitaskSampler(samplers, {"st": 1, "asr": 1, "mt": 1}, seed=3)
    batches = list(build_loader(datasets, sampler))
    assert {b["task"] for b in batches} <= {"st", "asr", "mt"} and len({b["task"] for b in batches}) > 1
    for b in batches:
        assert (b["audio"] is None) == (b["task"] == "mt")
        assert (b["target"] is None) == (b["task"] == "asr")
