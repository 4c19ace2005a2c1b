"""`speechxl prep` on tiny MuST-C / CoVoST 2 corpora written here with soundfile."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from speechxl.cli import main
from speechxl.data.corpus.covost2 import prepare_covost2
from speechxl.data.corpus.mustc import prepare_mustc
from speechxl.data.manifest import read_manifest, split_audio_slice, write_manifest
from speechxl.data.vocab import Vocab
from speechxl.errors import DataError

SR = 16000
EN = [
    "the dog sees the house",
    "a cat sleeps under the table",
    "three friends walk home",
    "the red car is fast",
    "we eat bread every morning",
]
DE = [
    "der hund sieht das haus",
    "eine katze schlaeft unter dem tisch",
    "drei freunde gehen nach hause",
    "das rote auto ist schnell",
    "wir essen jeden morgen brot",
]


def tone(seconds: float, freq: float, rate: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_split(root: Path, split: str, talks: dict, en: list[str], de: list[str]) -> dict:
    """talks: name -> (rate, channels, [(offset_s, duration_s, freq)], total_s). Returns the 16 kHz segments."""
    base = root / "en-de" / "data" / split
    (base / "wav").mkdir(parents=True)
    (base / "txt").mkdir(parents=True)
    yaml_lines, expected = [], {}
    for name, (rate, channels, segments, total) in talks.items():
        wave16 = np.zeros(round(total * SR), dtype=np.float32)
        for offset, duration, freq in segments:
            start = round(offset * SR)
            piece = tone(duration, freq)[: len(wave16) - start]
            wave16[start : start + len(piece)] = piece
            expected[(name, offset)] = piece
            yaml_lines.append(
                f"- {{duration: {duration}, offset: {offset}, rW: 0, uW: 0, speaker_id: spk.{name}, wav: {name}.wav}}\n"
            )
        if rate is None:  # a talk whose wav file is missing
            continue
        wave = wave16 if rate == SR else soxr.resample(wave16, SR, rate)
        if channels == 2:
            wave = np.stack([wave, wave * 0.5], axis=1)
        sf.write(base / "wav" / f"{name}.wav", wave, rate, subtype="PCM_16")
    (base / "txt" / f"{split}.yaml").write_text("".join(yaml_lines))
    (base / "txt" / f"{split}.en").write_text("".join(t + "\n" for t in en))
    (base / "txt" / f"{split}.de").write_text("".join(t + "\n" for t in de))
    return expected


@pytest.fixture
def mustc(tmp_path):
    root = tmp_path / "mustc"
    expected = write_split(
        root,
        "train",
        {
            "ted_1": (SR, 1, [(0.25, 0.5, 220.0), (1.0, 0.75, 330.0), (2.5, 1.0, 440.0)], 3.0),  # last: past end
            "ted_2": (44100, 2, [(0.1, 0.6, 250.0), (0.9, 0.8, 300.0)], 2.0),
        },
        EN,
        DE[:4] + [""],
    )  # one empty translation
    # ted_3's second segment ends 5 ms past the talk (trimmed); ted_4's wav file is missing.
    write_split(
        root,
        "dev",
        {"ted_3": (SR, 1, [(0.0, 0.5, 200.0), (0.6, 0.405, 300.0)], 1.0), "ted_4": (None, 1, [(0.0, 0.5, 200.0)], 1.0)},
        EN[:3],
        DE[:3],
    )
    write_split(root, "tst-COMMON", {"ted_5": (SR, 1, [(0.5, 1.2, 200.0), (0.0, 0.4, 150.0)], 2.0)}, EN[:2], DE[:2])
    return root, expected


def slice_of(manifest: Path, row: dict) -> np.ndarray:
    path, offset, frames = split_audio_slice(row["audio"])
    assert int(row["n_frames"]) == frames
    return sf.read(manifest.parent / path, start=offset, frames=frames, dtype="float32")[0]


def test_mustc_happy_path_slices_conversion_and_skips(mustc, tmp_path):
    root, expected = mustc
    out = tmp_path / "out"
    report = prepare_mustc(root, "de", out, vocab_size=80, ext_mt=None, min_seconds=0.1, max_seconds=30.0)
    train = read_manifest(out / "train.tsv")
    assert [r["id"] for r in train] == ["ted_1_0", "ted_1_1", "ted_2_0"]
    assert train[0] == {
        "id": "ted_1_0",
        "audio": f"{(root / 'en-de/data/train/wav/ted_1.wav').resolve()}:4000:8000",
        "n_frames": "8000",
        "tgt_text": DE[0],
        "speaker": "spk.ted_1",
        "src_text": EN[0],
        "src_lang": "en",
        "tgt_lang": "de",
    }
    # In-place slices read back exactly the segment written (up to 16-bit quantisation).
    np.testing.assert_allclose(slice_of(out / "train.tsv", train[1]), expected[("ted_1", 1.0)], atol=1e-4)
    # The 44.1 kHz stereo talk was converted once into OUT; its slice is the 16 kHz downmix (L + 0.5 L) / 2.
    assert train[2]["audio"].startswith("audio16k/train/ted_2.wav:")
    assert sf.info(out / "audio16k/train/ted_2.wav").samplerate == SR
    assert sf.info(out / "audio16k/train/ted_2.wav").channels == 1
    got, want = slice_of(out / "train.tsv", train[2]), 0.75 * expected[("ted_2", 0.1)]
    np.testing.assert_allclose(got[200:-200], want[200:-200], atol=2e-3)
    assert report["audio"]["converted_to_16k_mono"] == 1
    dev = read_manifest(out / "dev.tsv")
    assert [(r["id"], r["n_frames"]) for r in dev] == [("ted_3_0", "8000"), ("ted_3_1", "6400")]
    assert report["audio"]["trimmed_to_talk_end"] == {"dev": 1}

    skipped = {(s["split"], s["id"]): s for s in report["skipped"]}
    past_end = skipped["train", "ted_1_2"]
    assert past_end["reason"] == "past_end_of_audio" and past_end["line"] == 3
    assert past_end["file"].endswith("train.yaml")
    assert skipped["train", "ted_2_1"]["reason"] == "empty_text"
    assert skipped["dev", "ted_4_0"]["reason"] == "audio_missing"
    assert report["splits"]["train"] == {
        "kept": 3,
        "skipped": 2,
        "skipped_by_reason": {"empty_text": 1, "past_end_of_audio": 1},
    }
    # Ids follow fairseq: numbered after sorting a talk's segments by offset.
    tst = read_manifest(out / "tst-COMMON.tsv")
    assert [(r["id"], split_audio_slice(r["audio"])[1]) for r in tst] == [("ted_5_0", 0), ("ted_5_1", 8000)]
    assert json.loads((out / "prep_report.json").read_text()) == report

    vocab = Vocab.load(out / "spm.model")
    assert vocab.has_tag("en") and vocab.has_tag("de") and vocab.has_tag("audio")
    assert vocab.decode(vocab.encode(DE[0])) == DE[0]


def test_mustc_rerun_is_idempotent_and_reuses_conversion(mustc, tmp_path):
    root, _ = mustc
    out = tmp_path / "out"
    prepare_mustc(root, "de", out, 80, None, 0.1, 30.0)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    converted = out / "audio16k/train/ted_2.wav"
    mtime = converted.stat().st_mtime_ns
    prepare_mustc(root, "de", out, 80, None, 0.1, 30.0)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert converted.stat().st_mtime_ns == mtime
    assert sorted(before) == ["dev.tsv", "prep_report.json", "spm.model", "spm.vocab", "train.tsv", "tst-COMMON.tsv"]


def test_mustc_length_filter_and_ext_mt_and_vocab_fallback(mustc, tmp_path):
    root, _ = mustc
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "train.en").write_text("good morning\n\nthank you very much\n")
    (ext / "train.de").write_text("guten morgen\nhallo\nvielen dank\n")
    out = tmp_path / "out"
    report = prepare_mustc(root, "de", out, vocab_size=4000, ext_mt=ext, min_seconds=0.55, max_seconds=0.7)
    reasons = {(s["split"], s["id"]): s["reason"] for s in report["skipped"]}
    assert reasons["train", "ted_1_0"] == "too_short" and reasons["train", "ted_1_1"] == "too_long"
    assert reasons["tst-COMMON", "ted_5_0"] == "too_short"
    assert ("tst-COMMON", "ted_5_1") not in reasons  # evaluation splits have no upper length limit
    assert [r["id"] for r in read_manifest(out / "train.tsv")] == ["ted_2_0"]
    ext_rows = read_manifest(out / "ext_mt.tsv")
    assert [(r["src_text"], r["tgt_text"], r["audio"], r["n_frames"]) for r in ext_rows] == [
        ("good morning", "guten morgen", "", "0"),
        ("thank you very much", "vielen dank", "", "0"),
    ]
    assert reasons["ext_mt", "ext_mt_1"] == "empty_text"
    assert report["vocab"]["size"] < 4000 and "4000" in report["notes"][0]
    assert Vocab.load(out / "spm.model").decode(Vocab.load(out / "spm.model").encode("vielen dank")) == "vielen dank"


def test_mustc_yaml_text_count_mismatch_names_files(mustc, tmp_path):
    root, _ = mustc
    txt = root / "en-de/data/dev/txt"
    (txt / "dev.de").write_text(DE[0] + "\n")
    with pytest.raises(DataError, match="dev.yaml has 3 segments") as err:
        prepare_mustc(root, "de", tmp_path / "out", 80, None, 0.1, 30.0)
    assert err.value.path == str(txt / "dev.de")


def test_mustc_tab_in_text_is_an_error_at_its_line(mustc, tmp_path):
    root, _ = mustc
    txt = root / "en-de/data/tst-COMMON/txt"
    (txt / "tst-COMMON.en").write_text(EN[0] + "\n" + "a\ttab\n")
    with pytest.raises(DataError, match="tab") as err:
        prepare_mustc(root, "de", tmp_path / "out", 80, None, 0.1, 30.0)
    assert (err.value.path, err.value.line) == (str(txt / "tst-COMMON.en"), 2)


# --- CoVoST 2 -------------------------------------------------------------------------------------------------

VALIDATED_HEADER = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"]
COVOST_HEADER = ["path", "sentence", "translation", "client_id", "split"]


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.write_text("".join("\t".join(r) + "\n" for r in [header] + rows), encoding="utf-8")


@pytest.fixture
def covost(tmp_path):
    src = tmp_path / "cv" / "en"
    (src / "clips").mkdir(parents=True)
    clips = {f"common_voice_en_{i}.mp3": (0.4 + 0.1 * i, 200.0 + 50 * i) for i in range(6)}
    for name, (seconds, freq) in clips.items():
        sf.write(src / "clips" / name, soxr.resample(tone(seconds, freq), SR, 48000), 48000, format="MP3")
    (src / "clips" / "common_voice_en_6.mp3").write_bytes(b"\x00not an mp3" * 64)  # corrupt
    splits = ["train", "train_covost", "dev", "test", "train", "train", "dev", "test"]  # 7: clip missing
    sentences = [EN[i % 5] for i in range(8)]
    sentences[0] = 'He said "hello" to me'  # quotes: Common Voice TSVs are QUOTE_NONE
    validated = [
        [f"client{i}", f"common_voice_en_{i}.mp3", sentences[i], "2", "0", "", "", ""] for i in range(8) if i != 5
    ]  # 5: not in validated.tsv
    write_tsv(src / "validated.tsv", VALIDATED_HEADER, validated)
    covost_rows = [[f"common_voice_en_{i}.mp3", sentences[i], DE[i % 5], f"client{i}", splits[i]] for i in range(8)]
    write_tsv(src / "covost_v2.en_de.tsv", COVOST_HEADER, covost_rows)
    return tmp_path / "cv", clips


def test_covost2_happy_path_and_counted_skips(covost, tmp_path):
    root, clips = covost
    out = tmp_path / "out"
    report = prepare_covost2(root, "en", "de", out, vocab_size=70, ext_mt=None, min_seconds=0.1, max_seconds=30.0)
    train = read_manifest(out / "train.tsv")
    assert [r["id"] for r in train] == ["common_voice_en_0", "common_voice_en_1", "common_voice_en_4"]
    first = train[0]
    assert first["src_text"] == 'He said "hello" to me' and first["tgt_text"] == DE[0]
    assert (first["speaker"], first["src_lang"], first["tgt_lang"]) == ("client0", "en", "de")
    assert first["audio"] == "clips16k/common_voice_en_0.wav"
    wave, rate = sf.read(out / first["audio"], dtype="float32")
    assert rate == SR and int(first["n_frames"]) == len(wave)
    assert abs(len(wave) - 0.4 * SR) < 0.06 * SR  # mp3 encoder padding aside, the clip's length
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SR / len(wave) - 200.0) < 10  # the tone that was written
    assert [r["id"] for r in read_manifest(out / "dev.tsv")] == ["common_voice_en_2"]
    assert [r["id"] for r in read_manifest(out / "test.tsv")] == ["common_voice_en_3"]

    skipped = {s["id"]: s for s in report["skipped"]}
    assert skipped["common_voice_en_5"]["reason"] == "not_in_validated_tsv"
    assert skipped["common_voice_en_5"]["line"] == 7
    assert skipped["common_voice_en_6"]["reason"] == "audio_unreadable"
    assert skipped["common_voice_en_6"]["file"].endswith("common_voice_en_6.mp3")
    assert skipped["common_voice_en_7"]["reason"] == "audio_missing"
    assert report["splits"]["train"]["skipped"] == 1 and report["splits"]["dev"]["skipped"] == 1
    assert report["splits"]["test"]["skipped_by_reason"] == {"audio_missing": 1}


def test_covost2_resumes_from_converted_clips_and_accepts_src_dir(covost, tmp_path):
    root, _ = covost
    out = tmp_path / "out"
    first = prepare_covost2(root, "en", "de", out, 70, None, 0.1, 30.0)
    clip, kept = out / "clips16k/common_voice_en_1.wav", out / "clips16k/common_voice_en_0.wav"
    mtime = kept.stat().st_mtime_ns
    clip.unlink()  # as if the run had been interrupted before this clip
    again = prepare_covost2(root / "en", "en", "de", out, 70, None, 0.1, 30.0, jobs=1)
    assert clip.is_file() and kept.stat().st_mtime_ns == mtime
    assert again == first


def test_covost2_malformed_row_names_file_and_line(covost, tmp_path):
    root, _ = covost
    tsv = root / "en" / "covost_v2.en_de.tsv"
    lines = tsv.read_text().splitlines()
    lines[3] += "\tstray column"
    tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="expected 5 tab-separated columns, found 6") as err:
        prepare_covost2(root, "en", "de", tmp_path / "out", 70, None, 0.1, 30.0)
    assert (err.value.path, err.value.line) == (str(tsv), 4)


def test_cli_prep_reports_data_errors_cleanly(covost, tmp_path, capsys):
    root, _ = covost
    with pytest.raises(SystemExit, match="no validated.tsv"):
        main(
            [
                "prep",
                "covost2",
                "--root",
                str(tmp_path / "nowhere"),
                "--src",
                "en",
                "--tgt",
                "de",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    main(
        [
            "prep",
            "covost2",
            "--root",
            str(root),
            "--src",
            "en",
            "--tgt",
            "de",
            "--out",
            str(tmp_path / "out"),
            "--vocab-size",
            "70",
            "--jobs",
            "1",
        ]
    )
    assert "train" in capsys.readouterr().out and (tmp_path / "out" / "train.tsv").is_file()


# --- --exclude-text: sentences evaluated elsewhere are kept out of this corpus ----------------------------------


def held_out_manifest(path: Path, texts: list[str]) -> Path:
    """A text-only manifest holding `texts` as source texts, like a dev or test split of another prep."""
    write_manifest(
        path,
        [
            {
                "id": f"held_{i}",
                "audio": "",
                "n_frames": 0,
                "tgt_text": "x",
                "speaker": "",
                "src_text": text,
                "src_lang": "en",
                "tgt_lang": "de",
            }
            for i, text in enumerate(texts)
        ],
    )
    return path


def test_mustc_exclude_text_drops_and_reports_every_split(mustc, tmp_path):
    root, _ = mustc
    prepare_mustc(root, "de", tmp_path / "full", 80, None, 0.1, 30.0)
    held = [held_out_manifest(tmp_path / "dev.tsv", [EN[0]]), held_out_manifest(tmp_path / "tst.tsv", [EN[2], EN[0]])]
    out = tmp_path / "out"
    report = prepare_mustc(root, "de", out, 80, None, 0.1, 30.0, exclude_text=held)
    dropped = {}
    for split in ("train", "dev", "tst-COMMON"):
        full, kept = read_manifest(tmp_path / "full" / f"{split}.tsv"), read_manifest(out / f"{split}.tsv")
        assert kept == [r for r in full if r["src_text"] not in (EN[0], EN[2])]
        dropped[split] = report["splits"][split]["skipped_by_reason"].get("excluded_text", 0)
        assert dropped[split] == len(full) - len(kept) and report["splits"][split]["kept"] == len(kept)
    # EN[0] is spoken once in each split; EN[2]'s only segments are already skipped (past the end, no audio)
    assert dropped == {"train": 1, "dev": 1, "tst-COMMON": 1}
    skip = next(s for s in report["skipped"] if s["split"] == "train" and s["reason"] == "excluded_text")
    assert skip["id"] == "ted_1_0" and skip["file"].endswith("train.yaml") and skip["line"] == 1
    assert skip["detail"] == f"source text in an excluded manifest: {tmp_path / 'dev.tsv'}"  # the first holder
    assert report["exclude_text"] == {"manifests": [str(p) for p in held], "sentences": 2}


def test_cli_prep_exclude_text_and_its_errors(covost, tmp_path, capsys):
    root, _ = covost
    out = tmp_path / "out"
    args = [
        "prep",
        "covost2",
        "--root",
        str(root),
        "--src",
        "en",
        "--tgt",
        "de",
        "--out",
        str(out),
        "--vocab-size",
        "70",
        "--jobs",
        "1",
        "--exclude-text",
    ]
    missing = tmp_path / "nope.tsv"
    with pytest.raises(SystemExit, match=f"^speechxl prep: {re.escape(str(missing))}: manifest not found"):
        main([*args, str(missing)])
    plain = tmp_path / "plain.tsv"  # a fairseq manifest without src_text: nothing to compare with
    write_tsv(plain, ["id", "audio", "n_frames", "tgt_text"], [["a", "a.wav", "16000", "hallo"]])
    with pytest.raises(SystemExit, match=f"{re.escape(str(plain))}: no row has a src_text"):
        main([*args, str(plain)])
    broken = tmp_path / "broken.tsv"
    write_tsv(broken, ["id", "src_text"], [["a", EN[1]]])
    with pytest.raises(SystemExit, match=f"{re.escape(str(broken))}:1: header lacks column"):
        main([*args, str(broken)])
    assert not out.exists()  # each failed before any clip was converted

    main([*args, str(held_out_manifest(tmp_path / "held.tsv", [EN[1], EN[2]]))])
    assert "excluded_text 1" in capsys.readouterr().out
    assert [r["id"] for r in read_manifest(out / "train.tsv")] == ["common_voice_en_0", "common_voice_en_4"]
    assert read_manifest(out / "dev.tsv") == []
    report = json.loads((out / "prep_report.json").read_text())
    assert report["splits"]["dev"]["skipped_by_reason"] == {"audio_unreadable": 1, "excluded_text": 1}
    assert {s["id"] for s in report["skipped"] if s["reason"] == "excluded_text"} == {
        "common_voice_en_1",
        "common_voice_en_2",
    }


# --- on SynthST (tests/conftest.py): the corpora `speechxl synth` writes go through prep unchanged -----------


def test_prep_on_synth_mustc(synth_mustc, tmp_path):
    from speechxl.data.audio import load_audio

    info = json.loads((synth_mustc / "synth_info.json").read_text())
    out = tmp_path / "out"
    report = prepare_mustc(synth_mustc, "de", out, 1000, synth_mustc / "ext_mt", 0.1, 30.0)
    assert report["skipped"] == []
    for split, name in info["splits"].items():
        assert report["splits"][name]["kept"] == info["counts"][split]
    assert report["splits"]["ext_mt"]["kept"] == info["ext_mt"]
    rows = read_manifest(out / "train.tsv")
    for row in rows[:3]:
        assert len(load_audio(row["audio"], out)) == int(row["n_frames"]) > 0
    vocab = Vocab.load(out / "spm.model")
    assert all(vocab.decode(vocab.encode(r["tgt_text"])) == r["tgt_text"] for r in rows)


@pytest.mark.parametrize("src, tgt", [("en", "de"), ("de", "en")])
def test_prep_on_synth_covost2(synth_covost2, tmp_path, src, tgt):
    from speechxl.data.audio import load_audio

    info = json.loads((synth_covost2 / "synth_info.json").read_text())
    out = tmp_path / "out"
    report = prepare_covost2(synth_covost2, src, tgt, out, 1000, synth_covost2 / "ext_mt", 0.1, 30.0)
    assert report["skipped"] == []
    assert {s: report["splits"][s]["kept"] for s in ("train", "dev", "test")} == info["counts"]
    row = read_manifest(out / "test.tsv")[0]
    assert (row["src_lang"], row["tgt_lang"]) == (src, tgt)
    assert len(load_audio(row["audio"], out)) == int(row["n_frames"]) > 0


def test_mustc_segment_yaml_fast_path_matches_yaml_loader(tmp_path):
    import yaml

    from speechxl.data.corpus.mustc import read_segments

    lines = [
        "- {duration: 3.5, offset: 16.12, rW: 0, uW: 0, speaker_id: spk.767, wav: ted_767.wav}\n",
        "- {duration: 1.25, offset: 20.0, rW: 2, uW: 1, speaker_id: spk.767, wav: ted_767.wav}\n",
    ]
    plain, quoted = tmp_path / "plain.yaml", tmp_path / "quoted.yaml"
    plain.write_text("".join(lines))
    quoted.write_text(lines[0] + lines[1].replace("wav: ted_767.wav", 'wav: "ted_767.wav"'))  # YAML loader path
    expected = yaml.load(plain.read_text(), Loader=yaml.BaseLoader)
    assert expected[0]["offset"] == "16.12"
    assert read_segments(plain) == expected == read_segments(quoted)
    (tmp_path / "bad.yaml").write_text(lines[0] + "- {duration: 1.0, offset: [\n")
    with pytest.raises(DataError, match="invalid YAML"):
        read_segments(tmp_path / "bad.yaml")


def test_the_report_names_corpus_and_version_for_comparable_scores(mustc, synth_mustc, tmp_path):
    """translate copies corpus and version beside every score: MuST-C as the user says (v1 and v2 have different
    references), SynthST (found by its synth_info.json) by its seed and split sizes."""
    root, _ = mustc
    report = prepare_mustc(root, "de", tmp_path / "real", 80, None, 0.1, 30.0, corpus_version="v1")
    assert (report["corpus"], report["corpus_version"]) == ("mustc", "v1")
    assert prepare_mustc(root, "de", tmp_path / "unsaid", 80, None, 0.1, 30.0)["corpus_version"] == "unknown"
    synth = prepare_mustc(synth_mustc, "de", tmp_path / "synth", 80, None, 0.1, 30.0)
    info = json.loads((synth_mustc / "synth_info.json").read_text())
    counts = info["counts"]
    assert (synth["corpus"], synth["corpus_version"]) == (
        "synthst",
        f"seed{info['seed']}-train{counts['train']}-dev{counts['dev']}-test{counts['test']}",
    )
